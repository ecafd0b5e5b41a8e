#!/usr/bin/env python3
"""Reproducible proxy benchmark: direct to nginx, nginx as reverse proxy, heliosburn.

Targets: `direct` (wrk to the nginx upstream), `nginx` (nginx as reverse proxy to it),
`hb-empty` (heliosburn, empty pipeline), `hb-record` (the default modules: recording into
the embedded store), `hb-redis` (TrafficReader to Redis, recorder to MongoDB; needs both),
`hb-playback` (TrafficPlayback answering from a recording, no upstream), `hb-redis-pub`
(TrafficReader publishing to Redis, no module reading), `hb-redis-sqlite` (the seed's
modules on Redis in one process, recording into the embedded store; needs Redis).

Every target fronts the same nginx upstream and gets the same wrk load; runs are
interleaved (round-robin over targets, several rounds) and medians reported, each as a
ratio to direct. The proxy under test is pinned to CPU 0, wrk and the upstream to CPU 1,
and the proxy's CPU time per request is read from /proc/PID/stat: the figure that noise
on a shared host moves least. The upstream nginx worker's CPU per request is read the same
way for every target (for direct: nginx serving the file itself).

Several heliosburn binaries can be compared in one run (`--bin LABEL=PATH`, repeatable;
the first is the baseline): every heliosburn target runs once per binary, in the same
rounds as direct and nginx, the binaries' order rotating from round to round. After each
heliosburn run the script waits until that proxy is idle (a recorder that fell behind
finishes on CPU 0 before the next target starts); each recording target records each
round into a recording of its own, whose stored count is compared with the requests wrk
completed and which is then deleted (64 KiB bodies would otherwise fill the disk).

hb-playback: before the rounds, a heliosburn with the default modules records one GET of
each body the run uses into its data directory, through the upstream; it is stopped (one
process per store) and the playback instance starts on that directory with
`pipeline: [TrafficPlayback {recording: ID}]`, checked to answer each body byte for byte.
wrk then gets from its recording what the others get from nginx.

PROXY_CPUS (default 0) sets the CPUs the proxy under test (nginx as proxy, every
heliosburn) may run on: `PROXY_CPUS=0,1` gives it both cores (wrk and the upstream stay
on CPU 1), so that work off the request path (the recorder, the store) can leave it.

Usage: bench/run.py [--rounds 5] [--duration 10] [--connections 32] [--targets a,b]
                    [--bin old=/path/heliosburn --bin new=/other/heliosburn]
Needs: wrk, nginx (Debian packages), a release build (cargo build --release).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "heliosburn")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXY_CPUS = os.environ.get("PROXY_CPUS", "0")
UPSTREAM_PORT, NGINX_PROXY_PORT = 19000, 19001
# heliosburn binary i, target kind k: proxy port 19010 + 10 i + k, management port + 100.
HB_KINDS = ["hb-empty", "hb-record", "hb-redis", "hb-playback", "hb-redis-pub", "hb-redis-sqlite"]
HB_BASE_PORT, MGMT_OFFSET = 19010, 100
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


def reset_peak_rss(pid):
    """Sets the process's peak RSS back to its current RSS, so each body gets its own peak."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def steal_seconds():
    """Time the hypervisor gave this VM's CPUs to others, from /proc/stat's `cpu` line."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[8]) / CLK_TCK


def others_cpu(exclude):
    """CPU seconds so far of every user-space process but ours, by pid: utime + stime and
    what its reaped children used (so a compiler that came and went shows in its cargo's).
    Kernel threads are left out: ksoftirqd and kworkers carry this benchmark's loopback."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in exclude:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[6]) & 0x00200000:  # PF_KTHREAD
            continue
        out[int(pid)] = sum(int(x) for x in fields[11:15]) / CLK_TCK
    return out


def others_delta(before, after):
    """CPU the other processes used between two `others_cpu` samples. The totals, not pid by
    pid: a process that exited meanwhile left its times to its parent's children time."""
    return sum(after.values()) - sum(before.values())


def settle(pid, timeout=60, window=0.5):
    """Waits until the process uses at most one clock tick in `window`; (seconds, CPU s)."""
    start, first = time.time(), cpu_seconds(pid)
    last = first
    while time.time() - start < timeout:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now - last <= 1 / CLK_TCK:
            break
        last = now
    return time.time() - start, cpu_seconds(pid) - first


def store_bytes(hb):
    """Bytes the embedded store's file holds in use (its pages less the free ones, the
    WAL's committed pages included): what a recording added, even where it reused space
    a deleted one left. None without an embedded store."""
    path = os.path.join(hb.dir, "data", "heliosburn.sqlite3")
    if not os.path.exists(path):
        return None
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        size, pages, free = (con.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_size", "page_count", "freelist_count"))
        return (pages - free) * size
    finally:
        con.close()


def http(method, url, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
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
        if getattr(self, "_worker", None) is None:
            out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
            if not out:
                return self.proc.pid
            self._worker = int(out[0])
        return self._worker

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Heliosburn:
    """heliosburn on 127.0.0.1:PORT before the nginx upstream, or `upstream` with the flags
    `extra` (bench/tls.py: TLS on both sides); its ready line goes to stdout.log."""

    def __init__(self, workdir, name, binary, port, mgmt, modules_yaml, cpu, settings_yaml="", log="stderr.log",
                 upstream=None, extra=(), url=None):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        for p in (port, mgmt):
            if not free(p):
                raise SystemExit(f"127.0.0.1:{p} is taken; stop what listens there first")
        upstream = upstream or f"http://127.0.0.1:{UPSTREAM_PORT}"
        args = ["taskset", "-c", str(cpu), binary, "--upstream", upstream, *extra,
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
        self.log = open(os.path.join(self.dir, log), "w")
        self.out = os.path.join(self.dir, "stdout.log")
        self.proc = subprocess.Popen(args, stdout=open(self.out, "w"), stderr=self.log)
        self.mgmt = f"http://127.0.0.1:{mgmt}"
        self.url = url or f"http://127.0.0.1:{port}"
        wait_port(port)
        wait_port(mgmt)

    def modules(self):
        """Module statuses; `message` is `{proxy, modules}` before the typed module system
        and the list itself after it."""
        m = http("GET", f"{self.mgmt}/status")["message"]
        return m["modules"] if isinstance(m, dict) else m

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def playback(workdir, name, binary, port, mgmt, bodies, cpu):
    """A heliosburn answering from a recording of one GET of each body (`bodies`: name ->
    bytes). The recording is made through the upstream by a heliosburn with the default
    modules on the same data directory, on the same ports, stopped before the playback
    one starts: only one process may use a store."""
    rec = Heliosburn(workdir, name, binary, port, mgmt, None, cpu, log="record.log")
    try:
        rid = http("POST", f"{rec.mgmt}/recording", {"name": f"bench playback {name}", "description": "bench/run.py"})["id"]
        http("POST", f"{rec.mgmt}/recording/{rid}/start", {})
        for body in bodies:
            with urllib.request.urlopen(f"{rec.url}/{body}", timeout=30) as r:
                r.read()
        http("POST", f"{rec.mgmt}/recording/{rid}/stop", {}, timeout=120)
        count = http("GET", f"{rec.mgmt}/recording/{rid}")["count"]
    finally:
        rec.stop()
    if count != len(bodies) or rec.proc.returncode != 0:
        raise SystemExit(f"{name}: recording {rid} holds {count} exchanges, not {len(bodies)}; "
                         f"the recorder exited with {rec.proc.returncode}; see {rec.dir}")
    pb = Heliosburn(workdir, name, binary, port, mgmt,
                    f"pipeline: [{{name: TrafficPlayback, kwargs: {{recording: '{rid}'}}}}]\nsupport: []\n", cpu)
    for body, want in bodies.items():
        with urllib.request.urlopen(f"{pb.url}/{body}", timeout=30) as r:
            got = r.read()
        if got != want:
            pb.stop()
            raise SystemExit(f"{name}: playback answered /{body} with {len(got)} bytes, not the {len(want)} recorded")
    return pb


def upstream_nginx(work):
    """The upstream every target fronts: nginx serving `work`'s files on UPSTREAM_PORT,
    pinned to CPU 1; returned once it listens."""
    upstream = Nginx(work, "upstream", f"""
    server {{ listen 127.0.0.1:{UPSTREAM_PORT} reuseport backlog=4096; root {work};
              location / {{ default_type application/octet-stream; }} }}""", cpu=1)
    wait_port(UPSTREAM_PORT)
    return upstream


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


KIND_TITLE = {"hb-empty": "empty pipeline", "hb-record": "recording (embedded)",
              "hb-redis": "TrafficReader to Redis, recorder to MongoDB",
              "hb-playback": "playback (TrafficPlayback)",
              "hb-redis-pub": "TrafficReader to Redis, nobody reading",
              "hb-redis-sqlite": "the seed's modules on Redis, recording into SQLite"}
RECORDING_KINDS = ("hb-record", "hb-redis", "hb-redis-sqlite")
COUNTED_KINDS = (*RECORDING_KINDS, "hb-playback", "hb-redis-pub")  # module counters reported per body


def parse_bins(specs):
    """`LABEL=PATH` options, in order (the first is the baseline); default: this tree's build."""
    bins = []
    for spec in specs or [f"heliosburn={BIN}"]:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path or "/" in label:
            raise SystemExit(f"--bin {spec}: expected LABEL=PATH (a label without '/')")
        if label in (l for l, _ in bins):
            raise SystemExit(f"--bin {spec}: label {label} given twice")
        path = os.path.abspath(path)
        if not os.access(path, os.X_OK):
            raise SystemExit(f"{path} is missing: build it first (cargo build --release)")
        bins.append((label, path))
    return bins


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--targets", default="direct,nginx,hb-empty,hb-record")
    ap.add_argument("--bodies", default="small,64k")
    ap.add_argument("--bin", action="append", metavar="LABEL=PATH",
                    help="a heliosburn binary to run every hb-* target with (repeatable; the first is "
                         "the baseline); default heliosburn=target/release/heliosburn")
    ap.add_argument("--json", help="also write raw results here")
    args = ap.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install -y wrk nginx util-linux")
    bins = parse_bins(args.bin)
    targets = args.targets.split(",")
    unknown = set(targets) - {"direct", "nginx", *HB_KINDS}
    if unknown:
        raise SystemExit(f"unknown targets {', '.join(sorted(unknown))}; known: direct, nginx, {', '.join(HB_KINDS)}")
    kinds = [k for k in HB_KINDS if k in targets]
    bodies = args.bodies.split(",")
    work = tempfile.mkdtemp(prefix="hb-bench-")
    os.chmod(work, 0o755)  # nginx workers run as nobody and must read the files
    with open(os.path.join(work, "small"), "wb") as f:
        f.write(SMALL)
    with open(os.path.join(work, "64k"), "wb") as f:
        f.write(BIG)

    procs = []
    try:
        upstream = upstream_nginx(work)
        procs.append(upstream)
        pids = {"direct": None}
        urls = {"direct": f"http://127.0.0.1:{UPSTREAM_PORT}"}
        if "nginx" in targets:
            ng = Nginx(work, "nginx-proxy", f"""
    upstream up {{ server 127.0.0.1:{UPSTREAM_PORT}; keepalive 64; }}
    server {{ listen 127.0.0.1:{NGINX_PROXY_PORT} backlog=4096;
              location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
                            proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                            proxy_set_header X-Forwarded-Proto $scheme; proxy_buffering on; }} }}""", cpu=PROXY_CPUS)
            procs.append(ng)
            wait_port(NGINX_PROXY_PORT)
            urls["nginx"], pids["nginx"] = f"http://127.0.0.1:{NGINX_PROXY_PORT}", ng.pid
        mongo_uri = os.environ.get("HB_BENCH_MONGO", "mongodb://127.0.0.1:27017/?directConnection=true")
        modules_of = {
            "hb-empty": "pipeline: []\nsupport: []\n",
            "hb-record": None,  # the default: TrafficReader, TrafficRecorder, TrafficStreamer embedded
            "hb-redis": f"""pipeline: [{{name: TrafficReader, kwargs: {{redis_host: 127.0.0.1, redis_port: 6379, redis_pub_queue: hb.bench}}}}]
support:
  - {{name: TrafficRecorder, kwargs: {{redis_host: 127.0.0.1, redis_port: 6379, redis_sub_queue: hb.bench, mongo_uri: '{mongo_uri}', mongo_db: hb_bench, mongo_collection: traffic}}}}
  - {{name: TrafficStreamer, kwargs: {{redis_host: 127.0.0.1, redis_port: 6379, redis_sub_queue: hb.bench, redis_key: hb.bench.window}}}}
""",
            "hb-redis-pub": """pipeline: [{name: TrafficReader, kwargs: {redis_host: 127.0.0.1, redis_port: 6379, redis_pub_queue: hb.bench.pub}}]
support: []
""",
            "hb-redis-sqlite": """pipeline: [{name: TrafficReader, kwargs: {redis_host: 127.0.0.1, redis_port: 6379, redis_pub_queue: hb.bench.sq}}]
support:
  - {name: TrafficRecorder, kwargs: {redis_host: 127.0.0.1, redis_port: 6379, redis_sub_queue: hb.bench.sq}}
  - {name: TrafficStreamer, kwargs: {redis_host: 127.0.0.1, redis_port: 6379, redis_sub_queue: hb.bench.sq, redis_key: hb.bench.sq.window}}
""",
        }
        hb, kind_of, label_of = {}, {}, {}
        for i, (label, path) in enumerate(bins):
            for kind in kinds:
                t = f"{label}/{kind}"
                port = HB_BASE_PORT + 10 * i + HB_KINDS.index(kind)
                if kind == "hb-playback":
                    served = {"small": SMALL, "64k": BIG}
                    hb[t] = playback(work, f"{label}-{kind}", path, port, port + MGMT_OFFSET,
                                     {b: served[b] for b in bodies}, cpu=PROXY_CPUS)
                else:
                    # Redis channels and keys of each binary's own: an idle heliosburn must
                    # not read (and spend CPU 0 on) the traffic of the one under test.
                    modules = modules_of[kind] and modules_of[kind].replace("hb.bench", f"hb.bench.{label}")
                    hb[t] = Heliosburn(work, f"{label}-{kind}", path, port, port + MGMT_OFFSET, modules, cpu=PROXY_CPUS)
                procs.append(hb[t])
                urls[t], pids[t], kind_of[t], label_of[t] = hb[t].url, hb[t].pid, kind, label
        # This script (whose children time holds wrk's) and what it started.
        ours = {os.getpid(), *(p.pid for p in procs), *(p.proc.pid for p in procs)}

        def order_for(r):  # direct, nginx, then the binaries, rotated by round
            rot = bins[r % len(bins):] + bins[:r % len(bins)]
            return [t for t in ("direct", "nginx") if t in urls] + [f"{l}/{k}" for l, _ in rot for k in kinds]

        order = order_for(0)
        results = {(t, b): [] for t in order for b in bodies}
        counters = {}
        load = {"start": loadavg()}
        for body in bodies:
            for t in order:  # warm-up: connections, pools, caches (not recorded)
                wrk(f"{urls[t]}/{body}", 2, args.connections, cpu=1)
                if t in hb:
                    settle(pids[t])
            for t in order:
                if pids[t]:
                    reset_peak_rss(pids[t])
            before_counters = {t: hb[t].modules() for t in hb if kind_of[t] in COUNTED_KINDS}
            for r in range(args.rounds):
                for t in order_for(r):
                    pid = pids[t]
                    rid = None
                    if kind_of.get(t) in RECORDING_KINDS:
                        rid = http("POST", f"{hb[t].mgmt}/recording",
                                   {"name": f"bench {t} {body} {r + 1}", "description": "bench/run.py"})["id"]
                        http("POST", f"{hb[t].mgmt}/recording/{rid}/start")
                        disk0 = store_bytes(hb[t])
                    before, t0 = cpu_seconds(pid) if pid else 0, time.time()
                    up_before = cpu_seconds(upstream.pid)
                    others0, steal0 = others_cpu(ours), steal_seconds()
                    res = wrk(f"{urls[t]}/{body}", args.duration, args.connections, cpu=1)
                    after, elapsed = cpu_seconds(pid) if pid else 0, time.time() - t0
                    others1, steal1 = others_cpu(ours), steal_seconds()
                    res["cpu_us_per_req"] = ((after - before) / res["total"] * 1e6) if pid else None
                    # The upstream nginx worker's: serving the file (direct), or its share
                    # behind a proxy (none for playback, which answers without it).
                    res["upstream_cpu_us_per_req"] = (cpu_seconds(upstream.pid) - up_before) / res["total"] * 1e6
                    # CPU the machine's other processes took meanwhile, % of one core (of 2).
                    res["other_cpu_pct"] = 100 * others_delta(others0, others1) / elapsed
                    res["steal_pct"] = 100 * (steal1 - steal0) / elapsed
                    if t in hb:
                        settle_s, settle_cpu = settle(pid)
                        res["settle_s"], res["settle_cpu_us_per_req"] = settle_s, settle_cpu / res["total"] * 1e6
                    if rid:
                        http("POST", f"{hb[t].mgmt}/recording/{rid}/stop", timeout=120)
                        res["stored"] = http("GET", f"{hb[t].mgmt}/recording/{rid}")["count"]
                        disk1 = store_bytes(hb[t])
                        if disk0 is not None and disk1 is not None and res["stored"]:
                            res["disk_bytes_per_exchange"] = (disk1 - disk0) / res["stored"]
                        http("DELETE", f"{hb[t].mgmt}/recording/{rid}", timeout=300)
                        settle(pid)
                    if res["errors"]:
                        raise SystemExit(f"{t}: {res['errors']} non-2xx responses; see {work}")
                    results[(t, body)].append(res)
                    print(f"round {r + 1} {body:5} {t:16} {res['rps']:9.0f} req/s  p50 {res['p50_ms']:.3f} ms  "
                          f"p99 {res['p99_ms']:.3f} ms  cpu/req {res['cpu_us_per_req'] or 0:.1f} us  "
                          f"upstream {res['upstream_cpu_us_per_req']:.1f} us  "
                          f"other {res['other_cpu_pct']:.0f}%"
                          f"{'  stored ' + str(res['stored']) + ' of ' + str(res['total']) if rid else ''}"
                          f"{'  errors ' + str(res['errors']) if res['errors'] else ''}", file=sys.stderr, flush=True)
            for t in before_counters:
                counters[(t, body)] = counter_deltas(before_counters[t], hb[t].modules())
            for t in hb:
                results[(t, body)][0]["peak_rss_kib"] = peak_rss_kib(pids[t])
            if pids.get("nginx"):
                results[("nginx", body)][0]["peak_rss_kib"] = peak_rss_kib(pids["nginx"])
        load["end"] = loadavg()

        print_report(order, args, bins, kind_of, label_of, results, counters, load)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"bins": dict(bins), "load": load,
                           "results": {f"{t}|{b}": v for (t, b), v in results.items()},
                           "counters": {f"{t}|{b}": v for (t, b), v in counters.items()}}, f, indent=1)
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)


def counter_deltas(before, after):
    """Per module, how much each numeric counter moved (counters are cumulative)."""
    old = {m["module"]: m.get("counters") or {} for m in before}
    out = {}
    for m in after:
        b = old.get(m["module"], {})
        out[m["module"]] = {k: v - b.get(k, 0) for k, v in (m.get("counters") or {}).items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return out


def print_report(order, args, bins, kind_of, label_of, results, counters, load):
    med = lambda xs: statistics.median(xs) if xs else float("nan")

    def spread(xs, f, sep="-"):
        return f"{f(med(xs))} ({f(min(xs))}{sep}{f(max(xs))})" if len(xs) > 1 else f(med(xs))

    title = lambda t: f"{label_of[t]}, {KIND_TITLE[kind_of[t]]}" if t in kind_of else t
    print(f"\n{args.rounds} interleaved rounds of {args.duration}s, {args.connections} connections, wrk -t1; "
          f"proxy on CPU {PROXY_CPUS}, wrk + upstream nginx on CPU 1. Medians, (min-max) over the rounds. "
          f"Load average {load['start']} at the start, {load['end']} at the end.\n")
    for label, path in bins:
        print(f"- {label}: {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
    print()
    for body in args.bodies.split(","):
        rs_of = lambda t: results[(t, body)]
        m = lambda t, k: med([r[k] for r in rs_of(t)]) if (t, body) in results else None
        direct, nginx = m("direct", "rps"), m("nginx", "rps")
        print(f"### {body} body\n")
        print("| target | req/s | vs direct | vs nginx | vs empty | p50 ms | p99 ms | proxy CPU us/req | upstream CPU us/req | peak RSS MiB "
              "| other load % |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for t in order:
            rs = rs_of(t)
            rps = m(t, "rps")
            empty = m(f"{label_of[t]}/hb-empty", "rps") if t in kind_of else None
            cpu = [r["cpu_us_per_req"] for r in rs if r["cpu_us_per_req"] is not None]
            up = [r["upstream_cpu_us_per_req"] for r in rs if r.get("upstream_cpu_us_per_req") is not None]
            rss = rs[0].get("peak_rss_kib")
            print(f"| {title(t)} | {spread([r['rps'] for r in rs], lambda v: f'{v:.0f}')} | {rps / direct:.2f}x | "
                  f"{'-' if nginx is None or t == 'direct' else f'{rps / nginx:.2f}x'} | "
                  f"{'-' if empty is None else f'{rps / empty:.2f}x'} | {m(t, 'p50_ms'):.3f} | "
                  f"{spread([r['p99_ms'] for r in rs], lambda v: f'{v:.3f}')} | "
                  f"{spread(cpu, lambda v: f'{v:.1f}') if cpu else '-'} | "
                  f"{spread(up, lambda v: f'{v:.1f}') if up else '-'} | "
                  f"{'-' if rss is None else f'{rss / 1024:.1f}'} | "
                  f"{spread([r['other_cpu_pct'] for r in rs], lambda v: f'{v:.0f}')} |")
        print()
        if len(bins) > 1:
            print("Binaries against each other, each against every one listed before it (ratio of medians; CPU also "
                  "as the difference of medians, and as the median (min to max) of the same-round differences):\n")
            print("| target | against | req/s | p99 ms | proxy CPU us/req | CPU, same-round difference |")
            print("|---|---|---|---|---|---|")
            for kind in dict.fromkeys(kind_of.values()):
                for j, (label, _) in enumerate(bins):
                    for base, _ in bins[:j]:
                        t, b = f"{label}/{kind}", f"{base}/{kind}"
                        paired = [x["cpu_us_per_req"] - y["cpu_us_per_req"] for x, y in zip(rs_of(t), rs_of(b))]
                        print(f"| {title(t)} | {base} | {m(t, 'rps') / m(b, 'rps'):.3f}x | "
                              f"{m(t, 'p99_ms') / m(b, 'p99_ms'):.3f}x | "
                              f"{m(t, 'cpu_us_per_req') / m(b, 'cpu_us_per_req'):.3f}x "
                              f"({m(t, 'cpu_us_per_req') - m(b, 'cpu_us_per_req'):+.1f}) | "
                              f"{spread(paired, lambda v: f'{v:+.1f}', ' to ')} |")
            print()
        for t in order:
            if kind_of.get(t) == "hb-playback":
                rs = rs_of(t)
                print(f"- {title(t)}: wrk completed {sum(r['total'] for r in rs)} requests over the rounds; "
                      f"the module's counters moved by:")
                for name, c in counters.get((t, body), {}).items():
                    # `answers` is how many the recording holds, not a counter.
                    print(f"  {name}: {json.dumps({k: v for k, v in c.items() if k != 'answers'})}")
            if kind_of.get(t) not in RECORDING_KINDS:
                continue
            rs = rs_of(t)
            served, stored = sum(r["total"] for r in rs), sum(r["stored"] for r in rs)
            diffs = [r["stored"] - r["total"] for r in rs]
            print(f"- {title(t)}: wrk completed {served} requests, the recordings hold {stored} exchanges "
                  f"({stored / served:.1%}; stored - completed per round {min(diffs)} to {max(diffs)}); "
                  f"idle again {med([r['settle_s'] for r in rs]):.1f} s after wrk (median), "
                  f"{med([r['settle_cpu_us_per_req'] for r in rs]):.1f} us/req more CPU meanwhile."
                  + (f" On disk: {med([r['disk_bytes_per_exchange'] for r in rs]):.0f} bytes per stored exchange "
                     f"(median; the store file's pages in use)." if all('disk_bytes_per_exchange' in r for r in rs) else ""))
            for name, c in counters.get((t, body), {}).items():
                moved = {k: v for k, v in c.items() if v}
                print(f"  {name}: {json.dumps(moved)}")
        other = [r["other_cpu_pct"] for t in order for r in rs_of(t)]
        steal = [r["steal_pct"] for t in order for r in rs_of(t)]
        busy = [r["other_cpu_pct"] > 10 for t in order for r in rs_of(t)]
        print(f"- Other processes on the machine during the runs (% of one core): median {med(other):.0f} %, "
              f"max {max(other):.0f} %, above 10 % in {sum(busy)} of {len(busy)} runs; steal median "
              f"{med(steal):.1f} %, max {max(steal):.1f} %.\n")


if __name__ == "__main__":
    main()
