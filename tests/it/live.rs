//! The feed beside the proxy: the live window read with a cursor, a full bus that drops
//! and counts instead of blocking, and the counters each module reports.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::recordings::{
    all_traffic, counter, counters, create_recording, get_recording, module_status,
    start_recording, stop_recording,
};
use crate::harness::{Http, TestProxy, Upstream};

/// `GET /traffic?since=CURSOR`: returns the messages and the next cursor.
async fn poll(proxy: &TestProxy, since: i64) -> (i64, Vec<Value>) {
    let r = proxy.mgmt_get(&format!("/traffic?since={since}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.json();
    let messages = page["messages"].as_array().unwrap().clone();
    assert_eq!(page["count"], messages.len(), "{page}");
    let cursor = page["cursor"]
        .as_i64()
        .unwrap_or_else(|| panic!("no cursor in {page}"));
    (cursor, messages)
}

#[tokio::test]
async fn the_live_window_gives_each_message_once_and_nothing_older_than_a_second() {
    const N: usize = 40;
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let (mut cursor, first) = poll(&proxy, 0).await;
    assert!(first.is_empty(), "{first:?}");

    // A reader polls with its cursor while the traffic goes on (exchanges paced so that it
    // spans several polls).
    let sender = {
        let url = proxy.proxy_url();
        tokio::spawn(async move {
            let http = Http::new();
            for i in 0..N {
                assert_eq!(http.get(&format!("{url}/live/{i}")).await.status, 200);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut seen: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 2 * N && Instant::now() < deadline {
        let (next, messages) = poll(&proxy, cursor).await;
        assert!(next >= cursor, "the cursor went back: {cursor} -> {next}");
        assert!(
            messages.is_empty() || next > cursor,
            "messages came with a cursor that did not move"
        );
        cursor = next;
        seen.extend(messages);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sender.await.unwrap();

    // Exactly one request message and one response message per exchange.
    let mut by_path: HashMap<String, (usize, usize, Vec<String>)> = HashMap::new();
    for m in &seen {
        let path = m["request"]["path"].as_str().unwrap().to_owned();
        let e = by_path.entry(path).or_default();
        match m.get("response") {
            None => e.0 += 1,
            Some(r) => {
                assert_eq!(r["statusCode"], 200, "{m}");
                e.1 += 1;
            }
        }
        e.2.push(m["transaction_id"].as_str().unwrap().to_owned());
    }
    for i in 0..N {
        let (requests, responses, txns) = by_path
            .get(&format!("/live/{i}"))
            .unwrap_or_else(|| panic!("/live/{i} never seen in the window"));
        assert_eq!(
            (*requests, *responses),
            (1, 1),
            "/live/{i}: {requests} request and {responses} response messages"
        );
        assert_eq!(txns[0], txns[1], "one transaction id per exchange");
    }
    assert_eq!(seen.len(), 2 * N, "unexpected messages: {seen:#?}");
    for m in &seen {
        for key in ["transaction_id", "request_id", "response_id"] {
            assert!(m[key].as_str().is_some_and(|s| !s.is_empty()), "{key}: {m}");
        }
        assert_eq!(m["request"]["method"], "GET");
        assert!(m["request"]["createdAt"].is_string(), "{m}");
    }
    let (after, more) = poll(&proxy, cursor).await;
    assert!(more.is_empty(), "seen twice: {more:#?}");
    assert_eq!(after, cursor);

    // A second later the window is empty, whatever the cursor: it empties within a
    // second and a half of the last exchange, and stays empty.
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    loop {
        let (_, old) = poll(&proxy, 0).await;
        if old.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "older than a second: {old:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = proxy.mgmt_get("/traffic").await;
    assert_eq!(r.json()["count"], 0, "{}", r.text());
    let r = proxy.mgmt_get("/traffic?since=yesterday").await;
    assert_eq!(r.status, 400, "{}", r.text());
}

/// A bus of 16 messages and a subscriber that takes 200 ms per message: 300 requests are
/// all answered at once, the slow subscriber loses messages and counts them, and every
/// module's accounts add up.
#[tokio::test]
async fn a_full_bus_drops_and_counts_instead_of_blocking() {
    const N: usize = 300;
    const CLIENTS: usize = 10;
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .config_yaml("bus_capacity: 16\n")
        .modules_yaml(
            "pipeline:\n  - name: TrafficReader\n\
             support:\n  - name: TrafficRecorder\n  - name: TrafficStreamer\n\
             \x20 - name: SlowConsumer\n    kwargs: { delay_ms: 200 }\n",
        )
        .start()
        .await;
    let id = create_recording(&proxy, "under load", "").await;
    start_recording(&proxy, &id).await;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let url = proxy.proxy_url();
        tasks.push(tokio::spawn(async move {
            let http = Http::new();
            let mut slowest = Duration::ZERO;
            for i in (c..N).step_by(CLIENTS) {
                let t = Instant::now();
                let r = http.get(&format!("{url}/load/{i}")).await;
                assert_eq!(r.status, 200);
                slowest = slowest.max(t.elapsed());
            }
            slowest
        }));
    }
    let mut slowest = Duration::ZERO;
    for t in tasks {
        slowest = slowest.max(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    // Blocked on the slow subscriber, 600 messages would take 120 s.
    assert!(
        elapsed < Duration::from_secs(20) && slowest < Duration::from_secs(3),
        "{N} requests took {elapsed:?}, the slowest {slowest:?}"
    );
    stop_recording(&proxy, &id).await;

    let published = 2 * N as u64;
    let reader = counters(&proxy, "TrafficReader").await;
    assert_eq!(counter(&reader, "published"), published, "{reader}");
    assert_eq!(counter(&reader, "dropped"), 0, "{reader}");

    // The slow subscriber learns of its loss on its next receive, after its 200 ms.
    let deadline = Instant::now() + Duration::from_secs(5);
    let slow = loop {
        let slow = counters(&proxy, "SlowConsumer").await;
        if counter(&slow, "lost") > 0 || Instant::now() > deadline {
            break slow;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lost = counter(&slow, "lost");
    assert!(lost > 0, "the slow subscriber lost nothing: {slow}");
    assert!(
        counter(&slow, "seen") + lost <= published,
        "more than was published: {slow}"
    );

    // The recorder and the streamer account for every message: received or lost.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (recorder, streamer) = loop {
        let recorder = counters(&proxy, "TrafficRecorder").await;
        let streamer = counters(&proxy, "TrafficStreamer").await;
        let settled = counter(&recorder, "received")
            + counter(&recorder, "lost")
            + counter(&recorder, "skipped")
            == published
            && counter(&streamer, "windowed") + counter(&streamer, "lost") == published;
        if settled || Instant::now() > deadline {
            break (recorder, streamer);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The recorder reads the spool where it fell behind the ring: it loses nothing, and
    // skips the request messages the spool does not keep (their responses carry them).
    assert_eq!(counter(&recorder, "lost"), 0, "{recorder}");
    assert_eq!(
        counter(&recorder, "received") + counter(&recorder, "skipped"),
        published,
        "{recorder}"
    );
    assert_eq!(
        counter(&streamer, "windowed") + counter(&streamer, "lost"),
        published,
        "{streamer}"
    );
    assert_eq!(counter(&recorder, "failed"), 0, "{recorder}");
    assert_eq!(
        counter(&recorder, "received"),
        counter(&recorder, "recorded") + counter(&recorder, "ignored"),
        "{recorder}"
    );

    // What the recorder lost is missing from the recording, and nothing else is.
    let recorder_lost = counter(&recorder, "lost");
    let docs = all_traffic(&proxy, &id).await;
    let count = get_recording(&proxy, &id).await["count"].as_u64().unwrap();
    assert_eq!(count, docs.len() as u64);
    assert!(count <= N as u64);
    assert!(
        count >= N as u64 - recorder_lost / 2,
        "{count} stored, {recorder_lost} messages lost: {recorder}"
    );
    let incomplete = docs.iter().filter(|d| d["response"].is_null()).count() as u64;
    assert!(
        incomplete <= recorder_lost,
        "{incomplete} without response: {recorder}"
    );
    if recorder_lost == 0 {
        assert_eq!(count, N as u64);
    }
    let status = module_status(&proxy, "SlowConsumer").await;
    assert_eq!(status["state"], "running", "{status}");
    println!("bus 16: reader {reader}, recorder {recorder}, streamer {streamer}, slow {slow}");
}

#[tokio::test]
async fn each_module_counts_what_it_did() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let http = Http::new();
    for i in 0..3 {
        assert_eq!(
            http.get(&proxy.url(&format!("/idle/{i}"))).await.status,
            200
        );
    }
    let id = create_recording(&proxy, "counted", "").await;
    start_recording(&proxy, &id).await;
    for i in 0..10 {
        let r = http
            .request(
                "POST",
                &proxy.url(&format!("/c/{i}")),
                crate::harness::body("x"),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    stop_recording(&proxy, &id).await;

    let status = proxy.mgmt_get("/status").await;
    assert_eq!(status.status, 200);
    let status = status.json();
    let modules: Vec<(String, String, String)> = status["message"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["module"].as_str().unwrap().to_owned(),
                m["kind"].as_str().unwrap().to_owned(),
                m["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("TrafficReader", "pipeline"),
        ("TrafficRecorder", "support"),
        ("TrafficStreamer", "support"),
    ]
    .iter()
    .map(|(m, k)| (m.to_string(), k.to_string(), "running".to_string()))
    .collect();
    assert_eq!(modules, expected, "{status}");

    let mut reader = counters(&proxy, "TrafficReader").await;
    // Only the recording's response messages go to the spool (each carries its request
    // again): 10 exchanges.
    let spool = reader["spool"].take();
    assert_eq!(
        (&spool["spooled"], &spool["full"], &spool["failed"]),
        (&json!(10), &json!(0), &json!(0)),
        "{spool}"
    );
    assert!(spool["bytes"].as_u64().unwrap() > 0, "{spool}");
    assert_eq!(
        reader,
        json!({ "published": 26, "dropped": 0, "spool": null, "redact": true, "redacted": 0 })
    );
    let recorder = counters(&proxy, "TrafficRecorder").await;
    for (name, value) in [
        ("received", 26),
        ("recorded", 20),
        ("ignored", 6),
        ("lost", 0),
        ("gaps", 0),
        ("failed", 0),
        ("pending", 0),
    ] {
        assert_eq!(counter(&recorder, name), value, "{name}: {recorder}");
    }
    assert!(
        recorder["store"]
            .as_str()
            .is_some_and(|s| s.starts_with("sqlite:")),
        "{recorder}"
    );
    // The streamer works on its own time: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let streamer = loop {
        let s = counters(&proxy, "TrafficStreamer").await;
        if counter(&s, "windowed") >= 26 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        streamer,
        json!({ "windowed": 26, "lost": 0, "gaps": 0, "failed": 0, "watchers": 0 })
    );
    assert_eq!(get_recording(&proxy, &id).await["count"], 10);

    // A reset clears the counters; the module runs on.
    let r = proxy
        .mgmt_post("/modules/TrafficRecorder/reset", json!(null))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"]["state"], "running");
    let recorder = counters(&proxy, "TrafficRecorder").await;
    assert_eq!(counter(&recorder, "received"), 0, "{recorder}");
    assert_eq!(counter(&recorder, "recorded"), 0, "{recorder}");
    let r = proxy.mgmt_get("/status?module=Nope").await;
    assert_eq!(r.status, 404, "{}", r.text());
}
