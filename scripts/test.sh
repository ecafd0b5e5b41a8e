#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs and starts what the tests need
# (Redis on 127.0.0.1:6379, the MongoDB stand-in on 127.0.0.1:27017), then runs every
# unit and integration test. CI (.ci/run) runs exactly this.
#
# What this script starts, it stops when it ends (however it ends); a Redis or MongoDB
# that already answered is left running. The unit tier (`cargo test --lib`) needs
# neither and runs without this script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
# Installs Debian packages; a fresh machine's package lists may be empty or predate a
# package: they are read again once, then the install is tried again.
apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 ||
        { as_root apt-get update -qq &&
          as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}

redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }
mongo_up() { (exec 3<>/dev/tcp/127.0.0.1/27017) 2>/dev/null; }

redis_pid_file="$PWD/target/redis-ci.pid"
started_redis=0
started_mongo=0

cleanup() {
    local status=$?
    if [[ $started_mongo -eq 1 ]]; then
        scripts/mongo.sh stop || true
    fi
    if [[ $started_redis -eq 1 && -f "$redis_pid_file" ]]; then
        local pid
        pid="$(cat "$redis_pid_file")"
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            echo "redis stopped (pid $pid)"
        fi
        rm -f "$redis_pid_file"
    fi
    exit "$status"
}
trap cleanup EXIT

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "installing redis (Debian package redis-server)"
    apt_install redis-server
fi
mkdir -p target
if ! redis_up; then
    echo "starting redis on 127.0.0.1:6379"
    started_redis=1
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --logfile "$PWD/target/redis-ci.log" --pidfile "$redis_pid_file" --dir /tmp
    for _ in $(seq 1 50); do redis_up && break; sleep 0.1; done
    redis_up || { echo "redis did not start; see target/redis-ci.log" >&2; exit 1; }
fi
# The TLS tests reach the HTTPS listener with curl (HTTP/1.1 and h2).
if ! command -v curl >/dev/null; then
    apt_install curl
fi
# Virtualenvs need Debian's python3-venv beside python3 (ensurepip).
if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt_install python3 python3-venv
fi
if ! mongo_up; then
    started_mongo=1
    scripts/mongo.sh start
fi
# Fault tests kill and restart a stand-in of their own, from the same virtualenv.
scripts/mongo.sh install
# Python tools the tests run, in one virtualenv: the Prometheus client's own parser reads
# GET /metrics; schemathesis fuzzes the management API against GET /openapi.json. Each is
# checked (and installed) at its pinned version, so a venv made before one was added, or
# holding another version, gets it.
if [[ ! -x .tools-venv/bin/python ]]; then
    python3 -m venv .tools-venv
fi
tools_have() { .tools-venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null; }
for pin in prometheus-client==0.26.0 schemathesis==4.32.5; do
    if ! tools_have "${pin%%==*}" "${pin##*==}"; then
        echo "installing $pin into .tools-venv"
        .tools-venv/bin/pip install --quiet "$pin"
    fi
done

# The HAR schema validator the export tests run (npm har-schema with ajv).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "installing node and npm (Debian packages)"
    apt_install nodejs npm
fi
# playwright-core (the browser test) needs node 20 or later: say so rather than fail later.
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)'; then
    echo "node $(node --version) is too old for the browser test (playwright-core needs 20 or later);" \
         "install node 20+ (e.g. Debian 13's nodejs) and run this again" >&2
    exit 1
fi
npm ci --prefix tests/har --no-audit --no-fund --loglevel=error
# The management page's browser test (tests/it/ui.rs): Debian's chromium, driven by npm
# playwright-core (which downloads no browser of its own).
if [[ ! -x /usr/bin/chromium ]]; then
    echo "installing chromium (Debian package)"
    apt_install chromium
fi
npm ci --prefix tests/ui --no-audit --no-fund --loglevel=error

cargo fmt --all -- --check
# The unit tier reaches no server: where a private network namespace can be made, run
# it in one with no network at all, so a unit test that connects anywhere fails here.
if unshare -n true 2>/dev/null; then
    cargo test --locked --lib --no-run
    echo "unit tier, with no network:"
    unshare -n cargo test --locked --offline --lib
else
    echo "unshare -n is not permitted here: the unit tier runs with the network like the rest"
fi
cargo test --locked "$@"
# The fuzz targets, each for a bounded time from its committed corpus (FUZZ_SECONDS=0
# skips them, for a quick local run).
if [[ "${FUZZ_SECONDS:-30}" != 0 ]]; then
    scripts/fuzz.sh
fi
