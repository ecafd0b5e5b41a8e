//! Pipeline modules run in `modules.yaml` order on requests and in reverse on responses;
//! a stopped module is skipped until it is started again.

use serde_json::json;

use crate::harness::{Http, TestProxy, Upstream};

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
    let states: Vec<(String, String)> = status["message"]["modules"]
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
    assert_eq!(status["message"]["modules"], json!([]));
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
    assert_eq!(status["message"]["modules"][0]["state"], "running");
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
