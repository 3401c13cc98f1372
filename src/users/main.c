/* user-service: keeps user profiles from the auth service's events. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evbus/config.h"
#include "evbus/consumer.h"
#include "evbus/log.h"
#include "users.h"

static users_app_t g_app;

static const evbus_cfg_t config[] = {
    {"host", "USERS_HOST", EVBUS_CFG_STR, 1, 64, "127.0.0.1", "address to listen on",
     &g_app.cfg.host, 0, NULL},
    {"port", "USERS_PORT", EVBUS_CFG_INT, 0, 65535, "5008", "TCP port (0 picks a free one)",
     &g_app.cfg.port, 0, NULL},
    {"db", "USERS_DB", EVBUS_CFG_STR, 1, 4096, "data/users.db",
     "database: an SQLite file path (or sqlite:PATH)", &g_app.cfg.db, 0, NULL},
    {"eventbus-url", "USERS_EVENTBUS_URL", EVBUS_CFG_STR, 8, 1024, "http://127.0.0.1:5020",
     "base URL of the eventbus to consume from", &g_app.cfg.eventbus_url, 0, NULL},
    {"subscription", "USERS_SUBSCRIPTION", EVBUS_CFG_STR, 1, 64, "user-service",
     "name of this service's subscription", &g_app.cfg.subscription, 0, NULL},
    {"poll-wait", "USERS_POLL_WAIT_S", EVBUS_CFG_INT, 1, 60, "30", "long-poll wait in seconds",
     &g_app.cfg.poll_wait, 0, NULL},
    {"poll-max", "USERS_POLL_MAX", EVBUS_CFG_INT, 1, 1000, "100", "events per poll at most",
     &g_app.cfg.poll_max, 0, NULL},
    {"delivery", "USERS_DELIVERY", EVBUS_CFG_STR, 4, 4, "push",
     "push (the eventbus calls this service's signed webhook) or pull (long-poll)",
     &g_app.cfg.delivery, 0, "push|pull"},
    {"public-url", "USERS_PUBLIC_URL", EVBUS_CFG_STR, 0, 900, "",
     "base URL at which the eventbus reaches this service (default http://HOST:PORT)",
     &g_app.cfg.public_url, 0, NULL},
    {"webhook-secret", "USERS_WEBHOOK_SECRET", EVBUS_CFG_STR, 0, 256, "",
     "the push subscription's signing secret (whsec_...); required for push",
     &g_app.cfg.webhook_secret, 1, NULL},
    {"webhook-secret-previous", "USERS_WEBHOOK_SECRET_PREVIOUS", EVBUS_CFG_STR, 0, 256, "",
     "a second accepted secret while a rotation is under way", &g_app.cfg.webhook_secret_prev, 1,
     NULL},
    {"eventbus-key", "USERS_EVENTBUS_KEY", EVBUS_CFG_STR, 0, 256, "",
     "API key for the eventbus, scoped to this service's subscriptions (or _FILE)",
     &g_app.cfg.eventbus_key, 1, NULL},
    {"jwt-key", "USERS_JWT_KEY", EVBUS_CFG_STR, 0, 256, "",
     "the key auth-service signs access tokens with (base64; or USERS_JWT_KEY_FILE)",
     &g_app.cfg.jwt_key, 1, NULL},
    {"jwt-issuer", "USERS_JWT_ISSUER", EVBUS_CFG_STR, 1, 256, "evbus-auth",
     "iss expected in access tokens", &g_app.cfg.jwt_issuer, 0, NULL},
    {"jwt-audience", "USERS_JWT_AUDIENCE", EVBUS_CFG_STR, 1, 256, "evbus",
     "aud expected in access tokens", &g_app.cfg.jwt_audience, 0, NULL},
    {"threads", "USERS_THREADS", EVBUS_CFG_INT, 1, 64, "2", "HTTP worker threads",
     &g_app.cfg.threads, 0, NULL},
    {"log-level", "USERS_LOG_LEVEL", EVBUS_CFG_STR, 4, 5, "info", "debug, info, warn or error",
     &g_app.cfg.log_level, 0, "debug|info|warn|error"},
    {"log-format", "USERS_LOG_FORMAT", EVBUS_CFG_STR, 4, 4, "json",
     "json (one object per line) or text", &g_app.cfg.log_format, 0, "json|text"},
};
#define NCONFIG (sizeof config / sizeof config[0])

static evbus_consumer_t *g_consumers[3];
static users_subscriber_t *g_subscriber;

static void live(evbus_req_t *req, void *ud)
{
    (void)ud;
    evbus_req_reply_json(req, 200, json_pack("{s:s}", "status", "up"));
}

static const evbus_sql_t SQL_PING = {{"SELECT 1"}};

static void ready(evbus_req_t *req, void *ud)
{
    users_app_t *app = ud;
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    evbus_stmt_t *s = evbus_store_prepare(db, &SQL_PING);
    int db_ok = s && evbus_stmt_step(s, NULL) == EVBUS_STEP_ROW;
    if (s)
        evbus_stmt_done(s);
    evbus_store_pool_put(app->pool, db);
    int consumer_ok = g_subscriber ? users_subscriber_ready(g_subscriber)
                                   : evbus_consumer_healthy(g_consumers[0]) &&
                                         evbus_consumer_healthy(g_consumers[1]) &&
                                         evbus_consumer_healthy(g_consumers[2]);
    evbus_req_reply_json(req, db_ok ? 200 : 503,
                         json_pack("{s:s, s:{s:s, s:s}}", "status", db_ok ? "up" : "down", "checks",
                                   "database", db_ok ? "up" : "down", "consumer",
                                   consumer_ok ? "up" : "waiting for eventbus"));
}

int main(int argc, char **argv)
{
    int rc =
        evbus_config_load(config, NCONFIG, "user-service",
                          "evbus user service: profiles from UserRegistered events", argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    int lvl = evbus_log_level_parse(g_app.cfg.log_level);
    evbus_log_init("users", lvl < 0 ? EVBUS_LOG_INFO : (evbus_log_level_t)lvl,
                   g_app.cfg.log_format);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    users_app_t *app = &g_app;
    evbus_http_server_t *http = NULL;
    int exit_code = 1;
    int push = strcmp(app->cfg.delivery, "push") == 0;
    if (evbus_jwt_key(&app->jwt, app->cfg.jwt_key) != 0) {
        evbus_log_error("config: USERS_JWT_KEY (or _FILE) must be auth-service's token key: "
                        "base64 of 32 to 128 bytes");
        evbus_config_free(config, NCONFIG);
        return 2;
    }
    app->jwt.issuer = app->cfg.jwt_issuer;
    app->jwt.audience = app->cfg.jwt_audience;
    if (push && !evbus_webhook_secret_valid(app->cfg.webhook_secret)) {
        evbus_log_error("config: push delivery needs USERS_WEBHOOK_SECRET (or _FILE): "
                        "whsec_ + base64 of 24..64 random bytes");
        evbus_config_free(config, NCONFIG);
        return 2;
    }
    if (!(app->apply_db = evbus_store_open(app->cfg.db)) ||
        users_db_migrate(app->apply_db) != EVBUS_ERR_OK ||
        !(app->pool = evbus_store_pool_new(app->cfg.db, (unsigned)app->cfg.threads + 3)))
        goto out;
    for (size_t i = 0; !push && i < 3; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s%s", app->cfg.subscription, users_feeds[i].suffix);
        const char *const types[] = {users_feeds[i].type, NULL};
        evbus_consumer_opts_t co = {
            .eventbus_url = app->cfg.eventbus_url,
            .subscription = name,
            .topic = users_feeds[i].topic,
            .types = types,
            .max_batch = (unsigned)app->cfg.poll_max,
            .wait_s = (unsigned)app->cfg.poll_wait,
            .fn = users_apply,
            .ud = app,
            .api_key = *app->cfg.eventbus_key ? app->cfg.eventbus_key : NULL,
        };
        if (!(g_consumers[i] = evbus_consumer_start(&co)))
            goto out;
    }
    if (!(app->guard = evbus_webhook_guard_new(1 << 16)))
        goto out;
    evbus_http_opts_t ho = {
        .host = app->cfg.host,
        .port = (int)app->cfg.port,
        .threads = (unsigned)app->cfg.threads,
        .max_body = 16 * 1024,
        .max_header_bytes = 32 * 1024,
        .max_connections = 1024,
        .conn_timeout_s = 60,
    };
    if (!(http = evbus_http_server_new(&ho)) ||
        evbus_http_route(http, "GET", "/api/users/{id}", users_get, app) ||
        evbus_http_route(http, "PUT", "/api/users/{id}/profile", users_put_profile, app) ||
        evbus_http_route(http, "POST", "/webhooks/events", users_webhook, app) ||
        evbus_http_route(http, "GET", "/health/live", live, app) ||
        evbus_http_route(http, "GET", "/health/ready", ready, app))
        goto out;
    int port = evbus_http_server_start(http);
    if (port < 0)
        goto out;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    if (push) {
        char hook[1024];
        if (*app->cfg.public_url)
            snprintf(hook, sizeof hook, "%s/webhooks/events", app->cfg.public_url);
        else
            snprintf(hook, sizeof hook, "http://%s:%d/webhooks/events", app->cfg.host, port);
        if (!(g_subscriber = users_subscriber_start(app, hook)))
            goto out;
    }
    evbus_log_kv(EVBUS_LOG_INFO, "listening", "host", app->cfg.host, "port", ports, "db",
                 app->cfg.db, "eventbus", app->cfg.eventbus_url, NULL);
    int sig = 0;
    sigwait(&sigs, &sig);
    evbus_log_kv(EVBUS_LOG_INFO, "stopping", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM", NULL);
    exit_code = 0;
out:
    users_subscriber_stop(g_subscriber);
    evbus_http_server_free(http);
    for (size_t i = 0; i < 3; i++)
        evbus_consumer_stop(g_consumers[i]);
    evbus_webhook_guard_free(app->guard);
    evbus_store_pool_free(app->pool);
    evbus_store_close(app->apply_db);
    if (exit_code == 0)
        evbus_log_info("stopped");
    evbus_config_free(config, NCONFIG);
    return exit_code;
}
