#!/usr/bin/env bash
# Make sure the services the test suite talks to are up on this machine:
# Redis on 127.0.0.1:6379 (started, and installed from Debian if missing).
# Debian's chromium for the dashboard's browser tests (Playwright drives it;
# its own browser download cannot work on a closed network).
# MongoDB-wire and SMTP servers are started by the tests themselves.
set -euo pipefail

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! redis_up; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "ensure-services: installing redis-server" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
  fi
  echo "ensure-services: starting redis-server on 127.0.0.1:6379" >&2
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 50); do
    redis_up && break
    sleep 0.2
  done
  redis_up || { echo "ensure-services: redis-server did not answer on 127.0.0.1:6379" >&2; exit 1; }
fi

if ! command -v chromium >/dev/null 2>&1; then
  echo "ensure-services: installing chromium" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
