#!/usr/bin/env python3
"""The seed's distributed setup under load: TrafficReader -> Redis -> TrafficRecorder -> MongoDB.

Four measurements, one run:

1. The MongoDB server's own ceiling: a plain pymongo loop of traffic-shaped upserts
   (~1 KiB, by recordingId + transactionId, `bulk_write` of unordered UpdateOne(upsert)
   batches, as the recorder's one `update` command per batch) into a fresh database.
   The nx-27017 stand-in scans the collection on each upsert, so its rate falls as the
   collection grows: the figure is over a fixed count of documents (--ceiling-docs).
2. heliosburn (release build) in front of an nginx upstream, with the seed's modules
   (TrafficReader -> Redis channel, TrafficRecorder Redis -> MongoDB, TrafficStreamer ->
   Redis sorted set; names unique to the run), and a second heliosburn with an empty
   pipeline as the baseline.
3. Sustainable rate: one recording, a paced keep-alive client at a fixed rate well under
   the ceiling (half of it, at least 20/s), stop, let the recorder settle, then count the
   recording's documents with a plain pymongo query: they must equal the requests sent.
4. Saturation: a second recording, wrk at full speed; requests/s and proxy CPU per
   request against the empty pipeline under the same load, and after a settle period the
   reader's and recorder's counters, to show the shortfall is counted.

Usage: python bench/seed.py [--ceiling-docs 2000] [--batch 100] [--rate N] [--paced 15]
                            [--duration 10] [--connections 32] [--settle 15]
Needs: wrk, nginx, taskset, redis-cli, Redis on 127.0.0.1:6379, a MongoDB server on
127.0.0.1:27017 (scripts/mongo.sh start for the stand-in), a release build, and pymongo
in the Python that runs this (e.g. python3 -m venv /tmp/v && /tmp/v/bin/pip install pymongo).
"""

import argparse
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as hb  # noqa: E402  (bench/run.py: Nginx, Heliosburn, wrk, cpu_seconds, ...)

try:
    import bson
    import pymongo
    from bson import ObjectId
    from pymongo import UpdateOne
except ImportError:
    raise SystemExit("pymongo is missing: python3 -m venv /tmp/hb-venv && /tmp/hb-venv/bin/pip install pymongo, "
                     "then run this with /tmp/hb-venv/bin/python")

