//! `GET /metrics`, read by the Prometheus client's own OpenMetrics parser (PyPI
//! `prometheus-client`, in `.tools-venv` from scripts/test.sh): the counts equal the
//! traffic sent.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::recordings::{create_recording, start_recording, stop_recording};
use crate::harness::{body, closed_port, Http, TestProxy, Upstream};

/// Each sample as `name{labels as sorted JSON}` → value, as the parser read them.
fn parse(text: &str) -> HashMap<String, f64> {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.tools-venv/bin/python");
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out[s.name + json.dumps(s.labels, sort_keys=True)] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e}; scripts/test.sh installs it"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:?}"))
}

#[tokio::test]
async fn metrics_count_the_traffic_sent() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let http = Http::new();
    for _ in 0..5 {
        assert_eq!(http.get(&proxy.url("/echo")).await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(http.get(&proxy.url("/status/503")).await.status, 503);
    }
    for _ in 0..2 {
        let r = http
            .request("POST", &proxy.url("/echo"), body("hello"))
            .await;
        assert_eq!(r.status, 200);
    }
    let r = proxy.mgmt_get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/openmetrics-text")));
    let samples = parse(&r.text());
    let count = |method: &str, status: &str| {
        sample(
            &samples,
            &format!(r#"heliosburn_exchanges_total{{"method": "{method}", "status": "{status}"}}"#),
        )
    };
    assert_eq!(count("GET", "2xx"), 5.0);
    assert_eq!(count("GET", "5xx"), 3.0);
    assert_eq!(count("POST", "2xx"), 2.0);
    assert_eq!(
        sample(&samples, "heliosburn_exchange_duration_seconds_count{}"),
        10.0
    );
    assert_eq!(
        sample(&samples, "heliosburn_request_body_bytes_total{}"),
        10.0
    );
    assert!(sample(&samples, "heliosburn_response_body_bytes_total{}") > 0.0);
    assert!(sample(&samples, "heliosburn_open_connections{}") >= 1.0);
    // The modules' counters: the reader published a request and a response event each.
    let published = sample(
        &samples,
        r#"heliosburn_module_counter{"counter": "published", "module": "TrafficReader"}"#,
    );
    assert_eq!(published, 20.0);

    // An upstream that is not there: a connect error, by kind.
    let gone = TestProxy::builder()
        .upstream_url(format!("http://127.0.0.1:{}", closed_port()))
        .start()
        .await;
    assert_eq!(http.get(&gone.url("/x")).await.status, 502);
    let samples = parse(&gone.mgmt_get("/metrics").await.text());
    assert_eq!(
        sample(
            &samples,
            r#"heliosburn_upstream_errors_total{"kind": "connect"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn metrics_show_the_recorders_store_writes_and_nested_counters() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let http = Http::new();
    let id = create_recording(&proxy, "metrics", "").await;
    start_recording(&proxy, &id).await;
    for _ in 0..4 {
        assert_eq!(http.get(&proxy.url("/echo")).await.status, 200);
    }
    // A stop flushes what was captured to the store.
    stop_recording(&proxy, &id).await;
    let samples = parse(&proxy.mgmt_get("/metrics").await.text());
    let recorded = sample(
        &samples,
        r#"heliosburn_module_counter{"counter": "recorded", "module": "TrafficRecorder"}"#,
    );
    assert!(recorded >= 4.0, "{recorded}");
    let writes = sample(
        &samples,
        r#"heliosburn_store_write_seconds_count{"module": "TrafficRecorder"}"#,
    );
    assert!(writes >= 1.0, "no store write observed");
    let inf = sample(
        &samples,
        r#"heliosburn_store_write_seconds_bucket{"le": "+Inf", "module": "TrafficRecorder"}"#,
    );
    assert_eq!(inf, writes);
    // Nested counters are joined: the spool's bytes on disk, under the reader.
    sample(
        &samples,
        r#"heliosburn_module_counter{"counter": "spool_bytes", "module": "TrafficReader"}"#,
    );
}
