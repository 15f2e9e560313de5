#!/usr/bin/env bash
# The demo: the example site and the sidecar on SQLite and the local Redis,
# with nothing to configure. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
SITE_PORT=${DEMO_SITE_PORT:-8000}
WS_PORT=${WS_PORT:-8888}
DEMO_PASSWORD=${DEMO_PASSWORD:-demo}
mkdir -p .demo

# The same values on both sides: that is the whole integration.
# The example site's default key, so that `manage.py wsserver_token` works as is.
export SECRET_KEY=${SECRET_KEY:-wsserver-demo-secret-key-not-for-production}
export DATABASE_URL=${DATABASE_URL:-sqlite:///$PWD/.demo/site.sqlite3}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/1}
export WSSERVER_REDIS_URL=$REDIS_URL
export WS_PORT WS_ALLOWED_ORIGINS=${WS_ALLOWED_ORIGINS:-http://localhost:$SITE_PORT,http://127.0.0.1:$SITE_PORT}

bash scripts/services.sh --redis-only

$PY example/manage.py migrate --noinput -v 0
$PY example/manage.py seed_demo --password "$DEMO_PASSWORD"

pids=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

$PY example/manage.py runserver --noreload --insecure "127.0.0.1:$SITE_PORT" >.demo/site.log 2>&1 &
pids+=($!)
$PY -m wsserver 2>&1 | tee .demo/wsserver.log &
pids+=($!)

for _ in $(seq 1 100); do
    if curl -fs "http://127.0.0.1:$WS_PORT/readyz" >/dev/null 2>&1 \
        && curl -fs "http://127.0.0.1:$SITE_PORT/admin/login/" >/dev/null 2>&1; then
        break
    fi
    sleep 0.2
done

cat <<EOF

  wsserver demo is running
  ------------------------
  Example site (admin):  http://localhost:$SITE_PORT/admin/
  WebSocket sidecar:     ws://localhost:$WS_PORT/
  Users (password "$DEMO_PASSWORD"): admin (superuser), alice (sees articles),
  dave (sees products), bob (sees nothing), carol (inactive).

  Try it, in another terminal:
    1. .venv/bin/python example/manage.py wsserver_token alice
       prints a token for alice, valid for 30 seconds.
    2. .venv/bin/python -m websockets ws://localhost:$WS_PORT/
       and paste the token at the prompt (then press Enter).
    3. Log in to the admin as admin and add or change an Article:
       the event appears in the websockets client. A Product change does not,
       since alice may not see products.
    4. The admin is live: open a product as dave in one browser and change
       it as admin in another (a private window): dave's form warns him,
       and the product list counts the changes. The home page sends you a
       notification of your own (publish()).

  Logs: .demo/site.log and .demo/wsserver.log. Ctrl-C stops the demo.

EOF
wait -n "${pids[@]}"
