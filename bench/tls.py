#!/usr/bin/env python3
"""TLS on both sides and HTTP/2: heliosburn against nginx doing the same (issue 12).

Everything speaks HTTPS: a test CA and a certificate for localhost / 127.0.0.1 are made
with the openssl CLI; the upstream nginx serves the bodies over HTTPS (`listen ssl http2`:
ALPN h2 and http/1.1) and, on a second port, plain HTTP. Targets:

- `direct-tls`: the client to the upstream itself.
- `nginx-tls`: nginx as reverse proxy, `listen ssl http2`, `proxy_pass https://` to the
  upstream with `proxy_ssl_verify on` against the test CA, a keepalive pool (`keepalive
  64`, HTTP/1.1, `Connection ""`): nginx speaks HTTP/1.1 to its upstreams.
- `hb-tls-empty`: heliosburn, `--tls-cert/--tls-key` (ALPN h2 and http/1.1),
  `--upstream https://localhost:PORT --upstream-ca ca.pem --upstream-protocol http1`,
  empty pipeline: like for like with nginx-tls.
- `hb-tls-record`: the same with the default modules (recording into the embedded store);
  each round records into a recording of its own, whose stored count is compared with
  what the client completed, then deleted (as bench/run.py does).
- `hb-tls-h2up`: hb-tls-empty with `--upstream-protocol h2` (HTTP/2 over TLS to the
  upstream, its connections shared). `auto` would pick h2 here too: the upstream offers
  it by ALPN.

Two sections in one run, each of interleaved rounds (round-robin over the targets):
`wrk` (HTTP/1.1 over TLS, keep-alive) and `h2load` (HTTP/2 by ALPN, several streams per
connection, time-based with -D; by default 4 connections x 8 streams: 32 in flight, as
wrk's 32 connections, which nginx-tls's pool of 64 holds: with more requests in flight than
its pool keeps, nginx opens and closes an upstream TLS connection per request). The proxy under test is pinned to CPU 0, the client and
the upstream to CPU 1; proxy CPU per request is utime+stime from /proc/PID/stat over the
run (the nginx worker's for nginx), peak RSS is VmHWM, reset before each body of each
section. Helpers come from bench/run.py.

Usage: bench/tls.py [--rounds 3] [--duration 8] [--connections 32]
                    [--h2-connections 4 --h2-streams 8] [--sections wrk,h2]
                    [--targets direct-tls,nginx-tls,hb-tls-empty,hb-tls-record,hb-tls-h2up]
                    [--bin target/release/heliosburn] [--json FILE]
Needs: wrk, nginx, h2load, openssl (Debian: wrk nginx nghttp2-client openssl), a release
build (cargo build --release).
"""

import argparse
import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (bench/run.py: the helpers, its main() only runs as a script)
from run import (cpu_seconds, http, loadavg, Nginx, others_cpu, others_delta,  # noqa: E402
                 peak_rss_kib, reset_peak_rss, settle, steal_seconds, wait_port, wrk, BIG, SMALL)

UP_TLS, UP_PLAIN, NGINX_TLS = 19300, 19301, 19302
HB_PORTS = {"hb-tls-empty": 19310, "hb-tls-record": 19311, "hb-tls-h2up": 19312}
MGMT_OFFSET = 100
TARGETS = ["direct-tls", "nginx-tls", *HB_PORTS]
EMPTY = "pipeline: []\nsupport: []\n"  # as run.py's hb-empty
HB_SETUP = {  # modules (None: the default, recording into the embedded store), upstream protocol
    "hb-tls-empty": (EMPTY, "http1"),
    "hb-tls-record": (None, "http1"),
    "hb-tls-h2up": (EMPTY, "h2"),
}
TITLE = {"direct-tls": "direct-tls (upstream nginx)", "nginx-tls": "nginx-tls (ssl both sides)",
         "hb-tls-empty": "hb-tls-empty (h1 upstream)", "hb-tls-record": "hb-tls-record (h1 upstream)",
         "hb-tls-h2up": "hb-tls-h2up (h2 upstream, empty)"}


