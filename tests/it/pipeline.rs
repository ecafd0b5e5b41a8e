//! Pipeline modules run in `modules.yaml` order on requests and in reverse on responses;
//! a stopped module is skipped until it is started again.

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use serde_json::json;

use crate::harness::recordings::{all_traffic, create_recording, start_recording, stop_recording};
use crate::harness::{channel_body, Http, TestProxy, Upstream};

const TWO_ADD_HEADERS: &str = include_str!("../fixtures/two-add-headers.yaml");

#[tokio::test]
async fn modules_run_in_order_up_and_in_reverse_down() {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(TWO_ADD_HEADERS)
        .start()
        .await;
    let r = Http::new().get(&proxy.url("/echo")).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last_request().header_all("x-order"), ["first", "second"]);
    assert_eq!(r.header_all("x-order"), ["second", "first"]);
}

#[tokio::test]
async fn a_stopped_module_is_skipped_until_started() {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(TWO_ADD_HEADERS)
        .start()
        .await;
    let http = Http::new();

    let r = proxy
        .mgmt_post("/modules/AddHeader/stop", json!(null))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"]["state"], "stopped");
    let status = proxy.mgmt_get("/status").await.json();
    let states: Vec<(String, String)> = status["message"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["module"].as_str().unwrap().to_owned(),
                m["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("AddHeader".to_owned(), "stopped".to_owned()),
            ("AddHeader#2".to_owned(), "running".to_owned()),
        ]
    );
    let r = http.get(&proxy.url("/echo")).await;
    assert_eq!(up.last_request().header_all("x-order"), ["second"]);
    assert_eq!(r.header_all("x-order"), ["second"]);

    let r = proxy
        .mgmt_post("/modules/AddHeader/start", json!(null))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"]["state"], "running");
    let r = http.get(&proxy.url("/echo")).await;
    assert_eq!(up.last_request().header_all("x-order"), ["first", "second"]);
    assert_eq!(r.header_all("x-order"), ["second", "first"]);

    let r = proxy.mgmt_post("/modules/Nope/stop", json!(null)).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["message"],
        "no module named `Nope`; modules: AddHeader, AddHeader#2"
    );
    let r = proxy
        .mgmt_post("/modules/AddHeader/explode", json!(null))
        .await;
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("no module action `explode`")),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn an_empty_pipeline_forwards_untouched() {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .no_modules()
        .start()
        .await;
    let r = Http::new().get(&proxy.url("/echo?x=1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["query"], "x=1");
    let status = proxy.mgmt_get("/status").await.json();
    assert_eq!(status["message"], json!([]));
}

#[tokio::test]
async fn reload_rebuilds_a_module_from_the_changed_file() {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(TWO_ADD_HEADERS)
        .start()
        .await;
    let http = Http::new();
    std::fs::write(
        proxy.modules_path(),
        TWO_ADD_HEADERS.replace("x-order: second", "x-order: changed"),
    )
    .unwrap();
    // Only the module reloaded takes the new kwargs.
    let r = proxy
        .mgmt_post("/modules/AddHeader%232/reload", json!(null))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"]["module"], "AddHeader#2");
    assert_eq!(r.json()["message"]["state"], "running");
    let r = http.get(&proxy.url("/echo")).await;
    assert_eq!(
        up.last_request().header_all("x-order"),
        ["first", "changed"]
    );
    assert_eq!(r.header_all("x-order"), ["changed", "first"]);

    // A file that no longer validates: 400 naming the problem, the module as it was.
    std::fs::write(
        proxy.modules_path(),
        "pipeline: [{name: AddHeader, kwargs: {request: {'bad header': x}}}]\n",
    )
    .unwrap();
    let r = proxy
        .mgmt_post("/modules/AddHeader/reload", json!(null))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("`bad header` is not a header name"),
        "{}",
        r.text()
    );
    let status = proxy.mgmt_get("/status?module=AddHeader").await.json();
    assert_eq!(status["message"][0]["state"], "running");
    http.get(&proxy.url("/echo")).await;
    assert_eq!(
        up.last_request().header_all("x-order"),
        ["first", "changed"]
    );

    // Reset restarts a stopped module.
    proxy
        .mgmt_post("/modules/AddHeader/stop", json!(null))
        .await;
    let r = proxy
        .mgmt_post("/modules/AddHeader/reset", json!(null))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"]["state"], "running");
}

/// A phase may answer a request itself (playback, mocks) or fail it with a status; the
/// phases before it still see the answer, so it is recorded like any other.
#[tokio::test]
async fn a_module_can_answer_or_fail_a_request_itself() {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(
            "pipeline:\n\
             \x20 - {name: TrafficReader}\n\
             \x20 - {name: StaticResponse, kwargs: {path: /mock, status: 201, body: mocked, headers: {x-mock: 'yes'}}}\n\
             \x20 - {name: StaticResponse, kwargs: {path: /denied, status: 403, fail: 'not for you'}}\n\
             support: [{name: TrafficRecorder}]\n",
        )
        .start()
        .await;
    let id = create_recording(&proxy, "answers", "").await;
    start_recording(&proxy, &id).await;
    let http = Http::new();

    let r = http
        .request(
            "POST",
            &proxy.url("/mock/a?b=1"),
            crate::harness::body("never read"),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (201, "mocked"));
    assert_eq!(r.header("x-mock"), Some("yes"));
    let r = http.get(&proxy.url("/denied")).await;
    assert_eq!(r.status.as_u16(), 403);
    assert_eq!(r.text(), "heliosburn: not for you\n");
    assert_eq!(
        up.requests().len(),
        0,
        "the upstream saw an answered request"
    );
    let r = http.get(&proxy.url("/echo")).await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(up.requests().len(), 1);

    stop_recording(&proxy, &id).await;
    let traffic = all_traffic(&proxy, &id).await;
    let seen: Vec<(String, u64)> = traffic
        .iter()
        .map(|t| {
            (
                t["request"]["path"].as_str().unwrap_or_default().to_owned(),
                t["response"]["statusCode"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("/mock/a".to_owned(), 201),
            ("/denied".to_owned(), 403),
            ("/echo".to_owned(), 200)
        ]
    );
    assert_eq!(
        traffic[0]["response"]["body"]["data"], "mocked",
        "{}",
        traffic[0]
    );
}

/// Each exchange runs on the pipeline as it was when its request arrived: a module
/// stopped while an exchange is in flight still sees that exchange complete.
#[tokio::test]
async fn a_module_stopped_mid_exchange_still_completes_it() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let id = create_recording(&proxy, "mid-exchange", "").await;
    start_recording(&proxy, &id).await;
    let http = Http::new();

    let (tx, req_body) = channel_body();
    tx.send(Bytes::from_static(b"first ")).await.unwrap();
    let req = Request::post(proxy.url("/echo-body"))
        .body(req_body)
        .unwrap();
    // The response's head is back; its body streams the rest of the request back.
    let resp = http.stream(req).await;
    let r = proxy
        .mgmt_post("/modules/TrafficReader/stop", json!(null))
        .await;
    assert_eq!(r.json()["message"]["state"], "stopped", "{}", r.text());
    tx.send(Bytes::from_static(b"second")).await.unwrap();
    drop(tx);
    let echoed = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed, "first second");
    // Exchanges that begin after the stop are not seen.
    assert_eq!(http.get(&proxy.url("/echo")).await.status.as_u16(), 200);

    stop_recording(&proxy, &id).await;
    let traffic = all_traffic(&proxy, &id).await;
    assert_eq!(traffic.len(), 1, "{traffic:?}");
    assert_eq!(traffic[0]["request"]["path"], "/echo-body");
    assert_eq!(traffic[0]["response"]["statusCode"], 200, "{}", traffic[0]);
    assert_eq!(traffic[0]["response"]["body"]["data"], "first second");
}
