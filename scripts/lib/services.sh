# Redis and PostgreSQL for the tests. Sourced by scripts/test.
#
# Where a server already answers (the machine's own, or ZEROPAY_TEST_*_URL) it is used as is.
# Otherwise the Debian package is installed if missing and a private instance is started on a
# loopback port, recorded in $RUN_DIR, and stopped by PID when the test command exits.

RUN_DIR="${ZEROPAY_RUN_DIR:-/tmp/zeropay-test-services}"
STARTED_PIDS=()

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
    # wait_for SECONDS COMMAND...: poll until COMMAND succeeds, with a deadline.
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

redis_answers() { "$PY" -c "import redis,sys; redis.Redis.from_url(sys.argv[1], socket_timeout=2).ping()" "$1"; }
postgres_answers() {
    "$PY" - "$1" <<'PYEOF'
import asyncio, sys, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1], timeout=3)
    await conn.close()
asyncio.run(main())
PYEOF
}

ensure_redis() {
    local url="${ZEROPAY_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"
    if redis_answers "$url" 2>/dev/null; then
        export ZEROPAY_TEST_REDIS_URL="$url"
        return
    fi
    command -v redis-server >/dev/null || apt_install redis-server
    local port=6379
    port_free "$port" || port=56379
    mkdir -p "$RUN_DIR"
    say "starting a private Redis on 127.0.0.1:$port"
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --daemonize yes --pidfile "$RUN_DIR/redis.pid" --logfile "$RUN_DIR/redis.log" --dir "$RUN_DIR"
    export ZEROPAY_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
    wait_for 20 redis_answers "$ZEROPAY_TEST_REDIS_URL" || { say "Redis did not start"; return 1; }
    STARTED_PIDS+=("$(cat "$RUN_DIR/redis.pid")")
}

ensure_postgres() {
    local url="${ZEROPAY_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
    if postgres_answers "$url" 2>/dev/null; then
        export ZEROPAY_TEST_DATABASE_URL="$url"
        return
    fi
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
    local bin
    bin="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
    local port=5432
    port_free "$port" || port=55432
    local data="$RUN_DIR/pg"
    mkdir -p "$RUN_DIR"
    chmod 755 "$RUN_DIR"
    # PostgreSQL refuses to run as root; the Debian package created the postgres user.
    local as=()
    [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
    if [ ! -s "$data/PG_VERSION" ]; then
        mkdir -p "$data"
        [ "$(id -u)" = 0 ] && chown postgres: "$data"
        "${as[@]}" "$bin/initdb" -D "$data" -A trust -U postgres >/dev/null
    fi
    say "starting a private PostgreSQL on 127.0.0.1:$port"
    "${as[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
        -o "-p $port -c listen_addresses=127.0.0.1 -k $data" start >/dev/null
    export ZEROPAY_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:$port/postgres"
    wait_for 30 postgres_answers "$ZEROPAY_TEST_DATABASE_URL" || { say "PostgreSQL did not start"; return 1; }
    STARTED_PIDS+=("$(head -1 "$data/postmaster.pid")")
}

stop_started_services() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
}

ensure_test_binaries() {
    # The tests start their own Redis Cluster nodes and PgBouncer on free loopback ports.
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    [ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null || missing+=(pgbouncer)
    command -v promtool >/dev/null || missing+=(prometheus)  # promtool checks the alert rules
    command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)  # the stack
    command -v docker-compose >/dev/null || missing+=(docker-compose)  # validates deploy/compose
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    # The payer's pages are tested in a real browser: Debian's chromium. Where it cannot be
    # installed, the browser tier is skipped, and says so in capitals.
    if [ ! -x /usr/bin/chromium ]; then
        apt_install chromium || say "NO CHROMIUM: THE BROWSER TESTS WILL BE SKIPPED"
    fi
    # The picture picker shows emoji: a colour emoji font, as a payer's device has, so the
    # screenshots show what a payer sees.
    if ! ls /usr/share/fonts/truetype/noto/NotoColorEmoji* >/dev/null 2>&1; then
        apt_install fonts-noto-color-emoji || say "no emoji font: the pictures show as boxes"
    fi
    # The pages' accessibility is checked with axe-core, pinned, test-only, from the npm
    # registry into .run/npm (never committed, never served).
    ensure_axe_core
    # Debian's packages may start a PgBouncer (6432), a Prometheus (9090) and an HAProxy of
    # their own; the tests need only the binaries.
    local unit
    for unit in pgbouncer prometheus haproxy; do
        if command -v service >/dev/null && [ -f "/etc/init.d/$unit" ]; then
            service "$unit" stop >/dev/null 2>&1 || true
        fi
    done
}

AXE_CORE_VERSION=4.14.1

ensure_axe_core() {
    local target="$ROOT/.run/npm"
    if [ -f "$target/node_modules/axe-core/package.json" ] \
        && grep -q "\"version\": \"$AXE_CORE_VERSION\"" "$target/node_modules/axe-core/package.json"; then
        return 0
    fi
    command -v npm >/dev/null || apt_install npm || {
        say "NO NPM: THE ACCESSIBILITY CHECKS WILL BE SKIPPED"
        return 0
    }
    mkdir -p "$target"
    say "installing axe-core $AXE_CORE_VERSION (test-only) into $target"
    npm install --silent --no-save --no-audit --no-fund --prefix "$target" \
        "axe-core@$AXE_CORE_VERSION" >/dev/null \
        || say "AXE-CORE NOT INSTALLED: THE ACCESSIBILITY CHECKS WILL BE SKIPPED"
}

ensure_stack_binaries() {
    # What `zeropay-server stack up` runs: PostgreSQL's server binaries, PgBouncer, Redis and
    # HAProxy (no Docker).
    local missing=()
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    [ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null || missing+=(pgbouncer)
    command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    local unit
    for unit in pgbouncer haproxy; do  # the packages' own services; the stack runs its own
        if command -v service >/dev/null && [ -f "/etc/init.d/$unit" ]; then
            service "$unit" stop >/dev/null 2>&1 || true
        fi
    done
}
