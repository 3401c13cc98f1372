/* eventbus: accepts CloudEvents over HTTP, stores them durably, serves subscriptions. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventbus.h"
#include "evbus/config.h"
#include "evbus/log.h"
#include "evbus/util.h"

static eb_app_t g_app;

static const evbus_cfg_t config[] = {
    {"host", "EVENTBUS_HOST", EVBUS_CFG_STR, 1, 64, "127.0.0.1", "address to listen on",
     &g_app.cfg.host, 0, NULL},
    {"port", "EVENTBUS_PORT", EVBUS_CFG_INT, 0, 65535, "5020", "TCP port (0 picks a free one)",
     &g_app.cfg.port, 0, NULL},
    {"db", "EVENTBUS_DB", EVBUS_CFG_STR, 1, 4096, "data/eventbus.db",
     "database: an SQLite file path (or sqlite:PATH)", &g_app.cfg.db, 0, NULL},
    {"threads", "EVENTBUS_THREADS", EVBUS_CFG_INT, 1, 64, "2", "HTTP worker threads",
     &g_app.cfg.threads, 0, NULL},
    {"max-body", "EVENTBUS_MAX_BODY_BYTES", EVBUS_CFG_INT, 1024, 64 << 20, "1048576",
     "largest request body accepted, in bytes", &g_app.cfg.max_body, 0, NULL},
    {"max-batch", "EVENTBUS_MAX_BATCH", EVBUS_CFG_INT, 1, 10000, "1000",
     "most events in one publish request", &g_app.cfg.max_batch, 0, NULL},
    {"max-wait", "EVENTBUS_MAX_WAIT_S", EVBUS_CFG_INT, 0, 300, "60",
     "longest long-poll wait a client may ask for, in seconds", &g_app.cfg.max_wait, 0, NULL},
    {"max-group", "EVENTBUS_GROUP_COMMIT_MAX", EVBUS_CFG_INT, 1, 100000, "5000",
     "most events written in one group commit", &g_app.cfg.max_group, 0, NULL},
    {"retention", "EVENTBUS_RETENTION_S", EVBUS_CFG_INT, 1, INT64_C(10) * 365 * 86400, "604800",
     "events older than this many seconds are deleted from the log", &g_app.cfg.retention_s, 0,
     NULL},
    {"broker", "EVENTBUS_BROKER", EVBUS_CFG_STR, 1, 1024, "embedded",
     "embedded (the database is the log) or kafka://HOST:PORT[,HOST:PORT...] to also relay "
     "every event to Apache Kafka",
     &g_app.cfg.broker, 0, NULL},
    {"kafka-partitions", "EVENTBUS_KAFKA_PARTITIONS", EVBUS_CFG_INT, 1, 1000, "3",
     "partitions of the Kafka topics the eventbus creates", &g_app.cfg.kafka_partitions, 0, NULL},
    {"kafka-topic-prefix", "EVENTBUS_KAFKA_TOPIC_PREFIX", EVBUS_CFG_STR, 0, EB_MAX_TOPIC_PREFIX, "",
     "put before every topic name in Kafka, so several deployments can share one cluster",
     &g_app.cfg.kafka_prefix, 0, NULL},
    {"kafka-relay-batch", "EVENTBUS_KAFKA_RELAY_BATCH", EVBUS_CFG_INT, 1, 100000, "1000",
     "outbox rows the relay sends to Kafka per round (claimed, produced, settled together)",
     &g_app.cfg.kafka_relay_batch, 0, NULL},
    {"kafka-idle", "EVENTBUS_KAFKA_IDLE_S", EVBUS_CFG_INT, 1, 86400, "30",
     "an instance not polled on a subscription for this many seconds leaves its Kafka consumer "
     "group, so the other instances take its partitions",
     &g_app.cfg.kafka_idle_s, 0, NULL},
    {"kafka-session-timeout", "EVENTBUS_KAFKA_SESSION_TIMEOUT_MS", EVBUS_CFG_INT, 1000, 3600000,
     "10000",
     "how long the partitions of an instance that died stay with it before Kafka moves "
     "them to another instance, in milliseconds",
     &g_app.cfg.kafka_session_ms, 0, NULL},
    {"kafka-buffer", "EVENTBUS_KAFKA_BUFFER", EVBUS_CFG_INT, 10, 1000000, "5000",
     "events an instance reads ahead per subscription before it pauses fetching from Kafka",
     &g_app.cfg.kafka_buffer, 0, NULL},
    {"auth", "EVENTBUS_AUTH", EVBUS_CFG_STR, 3, 4, "keys",
     "keys: every API call but health needs an API key (see `eventbus keys`); off: none do "
     "(only on a trusted network)",
     &g_app.cfg.auth, 0, "keys|off"},
    {"push-allow", "EVENTBUS_PUSH_ALLOW", EVBUS_CFG_STR, 0, 4096, "",
     "addresses or CIDRs webhooks may reach although loopback, private or link-local, e.g. "
     "127.0.0.1/32",
     &g_app.cfg.push_allow, 0, NULL},
    {"routes", "EVENTBUS_ROUTES", EVBUS_CFG_STR, 0, 65536, "",
     "type->topic overrides, e.g. UserRegistered=USERS,OrderPlaced=ORDERS", &g_app.cfg.routes, 0,
     NULL},
    {"log-level", "EVENTBUS_LOG_LEVEL", EVBUS_CFG_STR, 4, 5, "info", "debug, info, warn or error",
     &g_app.cfg.log_level, 0, "debug|info|warn|error"},
    {"log-format", "EVENTBUS_LOG_FORMAT", EVBUS_CFG_STR, 4, 4, "json",
     "json (one object per line) or text", &g_app.cfg.log_format, 0, "json|text"},
};
#define NCONFIG (sizeof config / sizeof config[0])

static void live(evbus_req_t *req, void *ud)
{
    (void)ud;
    evbus_req_reply_json(req, 200, json_pack("{s:s}", "status", "up"));
}

static void ready(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    int64_t head = 0;
    int db_ok = app->broker->head(db, &head) == EVBUS_ERR_OK;
    evbus_store_pool_put(app->pool, db);
    int writer_ok = eb_writer_healthy(app->writer);
    int ok = db_ok && writer_ok && !evbus_http_stopping(req);
    json_t *body =
        json_pack("{s:s, s:{s:s, s:s, s:s}, s:I}", "status", ok ? "up" : "down", "checks",
                  "database", db_ok ? "up" : "down", "writer", writer_ok ? "up" : "down", "broker",
                  app->broker->name, "head", (json_int_t)head);
    if (app->kafka) {
        /* publishing goes on while Kafka is away (the outbox holds the events): Kafka's
         * state and the backlog are reported, they do not make the eventbus unready */
        int64_t pending = -1, rejected = -1;
        int reached = evbus_relay_reachable(app->relay);
        db = evbus_store_pool_get(app->pool);
        evbus_outbox_backlog(db, &pending, &rejected);
        evbus_store_pool_put(app->pool, db);
        json_object_set_new(json_object_get(body, "checks"), "kafka",
                            json_string(reached && eb_kafka_up(app->kafka) ? "up" : "unreachable"));
        json_object_set_new(body, "outbox",
                            json_pack("{s:I, s:I}", "pending", (json_int_t)pending, "rejected",
                                      (json_int_t)rejected));
    }
    if (app->pusher) /* open breakers are reported; they are the receivers' trouble */
        json_object_set_new(body, "push", eb_pusher_health(app->pusher));
    evbus_req_reply_json(req, ok ? 200 : 503, body);
}

