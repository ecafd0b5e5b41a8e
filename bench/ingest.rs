//! Recorder ingest: traffic documents stored per second at saturation, with no drops.
//!
//! Publishes request + response messages (1 KiB response bodies, like the proxy makes)
//! onto the in-process bus as fast as the recorder takes them (the driver only waits when
//! the recorder is more than half a ring behind, so nothing is lost), and times until the
//! store holds every transaction. Run: `cargo bench --bench ingest [-- N]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use heliosburn::feed::bus::Bus;
use heliosburn::feed::Publisher;
use heliosburn::modules::traffic_recorder::{RecorderKwargs, TrafficRecorder};
use heliosburn::modules::SupportModule;
use heliosburn::recording::Recordings;
use heliosburn::store::sqlite::SqliteStore;
use heliosburn::store::Store;
use heliosburn::traffic::{self, BodyCapture, RequestInfo, ResponseInfo, TrafficMessage};

const CAPACITY: usize = 65_536;

// The allocator of the heliosburn binary, so the figure is the one the proxy gets.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn message(i: usize, body: &str) -> (Arc<TrafficMessage>, Arc<TrafficMessage>) {
    let now = traffic::timestamp(chrono::Utc::now());
    let mut headers = traffic::MultiMap::new();
    headers.insert("host", ["127.0.0.1:8880"]);
    headers.insert("user-agent", ["bench"]);
    let request = RequestInfo {
        created_at: now.clone(),
        client_protocol: "HTTP/1.1".into(),
        method: "GET".into(),
        uri: format!("/item/{i}?q=1"),
        path: format!("/item/{i}"),
        args: traffic::query_multimap(Some("q=1")),
        headers: headers.clone(),
        body: None,
    };
    let req = TrafficMessage {
        // As TrafficReader makes them: time-ordered ids.
        transaction_id: uuid::Uuid::now_v7().to_string(),
        request_id: uuid::Uuid::now_v7().to_string(),
        response_id: uuid::Uuid::now_v7().to_string(),
        request: Arc::new(request),
        response: None,
    };
    // The response event carries its own copy of the request, with the (empty) body.
    let mut resp = req.clone();
    let mut request = RequestInfo::clone(&req.request);
    request.body = Some(BodyCapture::from_bytes(&[], 0));
    resp.request = Arc::new(request);
    resp.response = Some(Arc::new(ResponseInfo {
        created_at: now,
        client_protocol: "HTTP/1.1".into(),
        status_code: 200,
        status_description: "OK".into(),
        headers,
        body: Some(BodyCapture::from_bytes(body.as_bytes(), body.len() as u64)),
        trailers: None,
        web_socket_messages: None,
    }));
    (Arc::new(req), Arc::new(resp))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let dir = std::env::temp_dir().join(format!("hb-ingest-{}", std::process::id()));
    let store = Arc::new(SqliteStore::open(&dir)?);
    let recordings = Arc::new(Recordings::new(store.clone()));
    let bus = Bus::new(CAPACITY);
    let recorder = TrafficRecorder::new(
        Arc::new(bus.clone()),
        recordings.clone(),
        &RecorderKwargs::default(),
    );
    recorder.start().await?;
    let rec = recordings.create("ingest", "bench/ingest.rs").await?;
    recordings.start(&rec.id).await?;

    let body = "b".repeat(1024);
    let messages: Vec<_> = (0..n).map(|i| message(i, &body)).collect();
    let received = |r: &TrafficRecorder| r.counters()["received"].as_u64().unwrap_or(0) as usize;

    let started = Instant::now();
    for (i, (req, resp)) in messages.into_iter().enumerate() {
        // Checked once per 1024 transactions: reading the counters is not free.
        while i % 1024 == 0 && 2 * i - received(&recorder) > CAPACITY / 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        bus.publish(req);
        bus.publish(resp);
    }
    let stored = loop {
        let count = store.get_recording(&rec.id).await?.map_or(0, |r| r.count);
        if count as usize >= n || started.elapsed() > Duration::from_secs(300) {
            break count;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    recordings.stop(Some(&rec.id)).await?;
    let counters = recorder.counters();
    recorder.stop().await;
    println!(
        "ingest: {stored} of {n} transactions (1 KiB response bodies) stored in {secs:.2} s = {:.0} documents/s; \
         recorder counters {counters}",
        stored as f64 / secs
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
