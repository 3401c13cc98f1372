/* auth-service: user registration; its events leave through a local outbox. */
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "auth.h"
#include "evbus/config.h"
#include "evbus/log.h"

static auth_app_t g_app;

static const evbus_cfg_t config[] = {
    {"host", "AUTH_HOST", EVBUS_CFG_STR, 1, 64, "127.0.0.1", "address to listen on",
     &g_app.cfg.host, 0, NULL},
    {"port", "AUTH_PORT", EVBUS_CFG_INT, 0, 65535, "5000", "TCP port (0 picks a free one)",
     &g_app.cfg.port, 0, NULL},
    {"db", "AUTH_DB", EVBUS_CFG_STR, 1, 4096, "data/auth.db",
     "database: an SQLite file path (or sqlite:PATH)", &g_app.cfg.db, 0, NULL},
    {"eventbus-url", "AUTH_EVENTBUS_URL", EVBUS_CFG_STR, 8, 1024, "http://127.0.0.1:5020",
     "base URL of the eventbus the outbox relays to", &g_app.cfg.eventbus_url, 0, NULL},
    {"event-source", "AUTH_EVENT_SOURCE", EVBUS_CFG_STR, 1, 256, "/auth-service",
     "CloudEvents source of the events this service publishes", &g_app.cfg.source, 0, NULL},
    {"threads", "AUTH_THREADS", EVBUS_CFG_INT, 1, 64, "4", "HTTP worker threads",
     &g_app.cfg.threads, 0, NULL},
    {"max-body", "AUTH_MAX_BODY_BYTES", EVBUS_CFG_INT, 256, 1 << 20, "16384",
     "largest request body accepted, in bytes", &g_app.cfg.max_body, 0, NULL},
    {"argon2-ops", "AUTH_ARGON2_OPSLIMIT", EVBUS_CFG_INT, 2, 16, "2",
     "Argon2id passes (t); at least 2", &g_app.cfg.argon_ops, 0, NULL},
    {"argon2-mem-kib", "AUTH_ARGON2_MEMLIMIT_KIB", EVBUS_CFG_INT, 19456, 4 << 20, "19456",
     "Argon2id memory in KiB (m); at least 19456 (19 MiB)", &g_app.cfg.argon_mem_kib, 0, NULL},
    {"hash-concurrency", "AUTH_HASH_CONCURRENCY", EVBUS_CFG_INT, 1, 64, "2",
     "most password hashes computed at once", &g_app.cfg.hash_slots, 0, NULL},
    {"relay-batch", "AUTH_RELAY_BATCH", EVBUS_CFG_INT, 1, 500, "100",
     "most outbox events the relay sends per request", &g_app.cfg.relay_batch, 0, NULL},
    {"outbox-retention", "AUTH_OUTBOX_RETENTION_S", EVBUS_CFG_INT, 1, INT64_C(10) * 365 * 86400,
     "604800", "published outbox rows older than this many seconds are deleted",
     &g_app.cfg.outbox_retention_s, 0, NULL},
    {"eventbus-key", "AUTH_EVENTBUS_KEY", EVBUS_CFG_STR, 0, 256, "",
     "API key the relay publishes with (or AUTH_EVENTBUS_KEY_FILE)", &g_app.cfg.eventbus_key, 1,
     NULL},
    {"jwt-key", "AUTH_JWT_KEY", EVBUS_CFG_STR, 0, 256, "",
     "HMAC key of access tokens: base64 of 32 to 128 random bytes (or AUTH_JWT_KEY_FILE)",
     &g_app.cfg.jwt_key, 1, NULL},
    {"jwt-issuer", "AUTH_JWT_ISSUER", EVBUS_CFG_STR, 1, 256, "evbus-auth", "iss of access tokens",
     &g_app.cfg.jwt_issuer, 0, NULL},
    {"jwt-audience", "AUTH_JWT_AUDIENCE", EVBUS_CFG_STR, 1, 256, "evbus", "aud of access tokens",
     &g_app.cfg.jwt_audience, 0, NULL},
    {"token-ttl", "AUTH_TOKEN_TTL_S", EVBUS_CFG_INT, 60, 86400, "900",
     "lifetime of an access token in seconds", &g_app.cfg.token_ttl_s, 0, NULL},
    {"admin-emails", "AUTH_ADMIN_EMAILS", EVBUS_CFG_STR, 0, 4096, "",
     "comma-separated emails that register with role admin", &g_app.cfg.admin_emails, 0, NULL},
    {"login-window", "AUTH_LOGIN_WINDOW_S", EVBUS_CFG_INT, 1, 86400, "900",
     "window in which failed logins are counted, in seconds", &g_app.cfg.login_window_s, 0, NULL},
    {"login-max-failures", "AUTH_LOGIN_MAX_FAILURES", EVBUS_CFG_INT, 1, 1000, "5",
     "failed logins per account and client address in a window before 429",
     &g_app.cfg.login_max_failures, 0, NULL},
    {"login-max-failures-ip", "AUTH_LOGIN_MAX_FAILURES_IP", EVBUS_CFG_INT, 1, 100000, "50",
     "failed logins per client address (any account) in a window before 429",
     &g_app.cfg.login_max_failures_ip, 0, NULL},
    {"trust-forwarded", "AUTH_TRUST_FORWARDED", EVBUS_CFG_STR, 2, 3, "no",
     "yes: take the client address from X-Forwarded-For (only behind a proxy that sets it)",
     &g_app.cfg.trust_forwarded, 0, "yes|no"},
    {"log-level", "AUTH_LOG_LEVEL", EVBUS_CFG_STR, 4, 5, "info", "debug, info, warn or error",
     &g_app.cfg.log_level, 0, "debug|info|warn|error"},
    {"log-format", "AUTH_LOG_FORMAT", EVBUS_CFG_STR, 4, 4, "json",
     "json (one object per line) or text", &g_app.cfg.log_format, 0, "json|text"},
};
#define NCONFIG (sizeof config / sizeof config[0])