def make_certs(d):
    """A CA and a localhost / 127.0.0.1 server certificate it signed (ECDSA P-256)."""
    def ossl(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=d)
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=heliosburn bench CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "key.pem", "-out", "server.csr", "-subj", "/CN=localhost")
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "cert.pem", "-days", "2", "-extfile", "server.ext")
    for f in ("ca.key", "key.pem"):
        os.chmod(os.path.join(d, f), 0o600)
    return {k: os.path.join(d, v) for k, v in (("ca", "ca.pem"), ("cert", "cert.pem"), ("key", "key.pem"))}


class HbTls(run.Heliosburn):
    """heliosburn with the TLS listener and an https:// upstream, checked to be serving
    HTTPS once ready."""

    def __init__(self, workdir, name, binary, port, mgmt, modules_yaml, protocol, certs, cpu):
        super().__init__(workdir, name, binary, port, mgmt, modules_yaml, cpu,
                         upstream=f"https://localhost:{UP_TLS}",
                         extra=["--upstream-ca", certs["ca"], "--upstream-protocol", protocol,
                                "--tls-cert", certs["cert"], "--tls-key", certs["key"]],
                         url=f"https://localhost:{port}")
        end = time.time() + 10
        while "heliosburn ready:" not in open(self.out).read():
            if time.time() > end or self.proc.poll() is not None:
                raise SystemExit(f"{name}: no ready line; see {self.dir}")
            time.sleep(0.05)
        if "proxy https://" not in open(self.out).read():
            raise SystemExit(f"{name}: the listener is not HTTPS: {open(self.out).read().strip()}")


def check_bodies(url, ca):
    """GETs each body over HTTPS verified against the test CA; the TLS version and cipher."""
    ctx = ssl.create_default_context(cafile=ca)
    for name, want in (("small", SMALL), ("64k", BIG)):
        with urllib.request.urlopen(f"{url}/{name}", timeout=30, context=ctx) as r:
            got = r.read()
            if r.status != 200 or got != want:
                raise SystemExit(f"{url}/{name}: {r.status}, {len(got)} bytes, not the {len(want)} served")
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port))) as s, ctx.wrap_socket(s, server_hostname=host) as t:
        return f"{t.version()} {t.cipher()[0]}"


