#!/usr/bin/env python3
"""Soak: a recording at a fixed rate for minutes, through faults, accounted second by second.

heliosburn (a release build) runs the reader and the recorder on a private Redis in stream
mode (`redis_mode: stream`; Redis with `appendonly yes`, `appendfsync always`) and records
into the embedded store, in front of a small upstream. Clients send `--rate` requests a
second for `--minutes`. Meanwhile Redis is killed (-9) and started again twice, and the
store is stalled once for 30 s (another process holds its write lock). Every second the
script samples what the clients got answered, the recording's accounting (served, stored,
queued, lost) and the proxy's resident memory; at the end it waits for the backlog to
drain and prints served vs stored vs lost and the peak RSS.

Output: a CSV of the samples and a plot (PNG, `--png`, default bench/soak.png) of answered,
stored and lost over time and RSS over time, with the faults marked. matplotlib is
installed into a virtualenv of its own (/tmp/hb-bench-venv) from PyPI when missing.

Usage: bench/soak.py [--minutes 10] [--rate 200] [--binary target/release/heliosburn]
Needs: redis-server (Debian package), a release build (cargo build --release).
"""

import argparse
import csv
import http.client
import http.server
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = "/tmp/hb-bench-venv"

try:
    import matplotlib  # noqa: F401
except ImportError:
    if os.environ.get("HB_SOAK_VENV"):
        raise
    if not os.path.exists(os.path.join(VENV, "bin", "python")):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", "matplotlib"], check=True)
    os.environ["HB_SOAK_VENV"] = "1"
    os.execv(os.path.join(VENV, "bin", "python"), [os.path.join(VENV, "bin", "python")] + sys.argv)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as hb  # noqa: E402  (bench/run.py: Heliosburn, http, peak_rss_kib, ...)

UPSTREAM_PORT, REDIS_PORT, PROXY_PORT, MGMT_PORT = 19600, 19610, 19601, 19602


class Upstream(http.server.ThreadingHTTPServer):
    daemon_threads = True


class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, each kept-alive answer waits
    # out the client's delayed ACK (about 40 ms).
    disable_nagle_algorithm = True

    def do_GET(self):
        body = b'{"ok":true,"path":"%s"}' % self.path.encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Redis:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        hb.wait_port(REDIS_PORT)

    def kill(self):
        self.proc.kill()
        self.proc.wait()


class Load:
    """Clients that send `rate` GETs a second in all, each on a kept-alive connection."""

    def __init__(self, url_host, port, rate, clients=8):
        self.answered = 0
        self.errors = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(url_host, port, c, rate / clients), daemon=True)
                        for c in range(clients)]
        for t in self.threads:
            t.start()

    def client(self, host, port, c, rate):
        conn = None
        n, t0 = 0, time.monotonic()
        while not self.stop.is_set():
            due = t0 + n / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            n += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=60)
                conn.request("GET", f"/soak/{c}/{n}")
                r = conn.getresponse()
                r.read()
                with self.lock:
                    if r.status == 200:
                        self.answered += 1
                    else:
                        self.errors += 1
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.errors += 1
                conn = None

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(70)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def stall_store(db, seconds, done):
    """Holds the store's write lock for `seconds` (another process would, e.g. a backup)."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("BEGIN EXCLUSIVE")
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()
    done.set()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "heliosburn"))
    ap.add_argument("--png", default=os.path.join(ROOT, "bench", "soak.png"))
    args = ap.parse_args()
    total = args.minutes * 60
    # The faults, as fractions of the run: Redis killed at 20 % and 50 % (started again
    # 5 s later), the store stalled for 30 s from 70 %.
    events = [(0.2 * total, "redis"), (0.5 * total, "redis"), (0.7 * total, "store")]

    workdir = tempfile.mkdtemp(prefix="hb-soak-")
    hb.UPSTREAM_PORT = UPSTREAM_PORT
    upstream = Upstream(("127.0.0.1", UPSTREAM_PORT), Answer)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    redis = Redis(workdir)
    url = f"redis://127.0.0.1:{REDIS_PORT}/"
    modules = f"""pipeline:
  - {{name: TrafficReader, kwargs: {{redis_url: "{url}", redis_mode: stream}}}}
support:
  - {{name: TrafficRecorder, kwargs: {{redis_url: "{url}", redis_mode: stream}}}}
