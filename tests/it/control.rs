//! The management API's proxy operations: upstream and listener changes at run time,
//! status, and what bad requests are told.

use serde_json::json;

use crate::harness::{
    assert_accepts, closed_port, wait_refused, Http, RawConn, TestProxy, Upstream,
};

#[tokio::test]
async fn upstream_port_change_takes_effect_without_a_restart() {
    let a = Upstream::new().name("a").run().await;
    let b = Upstream::new().name("b").run().await;
    let proxy = TestProxy::start(&a).await;
    // One client, its connection to the proxy kept alive across the change.
    let http = Http::new();
    assert_eq!(http.get(&proxy.url("/echo")).await.json()["upstream"], "a");

    let r = proxy
        .mgmt_put("/proxy", json!({ "upstream_port": b.port() }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // PUT answers like GET: the proxy's state, not wrapped.
    assert_eq!(r.json()["upstream"], b.url());
    assert_eq!(http.get(&proxy.url("/echo")).await.json()["upstream"], "b");
    assert_eq!(proxy.mgmt_get("/proxy").await.json()["upstream"], b.url());

    // The control operation form does the same.
    let r = proxy
        .mgmt_post(
            "/control",
            json!({ "operation": "upstream_port", "param": a.port() }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(http.get(&proxy.url("/echo")).await.json()["upstream"], "a");
    assert_eq!(a.requests().len(), 2);
    assert_eq!(b.requests().len(), 1);

    // A host name works as well as an address.
    let r = proxy
        .mgmt_put(
            "/proxy",
            json!({ "upstream_host": "localhost", "upstream_port": b.port() }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["upstream"],
        format!("http://localhost:{}", b.port())
    );
    assert_eq!(http.get(&proxy.url("/echo")).await.json()["upstream"], "b");
}

/// An exchange in flight when the upstream changes finishes where it started.
#[tokio::test]
async fn an_exchange_in_flight_finishes_on_the_old_upstream() {
    use http_body_util::BodyExt;
    let a = Upstream::new().name("a").run().await;
    let b = Upstream::new().name("b").run().await;
    let proxy = TestProxy::start(&a).await;
    let req = http::Request::get(proxy.url("/slow"))
        .body(crate::harness::body(""))
        .unwrap();
    let mut slow = Http::new().stream(req).await;
    slow.body_mut().frame().await.unwrap().unwrap();
    let r = proxy
        .mgmt_put("/proxy", json!({ "upstream_port": b.port() }))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        Http::new().get(&proxy.url("/echo")).await.json()["upstream"],
        "b"
    );
    assert_eq!(slow.headers()["x-upstream"], "a");
    let rest = slow.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(rest, crate::harness::upstream::SLOW_REST.as_bytes());
}

#[tokio::test]
async fn selftest_round_trips_through_the_pipeline() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let r = proxy.mgmt_post("/test", json!(null)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"]["result"], "pass");
    let r = proxy
        .mgmt_post("/control", json!({ "operation": "test" }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        up.requests().is_empty(),
        "the self-test reached the real upstream"
    );
}

#[tokio::test]
async fn stop_refuses_new_connections_and_start_brings_the_listener_back() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let mut open = RawConn::connect(proxy.proxy_addr()).await;
    // One exchange first, so the proxy has accepted the connection: one still in the
    // listen backlog is reset by the kernel when the listener closes.
    open.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(open.read_response(false).await.status, 200);

    let r = proxy.mgmt_post("/proxy/stop", json!(null)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Answered like `GET /proxy`.
    assert_eq!(r.json()["listening"], false);
    wait_refused(proxy.proxy_addr()).await;
    assert_eq!(proxy.mgmt_get("/proxy").await.json()["listening"], false);

    // A connection opened before the stop keeps working.
    open.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(open.read_response(false).await.status, 200);

    let r = proxy.mgmt_post("/proxy/start", json!(null)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["listening"], true);
    assert_eq!(r.json()["bind"], proxy.proxy_addr().to_string());
    assert_eq!(Http::new().get(&proxy.url("/echo")).await.status, 200);

    // The same through the control operations.
    let r = proxy
        .mgmt_post("/control", json!({ "operation": "stop" }))
        .await;
    assert_eq!(r.status, 200);
    wait_refused(proxy.proxy_addr()).await;
    let r = proxy
        .mgmt_post("/control", json!({ "operation": "start" }))
        .await;
    assert_eq!(r.status, 200);
    assert_accepts(proxy.proxy_addr()).await;
}

#[tokio::test]
async fn bind_port_change_moves_the_listener() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let old = proxy.proxy_addr();
    let port = closed_port();

    let r = proxy.mgmt_put("/proxy", json!({ "bind_port": port })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new = format!("127.0.0.1:{port}");
    assert_eq!(r.json()["bind"], new);
    wait_refused(old).await;
    let r = Http::new().get(&format!("http://{new}/echo")).await;
    assert_eq!(r.status, 200);

    // A port already taken: an error that names it, and the listener stays where it is.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let r = proxy
        .mgmt_post(
            "/control",
            json!({ "operation": "bind_port", "param": taken_port }),
        )
        .await;
    // The machine's conflict, not the server failing.
    assert_eq!(r.status, 409);
    let msg = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        msg.contains(&format!("cannot listen on 127.0.0.1:{taken_port}")),
        "{msg}"
    );
    assert_eq!(proxy.mgmt_get("/proxy").await.json()["bind"], new);
    assert_eq!(
        Http::new().get(&format!("http://{new}/echo")).await.status,
        200
    );

    // Another local address, same port.
    let r = proxy
        .mgmt_put("/proxy", json!({ "bind_host": "127.0.0.2" }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let moved = format!("127.0.0.2:{port}");
    assert_eq!(r.json()["bind"], moved);
    wait_refused(new.parse().unwrap()).await;
    let r = Http::new().get(&format!("http://{moved}/echo")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn status_lists_every_module_with_its_state() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let r = proxy.mgmt_get("/status").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let status = r.json();
    assert_eq!(status["code"], 200);
    assert_eq!(status["proxy"]["listening"], true);
    assert_eq!(status["proxy"]["bind"], proxy.proxy_addr().to_string());
    assert_eq!(status["proxy"]["upstream"], up.url());
    // `message` is the original API's list of {module, state, status}.
    let modules = status["message"].as_array().unwrap();
    let listed: Vec<(&str, &str, &str)> = modules
        .iter()
        .map(|m| {
            (
                m["module"].as_str().unwrap(),
                m["kind"].as_str().unwrap(),
                m["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("TrafficReader", "pipeline", "running"),
            ("TrafficRecorder", "support", "running"),
            ("TrafficStreamer", "support", "running"),
        ]
    );
    for m in modules {
        // `status`: when the module entered its state (RFC 3339 UTC), as `since` says.
        let status = m["status"].as_str().unwrap_or_default();
        assert!(status.ends_with('Z'), "{m}");
        let parsed = chrono::DateTime::parse_from_rfc3339(status).unwrap();
        let since = chrono::DateTime::parse_from_rfc3339(m["since"].as_str().unwrap()).unwrap();
        assert_eq!(parsed.timestamp_micros(), since.timestamp_micros(), "{m}");
    }

    let one = proxy.mgmt_get("/status?module=TrafficReader").await;
    assert_eq!(one.status, 200);
    let one = one.json();
    assert_eq!(one["message"].as_array().unwrap().len(), 1);
    assert_eq!(one["message"][0]["module"], "TrafficReader");

    // As on the control channel: an empty module or `proxy` is all of them.
    for all in ["/status?module=", "/status?module=proxy"] {
        let r = proxy.mgmt_get(all).await;
        assert_eq!(r.status, 200, "{all}: {}", r.text());
        assert_eq!(r.json()["message"].as_array().unwrap().len(), 3, "{all}");
    }

    let nope = proxy.mgmt_get("/status?module=Nope").await;
    assert_eq!(nope.status, 404);
    assert_eq!(
        nope.json()["message"],
        "no module named `Nope`; modules: TrafficReader, TrafficRecorder, TrafficStreamer"
    );
}

#[tokio::test]
async fn bad_control_requests_get_400_with_a_reason() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let http = Http::new();
    let control = format!("{}/control", proxy.mgmt_url());

    let broken = http::Request::post(&control)
        .header("content-type", "application/json")
        .body(crate::harness::body("{not json"))
        .unwrap();
    let r = http.send(broken).await;
    assert_eq!(r.status, 400);
    let reason = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(reason.starts_with("invalid JSON body: "), "{reason}");

    let r = proxy.mgmt_post("/control", json!({ "param": 1 })).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("missing field `operation`")),
        "{}",
        r.text()
    );

    let r = proxy
        .mgmt_post("/control", json!({ "operation": "explode" }))
        .await;
    assert_eq!(r.status, 400);
    let body = r.json();
    assert_eq!(body["code"], 400);
    assert!(
        body["message"].as_str().is_some_and(|m| {
            m.starts_with(
            "unknown operation `explode`; operations are: start, stop, reset, reload, upstream_host"
        )
        }),
        "{body}"
    );

    let r = proxy
        .mgmt_post(
            "/control",
            json!({ "operation": "upstream_port", "param": 70000 }),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "operation `upstream_port`: param must be a port from 1 to 65535"
    );

    let r = proxy
        .mgmt_put("/proxy", json!({ "upstream_prot": 8080 }))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("unknown field `upstream_prot`"),
        "{}",
        r.text()
    );

    let r = proxy.mgmt_get("/nowhere").await;
    assert_eq!(r.status, 404);

    // None of it changed the proxy.
    assert_eq!(proxy.mgmt_get("/proxy").await.json()["upstream"], up.url());
    assert_eq!(Http::new().get(&proxy.url("/echo")).await.status, 200);
}

/// The CLI's `status` talks to a running proxy's management API.
#[tokio::test]
async fn cli_status_reads_the_running_proxy() {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .modules_yaml(include_str!("../fixtures/two-add-headers.yaml"))
        .start()
        .await;
    let out = proxy.cli(&["status", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(status["proxy"]["upstream"], up.url());
    assert_eq!(status["message"][1]["module"], "AddHeader#2");
    assert_eq!(status["message"][1]["state"], "running");

    // `#2` is part of the name, not a fragment: the CLI encodes it.
    let out = proxy
        .cli(&["status", "--json", "--module", "AddHeader#2"])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let one: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(one["message"].as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(one["message"][0]["module"], "AddHeader#2");

    // A reader that goes away (`| head`) is not an error, nor a panic.
    let mut child = std::process::Command::new(crate::harness::proxy::BIN)
        .args(["--mgmt", &proxy.mgmt_addr().to_string(), "--json", "status"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the pipe's reader is gone before anything is written
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `..` would vanish from the path and name the collection: refused.
    let out = proxy.cli(&["recording", "delete", ".."]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`..` is not an id"));

    let out = proxy.cli(&["status", "--module", "Nope"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404 Not Found: no module named `Nope`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every answer of the API is JSON, errors included: a bad query value is a 400 with the
/// `{"error"}` shape, like a bad body, and `PUT /proxy` answers like `GET /proxy`.
#[tokio::test]
async fn bad_queries_and_bodies_get_the_json_error_shape() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let r = proxy.mgmt_get("/recording/abc/traffic?start=abc").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("start")),
        "{}",
        r.text()
    );
    let r = proxy
        .mgmt_put("/proxy", json!({ "upstream_port": 0 }))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("a port from 1 to 65535")),
        "{}",
        r.text()
    );
    let r = proxy.mgmt_put("/proxy", json!({ "nope": 1 })).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"].is_string(), "{}", r.text());
    // serde reads a struct from an array of its fields too; the API takes objects only
    // (schemathesis found PUT /recording/ID accepting `[null, null]`).
    let rec = proxy.mgmt_post("/recording", json!({ "name": "r" })).await;
    let id = rec.json()["id"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        ("PUT", format!("/recording/{id}"), json!([null, null])),
        ("PUT", "/proxy".to_owned(), json!([null, null, null, null])),
        ("POST", "/recording".to_owned(), json!(["x"])),
    ] {
        let r = proxy.mgmt(method, &path, Some(body)).await;
        assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{}", r.text());
    }
    assert_eq!(
        proxy.mgmt_get("/proxy").await.json(),
        proxy.mgmt_put("/proxy", json!({})).await.json()
    );
}

/// What axum's own extractors would answer in plain text: a path segment that is not
/// UTF-8, a body over the 2 MiB the API reads. (The fuzzer in `openapi.rs` sends neither.)
#[tokio::test]
async fn bad_paths_and_long_bodies_get_the_json_error_shape() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    for (method, path) in [
        ("GET", "/recording/%FF"),
        ("POST", "/recording/%FF/start"),
        ("POST", "/modules/%FF/start"),
        ("POST", "/proxy/%FF"),
    ] {
        let r = proxy.mgmt(method, path, None).await;
        assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{}", r.text());
    }
    let long = json!({ "name": "x".repeat(3 << 20) });
    let r = proxy.mgmt_post("/recording", long).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["error"].is_string(), "{}", r.text());
}
