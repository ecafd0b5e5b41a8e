//! TLS on both sides: an HTTPS upstream verified against a CA made at test time (and
//! refused, with a 502 that says why, when its certificate is wrong), and an HTTPS
//! listener reached by curl, whose certificate is replaced without dropping connections.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::harness::seed::eventually;
use crate::harness::tls::{Issued, TestCa};
use crate::harness::{Http, TestProxy, Upstream};

async fn https_upstream(cert: &Issued) -> Upstream {
    Upstream::new()
        .tls(cert.server_config(&[b"http/1.1"]))
        .run()
        .await
}

/// `https://localhost:PORT` of an upstream (the name its certificate is checked for).
fn by_name(up: &Upstream) -> String {
    format!("https://localhost:{}", up.port())
}

#[tokio::test]
async fn an_https_upstream_is_verified_against_the_given_ca() {
    let ca = TestCa::new();
    let up = https_upstream(&ca.issue("up", &["localhost"])).await;
    let proxy = ca.proxy_to(&up).start().await;

    let r = Http::new().get(&proxy.url("/echo?over=tls")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["query"], "over=tls");
    // SNI and Host both name the upstream as written.
    assert_eq!(
        up.last_request().header("host"),
        Some(format!("localhost:{}", up.port()).as_str())
    );
    let status = proxy.mgmt_get("/proxy").await.json();
    assert_eq!(status["upstream"], by_name(&up));
    assert_eq!(status["upstream_tls_verify"], "on");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_502_that_says_so() {
    let ca = TestCa::new();
    let up = https_upstream(&ca.issue("other", &["other.test"])).await;
    let proxy = ca.proxy_to(&up).start().await;

    let r = Http::new().get(&proxy.url("/echo")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.text()
            .contains("certificate is not valid for the name `localhost`"),
        "{}",
        r.text()
    );
    proxy
        .wait_for_log(&["upstream error", "not valid for the name `localhost`"])
        .await;
    assert!(up.requests().is_empty(), "nothing may reach it");
}

#[tokio::test]
async fn an_unknown_issuer_and_an_expired_certificate_are_named() {
    let ca = TestCa::new();
    // Verified against the system's roots, which do not hold the test CA.
    let up = https_upstream(&ca.issue("up", &["localhost"])).await;
    let proxy = TestProxy::builder()
        .upstream_url(by_name(&up))
        .start()
        .await;
    let r = Http::new().get(&proxy.url("/echo")).await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("unknown authority"), "{}", r.text());
    assert!(r.text().contains("--upstream-ca"), "{}", r.text());

    let old = https_upstream(&ca.issue_expired("old", &["localhost"])).await;
    let proxy = ca.proxy_to(&old).start().await;
    let r = Http::new().get(&proxy.url("/echo")).await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("has expired"), "{}", r.text());
}