# Ports of their own, so that bench/run.py (19000-19104) can run beside this.
UPSTREAM_PORT = 19300
HB_EMPTY_PORT, HB_SEED_PORT, HB_READER_PORT = 19302, 19303, 19304
MGMT_EMPTY_PORT, MGMT_SEED_PORT, MGMT_READER_PORT = 19402, 19403, 19404
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
MONGO_URI = "mongodb://127.0.0.1:27017/?directConnection=true"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def api(method, url, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        text = r.read()
        return json.loads(text) if text else None


def listener_pid(port):
    """The pid of the process listening on 127.0.0.1:port (for its CPU time), or None."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    m = re.search(r"pid=(\d+)", out)
    return int(m.group(1)) if m else None


def cpu_or_none(pid):
    try:
        return hb.cpu_seconds(pid) if pid else None
    except OSError:
        return None


def modules(mgmt):
    status = api("GET", f"{mgmt}/status")
    return {m["module"]: m.get("counters") or {} for m in status["message"]["modules"]}


# ---------------------------------------------------------------- 1. the server's ceiling

def traffic_doc(i):
    """A document shaped like the recorder's (the seed's fields), about 1 KiB of BSON."""
    now = datetime.datetime.now(datetime.timezone.utc)
    headers = {"host": "127.0.0.1:19303", "user-agent": "bench/seed.py", "accept": "*/*",
               "x-forwarded-for": "127.0.0.1", "x-forwarded-proto": "http", "x-forwarded-host": "127.0.0.1"}
    request = {"createdAt": now, "clientProtocol": "HTTP/1.1", "method": "GET", "uri": f"/small?i={i}",
               "path": "/small", "args": {"i": str(i)}, "headers": headers,
               "body": {"size": 0, "truncated": False, "text": ""}}
    response = {"createdAt": now, "clientProtocol": "HTTP/1.1", "statusCode": 200, "statusDescription": "OK",
                "headers": {"server": "nginx", "content-type": "application/octet-stream", "content-length": "100",
                            "etag": '"6568a1b2-64"', "accept-ranges": "bytes"},
                "body": {"size": 100, "truncated": False, "text": "x" * 100}}
    return request, response


def pad_to_kib(request, response):
    size = len(bson.encode({"_id": ObjectId(), "recordingId": ObjectId(), "transactionId": str(uuid.uuid4()),
                            "createdAt": request["createdAt"], "seq": 1, "request": request, "response": response}))
    if size < 1024:
        response["headers"]["x-pad"] = "p" * (1024 - size - 12)


def measure_ceiling(client, db_name, docs, batch):
    coll = client[db_name]["traffic"]
    # The recorder's indexes, so the server does the same work as for it.
    coll.create_index([("recordingId", 1), ("transactionId", 1)], unique=True)
    coll.create_index([("recordingId", 1), ("seq", 1)])
    recording = ObjectId()
    request, response = traffic_doc(0)
    pad_to_kib(request, response)
    sample = {"recordingId": recording, "transactionId": str(uuid.uuid4()), "createdAt": request["createdAt"],
              "seq": 0, "request": request, "response": response}
    doc_bytes = len(bson.encode({"_id": ObjectId(), **sample}))
    rates, written = [], 0
    t0 = time.perf_counter()
    while written < docs:
        n = min(batch, docs - written)
        ops = []
        for i in range(written, written + n):
            q = {"recordingId": recording, "transactionId": str(uuid.uuid4())}
            ops.append(UpdateOne(q, {"$setOnInsert": {"createdAt": request["createdAt"], "seq": i},
                                     "$set": {"request": request, "response": response}}, upsert=True))
        b0 = time.perf_counter()
        res = client[db_name]["traffic"].bulk_write(ops, ordered=False)
        rates.append(n / (time.perf_counter() - b0))
        if res.upserted_count != n:
            raise SystemExit(f"ceiling: a batch of {n} upserted {res.upserted_count}")
        written += n
    seconds = time.perf_counter() - t0
    stored = coll.count_documents({"recordingId": {"$in": [recording, str(recording)]}})
    return {"docs": written, "batch": batch, "seconds": seconds, "rate": written / seconds, "doc_bytes": doc_bytes,
            "first_batch_rate": rates[0], "last_batch_rate": rates[-1], "stored": stored}


# ---------------------------------------------------------------- 3. paced client, settle

def paced(port, rate, seconds, path="/small"):
    """Sends GETs at `rate`/s for `seconds` over one keep-alive connection; returns counts."""
    total = max(1, int(rate * seconds))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ok = errors = behind = 0
    t0 = time.perf_counter()
    for i in range(total):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.1:
            behind += 1
        try:
            conn.request("GET", f"{path}?i={i}")
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                ok += 1
            else:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    elapsed = time.perf_counter() - t0
    conn.close()
    return {"sent": total, "ok": ok, "errors": errors, "behind": behind, "seconds": elapsed,
            "achieved": total / elapsed}


def settle(mgmt, bound=60.0, quiet=2.0):
    """Polls /status until TrafficRecorder's pending is 0 and received has not moved for
    `quiet` seconds, at most `bound` seconds. Returns (counters, settled, seconds)."""
    t0 = time.time()
    last, since = None, time.time()
    while True:
        m = modules(mgmt)
        rec = m["TrafficRecorder"]
        if rec["received"] != last:
            last, since = rec["received"], time.time()
        if rec["pending"] == 0 and time.time() - since >= quiet:
            return m, True, time.time() - t0
        if time.time() - t0 >= bound:
            return m, False, time.time() - t0
        time.sleep(0.25)


def count_docs(client, db_name, rid):
    # The stand-in stores an upserted ObjectId query value as a string, and its count does
    # not match ObjectIds: match either form (on MongoDB only the ObjectId matches).
    return client[db_name]["traffic"].count_documents({"recordingId": {"$in": [ObjectId(rid), rid]}})


def delta(after, before, module, key):
    return after[module][key] - before[module][key]


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ceiling-docs", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=100, help="upserts per bulk_write in the ceiling loop")
    ap.add_argument("--rate", type=float, help="paced requests/s (default: half the ceiling, at least 20)")
    ap.add_argument("--paced", type=float, default=15, help="seconds of paced traffic")
    ap.add_argument("--duration", type=int, default=10, help="seconds of wrk per saturation run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--settle", type=float, default=15, help="seconds to wait after the saturation run")
    ap.add_argument("--mongo-uri", default=MONGO_URI)
    args = ap.parse_args()
    for tool in ("wrk", "nginx", "taskset", "redis-cli", "ss"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing")
    if not os.path.exists(hb.BIN):
        raise SystemExit(f"{hb.BIN} is missing: run cargo build --release first")
    for port in (UPSTREAM_PORT, HB_EMPTY_PORT, HB_SEED_PORT, HB_READER_PORT, MGMT_EMPTY_PORT, MGMT_SEED_PORT,
                 MGMT_READER_PORT):
        if not hb.free(port):
            raise SystemExit(f"port {port} is taken")
    hb.UPSTREAM_PORT = UPSTREAM_PORT  # run.Heliosburn points --upstream at this

    wall0 = time.time()
    out_load = os.getloadavg()[0]
    run_id = f"{time.strftime('%Y%m%d%H%M%S')}_{os.getpid()}"
    ceiling_db, seed_db = f"hb_seed_ceiling_{run_id}", f"hb_seed_{run_id}"
    channel, window_key = f"hb.seed.{run_id}", f"hb.seed.{run_id}.window"
    client = pymongo.MongoClient(args.mongo_uri, serverSelectionTimeoutMS=5000)
    client.admin.command("ping")
    mongo_pid, redis_pid = listener_pid(27017), listener_pid(REDIS_PORT)
    work = tempfile.mkdtemp(prefix="hb-seed-")
    os.chmod(work, 0o755)  # nginx workers run as nobody and must read the files
    with open(os.path.join(work, "small"), "wb") as f:
        f.write(hb.SMALL)

    procs, out = [], {"run_id": run_id, "load_start": out_load}
    seed = None
    try:
        # 1. The server's own ceiling, before anything of ours runs.
        log(f"ceiling: {args.ceiling_docs} upserts in bulk_write batches of {args.batch} into {ceiling_db} ...")
        ceiling = measure_ceiling(client, ceiling_db, args.ceiling_docs, args.batch)
        client.drop_database(ceiling_db)
        out["ceiling"] = ceiling
        log(f"ceiling: {ceiling['rate']:.0f} docs/s over {ceiling['docs']} docs ({ceiling['doc_bytes']} B each), "
            f"first batch {ceiling['first_batch_rate']:.0f}/s, last {ceiling['last_batch_rate']:.0f}/s")

        # 2. Upstream, the seed-configured heliosburn, the empty-pipeline baseline.
        upstream = hb.Nginx(work, "upstream", f"""
    server {{ listen 127.0.0.1:{UPSTREAM_PORT} reuseport backlog=4096; root {work};
              location / {{ default_type application/octet-stream; }} }}""", cpu=1)
        procs.append(upstream)
        hb.wait_port(UPSTREAM_PORT)
        redis = f"redis_host: '{REDIS_HOST}', redis_port: {REDIS_PORT}, redis_db: 0"
        seed_modules = f"""# the seed's modules.yaml (examples/seed-modules.yaml), names unique to this run