/* After a commit that stored new events: the Kafka relay and the pusher may have work. */
static void on_commit(void *ud)
{
    eb_app_t *app = ud;
    if (app->relay)
        evbus_relay_wake(app->relay);
    eb_pusher_wake(app->pusher);
}

static void on_kafka_events(void *ud)
{
    eb_pusher_wake(((eb_app_t *)ud)->pusher);
}

/* With EVENTBUS_BROKER=kafka://..., starts the producer and the outbox relay to it. */
static int start_kafka(eb_app_t *app, evbus_relay_sink_t *sink)
{
    const char *brokers = app->cfg.broker + strlen("kafka://");
    if (!*brokers) {
        evbus_log_error("config: EVENTBUS_BROKER: kafka:// needs HOST:PORT");
        return -1;
    }
    if (*app->cfg.kafka_prefix && !eb_topic_valid(app->cfg.kafka_prefix)) {
        evbus_log_error("config: EVENTBUS_KAFKA_TOPIC_PREFIX: only [A-Za-z0-9._-] allowed");
        return -1;
    }
    if (!(app->kafka = eb_kafka_new(brokers, app->cfg.kafka_prefix, app->routes,
                                    (int)app->cfg.kafka_partitions, app->cfg.retention_s * 1000)))
        return -1;
    *sink = (evbus_relay_sink_t){"kafka", eb_kafka_send, app->kafka};
    evbus_relay_opts_t ro = {
        .store_url = app->cfg.db,
        .sink = sink,
        .batch = (unsigned)app->cfg.kafka_relay_batch,
        .backoff_initial_ms = 100,
        .backoff_cap_ms = 5000,
        .timeout_ms = 15000,
        .retention_ms = app->cfg.retention_s * 1000,
    };
    if (!(app->relay = evbus_relay_start(&ro)))
        return -1;
    eb_ksubs_opts_t ko = {
        .brokers = brokers,
        .prefix = app->cfg.kafka_prefix,
        .waiters = app->waiters,
        .idle_ms = app->cfg.kafka_idle_s * 1000,
        .session_timeout_ms = (int)app->cfg.kafka_session_ms,
        .buffer_events = (size_t)app->cfg.kafka_buffer,
        .buffer_bytes = 32u << 20,
        .partitions = (int)app->cfg.kafka_partitions,
        .retention_ms = app->cfg.retention_s * 1000,
        .on_events = on_kafka_events,
        .ud = app,
    };
    return (app->ksubs = eb_ksubs_new(&ko)) ? 0 : -1;
}

