#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, pg_ctl) exist for the RelStorage tests.
# Debian's `postgresql` package provides them; install it as root when missing.
# The tests start their own throw-away cluster (tests/pg.py), so no system cluster is
# created or started here (Debian would otherwise create and start "15/main" on 5432).
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ensure-postgres: PostgreSQL is not installed and we are not root;" \
         "install Debian's 'postgresql' package to run the PostgreSQL tests" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: no apt-get here; install the PostgreSQL server (initdb, pg_ctl)" \
         "with the system's package manager to run the PostgreSQL tests" >&2
    exit 0
fi
echo "ensure-postgres: installing PostgreSQL (apt-get install postgresql)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# postgresql-common first, so its "create the main cluster" default can be switched off.
apt-get install -y -qq postgresql-common >/dev/null
conf=/etc/postgresql-common/createcluster.conf
if [ -f "$conf" ] && ! grep -q '^create_main_cluster' "$conf"; then
    echo 'create_main_cluster = false' >> "$conf"
fi
apt-get install -y -qq postgresql >/dev/null
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "ensure-postgres: apt-get installed postgresql but no initdb was found" >&2
    exit 1
fi