static void live(evbus_req_t *req, void *ud)
{
    (void)ud;
    evbus_req_reply_json(req, 200, json_pack("{s:s}", "status", "up"));
}

static const evbus_sql_t SQL_PING = {{"SELECT 1"}};

static void ready(evbus_req_t *req, void *ud)
{
    auth_app_t *app = ud;
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    evbus_stmt_t *s = evbus_store_prepare(db, &SQL_PING);
    int db_ok = s && evbus_stmt_step(s, NULL) == EVBUS_STEP_ROW;
    if (s)
        evbus_stmt_done(s);
    int64_t pending = -1, rejected = -1;
    if (db_ok)
        evbus_outbox_backlog(db, &pending, &rejected);
    evbus_store_pool_put(app->pool, db);
    int bus_ok = evbus_relay_reachable(app->relay);
    /* registration works while the eventbus is away (the outbox holds the events), so
     * readiness depends on the database only; the relay's state is reported */
    evbus_req_reply_json(
        req, db_ok ? 200 : 503,
        json_pack("{s:s, s:{s:s, s:s}, s:{s:I, s:I}}", "status", db_ok ? "up" : "down", "checks",
                  "database", db_ok ? "up" : "down", "eventbus", bus_ok ? "up" : "unreachable",
                  "outbox", "pending", (json_int_t)pending, "rejected", (json_int_t)rejected));
}

int main(int argc, char **argv)
{
    int rc = evbus_config_load(config, NCONFIG, "auth-service",
                               "evbus auth service: registration, events via a local outbox", argc,
                               argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    int lvl = evbus_log_level_parse(g_app.cfg.log_level);
    evbus_log_init("auth", lvl < 0 ? EVBUS_LOG_INFO : (evbus_log_level_t)lvl, g_app.cfg.log_format);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    auth_app_t *app = &g_app;
    evbus_http_server_t *http = NULL;
    evbus_store_t *db = NULL;
    int exit_code = 1;
    if (sodium_init() < 0)
        goto out;
    sem_init(&app->hash_slots, 0, (unsigned)app->cfg.hash_slots);
    if (auth_account_init(app) != 0)
        goto out;
    if (!(db = evbus_store_open(app->cfg.db)) || auth_db_migrate(db) != EVBUS_ERR_OK)
        goto out;
    evbus_store_close(db);
    db = NULL;
    evbus_relay_opts_t ro = {
        .store_url = app->cfg.db,
        .eventbus_url = app->cfg.eventbus_url,
        .batch = (unsigned)app->cfg.relay_batch,
        .backoff_initial_ms = 50,
        .backoff_cap_ms = 2000,
        .timeout_ms = 10000,
        .retention_ms = app->cfg.outbox_retention_s * 1000,
        .api_key = *app->cfg.eventbus_key ? app->cfg.eventbus_key : NULL,
    };
    if (!(app->pool = evbus_store_pool_new(app->cfg.db, (unsigned)app->cfg.threads)) ||
        !(app->relay = evbus_relay_start(&ro)))
        goto out;
    evbus_http_opts_t ho = {
        .host = app->cfg.host,
        .port = (int)app->cfg.port,
        .threads = (unsigned)app->cfg.threads,
        .max_body = (size_t)app->cfg.max_body,
        .max_header_bytes = 32 * 1024,
        .max_connections = 1024,
        .conn_timeout_s = 60,
    };
    if (!(http = evbus_http_server_new(&ho)) ||
        evbus_http_route(http, "POST", "/api/auth/register", auth_register, app) ||
        evbus_http_route(http, "POST", "/api/auth/login", auth_login, app) ||
        evbus_http_route(http, "GET", "/api/auth/me", auth_me, app) ||
        evbus_http_route(http, "PATCH", "/api/auth/users/{id}", auth_update_user, app) ||
        evbus_http_route(http, "POST", "/api/auth/users/{id}/deactivate", auth_deactivate_user,
                         app) ||
        evbus_http_route(http, "POST", "/api/auth/password", auth_change_password, app) ||
        evbus_http_route(http, "GET", "/health/live", live, app) ||
        evbus_http_route(http, "GET", "/health/ready", ready, app))
        goto out;
    int port = evbus_http_server_start(http);
    if (port < 0)
        goto out;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    evbus_log_kv(EVBUS_LOG_INFO, "listening", "host", app->cfg.host, "port", ports, "db",
                 app->cfg.db, "eventbus", app->cfg.eventbus_url, NULL);
    int sig = 0;
    sigwait(&sigs, &sig);
    evbus_log_kv(EVBUS_LOG_INFO, "stopping", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM", NULL);
    evbus_http_server_quiesce(http);
    exit_code = 0;
out:
    evbus_http_server_free(http);
    evbus_relay_stop(app->relay);
    evbus_store_pool_free(app->pool);
    evbus_store_close(db);
    auth_account_free(app);
    if (exit_code == 0)
        evbus_log_info("stopped");
    evbus_config_free(config, NCONFIG);
    return exit_code;
}
