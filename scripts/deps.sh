#!/usr/bin/env bash
# Installs the Debian packages evbus builds, runs and tests with. Idempotent:
# packages already present are skipped; apt runs only when something is missing.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config clang clang-format libclang-rt-14-dev
  libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev libsqlite3-dev
  libsodium-dev libcmocka-dev libpq-dev librdkafka-dev libjwt-dev sqlite3 curl kcat maven
  postgresql postgresql-client
  python3-pytest python3-requests
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "deps: installing ${missing[*]}" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
