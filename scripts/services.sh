#!/usr/bin/env bash
# Make sure the servers the tests (and the benchmark) talk to are running:
# PostgreSQL, MariaDB and Redis (and Chromium and nginx for the browser and
# deployment tests), installed from Debian's packages if missing, started if stopped,
# and a PostgreSQL role with a password that the tests log in as, whatever
# pg_hba.conf says about local connections.
set -euo pipefail

PG_ROLE=${WSSERVER_TEST_PG_ROLE:-wsserver_test}
PG_PASSWORD=${WSSERVER_TEST_PG_PASSWORD:-wsserver_test}

# --redis-only: the demo needs Redis, not PostgreSQL.
redis_only=false
[ "${1:-}" = "--redis-only" ] && redis_only=true

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --build-packages: what pip needs to build mysqlclient (the tests' MariaDB).
if [ "${1:-}" = "--build-packages" ]; then
    if ! pkg-config --exists libmariadb 2>/dev/null && ! pkg-config --exists mysqlclient 2>/dev/null; then
        echo "services: installing libmariadb-dev and pkg-config"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmariadb-dev pkg-config >/dev/null
    fi
    exit 0
fi

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
$redis_only || command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
$redis_only || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
# The browser test drives Debian's Chromium; nothing is downloaded at run time.
$redis_only || command -v chromium >/dev/null || missing+=(chromium)
# tests/test_deployment.py runs docs/deployment.md's nginx configuration.
$redis_only || command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
# The benchmark measures Nchan (a C pub/sub server, an nginx module) beside us.
$redis_only || [ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || missing+=(libnginx-mod-nchan)
if [ ${#missing[@]} -gt 0 ]; then
    echo "services: installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [[ " ${missing[*]} " == *" nginx "* ]]; then
    # The test starts nginx itself: stop the default site the package may have
    # started, and keep it from starting at boot.
    as_root sh -c 'if [ -s /run/nginx.pid ]; then /usr/sbin/nginx -s quit; fi
        if command -v systemctl >/dev/null; then systemctl disable --now nginx; fi' \
        >/dev/null 2>&1 || true
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "services: starting Redis"
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi

redis_ready() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }
pg_ready() { $redis_only || pg_isready -h 127.0.0.1 -p 5432 -q; }

if ! $redis_only && ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    echo "services: starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi

mariadb_ready() { $redis_only || mysqladmin -uroot -h 127.0.0.1 -P 3306 ping >/dev/null 2>&1; }
if ! $redis_only && ! mariadb_ready; then
    echo "services: starting MariaDB"
    as_root mkdir -p /run/mysqld
    as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
fi

for _ in $(seq 1 50); do
    if redis_ready && pg_ready && mariadb_ready; then
        break
    fi
    sleep 0.2
done
redis_ready || { echo "services: Redis is not answering" >&2; exit 1; }
pg_ready || { echo "services: PostgreSQL is not answering" >&2; exit 1; }
mariadb_ready || { echo "services: MariaDB is not answering" >&2; exit 1; }
if $redis_only; then
    echo "services: Redis is ready"
    exit 0
fi

# The role the tests use: created through the local socket as the postgres
# superuser, then used over TCP with a password.
as_root runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d postgres <<SQL >/dev/null
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${PG_ROLE}') THEN
    CREATE ROLE ${PG_ROLE} LOGIN CREATEDB CREATEROLE PASSWORD '${PG_PASSWORD}';
  ELSE
    ALTER ROLE ${PG_ROLE} LOGIN CREATEDB CREATEROLE PASSWORD '${PG_PASSWORD}';
  END IF;
END
\$\$;
SQL
echo "services: Redis, PostgreSQL and MariaDB are ready"
