#!/usr/bin/env python3
"""Replay throughput: `heliosburn replay --har` against the nginx upstream of bench/run.py.

Writes a HAR 1.2 file of N GETs of `/small` (default 20,000) whose recorded responses are
what nginx answers for it (headers taken from one real answer, body the same 100 bytes),
so every replayed answer should compare equal. Then runs

    taskset -c 0 heliosburn replay --har FILE --target http://127.0.0.1:19000 \
        --as-fast-as-possible --concurrency C --json

for each concurrency (default 32 and 1), interleaved over several rounds (default 3), with
nginx (one worker) pinned to CPU 1. Per run: the report's rate (requests/s over the replay),
the replay process's CPU time (utime + stime from wait4's rusage) per request sent, its
peak RSS (ru_maxrss), the nginx worker's CPU per request, and sent/same/different/errors.
One unrecorded warm-up replay runs first. Medians, (min-max) over the rounds.

Usage: bench/usage.py [--entries 20000] [--rounds 3] [--concurrency 32,1] [--bin PATH]
                      [--json FILE]
Needs: nginx, taskset, a release build (cargo build --release).
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the Nginx class, CPU and load helpers)


def har_file(path, url, entries, status, reason, headers, body):
    """A HAR 1.2 log of `entries` GETs of `url`, each answered `status` with `headers` and
    `body` (text), 1 ms apart."""
    t0 = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
    host = url.split("/")[2]
    with open(path, "w") as f:
        f.write('{"log": {"version": "1.2", "creator": {"name": "bench/usage.py", "version": "1"}, '
                '"entries": [\n')
        for i in range(entries):
            entry = {
                "startedDateTime": (t0 + datetime.timedelta(milliseconds=i)).isoformat(timespec="milliseconds"),
                "time": 0.5,
                "request": {"method": "GET", "url": url, "httpVersion": "HTTP/1.1",
                            "headers": [{"name": "Host", "value": host}, {"name": "Accept", "value": "*/*"}],
                            "queryString": [], "cookies": [], "headersSize": -1, "bodySize": 0},
                "response": {"status": status, "statusText": reason, "httpVersion": "HTTP/1.1",
                             "headers": [{"name": k, "value": v} for k, v in headers],
                             "cookies": [],
                             "content": {"size": len(body), "mimeType": dict(headers).get("Content-Type", ""),
                                         "text": body},
                             "redirectURL": "", "headersSize": -1, "bodySize": len(body)},
                "cache": {},
                "timings": {"send": 0, "wait": 0.5, "receive": 0},
            }
            f.write(("," if i else "") + json.dumps(entry) + "\n")
        f.write("]}}\n")


def replay(binary, har, target, concurrency, out_path, nginx_pid, ours):
    """One replay pinned to CPU 0; its report plus what it cost."""
    before_nginx, others0, steal0 = bench.cpu_seconds(nginx_pid), bench.others_cpu(ours), bench.steal_seconds()
    t0 = time.time()
    with open(out_path, "w") as out, open(out_path + ".err", "w") as err:
        # taskset execs the binary: the pid (and the rusage) is the replay's own.
        p = subprocess.Popen(["taskset", "-c", "0", binary, "replay", "--har", har, "--target", target,
                              "--as-fast-as-possible", "--concurrency", str(concurrency), "--json"],
                             stdout=out, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - t0
    nginx_cpu = bench.cpu_seconds(nginx_pid) - before_nginx
    others1, steal1 = bench.others_cpu(ours), bench.steal_seconds()
    if p.returncode != 0:
        raise SystemExit(f"replay exited with {p.returncode}; see {out_path}.err")
    with open(out_path) as f:
        rep = json.load(f)
    sent = rep["sent"]
    return {"sent": sent, "same": rep["same"], "different": rep["different"], "errors": rep["errors"],
            "skipped": rep.get("skipped", 0), "duration_ms": rep["durationMs"], "rate": rep["rate"],
            "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
            "cpu_us_per_req": (ru.ru_utime + ru.ru_stime) / sent * 1e6,
            "user_us_per_req": ru.ru_utime / sent * 1e6, "sys_us_per_req": ru.ru_stime / sent * 1e6,
            "peak_rss_kib": ru.ru_maxrss, "nginx_cpu_us_per_req": nginx_cpu / sent * 1e6,
            "other_cpu_pct": 100 * bench.others_delta(others0, others1) / wall,
            "steal_pct": 100 * (steal1 - steal0) / wall}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", default="32,1")
    ap.add_argument("--bin", default=bench.BIN)
    ap.add_argument("--json", help="also write raw results here")
    args = ap.parse_args()
    for tool in ("nginx", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install -y nginx util-linux")
    binary = os.path.abspath(args.bin)
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"{binary} is missing: build it first (cargo build --release)")
    concs = [int(c) for c in args.concurrency.split(",")]
    work = tempfile.mkdtemp(prefix="hb-usage-")
    os.chmod(work, 0o755)  # nginx workers run as nobody and must read the files
    with open(os.path.join(work, "small"), "wb") as f:
        f.write(bench.SMALL)
    upstream = None
    try:
        upstream = bench.Nginx(work, "upstream", f"""
    server {{ listen 127.0.0.1:{bench.UPSTREAM_PORT} reuseport backlog=4096; root {work};
              location / {{ default_type application/octet-stream; }} }}""", cpu=1)
        bench.wait_port(bench.UPSTREAM_PORT)
        target = f"http://127.0.0.1:{bench.UPSTREAM_PORT}"
        with urllib.request.urlopen(f"{target}/small", timeout=10) as r:
            status, reason, headers, body = r.status, r.reason, list(r.getheaders()), r.read()
        har = os.path.join(work, "small.har")
        har_file(har, f"{target}/small", args.entries, status, reason, headers, body.decode())
        print(f"HAR: {args.entries} entries, {os.path.getsize(har) / 2**20:.1f} MiB; recorded response headers: "
              f"{', '.join(k for k, _ in headers)}", file=sys.stderr)
        ours = {os.getpid(), upstream.proc.pid, upstream.pid}
        replay(binary, har, target, concs[0], os.path.join(work, "warmup.json"), upstream.pid, ours)
        results = {c: [] for c in concs}
        load = {"start": bench.loadavg()}
        for r in range(args.rounds):
            for c in concs:
                res = replay(binary, har, target, c, os.path.join(work, f"c{c}-{r}.json"), upstream.pid, ours)
                results[c].append(res)
                print(f"round {r + 1} concurrency {c:3}: {res['rate']:8.0f} req/s  cpu/req {res['cpu_us_per_req']:.1f} us "
                      f"(user {res['user_us_per_req']:.1f}, sys {res['sys_us_per_req']:.1f})  "
                      f"rss {res['peak_rss_kib'] / 1024:.1f} MiB  nginx {res['nginx_cpu_us_per_req']:.1f} us/req  "
                      f"sent {res['sent']} same {res['same']} different {res['different']} errors {res['errors']}  "
                      f"other {res['other_cpu_pct']:.0f}%  steal {res['steal_pct']:.0f}%", file=sys.stderr, flush=True)
        load["end"] = bench.loadavg()
        report(args, binary, concs, results, load)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"bin": binary, "load": load, "results": {str(c): v for c, v in results.items()}}, f, indent=1)
    finally:
        if upstream:
            upstream.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(args, binary, concs, results, load):
    med = statistics.median

    def spread(xs, f):
        return f"{f(med(xs))} ({f(min(xs))}-{f(max(xs))})" if len(xs) > 1 else f(med(xs))

    print(f"\n`heliosburn replay --har` of {args.entries} GETs of /small (100 B), --as-fast-as-possible, "
          f"{args.rounds} interleaved rounds; replay on CPU 0, nginx upstream on CPU 1. Medians, (min-max). "
          f"Load average {load['start']} at the start, {load['end']} at the end. Binary: {binary}\n")
    print("| concurrency | req/s | replay CPU us/req | user / sys us/req | peak RSS MiB | nginx CPU us/req "
          "| sent | same | different | errors | other load % | steal % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in concs:
        rs = results[c]
        col = lambda k: [r[k] for r in rs]
        print(f"| {c} | {spread(col('rate'), lambda v: f'{v:.0f}')} | {spread(col('cpu_us_per_req'), lambda v: f'{v:.1f}')} | "
              f"{med(col('user_us_per_req')):.1f} / {med(col('sys_us_per_req')):.1f} | "
              f"{spread(col('peak_rss_kib'), lambda v: f'{v / 1024:.1f}')} | "
              f"{spread(col('nginx_cpu_us_per_req'), lambda v: f'{v:.1f}')} | "
              f"{sum(col('sent'))} | {sum(col('same'))} | {sum(col('different'))} | {sum(col('errors'))} | "
              f"{spread(col('other_cpu_pct'), lambda v: f'{v:.0f}')} | "
              f"{spread(col('steal_pct'), lambda v: f'{v:.0f}')} |")
    print("\nsent/same/different/errors: totals over the rounds. req/s: the report's `rate` (sent over its "
          "durationMs). CPU: the whole process, HAR parsing included. other load, steal: % of one core, "
          "over both CPUs (steal: time the hypervisor gave this VM's CPUs to others).")


if __name__ == "__main__":
    main()