"""
    h = hb.Heliosburn(workdir, "proxy", args.binary, PROXY_PORT, MGMT_PORT, modules, "0-1")
    load = None
    try:
        rec = hb.http("POST", f"{h.mgmt}/recording", {"name": "soak"})["id"]
        hb.http("POST", f"{h.mgmt}/recording/{rec}/start", {})
        db = os.path.join(h.dir, "data", "heliosburn.sqlite3")
        load = Load("127.0.0.1", PROXY_PORT, args.rate)
        t0 = time.monotonic()
        samples, marks, pending = [], [], list(events)
        stall_done = threading.Event()
        while True:
            now = time.monotonic() - t0
            if now >= total:
                break
            while pending and now >= pending[0][0]:
                _, what = pending.pop(0)
                if what == "redis":
                    redis.kill()
                    marks.append((now, "Redis killed"))
                    threading.Timer(5, redis.start).start()
                else:
                    threading.Thread(target=stall_store, args=(db, 30, stall_done), daemon=True).start()
                    marks.append((now, "store stalled 30 s"))
            a = hb.http("GET", f"{h.mgmt}/recording/{rec}").get("accounting") or {}
            samples.append({"t": round(now, 1), "answered": load.answered, "errors": load.errors,
                            "served": a.get("served", 0), "stored": a.get("stored", 0),
                            "queued": a.get("queued", 0), "lost": a.get("lost", {}).get("total", 0),
                            "rss_mib": rss_kib(h.pid) / 1024})
            time.sleep(max(0.0, 1 - (time.monotonic() - t0 - now)))
        load.finish()
        answered, errors = load.answered, load.errors
        for attempt in range(60):  # a stalled store refuses the stop's own write (500)
            try:
                hb.http("POST", f"{h.mgmt}/recording/{rec}/stop", {})
                break
            except OSError:
                time.sleep(1)
        stopped = time.monotonic()
        deadline = stopped + 300
        while True:
            a = hb.http("GET", f"{h.mgmt}/recording/{rec}")["accounting"]
            if a["queued"] == 0 or time.monotonic() > deadline:
                break
            samples.append({"t": round(time.monotonic() - t0, 1), "answered": answered, "errors": errors,
                            "served": a["served"], "stored": a["stored"], "queued": a["queued"],
                            "lost": a["lost"]["total"], "rss_mib": rss_kib(h.pid) / 1024})
            time.sleep(0.5)
        drained = time.monotonic() - stopped
        samples.append({"t": round(time.monotonic() - t0, 1), "answered": answered, "errors": errors,
                        "served": a["served"], "stored": a["stored"], "queued": a["queued"],
                        "lost": a["lost"]["total"], "rss_mib": rss_kib(h.pid) / 1024})
        peak = hb.peak_rss_kib(h.pid) / 1024
        counters = hb.http("GET", f"{h.mgmt}/status")
    finally:
        if load is not None:
            load.stop.set()
        h.stop()
        redis.kill()
        upstream.shutdown()

    path = os.path.join(workdir, "soak.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(samples[0]))
        w.writeheader()
        w.writerows(samples)
    plot(samples, marks, total, args.png)
    print(f"soak: {args.minutes:g} min at {args.rate:g} req/s, stream mode on a private Redis, embedded store")
    print(f"faults: {', '.join(f'{m} at {t:.0f} s' for t, m in marks)}")
    print(f"clients: {answered} answered, {errors} errors (requests that got no answer)")
    print(f"recording: served {a['served']} = stored {a['stored']} + queued {a['queued']} + lost {a['lost']['total']} "
          f"({a['lost']}); queued was 0 {drained:.1f} s after the stop returned")
    print(f"proxy: peak RSS {peak:.1f} MiB; RSS {samples[0]['rss_mib']:.1f} MiB at the start, "
          f"{max(s['rss_mib'] for s in samples):.1f} MiB at most in the samples, {samples[-1]['rss_mib']:.1f} at the end")
    reader = next((m for m in counters["message"] if m["module"].startswith("TrafficReader")), {})
    print(f"reader counters: {reader.get('counters')}")
    print(f"samples: {path}; plot: {args.png}")


def plot(samples, marks, total, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    top.plot(t, [s["answered"] for s in samples], label="answered (clients)")
    top.plot(t, [s["stored"] for s in samples], label="stored (recording)")
    top.plot(t, [s["queued"] for s in samples], label="queued")
    top.plot(t, [s["lost"] for s in samples], label="lost")
    top.set_ylabel("exchanges")
    top.legend(loc="upper left")
    bottom.plot(t, [s["rss_mib"] for s in samples], color="tab:red")
    bottom.set_ylabel("proxy RSS (MiB)")
    bottom.set_xlabel("seconds")
    bottom.set_ylim(bottom=0)
    for ax in (top, bottom):
        ax.axvline(total, color="grey", linestyle=":")
        for x, label in marks:
            ax.axvline(x, color="black", linestyle="--", linewidth=0.8)
    for x, label in marks:
        top.annotate(label, (x, 0), rotation=90, fontsize=8, va="bottom", ha="right")
    fig.suptitle("heliosburn soak: recording in stream mode through Redis restarts and a store stall")
    fig.tight_layout()
    fig.savefig(png, dpi=100)


if __name__ == "__main__":
    main()
