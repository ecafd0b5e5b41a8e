#!/usr/bin/env python3
"""The recorder alone: how many messages a second a heliosburn that only records (an
empty pipeline, `support: [TrafficRecorder]` reading a Redis channel) takes into the
embedded store.

A private Redis (pinned to CPU 1, no persistence, no output-buffer limit for subscribers
so that a recorder slower than the publisher gets everything late rather than being cut
off) and one heliosburn (pinned to PROXY_CPUS, default CPU 0) with a recording running.
The script writes the seed's traffic messages for N transactions (a request event, then
the response event with the request again, as TrafficReader publishes them) as a
`redis-cli --pipe` file, publishes it at full speed (CPU 1), and polls the recorder's
counters until every message is accounted for. Reported: messages/s from the first
publish to the last message stored, the publisher's own rate (it must be faster, or the
figure is the publisher's), the recorder's CPU per message, its peak RSS, and the
recording's stored count against the transactions sent, read from the API.

The proxy listener of that heliosburn is bound but idle (nothing is proxied).

Usage: bench/ingest_redis.py [--transactions 200000] [--body 100] [--runs 3] [--bin PATH]
Needs: redis-server and redis-cli (Debian redis), a release build.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as hb  # noqa: E402  (bench/run.py: Heliosburn, cpu_seconds, peak_rss_kib, ...)

REDIS_PORT = 19500
PROXY_PORT, MGMT_PORT = 19501, 19502
CHANNEL = "hb.bench.ingest"


def resp(*parts):
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def messages(transactions, body):
    """The RESP file's bytes: two PUBLISH commands per transaction."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    headers = {"host": ["127.0.0.1"], "user-agent": ["wrk"], "accept": ["*/*"]}
    request = {"createdAt": now, "clientProtocol": "HTTP/1.1", "method": "GET", "uri": "/small?a=1",
               "path": "/small", "args": {"a": ["1"]}, "headers": headers}
    response = {"createdAt": now, "clientProtocol": "HTTP/1.1", "statusCode": 200, "statusDescription": "OK",
                "headers": {"content-type": ["application/octet-stream"], "content-length": [str(body)],
                            "server": ["nginx"], "date": ["Thu, 03 Dec 2026 17:00:00 GMT"]},
                "body": {"size": body, "truncated": False, "encoding": "utf8", "data": "x" * body}}
    chan = CHANNEL.encode()
    out = []
    for _ in range(transactions):
        ids = {"transaction_id": str(uuid.uuid4()), "request_id": str(uuid.uuid4()),
               "response_id": str(uuid.uuid4())}
        out.append(resp(b"PUBLISH", chan, json.dumps({**ids, "request": request}).encode()))
        out.append(resp(b"PUBLISH", chan, json.dumps({**ids, "request": request, "response": response}).encode()))
    return b"".join(out)


def recorder_counters(h):
    for m in h.modules():
        if m.get("module", "").startswith("TrafficRecorder"):
            return m.get("counters", {})
    raise SystemExit(f"no TrafficRecorder in {h.modules()}")


def one_run(workdir, binary, transactions, body, run, perf_out=None):
    redis_dir = os.path.join(workdir, f"redis-{run}")
    os.makedirs(redis_dir)
    redis = subprocess.Popen(["taskset", "-c", "1", "redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", redis_dir,
                              "--client-output-buffer-limit", "pubsub 0 0 0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    h = None
    try:
        hb.wait_port(REDIS_PORT)
        modules = f"""pipeline: []
support:
  - {{name: TrafficRecorder, kwargs: {{redis_host: 127.0.0.1, redis_port: {REDIS_PORT}, redis_sub_queue: {CHANNEL}}}}}
"""
        h = hb.Heliosburn(workdir, f"recorder-{run}", binary, PROXY_PORT, MGMT_PORT, modules, hb.PROXY_CPUS)
        rec = hb.http("POST", f"{h.mgmt}/recording", {"name": f"ingest-{run}"})["id"]
        hb.http("POST", f"{h.mgmt}/recording/{rec}/start", {})
        data = messages(transactions, body)
        n = 2 * transactions
        hb.reset_peak_rss(h.pid)
        perf = None
        if perf_out:
            perf = subprocess.Popen(["perf", "record", "-F", "1999", "-g", "--call-graph", "dwarf,16384",
                                     "-p", str(h.pid), "-o", perf_out], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(1)  # perf attaches
        cpu0 = hb.cpu_seconds(h.pid)
        t0 = time.monotonic()
        pub = subprocess.run(["taskset", "-c", "1", "redis-cli", "-p", str(REDIS_PORT), "--pipe"], input=data,
                             capture_output=True)
        t_pub = time.monotonic() - t0
        if pub.returncode != 0:
            raise SystemExit(f"redis-cli --pipe failed: {pub.stderr.decode()}")
        deadline = t0 + 600
        while True:
            c = recorder_counters(h)
            done = c.get("recorded", 0) + c.get("ignored", 0) + c.get("failed", 0) + c.get("lost", 0)
            if done >= n or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        elapsed = time.monotonic() - t0
        cpu = hb.cpu_seconds(h.pid) - cpu0
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
        rss = hb.peak_rss_kib(h.pid)
        hb.http("POST", f"{h.mgmt}/recording/{rec}/stop", {})
        stored = hb.http("GET", f"{h.mgmt}/recording/{rec}")["count"]
        recorded = c.get("recorded", 0)
        return {"messages": n, "seconds": elapsed, "rate": recorded / elapsed, "publish_rate": n / t_pub,
                "lost": c.get("lost", 0), "cpu_us": cpu / max(recorded, 1) * 1e6, "rss_mib": rss / 1024, "stored": stored, "transactions": transactions,
                "counters": c}
    finally:
        if h is not None:
            h.stop()
        redis.terminate()
        redis.wait(10)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transactions", type=int, default=200_000)
    ap.add_argument("--body", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default=hb.BIN)
    ap.add_argument("--perf", help="perf record the recorder into this file (first run)")
    args = ap.parse_args()
    for p in (REDIS_PORT, PROXY_PORT, MGMT_PORT):
        if not hb.free(p):
            raise SystemExit(f"127.0.0.1:{p} is taken; stop what listens there first")
    results = []
    with tempfile.TemporaryDirectory(prefix="hb-ingest-") as workdir:
        for run in range(args.runs):
            r = one_run(workdir, args.bin, args.transactions, args.body, run, args.perf if run == 0 else None)
            print(f"run {run + 1}: {r['rate']:,.0f} msg/s (publisher {r['publish_rate']:,.0f}/s), "
                  f"{r['lost']:,} lost, {r['cpu_us']:.1f} µs CPU per recorded msg, peak RSS {r['rss_mib']:.1f} MiB, "
                  f"stored {r['stored']:,} of {r['transactions']:,} transactions; counters {r['counters']}",
                  flush=True)
            results.append(r)
    med = lambda k: statistics.median(r[k] for r in results)  # noqa: E731
    print(f"\nmedian of {len(results)}: {med('rate'):,.0f} messages/s into the embedded store "
          f"({args.transactions:,} transactions of two messages, {args.body} B body), publisher "
          f"{med('publish_rate'):,.0f}/s, {med('cpu_us'):.1f} µs CPU per message, peak RSS {med('rss_mib'):.1f} MiB")


if __name__ == "__main__":
    main()
