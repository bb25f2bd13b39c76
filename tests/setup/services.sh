#!/usr/bin/env bash
# Start (and if needed install) the real components the test suite talks to:
# PostgreSQL, Redis, git and Debian's Chromium for the browser test; OpenLDAP's slapd and the
# OpenID Connect provider (Node, tests/setup/oidc) that the single sign-on tests start themselves.
# Safe to run again: it only starts what is not running.
set -euo pipefail

need_apt=()
command -v git >/dev/null || need_apt+=(git)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v pg_ctlcluster >/dev/null || need_apt+=(postgresql)
[ -x /usr/sbin/slapd ] || need_apt+=(slapd)
command -v ldapsearch >/dev/null || need_apt+=(ldap-utils)
command -v sudo >/dev/null || need_apt+=(sudo)  # the local backend's privilege step (tests/test_local_runas_helper.py)
command -v npm >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The test OpenID Connect provider's packages, from its committed package-lock.json.
oidc_dir="$(dirname "$0")/oidc"
if [ ! -d "$oidc_dir/node_modules" ] || [ "$oidc_dir/package-lock.json" -nt "$oidc_dir/node_modules" ]; then
    echo "installing the test OpenID Connect provider (npm ci)"
    (cd "$oidc_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null && touch node_modules)
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    for _ in $(seq 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi

if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
echo "test services ready: PostgreSQL $(pg_isready -h 127.0.0.1 -p 5432 >/dev/null && echo up), Redis $(redis-cli -h 127.0.0.1 ping)"
