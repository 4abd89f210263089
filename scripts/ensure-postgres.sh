#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, pg_ctl) exist for the RelStorage tests.
# Debian's `postgresql` package provides them; install it as root when missing.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ensure-postgres: PostgreSQL is not installed and we are not root;" \
         "install Debian's 'postgresql' package to run the PostgreSQL tests" >&2
    exit 0
fi
echo "ensure-postgres: installing PostgreSQL (apt-get install postgresql)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
