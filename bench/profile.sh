#!/usr/bin/env bash
# Where the proxy's CPU goes per exchange: perf samples of a release heliosburn (pinned
# to CPU 0) under wrk load (CPU 1) against an nginx upstream (CPU 1), for one setup and
# one body, and the report of the functions that took the most, by self time and by the
# module they belong to. The baseline for issue 10 (recording at proxy speed).
#
# Usage: bench/profile.sh [empty|record] [small|64k] [SECONDS]
# Needs: perf (Debian linux-perf), wrk, nginx, a release build (cargo build --release).
# Writes target/profile/SETUP-BODY.{data,txt}; stops everything it starts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

setup="${1:-record}"
body="${2:-small}"
seconds="${3:-10}"
bin="$PWD/target/release/heliosburn"
out="$PWD/target/profile"
for tool in perf wrk nginx taskset; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y linux-perf wrk nginx" >&2; exit 1; }
done
[[ -x "$bin" ]] || { echo "build it first: cargo build --release" >&2; exit 1; }
mkdir -p "$out"
work="$(mktemp -d /tmp/hb-profile-XXXXXX)"
chmod 755 "$work"
head -c 100 /dev/zero | tr '\0' x >"$work/small"
head -c 65536 /dev/zero | tr '\0' y >"$work/64k"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

up=19200; proxy=19201; mgmt=19202
cat >"$work/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
       client_body_temp_path $work/b; proxy_temp_path $work/p; fastcgi_temp_path $work/f;
       uwsgi_temp_path $work/u; scgi_temp_path $work/s;
       server { listen 127.0.0.1:$up backlog=4096; root $work;
                location / { default_type application/octet-stream; } } }
EOF
taskset -c 1 nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)

modules=()
if [[ "$setup" == empty ]]; then
    printf 'pipeline: []\nsupport: []\n' >"$work/modules.yaml"
    modules=(--modules "$work/modules.yaml")
fi
taskset -c 0 "$bin" --upstream "http://127.0.0.1:$up" --bind "127.0.0.1:$proxy" \
    --mgmt "127.0.0.1:$mgmt" --data-dir "$work/data" --log-level warn "${modules[@]}" \
    >/dev/null 2>"$work/hb.log" &
hb=$!
pids+=("$hb")
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$proxy/small" && break
    sleep 0.1
done
if [[ "$setup" == record ]]; then
    j='content-type: application/json'
    id=$(curl -sf -XPOST -H "$j" "http://127.0.0.1:$mgmt/recording" -d '{"name":"profile"}' \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
    curl -sf -XPOST -H "$j" "http://127.0.0.1:$mgmt/recording/$id/start" -d '{}' >/dev/null
fi

# Warm up, then sample only the proxy while wrk runs.
taskset -c 1 wrk -t1 -c32 -d2s "http://127.0.0.1:$proxy/$body" >/dev/null
perf record -F 1999 -g --call-graph dwarf,16384 -p "$hb" -o "$out/$setup-$body.data" -- sleep "$seconds" \
    >/dev/null 2>&1 &
perf_pid=$!
taskset -c 1 wrk -t1 -c32 -d"${seconds}s" "http://127.0.0.1:$proxy/$body" | tee "$out/$setup-$body.wrk"
wait "$perf_pid"

{
    echo "# heliosburn $setup pipeline, $body body, ${seconds}s under wrk -c32 (perf -F 1999, dwarf)"
    echo
    echo "## By component"
    perf script -i "$out/$setup-$body.data" -F ip,sym,dso 2>/dev/null | bench/profile_components.py
    echo
    echo "## Self time by function (top 40)"
    perf report -i "$out/$setup-$body.data" --no-children --sort symbol --stdio -g none \
        --percent-limit 0.5 2>/dev/null | grep -E '^ +[0-9]' | sed -E 's/[ -]+$//' | head -40
    echo
    echo "## Self time by library (top 15)"
    perf report -i "$out/$setup-$body.data" --no-children --sort dso --stdio -g none \
        2>/dev/null | grep -E '^ +[0-9]' | sed -E 's/[ -]+$//' | head -15
} >"$out/$setup-$body.txt"
echo "report: $out/$setup-$body.txt"
