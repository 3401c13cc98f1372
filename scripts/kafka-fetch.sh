#!/usr/bin/env bash
# Fetches the pinned Apache Kafka broker and its dependencies (scripts/kafka/pom.xml)
# into a cache once; prints the directory holding the jars.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
cache=${EVBUS_CACHE:-$HOME/.cache/evbus}/kafka-$version
if [ ! -f "$cache/.complete" ]; then
  command -v mvn >/dev/null || { echo "kafka-fetch: mvn is needed (Debian package maven)" >&2; exit 1; }
  rm -rf "$cache"
  mkdir -p "$cache"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies -DoutputDirectory="$cache/libs" >&2
  touch "$cache/.complete"
fi
echo "$cache/libs"
