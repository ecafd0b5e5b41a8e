#!/usr/bin/env python3
"""What watching costs: requests/s and proxy CPU with 0, 1 and 10 `GET /traffic/stream`
watchers attached (issue 13).

Targets, in interleaved rounds (round-robin, rotated each round), all before the same
nginx upstream and under the same wrk load:

- `direct`: wrk to the upstream itself.
- `hb-empty`: heliosburn with the empty pipeline (nothing captured).
- `live-0`, `live-1`, `live-10`: one heliosburn with the default modules (reader,
  recorder, streamer; no recording runs, so nothing is stored) and 0, 1 or 10 watchers
  of `/traffic/stream` reading everything, as `curl -N` does, for the whole run.

The proxies are pinned to CPU 0; wrk, the upstream and the watchers (curl) to CPU 1.
Proxy CPU per request is utime+stime from /proc/PID/stat over the run; peak RSS is VmHWM
(reset before each run). Each watcher's bytes are counted, and the streamer's `lost` and
the watchers' `missed` events are reported: a watcher that fell behind shows there.

Usage: bench/sse.py [--rounds 3] [--duration 8] [--connections 32] [--bodies small,64k]
                    [--bin target/release/heliosburn] [--json FILE]
Needs: wrk, nginx, curl (Debian packages), a release build (cargo build --release).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import re
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import (BIN, BIG, SMALL, UPSTREAM_PORT, Heliosburn, cpu_seconds,  # noqa: E402
                 loadavg, peak_rss_kib, reset_peak_rss, settle, upstream_nginx, wrk)

HB_EMPTY, HB_LIVE, MGMT_OFFSET = 19410, 19411, 100
WATCHERS = {"live-0": 0, "live-1": 1, "live-10": 10}


def streamer(hb):
    return next(m for m in hb.modules() if m["module"] == "TrafficStreamer")["counters"]


class Watcher:
    """A `curl -N` of the stream on CPU 1, read as it comes by a thread of this script
    (pinned to CPU 1 too), counting exchange events and what `missed` events say."""

    EXCHANGE = b"event: exchange\n"
    MISSED = re.compile(rb'event: missed\ndata: \{"missed":(\d+)\}')

    def __init__(self, url, seconds):
        self.proc = subprocess.Popen(
            ["taskset", "-c", "1", "curl", "-sN", "--max-time", str(seconds), url],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.bytes = self.events = self.missed = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        carry = b""
        while chunk := self.proc.stdout.read1(1 << 16):
            self.bytes += len(chunk)
            data = carry + chunk
            # An event cut by the chunk's end is counted with the next chunk.
            end = data.rfind(b"\n\n")
            if end < 0:
                carry = data
                continue
            done, carry = data[:end + 2], data[end + 2:]
            self.events += done.count(self.EXCHANGE)
            self.missed += sum(int(n) for n in self.MISSED.findall(done))

    def finish(self):
        self.proc.wait()
        self.thread.join()
        return self.bytes, self.events, self.missed


def watch(hb, n, seconds):
    """`n` watchers reading the whole stream for `seconds`; returned once the proxy
    counts them all."""
    deadline = time.time() + 10
    # The last run's watchers leave first (the proxy sees their connections close).
    while streamer(hb)["watchers"] > 0:
        if time.time() > deadline:
            raise SystemExit("the last run's watchers are still connected")
        time.sleep(0.05)
    watchers = [Watcher(f"{hb.mgmt}/traffic/stream", seconds) for _ in range(n)]
    while streamer(hb)["watchers"] < n:
        if time.time() > deadline:
            raise SystemExit(f"only {streamer(hb)['watchers']} of {n} watchers connected")
        time.sleep(0.05)
    return watchers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--bodies", default="small,64k")
    ap.add_argument("--bin", default=BIN)
    ap.add_argument("--json")
    args = ap.parse_args()
    # The watchers' reading threads share CPU 1 with wrk and the upstream, off the proxy's.
    os.sched_setaffinity(0, {1})
    for tool in ("wrk", "nginx", "taskset", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install -y wrk nginx curl util-linux")
    work = tempfile.mkdtemp(prefix="hb-sse-bench-")
    os.chmod(work, 0o755)
    for name, data in (("small", SMALL), ("64k", BIG)):
        with open(os.path.join(work, name), "wb") as f:
            f.write(data)
    targets = ["direct", "hb-empty", *WATCHERS]
    results = {(t, b): [] for t in targets for b in args.bodies.split(",")}
    procs = []
    try:
        procs.append(upstream_nginx(work))
        empty = Heliosburn(work, "hb-empty", args.bin, HB_EMPTY, HB_EMPTY + MGMT_OFFSET,
                           "pipeline: []\nsupport: []\n", cpu=0)
        live = Heliosburn(work, "hb-live", args.bin, HB_LIVE, HB_LIVE + MGMT_OFFSET, None, cpu=0)
        procs += [empty, live]
        url = {"direct": f"http://127.0.0.1:{UPSTREAM_PORT}", "hb-empty": empty.url,
               **{t: live.url for t in WATCHERS}}
        proc_of = {"direct": None, "hb-empty": empty, **{t: live for t in WATCHERS}}
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            for body in args.bodies.split(","):
                for t in order:
                    hb = proc_of[t]
                    if hb:
                        settle(hb.pid)
                        reset_peak_rss(hb.pid)
                    n = WATCHERS.get(t, 0)
                    lost0 = streamer(live)["lost"] if hb is live else 0
                    watchers = watch(live, n, args.duration + 3) if n else []
                    cpu0 = cpu_seconds(hb.pid) if hb else 0
                    r = wrk(f"{url[t]}/{body}", args.duration, args.connections, 1)
                    if hb:
                        r["cpu_us"] = (cpu_seconds(hb.pid) - cpu0) / max(r["total"], 1) * 1e6
                        r["rss_mib"] = peak_rss_kib(hb.pid) / 1024
                    seen = [w.finish() for w in watchers]
                    if hb is live:
                        settle(live.pid)
                        r["streamer_lost"] = streamer(live)["lost"] - lost0
                    if seen:
                        r["watcher_events"] = [e for _, e, _ in seen]
                        r["watcher_missed"] = [m for _, _, m in seen]
                        r["watcher_mib"] = sum(b for b, _, _ in seen) / 2**20
                    results[(t, body)].append(r)
                    print(f"round {rnd + 1} {body:>5} {t:>9}: {r['rps']:>9,.0f} req/s"
                          + (f", {r['cpu_us']:.1f} µs/req" if hb else "")
                          + (f", watchers saw {min(r['watcher_events']):,}-{max(r['watcher_events']):,}"
                             f" events, missed {sum(r['watcher_missed']):,}" if seen else ""),
                          flush=True)
    finally:
        for p in procs:
            p.stop()
    print(f"\nload average after: {loadavg()}")
    print(f"\n| median of {args.rounds} | body | req/s | vs live-0 | proxy µs/req | vs live-0 | peak RSS MiB |"
          " watchers: events each / requests | missed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for body in args.bodies.split(","):
        base = results[("live-0", body)]
        base_rps = statistics.median(r["rps"] for r in base)
        base_cpu = statistics.median(r["cpu_us"] for r in base)
        for t in targets:
            rs = results[(t, body)]
            rps = statistics.median(r["rps"] for r in rs)
            row = [t, body, f"{rps:,.0f}", f"{rps / base_rps:.2f}x"]
            if "cpu_us" in rs[0]:
                cpu = statistics.median(r["cpu_us"] for r in rs)
                row += [f"{cpu:.1f}", f"{cpu / base_cpu:.2f}x", f"{max(r['rss_mib'] for r in rs):.0f}"]
            else:
                row += ["", "", ""]
            if "watcher_events" in rs[0]:
                ratio = statistics.median(min(r["watcher_events"]) / max(r["total"], 1) for r in rs)
                row += [f"{ratio:.3f}", f"{sum(sum(r['watcher_missed']) for r in rs):,}"]
            else:
                row += ["", ""]
            print("| " + " | ".join(row) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{t}/{b}": v for (t, b), v in results.items()}, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
