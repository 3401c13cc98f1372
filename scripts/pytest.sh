#!/usr/bin/env bash
# Runs pytest with the first Python that has it (the PATH's python3, then Debian's),
# installing pytest for the user when neither has it.
set -euo pipefail
for py in python3 /usr/bin/python3; do
  if command -v "$py" >/dev/null && "$py" -c 'import pytest' 2>/dev/null; then
    exec "$py" -m pytest "$@"
  fi
done
python3 -m pip install --quiet --user pytest
exec python3 -m pytest "$@"
