#!/usr/bin/env bash
# Runs eventbus, auth-service and user-service in the foreground with readable logs.
# Data lives in $EVBUS_DATA_DIR (default ./data) and survives restarts. Ctrl-C stops all.
set -euo pipefail
BUILD=${1:-build}
DATA=${EVBUS_DATA_DIR:-data}
mkdir -p "$DATA"

export EVENTBUS_PORT=${EVENTBUS_PORT:-5020} AUTH_PORT=${AUTH_PORT:-5000} USERS_PORT=${USERS_PORT:-5008}
export EVENTBUS_DB=${EVENTBUS_DB:-$DATA/eventbus.db} AUTH_DB=${AUTH_DB:-$DATA/auth.db} USERS_DB=${USERS_DB:-$DATA/users.db}
export AUTH_EVENTBUS_URL=${AUTH_EVENTBUS_URL:-http://127.0.0.1:$EVENTBUS_PORT}
export USERS_EVENTBUS_URL=${USERS_EVENTBUS_URL:-http://127.0.0.1:$EVENTBUS_PORT}
# user-service takes events by signed webhook from the eventbus on this machine: allow
# loopback for webhooks, and keep the signing secret with the data (created once, 0600)
export EVENTBUS_PUSH_ALLOW=${EVENTBUS_PUSH_ALLOW:-127.0.0.1/32}
if [ -z "${USERS_WEBHOOK_SECRET:-}" ] && [ -z "${USERS_WEBHOOK_SECRET_FILE:-}" ]; then
  if [ ! -s "$DATA/users-webhook.secret" ]; then
    (umask 077 && printf 'whsec_%s\n' "$(head -c 32 /dev/urandom | base64)" > "$DATA/users-webhook.secret")
  fi
  export USERS_WEBHOOK_SECRET_FILE="$DATA/users-webhook.secret"
fi
# the key auth-service signs access tokens with and user-service checks them with
if [ -z "${AUTH_JWT_KEY:-}" ] && [ -z "${AUTH_JWT_KEY_FILE:-}" ]; then
  if [ ! -s "$DATA/jwt.key" ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 > "$DATA/jwt.key")
  fi
  export AUTH_JWT_KEY_FILE="$DATA/jwt.key" USERS_JWT_KEY_FILE="$DATA/jwt.key"
fi
export EVENTBUS_LOG_FORMAT=${EVENTBUS_LOG_FORMAT:-text} AUTH_LOG_FORMAT=${AUTH_LOG_FORMAT:-text} USERS_LOG_FORMAT=${USERS_LOG_FORMAT:-text}

# API keys for the eventbus, made once on its database (shown only at creation, so kept
# here, 0600): an admin key for you, and one scoped key per service
if [ ! -s "$DATA/admin.key" ]; then
  (umask 077
   "$BUILD/eventbus" keys create --name admin --admin > "$DATA/admin.key"
   "$BUILD/eventbus" keys create --name auth-service --types 'User*' --sources /auth-service > "$DATA/auth-eventbus.key"
   "$BUILD/eventbus" keys create --name user-service --subscriptions 'user-service*' > "$DATA/users-eventbus.key")
fi
export AUTH_EVENTBUS_KEY_FILE=${AUTH_EVENTBUS_KEY_FILE:-$DATA/auth-eventbus.key}
export USERS_EVENTBUS_KEY_FILE=${USERS_EVENTBUS_KEY_FILE:-$DATA/users-eventbus.key}

pids=()
stop() {
  trap - INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap 'stop; exit 0' INT TERM

"$BUILD/eventbus" & pids+=($!)
"$BUILD/auth-service" & pids+=($!)
"$BUILD/user-service" & pids+=($!)

for port in "$EVENTBUS_PORT" "$AUTH_PORT" "$USERS_PORT"; do
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/health/live" >/dev/null && break
    sleep 0.1
  done
done

cat <<MSG

  evbus is running (data in $DATA; Ctrl-C stops everything)
    eventbus      http://127.0.0.1:$EVENTBUS_PORT
    auth-service  http://127.0.0.1:$AUTH_PORT
    user-service  http://127.0.0.1:$USERS_PORT

  Register a user, then read the profile it produced:
    id=\$(curl -s -X POST http://127.0.0.1:$AUTH_PORT/api/auth/register -H 'Content-Type: application/json' \\
         -d '{"email":"ada@example.com","password":"correct horse battery","displayName":"Ada"}' \\
         | sed -n 's/.*"userId":"\\([^"]*\\)".*/\\1/p')
    token=\$(curl -s -X POST http://127.0.0.1:$AUTH_PORT/api/auth/login -H 'Content-Type: application/json' \\
         -d '{"email":"ada@example.com","password":"correct horse battery"}' \\
         | sed -n 's/.*"accessToken":"\\([^"]*\\)".*/\\1/p')
    curl -s http://127.0.0.1:$USERS_PORT/api/users/\$id -H "Authorization: Bearer \$token"

  The eventbus API needs a key; yours (admin) is in $DATA/admin.key:
    curl -s http://127.0.0.1:$EVENTBUS_PORT/api/subscriptions -H "Authorization: Bearer \$(cat $DATA/admin.key)"

MSG

# if any service exits, stop the others and report it
set +e
wait -n "${pids[@]}"
code=$?
stop
exit "$code"
