//! What a recording promises across faults: nothing the proxy answered is lost, however
//! the process ends, and what it could not keep is counted in the recording.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::harness::recordings::{
    all_traffic, counter, counters, create_recording, get_recording, start_recording,
    stop_recording, wait_counter,
};
use crate::harness::{body, Http, TestProxy, Upstream};

/// The recorder writes once a second: at any moment up to a second of answered traffic
/// was read by it and not yet stored, the batch a kill -9 used to cost.
const SLOW_BATCHES: &str = "pipeline:\n  - name: TrafficReader\n\
    support:\n  - name: TrafficRecorder\n    kwargs: { flush_ms: 1000, batch_size: 100000 }\n";

/// Waits (at most `secs`) until `f` holds of the recording.
async fn wait_recording(
    proxy: &TestProxy,
    id: &str,
    secs: u64,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let rec = get_recording(proxy, id).await;
        if f(&rec) {
            return rec;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the recording did not get there within {secs} s: {rec}\n{}",
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clients that send as fast as the proxy answers, each remembering the paths it got a
/// whole 200 for, until told to stop or the proxy goes away.
struct Load {
    answered: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: &TestProxy, clients: usize) -> Self {
        let answered = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|c| {
                let (answered, stop) = (answered.clone(), stop.clone());
                let base = proxy.proxy_url();
                tokio::spawn(async move {
                    let http = Http::new();
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let path = format!("/sat/{c}/{i}");
                        match http
                            .try_request("POST", &format!("{base}{path}"), body(format!("{c}.{i}")))
                            .await
                        {
                            Ok(r) => {
                                assert_eq!(r.status, 200, "{path}");
                                answered.lock().unwrap().push(path);
                            }
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        Self {
            answered,
            stop,
            tasks,
        }
    }

    fn count(&self) -> usize {
        self.answered.lock().unwrap().len()
    }

    async fn wait_for(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.count() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} answered",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a client task");
        }
        std::mem::take(&mut *self.answered.lock().unwrap())
    }
}

/// Waits (at most 60 s) until the recording holds every answered exchange with its
/// response, and asserts it does; returns the documents. The count alone is not enough:
/// exchanges in flight at a kill are stored too, while answered ones may still be on
/// their way (a dead consumer's pending entries are claimed once they are idle).
async fn assert_all_stored(proxy: &TestProxy, id: &str, answered: &[String]) -> Vec<Value> {
    let n = answered.len() as u64;
    wait_recording(proxy, id, 60, |r| r["count"].as_u64() >= Some(n)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (docs, missing) = loop {
        let docs = all_traffic(proxy, id).await;
        let stored = stored_paths(&docs);
        let missing: Vec<String> = answered
            .iter()
            .filter(|p| !stored.contains(*p))
            .cloned()
            .collect();
        if missing.is_empty() || tokio::time::Instant::now() > deadline {
            break (docs, missing);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        missing.is_empty(),
        "{} of {n} answered exchanges are not in the recording, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    docs
}

/// modules.yaml with TrafficReader and one support module in stream mode on `url`, the
/// support module with `kwargs` besides.
fn stream_modules(url: &str, support: &str, kwargs: &str) -> String {
    format!(
        "pipeline:\n  - name: TrafficReader\n    kwargs: {{ redis_url: \"{url}\", redis_mode: stream }}\n\
         support:\n  - name: {support}\n    kwargs: {{ redis_url: \"{url}\", redis_mode: stream{kwargs} }}\n"
    )
}

/// The paths of a recording's transactions that have a response.
fn stored_paths(docs: &[Value]) -> HashSet<String> {
    docs.iter()
        .filter(|d| d["response"]["statusCode"] == 200)
        .map(|d| d["request"]["path"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// kill -9 at saturation with a recording running, then a restart: every exchange a
/// client got a whole answer for is in the recording, read back from the spool.
#[tokio::test]
async fn kill_9_at_saturation_loses_nothing_that_was_answered() {
    let up = Upstream::start().await;
    let mut proxy = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(SLOW_BATCHES)
        .start()
        .await;
    let id = create_recording(&proxy, "saturated", "").await;
    start_recording(&proxy, &id).await;
    let load = Load::start(&proxy, 16);
    load.wait_for(1500).await;
    proxy.signal("KILL");
    assert!(!proxy.wait().await.success());
    let answered = load.finish().await;

    let proxy = proxy.again().start().await;
    assert_all_stored(&proxy, &id, &answered).await;
    // What was read again belongs to the recording: none of it was ignored.
    let c = wait_counter(&proxy, "TrafficRecorder", "recorded", 1).await;
    assert_eq!(counter(&c, "ignored"), 0, "{c}");
}

/// A stop returns once what was captured is stored, and the recording accounts for every
/// exchange it served: served = stored, nothing queued or lost.
#[tokio::test]
async fn a_stopped_recording_accounts_for_every_exchange_served() {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(SLOW_BATCHES)
        .start()
        .await;
    let id = create_recording(&proxy, "accounted", "").await;
    start_recording(&proxy, &id).await;
    let load = Load::start(&proxy, 8);
    load.wait_for(500).await;
    let answered = load.finish().await;
    let stopped = stop_recording(&proxy, &id).await;
    let a = &stopped["accounting"];
    let served = a["served"].as_u64().unwrap();
    assert_eq!(served, answered.len() as u64, "{a}");
    assert_eq!(a["stored"], served, "{a}");
    assert_eq!(
        (&a["queued"], &a["lost"]["total"]),
        (&Value::from(0), &Value::from(0)),
        "{a}"
    );
    assert_eq!(stopped["count"], served, "{stopped}");

    // The CLI prints the identity under the recording.
    let out = proxy.cli(&["recording", "show", &id]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "served {served} = stored {served} + queued 0 + lost 0"
        )),
        "{text}"
    );
}

/// Another process holding the SQLite store's write lock: the store takes nothing until
/// it lets go (the recorder's writes wait, then fail and are retried).
struct StoreLock {
    child: tokio::process::Child,
}

impl StoreLock {
    async fn take(proxy: &TestProxy) -> Self {
        use tokio::io::AsyncBufReadExt;
        let db = proxy.dir().join("data").join("heliosburn.sqlite3");
        let script = "import sqlite3, sys\n\
            c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)\n\
            c.execute('BEGIN EXCLUSIVE')\n\
            print('locked', flush=True)\n\
            sys.stdin.read()\n";
        let mut child = tokio::process::Command::new("python3")
            .args(["-c", script])
            .arg(&db)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run python3");
        let stdout = child.stdout.take().expect("its stdout");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(15),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("the lock within 15 s")
        .expect("read python3's answer");
        assert_eq!(line.trim(), "locked");
        Self { child }
    }

    /// Lets go: the process holding it is stopped by its id.
    async fn release(mut self) {
        self.child.kill().await.expect("stop the lock holder");
    }
}

/// A store slower than the traffic (its write lock held by another process while the
/// traffic runs, and 12 s into the stop): the stop returns after its 10 s wait saying
/// what is still queued (its own write waits for the lock, up to the store's 5 s busy
/// timeout), nothing is lost, and the backlog is stored after the stop.
#[tokio::test]
async fn a_stalled_store_loses_nothing_and_the_backlog_drains_after_the_stop() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let id = create_recording(&proxy, "stalled", "").await;
    start_recording(&proxy, &id).await;
    let lock = StoreLock::take(&proxy).await;
    let load = Load::start(&proxy, 8);
    load.wait_for(400).await;
    let answered = load.finish().await;

    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(12)).await;
        lock.release().await;
    });
    let stopped = stop_recording(&proxy, &id).await;
    release.await.expect("the lock's release");
    let a = &stopped["accounting"];
    let served = answered.len() as u64;
    assert_eq!(a["served"], served, "{a}");
    assert!(
        a["queued"].as_u64().unwrap() > 0,
        "the store was stalled: {a}"
    );
    assert_eq!(a["lost"]["total"], 0, "{a}");

    let rec = wait_recording(&proxy, &id, 60, |r| r["accounting"]["queued"] == 0).await;
    let a = &rec["accounting"];
    assert_eq!(
        (&a["stored"], &a["lost"]["total"]),
        (&Value::from(served), &Value::from(0)),
        "{a}"
    );
    let stored = stored_paths(&all_traffic(&proxy, &id).await);
    assert!(answered.iter().all(|p| stored.contains(p)));
}

/// SIGTERM while the store is stalled: the proxy exits after its drain, saying how many
/// messages wait in the spool and where; started again, it stores every one of them.
#[tokio::test]
async fn sigterm_with_a_stalled_store_keeps_the_backlog_in_the_spool() {
    let up = Upstream::start().await;
    let mut proxy = TestProxy::start(&up).await;
    let id = create_recording(&proxy, "interrupted", "").await;
    start_recording(&proxy, &id).await;
    let lock = StoreLock::take(&proxy).await;
    let load = Load::start(&proxy, 8);
    load.wait_for(300).await;
    let answered = load.finish().await;

    proxy.sigterm();
    let status = proxy.wait().await;
    assert!(status.success(), "{status}");
    let log = proxy.stderr();
    assert!(
        log.contains("wait in the spool") && log.contains("spool="),
        "the log says what waits and where:\n{log}"
    );
    lock.release().await;

    let proxy = proxy.again().start().await;
    assert_all_stored(&proxy, &id, &answered).await;
}

/// Polls TrafficReader's spool counter `name` until it is at least `n`.
async fn wait_spool_counter(proxy: &TestProxy, name: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let c = counters(proxy, "TrafficReader").await;
        if c["spool"][name].as_u64() >= Some(n) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spool.{name} stayed 0: {c}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A spool of 1 MiB in front of a stalled store, with `on_full` as given: the load runs
/// until the spool is full, then the store is let go and the recording stopped. The ring
/// is small (256 messages) and the recorder's batches too (10 documents: it stops reading
/// as soon as its first write waits for the store), so what the spool refuses is not
/// still in memory when the recorder comes back.
async fn fill_the_spool(on_full: &str, counter: &str, n: u64) -> (Value, u64) {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .config_yaml(&format!(
            "bus_capacity: 256\nspool:\n  max_bytes: 1048576\n  on_full: {on_full}\n"
        ))
        .modules_yaml(
            "pipeline:\n  - name: TrafficReader\n\
             support:\n  - name: TrafficRecorder\n    kwargs: { batch_size: 10 }\n",
        )
        .start()
        .await;
    let id = create_recording(&proxy, on_full, "").await;
    start_recording(&proxy, &id).await;
    let lock = StoreLock::take(&proxy).await;
    let load = Load::start(&proxy, 8);
    wait_spool_counter(&proxy, counter, n).await;
    lock.release().await;
    let n = load.count() + 100;
    load.wait_for(n).await;
    let answered = load.finish().await.len() as u64;
    stop_recording(&proxy, &id).await;
    let rec = wait_recording(&proxy, &id, 60, |r| r["accounting"]["queued"] == 0).await;
    assert_eq!(rec["accounting"]["served"], answered, "{rec}");
    (rec["accounting"].clone(), answered)
}

/// `on_full: wait`: a full spool holds new exchanges until the recorder makes room, so
/// every exchange served is stored.
#[tokio::test]
async fn on_full_wait_slows_clients_instead_of_losing_exchanges() {
    let (a, served) = fill_the_spool("wait", "waited", 1).await;
    assert_eq!(a["stored"], served, "{a}");
    assert_eq!(a["lost"]["total"], 0, "{a}");
}

/// `on_full: drop` (the default): a full spool serves on and loses what it cannot keep,
/// counted in the recording: served = stored + lost.
#[tokio::test]
async fn on_full_drop_serves_on_and_counts_what_the_full_spool_lost() {
    // More refused than the ring holds: those are gone from memory too.
    let (a, served) = fill_the_spool("drop", "full", 600).await;
    let (stored, lost) = (
        a["stored"].as_u64().unwrap(),
        a["lost"]["spoolFull"].as_u64().unwrap(),
    );
    assert!(lost > 0, "{a}");
    assert_eq!(stored + lost, served, "{a}");
    assert_eq!(a["lost"]["total"], lost, "{a}");
}

/// `redis_mode: stream` on the reader and the recorder, with a Redis that keeps what it
/// acknowledged (AOF, fsync always), killed and restarted under load: the proxy serves
/// throughout (its outbox holds the traffic meanwhile), and every exchange it answered
/// is stored once.
#[tokio::test]
async fn stream_mode_loses_nothing_across_a_redis_kill_and_restart() {
    let mut redis = crate::harness::seed::TestRedis::persistent().await;
    let url = redis.url();
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(&stream_modules(&url, "TrafficRecorder", ""))
        .start()
        .await;
    let id = create_recording(&proxy, "streamed", "").await;
    start_recording(&proxy, &id).await;
    let load = Load::start(&proxy, 8);
    load.wait_for(300).await;
    redis.kill();
    let during = load.count() + 300;
    load.wait_for(during).await;
    redis.restart().await;
    let after = load.count() + 300;
    load.wait_for(after).await;
    let answered = load.finish().await;

    let n = answered.len() as u64;
    let rec = wait_recording(&proxy, &id, 60, |r| r["accounting"]["stored"] == n).await;
    assert_eq!(
        rec["count"], n,
        "one document per exchange, none twice: {rec}"
    );
    assert_eq!(rec["accounting"]["lost"]["total"], 0, "{rec}");
    assert_all_stored(&proxy, &id, &answered).await;
    let log = proxy.stderr();
    assert!(log.contains("traffic waits in the outbox"), "{log}");
}

/// Stream mode, a recorder killed (-9) with entries it read and had not acknowledged
/// (its batches wait a second): the recorder of the process started in its place takes
/// them over from the dead consumer (`XAUTOCLAIM`, after 1 s here) and stores each once.
#[tokio::test]
async fn stream_mode_hands_a_dead_recorders_pending_entries_to_another() {
    let redis = crate::harness::seed::TestRedis::start().await;
    let url = redis.url();
    let up = Upstream::start().await;
    let mut proxy = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(&stream_modules(
            &url,
            "TrafficRecorder",
            ", flush_ms: 1000, batch_size: 100000, redis_claim_idle_ms: 1000",
        ))
        .start()
        .await;
    let id = create_recording(&proxy, "taken over", "").await;
    start_recording(&proxy, &id).await;
    let load = Load::start(&proxy, 8);
    load.wait_for(1000).await;
    proxy.signal("KILL");
    assert!(!proxy.wait().await.success());
    let answered = load.finish().await;

    let proxy = proxy.again().start().await;
    let docs = assert_all_stored(&proxy, &id, &answered).await;
    let stored = stored_paths(&docs);
    assert_eq!(
        stored.len(),
        docs.iter()
            .filter(|d| d["response"]["statusCode"] == 200)
            .count(),
        "a path stored twice"
    );
    let log = proxy
        .wait_for_log(&["took over entries another consumer left pending"])
        .await;
    assert!(!log.is_empty());
}

/// Stream mode on the live window's side too: TrafficStreamer reads the stream from its
/// end (`XREAD`) and the window shows the traffic as it passes.
#[tokio::test]
async fn stream_mode_feeds_the_live_window() {
    let redis = crate::harness::seed::TestRedis::start().await;
    let url = redis.url();
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(&stream_modules(&url, "TrafficStreamer", ""))
        .start()
        .await;
    let http = Http::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // Sent until one shows: the streamer's first XREAD starts at the stream's end.
    for i in 0.. {
        let path = format!("/live/{i}");
        assert_eq!(http.get(&proxy.url(&path)).await.status, 200);
        let page = proxy.mgmt_get("/traffic?since=0").await.json();
        let shown = page["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["request"]["path"] == path.as_str()));
        if shown {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing reached the window: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The MongoDB store killed (-9) and started again under load, the recorder on the
/// embedded feed: the spool holds the traffic while the store is away, and every
/// exchange answered is stored once it is back.
#[tokio::test]
async fn a_mongodb_killed_and_restarted_under_load_loses_nothing() {
    let mut mongo = crate::harness::mongo::PrivateMongo::start().await;
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(&format!(
            "pipeline:\n  - name: TrafficReader\n\
             support:\n  - name: TrafficRecorder\n    kwargs: {{ mongo_uri: \"{}\", mongo_db: hb_durability }}\n",
            mongo.uri()
        ))
        .start()
        .await;
    let id = create_recording(&proxy, "mongo outage", "").await;
    start_recording(&proxy, &id).await;
    let load = Load::start(&proxy, 8);
    load.wait_for(300).await;
    mongo.kill();
    let during = load.count() + 300;
    load.wait_for(during).await;
    mongo.restart().await;
    let after = load.count() + 300;
    load.wait_for(after).await;
    let answered = load.finish().await;
    stop_recording(&proxy, &id).await;

    // Every message (a request and a response each) written, then the documents read
    // from MongoDB itself (the stand-in is slow to page through the API).
    let n = answered.len() as u64;
    wait_counter(&proxy, "TrafficRecorder", "recorded", 2 * n).await;
    let client = mongodb::Client::with_uri_str(mongo.uri()).await.unwrap();
    let cursor = client
        .database("hb_durability")
        .collection::<mongodb::bson::Document>("traffic")
        .find(mongodb::bson::doc! {})
        .await
        .unwrap();
    let docs: Vec<mongodb::bson::Document> = futures_util::TryStreamExt::try_collect(cursor)
        .await
        .unwrap();
    let stored: HashSet<String> = docs
        .iter()
        .filter(|d| {
            d.get_document("response").is_ok_and(|r| {
                matches!(
                    r.get("statusCode"),
                    Some(mongodb::bson::Bson::Int32(200) | mongodb::bson::Bson::Int64(200))
                )
            })
        })
        .filter_map(|d| {
            Some(
                d.get_document("request")
                    .ok()?
                    .get_str("path")
                    .ok()?
                    .to_owned(),
            )
        })
        .collect();
    let missing = answered.iter().filter(|p| !stored.contains(*p)).count();
    assert_eq!(
        missing,
        0,
        "of {n} answered ({} documents, e.g. {:?})",
        docs.len(),
        docs.first()
    );
    let log = proxy.stderr();
    assert!(
        log.contains("keeping it to retry"),
        "the store was away: {log}"
    );
}
