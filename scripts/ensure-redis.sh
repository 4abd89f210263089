#!/usr/bin/env bash
# Redis is a benchmark peer only; install Debian's redis-server when missing (as root).
set -euo pipefail
command -v redis-server >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "ensure-redis: redis-server missing; the Redis peer will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq redis-server >/dev/null