#[tokio::test]
async fn upstream_insecure_takes_a_self_signed_service_and_says_so_loudly() {
    let ca = TestCa::new();
    let up = https_upstream(&ca.issue("up", &["localhost"])).await;
    let proxy = TestProxy::builder()
        .upstream_url(by_name(&up))
        .arg("--upstream-insecure")
        .start()
        .await;
    let r = Http::new().get(&proxy.url("/echo")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    proxy.wait_for_log(&["WARN", "NOT verified"]).await;
    let status = proxy.mgmt_get("/proxy").await.json();
    assert!(
        status["upstream_tls_verify"]
            .as_str()
            .is_some_and(|v| v.starts_with("OFF")),
        "{status}"
    );
    let out = proxy.cli(&["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("certificate NOT verified"), "{text}");
}

/// A proxy serving HTTPS with a certificate of the test CA for localhost.
async fn https_proxy(ca: &TestCa, up: &Upstream) -> (TestProxy, Issued) {
    let cert = ca.issue("front", &["localhost", "127.0.0.1"]);
    let proxy = TestProxy::builder()
        .upstream(up)
        .arg("--tls-cert")
        .arg(cert.cert.display().to_string())
        .arg("--tls-key")
        .arg(cert.key.display().to_string())
        .start()
        .await;
    (proxy, cert)
}

/// curl with the test CA: (HTTP version, status, body).
async fn curl(ca: &TestCa, url: &str, extra: &[&str]) -> (String, u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&ca.cert)
        .args(extra)
        .args(["-w", "\n%{http_version} %{http_code}", url])
        .output()
        .await
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').unwrap();
    let (version, code) = last.split_once(' ').unwrap();
    (version.to_owned(), code.parse().unwrap(), body.to_owned())
}

#[tokio::test]
async fn the_https_listener_is_reached_by_curl_in_http1_and_h2() {
    let ca = TestCa::new();
    let up = Upstream::start().await;
    let (proxy, _cert) = https_proxy(&ca, &up).await;
    assert!(proxy.ready_line().contains("proxy https://"));
    let out = proxy.cli(&["status"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("(HTTPS)"));
    let url = format!(
        "https://localhost:{}/echo?via=tls",
        proxy.proxy_addr().port()
    );

    let (version, code, body) = curl(&ca, &url, &["--http1.1"]).await;
    assert_eq!((version.as_str(), code), ("1.1", 200), "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["query"], "via=tls");
    assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https");

    // ALPN offers h2: curl takes it.
    let (version, code, _) = curl(&ca, &url, &["--http2"]).await;
    assert_eq!((version.as_str(), code), ("2", 200));
}

/// A TLS connection to the proxy that trusts the test CA: the sender, and the
/// certificate the proxy presented.
async fn tls_connection(
    ca: &TestCa,
    proxy: &TestProxy,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    Vec<u8>,
) {
    let tcp = TcpStream::connect(proxy.proxy_addr()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(ca.client_config(&[b"http/1.1"]));
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the proxy's certificate is trusted");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    (sender, presented)
}

async fn get_on(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> u16 {
    sender.ready().await.expect("the connection is still open");
    let req = http::Request::get("/echo")
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn the_listener_certificate_is_replaced_without_dropping_connections() {
    let ca = TestCa::new();
    let up = Upstream::start().await;
    let (proxy, first) = https_proxy(&ca, &up).await;
    let (mut open, presented) = tls_connection(&ca, &proxy).await;
    assert_eq!(presented, der_of(&first.cert_pem));
    assert_eq!(get_on(&mut open).await, 200);

    // New files in place, then the control API: new handshakes get the new certificate.
    let second = ca.issue("front", &["localhost", "127.0.0.1"]);
    assert_eq!(second.cert, first.cert, "the same files, rewritten");
    let r = proxy
        .mgmt_post("/proxy/tls/reload", serde_json::json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["reloads"], 1);
    let (_, now) = tls_connection(&ca, &proxy).await;
    assert_eq!(now, der_of(&second.cert_pem));
    assert_eq!(get_on(&mut open).await, 200, "the open connection lives on");

    // SIGHUP does the same; a broken file leaves the certificate in service.
    let third = ca.issue("front", &["localhost", "127.0.0.1"]);
    proxy.signal("HUP");
    eventually("the SIGHUP reload", Duration::from_secs(10), || async {
        let status = proxy.mgmt_get("/proxy").await.json();
        (status["tls"]["reloads"] == 2).then_some(())
    })
    .await;
    let (_, now) = tls_connection(&ca, &proxy).await;
    assert_eq!(now, der_of(&third.cert_pem));

    std::fs::write(&third.key, "not a key").unwrap();
    let r = proxy
        .mgmt_post("/proxy/tls/reload", serde_json::json!({}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("stays"), "{}", r.text());
    let (_, now) = tls_connection(&ca, &proxy).await;
    assert_eq!(now, der_of(&third.cert_pem));
    assert_eq!(get_on(&mut open).await, 200);
}

#[tokio::test]
async fn a_plain_listener_has_no_certificate_to_reload() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let r = proxy
        .mgmt_post("/proxy/tls/reload", serde_json::json!({}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("--tls-cert"), "{}", r.text());
}

/// A WebSocket over TLS on both sides: wss to the proxy, https to the upstream, which
/// also offers h2. Frames pass at once (TLS flushed), the upgrade goes over HTTP/1.1
/// even when the upstream is spoken to in h2, and it teaches `auto` nothing.
#[tokio::test]
async fn a_websocket_crosses_tls_on_both_sides_beside_http2() {
    // Within 5 s: nothing may wait in a TLS buffer.
    use crate::protocols::next_msg;
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let ca = TestCa::new();
    let up_cert = ca.issue("up", &["localhost"]);
    let up = Upstream::new()
        .tls(up_cert.server_config(&[b"h2", b"http/1.1"]))
        .run()
        .await;
    let front = ca.issue("front", &["localhost"]);
    for protocol in ["h2", "auto"] {
        let proxy = ca
            .proxy_to(&up)
            .arg("--upstream-protocol")
            .arg(protocol)
            .arg("--tls-cert")
            .arg(front.cert.display().to_string())
            .arg("--tls-key")
            .arg(front.key.display().to_string())
            .start()
            .await;
        let tcp = TcpStream::connect(proxy.proxy_addr()).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(ca.client_config(&[b"http/1.1"]))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let url = format!("wss://localhost:{}/ws", proxy.proxy_addr().port());
        let (mut ws, resp) = tokio_tungstenite::client_async(url, tls)
            .await
            .unwrap_or_else(|e| panic!("{protocol}: the WebSocket handshake: {e}"));
        assert_eq!(resp.status(), 101);
        assert_eq!(
            next_msg(&mut ws).await,
            Message::text(crate::harness::upstream::WS_GREETING)
        );
        ws.send(Message::text("over wss")).await.unwrap();
        assert_eq!(next_msg(&mut ws).await, Message::text("over wss"));

        // A plain request after it still goes over HTTP/2.
        let (mut sender, _) = tls_connection(&ca, &proxy).await;
        let req = http::Request::get("/echo")
            .header("host", "localhost")
            .body(Empty::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["version"], "HTTP/2.0", "{protocol}: {echo}");
    }
}