def h2load(url, duration, connections, streams, cpu):
    out = subprocess.run(["taskset", "-c", str(cpu), "h2load", "-t1", f"-c{connections}", f"-m{streams}",
                          f"-D{duration}", url], capture_output=True, text=True)
    text = out.stdout + out.stderr
    m = re.search(r"finished in ([\d.]+)(?:ms|s), ([\d.]+) req/s", text)
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    proto = re.search(r"Application protocol: (\S+)", text)
    lat = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", text)
    if out.returncode or not (m and req and codes):
        raise SystemExit(f"h2load {url} failed ({out.returncode}):\n{text}")
    ms = lambda v, u: float(v) / 1000 if u == "us" else float(v) * 1000 if u == "s" else float(v)
    done, ok = int(req.group(3)), int(req.group(4))
    return {"rps": float(m.group(2)), "total": ok, "done": done, "failed": int(req.group(5)),
            "errored": int(req.group(6)), "timeout": int(req.group(7)),
            # failed: a status other than 2xx/3xx, or errored, or timed out.
            "errors": int(req.group(5)),
            "non2xx": done - int(codes.group(1)), "proto": proto.group(1) if proto else "?",
            "mean_ms": ms(lat.group(5), lat.group(6)) if lat else float("nan"),
            "max_ms": ms(lat.group(3), lat.group(4)) if lat else float("nan"),
            "output": text if int(codes.group(3)) + int(codes.group(4)) + int(req.group(5)) else ""}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32, help="wrk connections")
    ap.add_argument("--h2-connections", type=int, default=4)
    ap.add_argument("--h2-streams", type=int, default=8, help="h2load -m: streams in flight per connection")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--sections", default="wrk,h2")
    ap.add_argument("--bodies", default="small,64k")
    ap.add_argument("--bin", default=run.BIN)
    ap.add_argument("--json", help="also write raw results here")
    args = ap.parse_args()
    for tool in ("wrk", "nginx", "h2load", "openssl", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install -y wrk nginx nghttp2-client openssl util-linux")
    binary = os.path.abspath(args.bin)
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"{binary} is missing: build it first (cargo build --release)")
    targets = args.targets.split(",")
    if set(targets) - set(TARGETS) or "direct-tls" not in targets:
        raise SystemExit(f"targets: a subset of {', '.join(TARGETS)} with direct-tls")
    targets = [t for t in TARGETS if t in targets]
    bodies, sections = args.bodies.split(","), args.sections.split(",")
    work = tempfile.mkdtemp(prefix="hb-tls-bench-")
    os.chmod(work, 0o755)  # nginx workers run as nobody and must read the files
    for name, data in (("small", SMALL), ("64k", BIG)):
        with open(os.path.join(work, name), "wb") as f:
            f.write(data)
    certs = make_certs(work)
    # nginx 1.22's default is TLSv1 to TLSv1.2: both versions rustls speaks, both ways.
    ssl_conf = (f"ssl_certificate {certs['cert']}; ssl_certificate_key {certs['key']}; "
                f"ssl_protocols TLSv1.2 TLSv1.3; proxy_ssl_protocols TLSv1.2 TLSv1.3;")

    procs = []
    try:
        upstream = Nginx(work, "upstream", f"""
    {ssl_conf}
    server {{ listen 127.0.0.1:{UP_TLS} ssl http2 reuseport backlog=4096; root {work};
              location / {{ default_type application/octet-stream; }} }}
    server {{ listen 127.0.0.1:{UP_PLAIN} reuseport backlog=4096; root {work};
              location / {{ default_type application/octet-stream; }} }}""", cpu=1)
        procs.append(upstream)
        wait_port(UP_TLS)
        urls = {"direct-tls": f"https://localhost:{UP_TLS}"}
        pids = {"direct-tls": None}
        if "nginx-tls" in targets:
            ng = Nginx(work, "nginx-tls", f"""
    {ssl_conf}
    upstream up {{ server 127.0.0.1:{UP_TLS}; keepalive 64; }}
    server {{ listen 127.0.0.1:{NGINX_TLS} ssl http2 backlog=4096;
              location / {{ proxy_pass https://up; proxy_http_version 1.1; proxy_set_header Connection "";
                            proxy_ssl_verify on; proxy_ssl_trusted_certificate {certs['ca']};
                            proxy_ssl_name localhost; proxy_ssl_server_name on; proxy_ssl_session_reuse on;
                            proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                            proxy_set_header X-Forwarded-Proto $scheme; proxy_buffering on; }} }}""", cpu=run.PROXY_CPUS)
            procs.append(ng)
            wait_port(NGINX_TLS)
            urls["nginx-tls"], pids["nginx-tls"] = f"https://localhost:{NGINX_TLS}", ng.pid
        hb = {}
        for t in targets:
            if t in HB_PORTS:
                modules, proto = HB_SETUP[t]
                hb[t] = HbTls(work, t, binary, HB_PORTS[t], HB_PORTS[t] + MGMT_OFFSET, modules, proto, certs,
                              cpu=run.PROXY_CPUS)
                procs.append(hb[t])
                urls[t], pids[t] = hb[t].url, hb[t].pid
        tls_of = {t: check_bodies(urls[t], certs["ca"]) for t in targets}
        for t in targets:
            print(f"{t:14} {urls[t]}  bodies OK  {tls_of[t]}", file=sys.stderr)
        ours = {os.getpid(), *(p.pid for p in procs), *(p.proc.pid for p in procs)}

        def client(section, url, duration):
            if section == "wrk":
                res = wrk(url, duration, args.connections, cpu=1)
                # connect, read, write, timeout errors count as errors here too.
                res["errors"] += sum(int(n) for n in re.findall(r"\d+", res["socket_errors"]))
                return res
            return h2load(url, duration, args.h2_connections, args.h2_streams, cpu=1)

        results, load = {}, {"start": loadavg()}
        for section in sections:
            for body in bodies:
                for t in targets:  # warm-up: connections, pools, sessions (not recorded)
                    client(section, f"{urls[t]}/{body}", 2)
                    if t in hb:
                        settle(pids[t])
                for t in targets:
                    if pids[t]:
                        reset_peak_rss(pids[t])
                for r in range(args.rounds):
                    order = targets[r % len(targets):] + targets[:r % len(targets)]
                    for t in order:
                        pid, rid = pids[t], None
                        if t == "hb-tls-record":
                            rid = http("POST", f"{hb[t].mgmt}/recording",
                                       {"name": f"bench {section} {body} {r + 1}", "description": "bench/tls.py"})["id"]
                            http("POST", f"{hb[t].mgmt}/recording/{rid}/start")
                        before, t0 = cpu_seconds(pid) if pid else 0, time.time()
                        up_before = cpu_seconds(upstream.pid)
                        others0, steal0 = others_cpu(ours), steal_seconds()
                        res = client(section, f"{urls[t]}/{body}", args.duration)
                        after, elapsed = cpu_seconds(pid) if pid else 0, time.time() - t0
                        others1, steal1 = others_cpu(ours), steal_seconds()
                        res["cpu_us_per_req"] = (after - before) / res["total"] * 1e6 if pid else None
                        res["upstream_cpu_us_per_req"] = (cpu_seconds(upstream.pid) - up_before) / res["total"] * 1e6
                        res["other_cpu_pct"] = 100 * others_delta(others0, others1) / elapsed
                        res["steal_pct"] = 100 * (steal1 - steal0) / elapsed
                        if t in hb:
                            res["settle_s"], settle_cpu = settle(pid)
                            res["settle_cpu_us_per_req"] = settle_cpu / res["total"] * 1e6
                        if rid:
                            http("POST", f"{hb[t].mgmt}/recording/{rid}/stop", timeout=120)
                            res["stored"] = http("GET", f"{hb[t].mgmt}/recording/{rid}")["count"]
                            http("DELETE", f"{hb[t].mgmt}/recording/{rid}", timeout=300)
                            settle(pid)
                        if t in hb and hb[t].proc.poll() is not None:
                            raise SystemExit(f"{t} exited with {hb[t].proc.returncode}; see {hb[t].dir}")
                        results.setdefault((section, body, t), []).append(res)
                        lat = (f"p99 {res['p99_ms']:.3f} ms" if section == "wrk"
                               else f"mean {res['mean_ms']:.3f} ms  {res['proto']}")
                        print(f"{section} round {r + 1} {body:5} {t:14} {res['rps']:9.0f} req/s  {lat}  "
                              f"cpu/req {res['cpu_us_per_req'] or 0:.1f} us  "
                              f"upstream {res['upstream_cpu_us_per_req']:.1f} us  other {res['other_cpu_pct']:.0f}%"
                              f"{'  stored ' + str(res['stored']) + ' of ' + str(res['total']) if rid else ''}"
                              f"{'  ERRORS ' + str(res['errors']) + ' ' + res.get('socket_errors', '') if res['errors'] else ''}",
                              file=sys.stderr, flush=True)
                        if res.get("output"):
                            print(res["output"], file=sys.stderr)
                for t in targets:
                    if pids[t]:
                        results[(section, body, t)][0]["peak_rss_kib"] = peak_rss_kib(pids[t])
        load["end"] = loadavg()
        for t in hb:
            err = open(os.path.join(hb[t].dir, "stderr.log")).read().strip()
            if err:
                print(f"{t} stderr (last lines):\n" + "\n".join(err.splitlines()[-10:]), file=sys.stderr)
        report(args, binary, targets, sections, bodies, results, load, tls_of)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"load": load, "tls": tls_of,
                           "results": {"|".join(k): v for k, v in results.items()}}, f, indent=1)
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(args, binary, targets, sections, bodies, results, load, tls_of):
    med = lambda xs: statistics.median(xs) if xs else float("nan")

    def spread(xs, f):
        return f"{f(med(xs))} ({f(min(xs))}-{f(max(xs))})" if len(xs) > 1 else f(med(xs))

    print(f"\n{args.rounds} interleaved rounds of {args.duration}s per section and body; proxy on CPU "
          f"{run.PROXY_CPUS}, client + upstream nginx on CPU 1. Medians (min-max) over the rounds. "
          f"Load average {load['start']} at the start, {load['end']} at the end. heliosburn: {binary} "
          f"({os.path.getsize(binary) / 2**20:.1f} MiB). TLS to the client: "
          + "; ".join(f"{t} {v}" for t, v in tls_of.items()) + "\n")
    for section in sections:
        client = (f"wrk -t1 -c{args.connections} (HTTP/1.1 over TLS, keep-alive)" if section == "wrk" else
                  f"h2load -t1 -c{args.h2_connections} -m{args.h2_streams} -D{args.duration} (HTTP/2, ALPN h2)")
        for body in bodies:
            rs_of = lambda t: results[(section, body, t)]
            m = lambda t, k: med([r[k] for r in rs_of(t)]) if (section, body, t) in results else None
            direct, nginx = m("direct-tls", "rps"), m("nginx-tls", "rps")
            ncpu = m("nginx-tls", "cpu_us_per_req")
            lat = "p99 ms" if section == "wrk" else "mean ms"
            print(f"### {section}: {body} body, {client}\n")
            print(f"| target | req/s | vs direct-tls | vs nginx-tls | {lat} | proxy CPU us/req | CPU vs nginx-tls "
                  f"| upstream CPU us/req | peak RSS MiB | errors | other load % |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for t in targets:
                rs = rs_of(t)
                rps = m(t, "rps")
                cpu = [r["cpu_us_per_req"] for r in rs if r["cpu_us_per_req"] is not None]
                rss = rs[0].get("peak_rss_kib")
                key = "p99_ms" if section == "wrk" else "mean_ms"
                print(f"| {TITLE[t]} | {spread([r['rps'] for r in rs], lambda v: f'{v:.0f}')} | "
                      f"{rps / direct:.2f}x | {'-' if nginx is None or t in ('direct-tls', 'nginx-tls') else f'{rps / nginx:.2f}x'} | "
                      f"{spread([r[key] for r in rs], lambda v: f'{v:.3f}')} | "
                      f"{spread(cpu, lambda v: f'{v:.1f}') if cpu else '-'} | "
                      f"{f'{med(cpu) / ncpu:.2f}x' if cpu and ncpu and t != 'nginx-tls' else '-'} | "
                      f"{spread([r['upstream_cpu_us_per_req'] for r in rs], lambda v: f'{v:.1f}')} | "
                      f"{'-' if rss is None else f'{rss / 1024:.1f}'} | {sum(r['errors'] for r in rs)} | "
                      f"{spread([r['other_cpu_pct'] for r in rs], lambda v: f'{v:.0f}')} |")
            print()
            if "hb-tls-record" in targets:
                rs = rs_of("hb-tls-record")
                served, stored = sum(r["total"] for r in rs), sum(r["stored"] for r in rs)
                diffs = [r["stored"] - r["total"] for r in rs]
                print(f"- hb-tls-record: the client completed {served} requests, the recordings hold {stored} "
                      f"exchanges ({stored / served:.1%}; stored - completed per round {min(diffs)} to {max(diffs)}); "
                      f"idle again {med([r['settle_s'] for r in rs]):.1f} s after the client (median), "
                      f"{med([r['settle_cpu_us_per_req'] for r in rs]):.1f} us/req more CPU meanwhile.")
            if section == "h2":
                protos = {t: sorted({r["proto"] for r in rs_of(t)}) for t in targets}
                print(f"- Application protocol h2load got: "
                      + ", ".join(f"{t} {'/'.join(p)}" for t, p in protos.items()))
            steal = [r["steal_pct"] for t in targets for r in rs_of(t)]
            print(f"- Steal median {med(steal):.1f} %, max {max(steal):.1f} %.\n")


if __name__ == "__main__":
    main()
