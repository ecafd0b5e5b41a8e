#!/usr/bin/env python3
"""Reproducible proxy benchmark: direct to nginx, nginx as reverse proxy, heliosburn.

Every target fronts the same nginx upstream and gets the same wrk load; runs are
interleaved (round-robin over targets, several rounds) and medians reported, each as a
ratio to direct. The proxy under test is pinned to CPU 0, wrk and the upstream to CPU 1,
and the proxy's CPU time per request is read from /proc/PID/stat: the figure that noise
on a shared host moves least.

Usage: bench/run.py [--rounds 5] [--duration 10] [--connections 32] [--targets a,b]
Needs: wrk, nginx (Debian packages), a release build (cargo build --release).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "heliosburn")
CLK_TCK = os.sysconf("SC_CLK_TCK")
UPSTREAM_PORT, NGINX_PROXY_PORT = 19000, 19001
HB_EMPTY_PORT, HB_REC_PORT, HB_REDIS_PORT = 19002, 19003, 19004
MGMT_REC_PORT, MGMT_REDIS_PORT, MGMT_EMPTY_PORT = 19103, 19104, 19102
SMALL = b"x" * 100
BIG = b"y" * 65536


def free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if not free(port):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {timeout}s")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the line; after the ")" they are 12 and 13.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
        return json.loads(text) if text else None


class Nginx:
    """An nginx with one worker, pinned; `pid` is the worker (where the work happens)."""

    def __init__(self, workdir, name, server_block, cpu):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    keepalive_requests 1000000;
    {server_block}
}}
""")
        self.proc = subprocess.Popen(["taskset", "-c", str(cpu), "nginx", "-c", conf, "-p", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def pid(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        return int(out[0]) if out else self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Heliosburn:
    def __init__(self, workdir, name, port, mgmt, modules_yaml, cpu, settings_yaml=""):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        args = ["taskset", "-c", str(cpu), BIN, "--upstream", f"http://127.0.0.1:{UPSTREAM_PORT}",
                "--bind", f"127.0.0.1:{port}", "--mgmt", f"127.0.0.1:{mgmt}",
                "--data-dir", os.path.join(self.dir, "data"), "--log-level", "warn"]
        if modules_yaml is not None:
            path = os.path.join(self.dir, "modules.yaml")
            with open(path, "w") as f:
                f.write(modules_yaml)
            args += ["--modules", path]
        if settings_yaml:
            path = os.path.join(self.dir, "settings.yaml")
            with open(path, "w") as f:
                f.write(settings_yaml)
            args += ["--config", path]
        self.log = open(os.path.join(self.dir, "stderr.log"), "w")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)
        self.mgmt = f"http://127.0.0.1:{mgmt}"
        wait_port(port)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wrk(url, duration, connections, cpu):
    out = subprocess.run(["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
                          "--latency", url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)

    def lat(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    return {"rps": rps, "total": total, "p50_ms": lat(50), "p99_ms": lat(99),
            "errors": int(errors.group(1)) if errors else 0, "socket_errors": sock.group(1) if sock else ""}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--targets", default="direct,nginx,hb-empty,hb-record")
    ap.add_argument("--bodies", default="small,64k")
    ap.add_argument("--json", help="also write raw results here")
    args = ap.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install -y wrk nginx util-linux")
    if not os.path.exists(BIN):
        raise SystemExit(f"{BIN} is missing: run cargo build --release first")
    targets = args.targets.split(",")
    work = tempfile.mkdtemp(prefix="hb-bench-")
    os.chmod(work, 0o755)  # nginx workers run as nobody and must read the files
    with open(os.path.join(work, "small"), "wb") as f:
        f.write(SMALL)
    with open(os.path.join(work, "64k"), "wb") as f:
        f.write(BIG)

    procs = []
    try:
        upstream = Nginx(work, "upstream", f"""
    server {{ listen 127.0.0.1:{UPSTREAM_PORT} reuseport backlog=4096; root {work};
              location / {{ default_type application/octet-stream; }} }}""", cpu=1)
        procs.append(upstream)
        wait_port(UPSTREAM_PORT)
        pids = {"direct": None}
        urls = {"direct": f"http://127.0.0.1:{UPSTREAM_PORT}"}
        if "nginx" in targets:
            ng = Nginx(work, "nginx-proxy", f"""
    upstream up {{ server 127.0.0.1:{UPSTREAM_PORT}; keepalive 64; }}
    server {{ listen 127.0.0.1:{NGINX_PROXY_PORT} backlog=4096;
              location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
                            proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                            proxy_set_header X-Forwarded-Proto $scheme; proxy_buffering on; }} }}""", cpu=0)
            procs.append(ng)
            wait_port(NGINX_PROXY_PORT)
            urls["nginx"], pids["nginx"] = f"http://127.0.0.1:{NGINX_PROXY_PORT}", ng.pid
        hb = {}
        if "hb-empty" in targets:
            hb["hb-empty"] = Heliosburn(work, "hb-empty", HB_EMPTY_PORT, MGMT_EMPTY_PORT, "pipeline: []\nsupport: []\n", cpu=0)
            urls["hb-empty"] = f"http://127.0.0.1:{HB_EMPTY_PORT}"
        if "hb-record" in targets:
            hb["hb-record"] = Heliosburn(work, "hb-record", HB_REC_PORT, MGMT_REC_PORT, None, cpu=0)
            urls["hb-record"] = f"http://127.0.0.1:{HB_REC_PORT}"
        if "hb-redis" in targets:
            mongo_uri = os.environ.get("HB_BENCH_MONGO", "mongodb://127.0.0.1:27017/?directConnection=true")
            modules = f"""pipeline: [{{name: TrafficReader, kwargs: {{redis_host: 127.0.0.1, redis_port: 6379, redis_pub_queue: hb.bench}}}}]
support:
  - {{name: TrafficRecorder, kwargs: {{redis_host: 127.0.0.1, redis_port: 6379, redis_sub_queue: hb.bench, mongo_uri: '{mongo_uri}', mongo_db: hb_bench, mongo_collection: traffic}}}}
  - {{name: TrafficStreamer, kwargs: {{redis_host: 127.0.0.1, redis_port: 6379, redis_sub_queue: hb.bench, redis_key: hb.bench.window}}}}
"""
            hb["hb-redis"] = Heliosburn(work, "hb-redis", HB_REDIS_PORT, MGMT_REDIS_PORT, modules, cpu=0)
            urls["hb-redis"] = f"http://127.0.0.1:{HB_REDIS_PORT}"
        for name, h in hb.items():
            procs.append(h)
            pids[name] = h.pid
        order = [t for t in ["direct", "nginx", "hb-empty", "hb-record", "hb-redis"] if t in urls]
        results = {(t, b): [] for t in order for b in args.bodies.split(",")}
        for body in args.bodies.split(","):
            for t in order:  # warm-up: connections, pools, caches (not recorded)
                wrk(f"{urls[t]}/{body}", 2, args.connections, cpu=1)
        recordings = {}
        for name in ("hb-record", "hb-redis"):
            if name in hb:
                rec = http("POST", f"{hb[name].mgmt}/recording", {"name": f"bench {name}", "description": "bench/run.py"})
                http("POST", f"{hb[name].mgmt}/recording/{rec['id']}/start")
                recordings[name] = rec["id"]

        for body in args.bodies.split(","):
            for r in range(args.rounds):
                for t in order:
                    pid = pids[t]
                    before = cpu_seconds(pid) if pid else 0
                    res = wrk(f"{urls[t]}/{body}", args.duration, args.connections, cpu=1)
                    res["cpu_us_per_req"] = ((cpu_seconds(pid) - before) / res["total"] * 1e6) if pid else None
                    if res["errors"]:
                        raise SystemExit(f"{t}: {res['errors']} non-2xx responses; see {work}")
                    results[(t, body)].append(res)
                    print(f"round {r + 1} {body:5} {t:9} {res['rps']:9.0f} req/s  p50 {res['p50_ms']:.3f} ms  "
                          f"p99 {res['p99_ms']:.3f} ms  cpu/req {res['cpu_us_per_req'] or 0:.1f} us"
                          f"{'  errors ' + str(res['errors']) if res['errors'] else ''}", file=sys.stderr, flush=True)

        stored = {}
        for name, rid in recordings.items():
            rec = http("POST", f"{hb[name].mgmt}/recording/{rid}/stop")
            time.sleep(2)
            rec = http("GET", f"{hb[name].mgmt}/recording/{rid}")
            status = http("GET", f"{hb[name].mgmt}/status")
            stored[name] = {"count": rec["count"], "status": status["message"]["modules"]}

        rss = {t: peak_rss_kib(pids[t]) for t in order if pids[t]}
        print_report(order, args, results, rss, stored)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"results": {f"{t}/{b}": v for (t, b), v in results.items()}, "rss_kib": rss,
                           "stored": stored}, f, indent=1)
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)


def print_report(order, args, results, rss, stored):
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    print(f"\n{args.rounds} interleaved rounds of {args.duration}s, {args.connections} connections, wrk -t1; "
          f"proxy on CPU 0, wrk + upstream nginx on CPU 1. Medians.\n")
    for body in args.bodies.split(","):
        print(f"### {body} body\n")
        print("| target | req/s | vs direct | p50 ms | p99 ms | proxy CPU us/req | peak RSS MiB |")
        print("|---|---|---|---|---|---|---|")
        base = med([r["rps"] for r in results[("direct", body)]]) if ("direct", body) in results else None
        for t in order:
            rs = results[(t, body)]
            rps = med([r["rps"] for r in rs])
            cpu = med([r["cpu_us_per_req"] for r in rs]) if rs and rs[0]["cpu_us_per_req"] is not None else None
            print(f"| {t} | {rps:.0f} | {rps / base:.2f}x | {med([r['p50_ms'] for r in rs]):.3f} | "
                  f"{med([r['p99_ms'] for r in rs]):.3f} | {'-' if cpu is None else f'{cpu:.1f}'} | "
                  f"{'-' if t not in rss else f'{rss[t] / 1024:.1f}'} |")
        print()
    for name, s in stored.items():
        total = sum(r["total"] for (t, b), rs in results.items() if t == name for r in rs)
        print(f"{name}: wrk counted {total} completed requests during the recording; "
              f"the recording holds {s['count']} documents.")
        for m in s["status"]:
            print(f"  {m['module']}: {json.dumps(m['counters'])}")


if __name__ == "__main__":
    main()
