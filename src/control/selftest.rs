//! The `test` operation: a round trip through the pipeline to a built-in echo upstream,
//! on a private listener, so the self-test never touches the real upstream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Reply;
use crate::config::Upstream;
use crate::proxy::upstream::Dialer;
use crate::proxy::{listener, Forwarder, Proxy, UpstreamTarget};

const PAYLOAD: &str = "heliosburn self-test";

pub async fn run(proxy: &Proxy) -> Reply {
    let started = Instant::now();
    match round_trip(proxy).await {
        Ok(report) => Reply::ok(json!({
            "result": "pass",
            "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
            "checks": report,
        })),
        Err(e) => Reply::error(500, format!("self-test failed: {e}")),
    }
}

async fn round_trip(proxy: &Proxy) -> Result<Vec<String>, String> {
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let echo = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("echo upstream: {e}"))?;
    let echo_addr = echo.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(serve_echo(echo, shutdown.clone()));

    let target = UpstreamTarget::new(Upstream::http(echo_addr.ip().to_string(), echo_addr.port()))?;
    let settings = proxy.forwarder.settings().clone();
    let dialer = Dialer::plain(settings.connect_timeout, settings.max_header_size);
    // Through the real pipeline, but marked as the proxy's own: not recorded.
    let forwarder = Arc::new(
        Forwarder::new(target, dialer, proxy.forwarder.pipeline().clone(), settings).internal(),
    );
    let front = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("test listener: {e}"))?;
    let front_addr = front.local_addr().map_err(|e| e.to_string())?;
    listener::spawn(
        front,
        forwarder,
        shutdown.clone(),
        Duration::from_secs(1),
        listener::Limits::default(),
        None,
    )
    .map_err(|e| e.to_string())?;

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::post(format!("http://{front_addr}/selftest?probe=1"))
        .body(Full::new(Bytes::from_static(PAYLOAD.as_bytes())))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| "no response within 5 s".to_owned())?
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let mut checks = vec![format!(
        "echo upstream on {echo_addr}, proxy on {front_addr}"
    )];
    if status != http::StatusCode::OK {
        return Err(format!("status {status}, expected 200"));
    }
    checks.push("status 200".into());
    if body != PAYLOAD.as_bytes() {
        return Err(format!(
            "body came back as {:?}",
            String::from_utf8_lossy(&body)
        ));
    }
    checks.push(format!(
        "{} byte body echoed unchanged through the pipeline",
        body.len()
    ));
    Ok(checks)
}

async fn serve_echo(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        tokio::spawn(async move {
            let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body)))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
