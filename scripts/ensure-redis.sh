#!/usr/bin/env bash
# Redis is a benchmark peer only; install Debian's redis-server when missing (as root).
# Never fatal: without Redis the benchmark reports the Redis peer as skipped.
set -uo pipefail
command -v redis-server >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-redis: redis-server missing; the Redis peer will be skipped" >&2
    exit 0
fi
echo "ensure-redis: installing redis-server (apt-get install redis-server)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }; then
    echo "ensure-redis: could not install redis-server; the Redis peer will be skipped" >&2
fi
exit 0
