#!/usr/bin/env bash
# Starts or stops a MongoDB-compatible stand-in for the store's tests.
#
# Debian ships no MongoDB server, so the tests talk to nx-27017 (PyPI), a MongoDB wire
# protocol server kept in memory. It is installed into .mongo-venv on first use.
#   scripts/mongo.sh start   # idempotent: fine when it already runs
#   scripts/mongo.sh stop    # idempotent: fine when it does not run
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.mongo-venv"
run_dir="$root/target/mongo"
pid_file="$run_dir/nx-27017.pid"
log_file="$run_dir/nx-27017.log"
host=127.0.0.1
port=27017
version=0.8.1

port_answers() {
    # bash's /dev/tcp: no netcat needed.
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

# The pid the stand-in recorded, when that process still runs and is the stand-in (not
# another process that got the number after it died).
recorded_pid() {
    [[ -f "$pid_file" ]] || return 1
    local pid
    pid="$(cat "$pid_file")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q nx-27017 || return 1
    echo "$pid"
}

ensure_venv() {
    if [[ ! -x "$venv/bin/nx-27017" ]]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet "nx-27017==$version"
    fi
}

start() {
    if port_answers; then
        echo "mongo stand-in already answers on $host:$port"
        return 0
    fi
    ensure_venv
    mkdir -p "$run_dir"
    "$venv/bin/nx-27017" -d --host "$host" -p "$port" --data-dir memory \
        --pid-file "$pid_file" --log-file "$log_file"
    for _ in $(seq 1 100); do
        if port_answers; then
            echo "mongo stand-in answers on $host:$port (log: $log_file)"
            return 0
        fi
        sleep 0.1
    done
    echo "mongo stand-in did not answer on $host:$port within 10s; see $log_file" >&2
    exit 1
}

# Stops the stand-in this script started, by the pid it recorded; a server on the port
# that someone else started is left alone.
stop() {
    local pid
    if ! pid="$(recorded_pid)"; then
        echo "mongo stand-in is not running (no live pid in $pid_file)"
        rm -f "$pid_file"
        return 0
    fi
    kill "$pid"
    for _ in $(seq 1 50); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pid_file"
            echo "mongo stand-in stopped (pid $pid)"
            return 0
        fi
        sleep 0.1
    done
    echo "mongo stand-in (pid $pid) ignored SIGTERM for 5s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pid_file"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    # The stand-in installed without starting it (tests start private ones of their own).
    install) ensure_venv ;;
    *) echo "usage: $0 start|stop|install" >&2; exit 2 ;;
esac
