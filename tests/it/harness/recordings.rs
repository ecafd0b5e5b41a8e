//! The recordings API and module status as the recording tests use them: each helper
//! asserts the status it expects and returns the JSON.

use serde_json::{json, Value};

use super::client::{body, Http, Resp};
use super::proxy::TestProxy;

/// `POST /recording`; asserts 201 and a Location naming the new id; returns the id.
pub async fn create_recording(proxy: &TestProxy, name: &str, description: &str) -> String {
    let r = proxy
        .mgmt_post(
            "/recording",
            json!({ "name": name, "description": description }),
        )
        .await;
    assert_eq!(r.status, 201, "create: {}", r.text());
    let rec = r.json();
    let id = rec["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {rec}"))
        .to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("/recording/{id}").as_str())
    );
    id
}

/// `POST /recording/{id}/start`; asserts 200; returns the recording.
pub async fn start_recording(proxy: &TestProxy, id: &str) -> Value {
    let r = proxy
        .mgmt_post(&format!("/recording/{id}/start"), json!(null))
        .await;
    assert_eq!(r.status, 200, "start {id}: {}", r.text());
    r.json()
}

/// `POST /recording/{id}/stop`; asserts 200; returns the recording.
pub async fn stop_recording(proxy: &TestProxy, id: &str) -> Value {
    let r = proxy
        .mgmt_post(&format!("/recording/{id}/stop"), json!(null))
        .await;
    assert_eq!(r.status, 200, "stop {id}: {}", r.text());
    r.json()
}

/// `GET /recording/{id}`; asserts 200.
pub async fn get_recording(proxy: &TestProxy, id: &str) -> Value {
    let r = proxy.mgmt_get(&format!("/recording/{id}")).await;
    assert_eq!(r.status, 200, "get {id}: {}", r.text());
    r.json()
}

/// One page of `GET /recording/{id}/traffic?start=&offset=`; asserts 200.
pub async fn traffic_page(proxy: &TestProxy, id: &str, start: u64, offset: u64) -> Value {
    let r = proxy
        .mgmt_get(&format!(
            "/recording/{id}/traffic?start={start}&offset={offset}"
        ))
        .await;
    assert_eq!(r.status, 200, "traffic of {id}: {}", r.text());
    r.json()
}

/// Every traffic document of a recording, in capture order.
pub async fn all_traffic(proxy: &TestProxy, id: &str) -> Vec<Value> {
    let page = traffic_page(proxy, id, 0, 10_000).await;
    page["traffic"]
        .as_array()
        .unwrap_or_else(|| panic!("no `traffic` array in {page}"))
        .clone()
}

/// The status line of one module (`GET /status?module=NAME`).
pub async fn module_status(proxy: &TestProxy, name: &str) -> Value {
    let r = proxy.mgmt_get(&format!("/status?module={name}")).await;
    assert_eq!(r.status, 200, "status of {name}: {}", r.text());
    r.json()["message"][0].clone()
}

/// A module's counters, as numbers by name.
pub async fn counters(proxy: &TestProxy, name: &str) -> Value {
    module_status(proxy, name).await["counters"].clone()
}

/// A counter as u64 (panics, showing the counters, when it is missing).
pub fn counter(counters: &Value, name: &str) -> u64 {
    counters[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter `{name}` in {counters}"))
}

/// Waits (at most 10 s) until a module's counter reaches `at_least`, and returns the
/// counters: the barrier that says the module has done what it does with a message, so
/// a test can then assert that nothing else happened, without sleeping and hoping.
pub async fn wait_counter(proxy: &TestProxy, module: &str, name: &str, at_least: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let c = counters(proxy, module).await;
        if c[name].as_u64().is_some_and(|n| n >= at_least) {
            return c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{module} `{name}` did not reach {at_least} within 10 s: {c}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// `POST /recording/import[QUERY]` with a HAR document as the body.
pub async fn import(proxy: &TestProxy, query: &str, har: Vec<u8>) -> Resp {
    let req = http::Request::post(format!("{}/recording/import{query}", proxy.mgmt_url()))
        .header("content-type", "application/json")
        .body(body(har))
        .unwrap();
    Http::new().send(req).await
}