static int setup_routes(evbus_http_server_t *http, eb_app_t *app)
{
    struct {
        const char *m, *p;
        evbus_handler_fn fn;
    } r[] = {
        {"POST", "/api/events/publish", eb_publish_handler},
        {"POST", "/api/subscriptions", eb_subs_create},
        {"GET", "/api/subscriptions", eb_subs_list},
        {"GET", "/api/subscriptions/{name}", eb_subs_get},
        {"DELETE", "/api/subscriptions/{name}", eb_subs_delete},
        {"GET", "/api/subscriptions/{name}/events", eb_subs_poll},
        {"POST", "/api/subscriptions/{name}/ack", eb_subs_ack},
        {"PATCH", "/api/subscriptions/{name}", eb_subs_patch},
        {"POST", "/api/subscriptions/{name}/seek", eb_subs_seek},
        {"POST", "/api/subscriptions/{name}/rotate-secret", eb_subs_rotate},
        {"POST", "/api/subscriptions/{name}/enable", eb_subs_enable},
        {"GET", "/api/subscriptions/{name}/dlq", eb_dlq_list},
        {"POST", "/api/subscriptions/{name}/dlq/redrive", eb_dlq_redrive},
        {"GET", "/api/subscriptions/{name}/dlq/{id}", eb_dlq_get},
        {"DELETE", "/api/subscriptions/{name}/dlq/{id}", eb_dlq_delete},
        {"POST", "/api/keys", eb_keys_create_handler},
        {"GET", "/api/keys", eb_keys_list_handler},
        {"DELETE", "/api/keys/{id}", eb_keys_revoke_handler},
        {"GET", "/health/live", live},
        {"GET", "/health/ready", ready},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (evbus_http_route(http, r[i].m, r[i].p, r[i].fn, app) != EVBUS_ERR_OK)
            return -1;
    return 0;
}

/* `eventbus keys create|list|revoke`: key management on the database itself, for the
 * first admin key and for scripts. Whoever can run this with the database's settings
 * already controls the eventbus; the key is printed once, on stdout. */
static int keys_cli(int argc, char **argv)
{
    static const char usage[] =
        "usage: eventbus keys create --name NAME [--admin] [--types T1,T2*] [--sources S1,S2]\n"
        "                            [--subscriptions P1,P2*]\n"
        "       eventbus keys list\n"
        "       eventbus keys revoke ID\n"
        "The database comes from EVENTBUS_DB; patterns may end in '*'.\n";
    char *prog[] = {"eventbus", NULL};
    if (evbus_config_load(config, NCONFIG, "eventbus", "", 1, prog) != 0)
        return 2;
    evbus_log_init("eventbus", EVBUS_LOG_WARN, "text");
    const char *name = NULL, *types = NULL, *sources = NULL, *subs = NULL;
    int admin = 0;
    const char *cmd = argc > 1 ? argv[1] : "";
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--admin"))
            admin = 1;
        else if (!strcmp(a, "--name") && v)
            name = argv[++i];
        else if (!strcmp(a, "--types") && v)
            types = argv[++i];
        else if (!strcmp(a, "--sources") && v)
            sources = argv[++i];
        else if (!strcmp(a, "--subscriptions") && v)
            subs = argv[++i];
        else if (strcmp(cmd, "revoke") == 0 && !name)
            name = a;
        else {
            fputs(usage, stderr);
            return 2;
        }
    }
    evbus_store_t *db = evbus_store_open(g_app.cfg.db);
    int rc = 1;
    if (!db || evbus_store_migrate(db, "eventbus", eb_migrations, eb_nmigrations) != EVBUS_ERR_OK ||
        evbus_outbox_migrate(db) != EVBUS_ERR_OK) {
        fprintf(stderr, "eventbus keys: cannot open %s\n", g_app.cfg.db);
    } else if (strcmp(cmd, "create") == 0 && name) {
        json_t *t = eb_patterns(types), *s = eb_patterns(sources), *u = eb_patterns(subs);
        char key[128], id[20];
        if (eb_keys_create(db, name, admin, t, s, u, key, sizeof key, id) == 0) {
            printf("%s\n", key);
            fprintf(stderr, "created key %s (%s); it is shown only this once\n", id, name);
            rc = 0;
        }
        json_decref(t);
        json_decref(s);
        json_decref(u);
    } else if (strcmp(cmd, "list") == 0) {
        json_t *items = eb_keys_list(db);
        char *text = items ? json_dumps(items, JSON_INDENT(2)) : NULL;
        if (text)
            printf("%s\n", text);
        rc = text ? 0 : 1;
        free(text);
        json_decref(items);
    } else if (strcmp(cmd, "revoke") == 0 && name) {
        int64_t n = eb_keys_revoke(db, name);
        if (n == 0)
            fprintf(stderr, "eventbus keys: no active key %s\n", name);
        rc = n > 0 ? 0 : 1;
    } else {
        fputs(usage, stderr);
        rc = 2;
    }
    evbus_store_close(db);
    evbus_config_free(config, NCONFIG);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "keys") == 0)
        return keys_cli(argc - 1, argv + 1);
    int rc = evbus_config_load(config, NCONFIG, "eventbus",
                               "the evbus event bus: publish API, durable log, subscriptions", argc,
                               argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    int lvl = evbus_log_level_parse(g_app.cfg.log_level);
    evbus_log_init("eventbus", lvl < 0 ? EVBUS_LOG_INFO : (evbus_log_level_t)lvl,
                   g_app.cfg.log_format);

    /* signals are taken by sigwait in main; every thread inherits the mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    eb_app_t *app = &g_app;
    evbus_http_server_t *http = NULL;
    evbus_store_t *db = NULL;
    int exit_code = 1;
    char err[256];
    app->broker = &eb_broker_log;
    if (!(app->routes = eb_routes_new(app->cfg.routes, err, sizeof err))) {
        evbus_log_error("config: EVENTBUS_ROUTES: %s", err);
        goto out;
    }
    if (!(app->allow = eb_allow_new(app->cfg.push_allow, err, sizeof err))) {
        evbus_log_error("config: EVENTBUS_PUSH_ALLOW: %s", err);
        goto out;
    }
    int kafka = strncmp(app->cfg.broker, "kafka://", 8) == 0;
    if (!kafka && strcmp(app->cfg.broker, "embedded") != 0) {
        evbus_log_error("config: EVENTBUS_BROKER must be embedded or kafka://HOST:PORT");
        goto out;
    }
    if (!(db = evbus_store_open(app->cfg.db)) ||
        evbus_store_migrate(db, "eventbus", eb_migrations, eb_nmigrations) != EVBUS_ERR_OK ||
        evbus_outbox_migrate(db) != EVBUS_ERR_OK)
        goto out;
    evbus_store_close(db);
    db = NULL;
    evbus_relay_sink_t sink;
    if (!(app->pool = evbus_store_pool_new(app->cfg.db, (unsigned)app->cfg.threads + 2)) ||
        !(app->waiters = eb_waiters_new()))
        goto out;
    if (kafka && start_kafka(app, &sink) != 0)
        goto out;
    eb_writer_opts_t wo = {
        .db_url = app->cfg.db,
        .waiters = app->waiters,
        .max_group = (unsigned)app->cfg.max_group,
        .retention_ms = app->cfg.retention_s * 1000,
        .outbox = kafka,
        .on_commit = on_commit,
        .ud = app,
    };
    if (!(app->writer = eb_writer_start(&wo)) || !(app->pusher = eb_pusher_start(app)))
        goto out;
    if (strcmp(app->cfg.auth, "keys") == 0 && !(app->keys = eb_keys_new(app->pool)))
        goto out;
    if (!app->keys)
        evbus_log_warn("EVENTBUS_AUTH=off: anyone who reaches this port may publish and manage "
                       "subscriptions");
    app->listener = eb_listener_start(app->cfg.db, app->waiters);
    evbus_http_opts_t ho = {
        .host = app->cfg.host,
        .port = (int)app->cfg.port,
        .threads = (unsigned)app->cfg.threads,
        .max_body = (size_t)app->cfg.max_body,
        .max_header_bytes = 64 * 1024,
        .max_connections = 4096,
        .conn_timeout_s = 120,
    };
    if (!(http = evbus_http_server_new(&ho)) || setup_routes(http, app) != 0)
        goto out;
    int port = evbus_http_server_start(http);
    if (port < 0)
        goto out;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    evbus_log_kv(EVBUS_LOG_INFO, "listening", "host", app->cfg.host, "port", ports, "db",
                 app->cfg.db, "broker", app->cfg.broker, NULL);

    int sig = 0;
    sigwait(&sigs, &sig);
    evbus_log_kv(EVBUS_LOG_INFO, "stopping", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM", NULL);
    evbus_http_server_quiesce(http);
    eb_waiters_close(app->waiters); /* parked polls answer now */
    eb_writer_stop(app->writer);    /* queued publishes commit and answer */
    exit_code = 0;
out:
    evbus_http_server_free(http);
    eb_listener_stop(app->listener);
    eb_pusher_stop(app->pusher); /* after the writer: nothing wakes it any more */
    eb_writer_free(app->writer);
    eb_kafka_abort(app->kafka);   /* a send waiting on an absent Kafka ends now */
    evbus_relay_stop(app->relay); /* after the writer: nothing wakes it any more */
    eb_kafka_free(app->kafka);
    eb_ksubs_free(app->ksubs); /* leaves the consumer groups */
    eb_waiters_free(app->waiters);
    evbus_store_pool_free(app->pool);
    evbus_store_close(db);
    eb_routes_free(app->routes);
    eb_allow_free(app->allow);
    eb_keys_free(app->keys);
    if (exit_code == 0)
        evbus_log_info("stopped");
    evbus_config_free(config, NCONFIG);
    return exit_code;
}