pipeline:
  - {{name: TrafficReader, kwargs: {{{redis}, redis_pub_queue: '{channel}'}}}}
support:
  - {{name: TrafficRecorder, kwargs: {{{redis}, redis_sub_queue: '{channel}', mongo_uri: '{args.mongo_uri}', mongo_db: '{seed_db}', mongo_collection: traffic}}}}
  - {{name: TrafficStreamer, kwargs: {{{redis}, redis_sub_queue: '{channel}', redis_key: '{window_key}'}}}}
"""
        empty = hb.Heliosburn(work, "hb-empty", HB_EMPTY_PORT, MGMT_EMPTY_PORT, "pipeline: []\nsupport: []\n", cpu=0)
        procs.append(empty)
        seed = hb.Heliosburn(work, "hb-seed", HB_SEED_PORT, MGMT_SEED_PORT, seed_modules, cpu=0)
        procs.append(seed)
        # Where the time goes: TrafficReader alone, publishing to a channel nobody here reads.
        reader_modules = f"pipeline:\n  - {{name: TrafficReader, kwargs: {{{redis}, redis_pub_queue: '{channel}.nosub'}}}}\nsupport: []\n"
        reader = hb.Heliosburn(work, "hb-reader", HB_READER_PORT, MGMT_READER_PORT, reader_modules, cpu=0)
        procs.append(reader)
        hb.wait_port(MGMT_SEED_PORT)
        urls = {"hb-empty": f"http://127.0.0.1:{HB_EMPTY_PORT}/small",
                "hb-reader": f"http://127.0.0.1:{HB_READER_PORT}/small",
                "hb-seed": f"http://127.0.0.1:{HB_SEED_PORT}/small"}
        for name, url in urls.items():  # warm-up, outside any recording
            hb.wrk(url, 2, args.connections, cpu=1)

        # 3. Sustainable rate.
        rate = args.rate or max(20.0, ceiling["rate"] / 2)
        rec1 = api("POST", f"{seed.mgmt}/recording", {"name": "seed paced", "description": "bench/seed.py"})["id"]
        before = modules(seed.mgmt)
        api("POST", f"{seed.mgmt}/recording/{rec1}/start")
        log(f"paced: {rate:.0f} req/s for {args.paced:.0f}s into recording {rec1} ...")
        cpu0 = {k: cpu_or_none(p) for k, p in (("hb", seed.pid), ("mongo", mongo_pid), ("redis", redis_pid))}
        p = paced(HB_SEED_PORT, rate, args.paced)
        t_stop = time.time()
        api("POST", f"{seed.mgmt}/recording/{rec1}/stop", timeout=300)
        stop_s = time.time() - t_stop
        after, settled, settle_s = settle(seed.mgmt)
        cpu1 = {k: cpu_or_none(pp) for k, pp in (("hb", seed.pid), ("mongo", mongo_pid), ("redis", redis_pid))}
        stored = count_docs(client, seed_db, rec1)
        api_count = api("GET", f"{seed.mgmt}/recording/{rec1}")["count"]
        out["paced"] = {**p, "rate": rate, "recording": rec1, "stored": stored, "api_count": api_count,
                        "stop_s": stop_s, "settled": settled, "settle_s": settle_s,
                        "cpu_s": {k: (cpu1[k] - cpu0[k]) if cpu0[k] is not None and cpu1[k] is not None else None
                                  for k in cpu0},
                        "recorder": {k: delta(after, before, "TrafficRecorder", k)
                                     for k in ("received", "recorded", "ignored", "failed", "lost", "gaps")},
                        "reader": {k: delta(after, before, "TrafficReader", k) for k in ("published", "dropped")},
                        "pending": after["TrafficRecorder"]["pending"]}
        log(f"paced: sent {p['sent']} ({p['ok']} x 200, {p['errors']} errors) at {p['achieved']:.1f}/s; "
            f"stored {stored} documents (API count {api_count}); stop took {stop_s:.1f}s, settle {settle_s:.1f}s")

        # 4. Saturation: the baseline first (the stand-in is still busy after the seed run).
        sat, rec2 = {}, None
        runs = (("hb-empty", empty, "hb-empty"), ("hb-reader", reader, "hb-reader"),
                ("hb-seed, no recording", seed, "hb-seed"), ("hb-seed, recording", seed, "hb-seed"))
        for name, h, target in runs:
            if name == "hb-seed, recording":
                rec2 = api("POST", f"{seed.mgmt}/recording", {"name": "seed saturation", "description": "bench/seed.py"})["id"]
                api("POST", f"{seed.mgmt}/recording/{rec2}/start")
                before = modules(seed.mgmt)
            c0 = {k: cpu_or_none(pp) for k, pp in (("hb", h.pid), ("mongo", mongo_pid), ("redis", redis_pid))}
            log(f"saturation: wrk {args.duration}s x {args.connections} connections on {name} ...")
            res = hb.wrk(urls[target], args.duration, args.connections, cpu=1)
            c1 = {k: cpu_or_none(pp) for k, pp in (("hb", h.pid), ("mongo", mongo_pid), ("redis", redis_pid))}
            res["cpu_s"] = {k: (c1[k] - c0[k]) if c0[k] is not None and c1[k] is not None else None for k in c0}
            res["cpu_us_per_req"] = res["cpu_s"]["hb"] / res["total"] * 1e6
            sat[name] = res
            log(f"  {res['rps']:.0f} req/s, p99 {res['p99_ms']:.2f} ms, {res['cpu_us_per_req']:.1f} us CPU/req, "
                f"non-2xx {res['errors']}")
        out["saturation"] = sat
        out["load_saturation"] = os.getloadavg()[0]
        at_end = modules(seed.mgmt)
        log(f"saturation: waiting {args.settle:.0f}s for the recorder ...")
        time.sleep(args.settle)
        settled_m = modules(seed.mgmt)
        docs2 = count_docs(client, seed_db, rec2)
        out["saturation_counters"] = {"recorded_before": before["TrafficRecorder"]["recorded"], "at_end": at_end,
                                      "after_settle": settled_m, "recording": rec2, "docs_stored": docs2,
                                      "settle_s": args.settle}
        # A graceful stop (SIGTERM, or stopping the recording) makes the recorder write its
        # whole backlog (up to the feed's 65,536 queued messages) in one `update` command,
        # which at the stand-in's falling rate would run for tens of minutes and hold up everyone
        # else using it. Kill it instead, and say so.
        seed.proc.kill()
        seed.proc.wait()
        procs.remove(seed)
        out["wall_s"] = time.time() - wall0
        report(args, out)
    finally:
        for proc in reversed(procs):
            if proc is seed:  # see the kill above: never a graceful stop with a backlog
                proc.proc.kill()
                proc.proc.wait()
            else:
                proc.stop()
        subprocess.run(["redis-cli", "-h", REDIS_HOST, "-p", str(REDIS_PORT), "DEL", window_key],
                       capture_output=True)
        for db in (ceiling_db, seed_db):
            try:
                client.drop_database(db)
            except pymongo.errors.PyMongoError as e:
                log(f"cannot drop {db}: {e}")
        left = [d for d in client.list_database_names() if d in (ceiling_db, seed_db)]
        if left:
            log(f"databases left behind: {left}")
        client.close()
        shutil.rmtree(work, ignore_errors=True)
        log(f"wall time {time.time() - wall0:.0f}s")


def report(args, out):
    c, p, sat, sc = out["ceiling"], out["paced"], out["saturation"], out["saturation_counters"]
    print(f"\n## Seed setup: Redis feed + MongoDB recorder (bench/seed.py, run {out['run_id']})\n")
    print(f"MongoDB server: the nx-27017 stand-in. {os.cpu_count()} CPUs; proxy pinned to CPU 0, wrk and the nginx "
          f"upstream to CPU 1; Redis and the stand-in unpinned. 1-minute load average {out['load_start']:.2f} at the "
          f"start, {out['load_saturation']:.2f} after the saturation runs; a shared host, where other work moves"
          f" requests/s most and CPU per request least.\n")
    print("### The stand-in's own ceiling (plain pymongo loop)\n")
    print("| documents | per bulk_write | doc size | seconds | docs/s | first batch docs/s | last batch docs/s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {c['docs']} | {c['batch']} | {c['doc_bytes']} B | {c['seconds']:.2f} | {c['rate']:.0f} | "
          f"{c['first_batch_rate']:.0f} | {c['last_batch_rate']:.0f} |")
    print(f"\nUnordered `UpdateOne(upsert=True)` by (recordingId, transactionId) into a fresh database with the "
          f"recorder's indexes. The stand-in scans the collection per upsert, so the rate falls as it grows: "
          f"this is the rate over the first {c['docs']} documents only.\n")

    print("### Sustainable rate: every proxied exchange stored\n")
    print("| paced rate | achieved | seconds | requests sent | 200s | documents stored (pymongo) | equal | "
          "stop took | settled in |")
    print("|---|---|---|---|---|---|---|---|---|")
    equal = "yes" if p["stored"] == p["sent"] == p["ok"] else "**no**"
    print(f"| {p['rate']:.0f}/s | {p['achieved']:.1f}/s | {p['seconds']:.1f} | {p['sent']} | {p['ok']} | "
          f"{p['stored']} | {equal} | {p['stop_s']:.1f} s | {p['settle_s']:.1f} s{'' if p['settled'] else ' (bound hit)'} |")
    r = p["recorder"]
    print(f"\nDuring the recording: TrafficReader published {p['reader']['published']} messages "
          f"(dropped {p['reader']['dropped']}); TrafficRecorder received {r['received']}, recorded {r['recorded']}, "
          f"ignored {r['ignored']}, failed {r['failed']}, lost {r['lost']}, gaps {r['gaps']}, pending {p['pending']} "
          f"(messages: two per exchange). The management API's count for the recording: {p['api_count']} "
          f"(the stand-in's countDocuments does not match ObjectIds, so this reads 0 there; the pymongo count "
          f"matches either form). CPU seconds over the paced run + stop: "
          + ", ".join(f"{k} {v:.2f}" for k, v in p["cpu_s"].items() if v is not None) + ".\n")

    print(f"### Saturation: wrk {args.duration}s, {args.connections} connections, /small\n")
    print("| heliosburn | req/s | vs empty | p50 ms | p99 ms | non-2xx | proxy CPU us/req | proxy core busy | "
          "Redis CPU s | stand-in CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = sat["hb-empty"]["rps"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"
    for name, res in sat.items():
        print(f"| {name} | {res['rps']:.0f} | {res['rps'] / base:.2f}x | {res['p50_ms']:.3f} | {res['p99_ms']:.3f} | "
              f"{res['errors']} | {res['cpu_us_per_req']:.1f} | {res['cpu_s']['hb'] / args.duration:.0%} | "
              f"{fmt(res['cpu_s']['redis'])} | {fmt(res['cpu_s']['mongo'])} |")
    print("\nhb-empty: `pipeline: []`, `support: []`. hb-reader: TrafficReader publishing to a Redis channel nobody "
          "here reads, no support modules. hb-seed: the seed's three modules (the recorder and the streamer run in the "
          "proxy's process, so on its core and in its CPU per request), first with no recording running (the "
          "recorder ignores what it reads), then with one. Proxy core busy: the proxy's CPU seconds over the wrk run "
          "(100% = the whole of CPU 0). Redis and the stand-in are not pinned and compete with both cores.")
    seedrun = sat["hb-seed, recording"]
    m = sc["after_settle"]
    rd, rc = m["TrafficReader"], m["TrafficRecorder"]
    end = sc["at_end"]["TrafficRecorder"]
    print(f"\nhb-seed counters {sc['settle_s']:.0f} s after wrk ended (cumulative since start: warm-up, the paced "
          f"recording, the run with no recording and this one; messages, two per exchange):\n")
    print("| TrafficReader published | dropped | TrafficRecorder received | recorded | ignored | pending | failed | "
          "lost | gaps |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {rd['published']} | {rd['dropped']} | {rc['received']} | {rc['recorded']} | {rc['ignored']} | "
          f"{rc['pending']} | {rc['failed']} | {rc['lost']} | {rc['gaps']} |")
    queued = rd["published"] - rc["received"] - rc["lost"]
    open_batch = rc["received"] - rc["recorded"] - rc["ignored"] - rc["failed"] - rc["pending"]
    print(f"\n- wrk completed {seedrun['total']} exchanges = {2 * seedrun['total']} messages; the recording holds "
          f"{sc['docs_stored']} documents so far (pymongo count).")
    print(f"- published {rd['published']} >= received + lost = {rc['received'] + rc['lost']}: "
          f"{'yes' if rd['published'] >= rc['received'] + rc['lost'] else '**no**'}; the difference, {queued}, is "
          f"still in the recorder's feed queue (at most 65,536 messages) or was dropped from it while full and is "
          f"not reported yet (the recorder adds a loss to `lost` when it next reads the queue, and it is waiting on "
          f"the store).")
    print(f"- received - (recorded + ignored + failed + pending) = {open_batch}: the batch the recorder filled "
          f"behind the write in flight. `pending` is set when a write returns, so while the store is slow it shows "
          f"the batch being written, not the one filling behind it; the identity is exact once the recorder is idle "
          f"(as in the paced run).")
    print(f"- lost {rc['lost']} (feed queue full, counted by the recorder) and failed {rc['failed']}: the shortfall "
          f"is in the counters. In the {sc['settle_s']:.0f} s settle the recorder took "
          f"{rc['received'] - end['received']} more messages and recorded {rc['recorded'] - end['recorded']}.")
    print(f"- Messages are lost one by one, so a stored document may hold a request whose response was lost (or "
          f"the reverse): {rc['recorded'] - sc['recorded_before']} messages "
          f"recorded for this recording make {sc['docs_stored']} documents.")
    print(f"- hb-seed was then killed (SIGKILL): a graceful stop writes the whole backlog in one `update` command, "
          f"which at the stand-in's falling rate (it scans per upsert) would run for tens of minutes; "
          f"its queued messages died with it.\n")


if __name__ == "__main__":
    main()
