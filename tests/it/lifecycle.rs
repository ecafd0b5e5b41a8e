//! The process as an operator sees it: the ready line, graceful shutdown on a signal, and
//! the access log on stderr.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use crate::harness::upstream::{SLOW_DELAY, SLOW_FIRST, SLOW_REST};
use crate::harness::{body, wait_refused, Http, TestProxy, Upstream};

#[tokio::test]
async fn ready_line_names_both_listeners_and_the_upstream() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    assert_eq!(
        proxy.ready_line(),
        format!(
            "heliosburn ready: proxy http://{} -> {}, management http://{}",
            proxy.proxy_addr(),
            up.url(),
            proxy.mgmt_addr()
        )
    );
}

/// SIGTERM with a slow response in flight: the response completes, new connections are
/// refused meanwhile, and the process exits 0.
#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let up = Upstream::start().await;
    let mut proxy = TestProxy::start(&up).await;
    let req = http::Request::get(proxy.url("/slow"))
        .body(body(""))
        .unwrap();
    let mut resp = Http::new().stream(req).await;
    let first = resp.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), SLOW_FIRST.as_bytes());

    let signalled = Instant::now();
    proxy.sigterm();
    wait_refused(proxy.proxy_addr()).await;
    assert!(
        signalled.elapsed() < SLOW_DELAY,
        "new connections were still accepted while the request was in flight"
    );

    let rest = resp
        .into_body()
        .collect()
        .await
        .expect("the request in flight was cut off")
        .to_bytes();
    assert_eq!(rest, SLOW_REST.as_bytes());
    let status = proxy.wait().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proxy.stderr());
    assert!(proxy.stderr().contains("stopped"), "{}", proxy.stderr());
}

#[tokio::test]
async fn sigint_on_an_idle_proxy_exits_0() {
    let up = Upstream::start().await;
    let mut proxy = TestProxy::start(&up).await;
    assert_eq!(Http::new().get(&proxy.url("/echo")).await.status, 200);
    proxy.signal("INT");
    let status = proxy.wait().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proxy.stderr());
}

/// The drain is bounded: a response slower than `drain_timeout` does not hold the exit.
#[tokio::test]
async fn drain_timeout_bounds_the_wait_for_requests_in_flight() {
    let up = Upstream::start().await;
    let mut proxy = TestProxy::builder()
        .upstream(&up)
        .config_yaml("drain_timeout: 0.3\n")
        .start()
        .await;
    let req = http::Request::get(proxy.url("/slow"))
        .body(body(""))
        .unwrap();
    let mut resp = Http::new().stream(req).await;
    resp.body_mut().frame().await.unwrap().unwrap();
    let signalled = Instant::now();
    proxy.sigterm();
    let status = proxy.wait().await;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proxy.stderr());
    assert!(
        took < SLOW_DELAY - Duration::from_millis(500),
        "exit took {took:?} with a 0.3 s drain timeout"
    );
    assert!(
        proxy.stderr().contains("drain timeout passed"),
        "{}",
        proxy.stderr()
    );
}

/// One plain line per exchange at info: method, path, status and bytes, without terminal
/// colour codes (stderr is a pipe here, as under systemd or docker).
#[tokio::test]
async fn access_log_line_per_exchange() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let r = Http::new().get(&proxy.url("/status/201?q=1")).await;
    assert_eq!(r.status, 201);
    let line = proxy
        .wait_for_log(&["heliosburn::access", "/status/201"])
        .await;
    for part in [
        " INFO ",
        "method=GET",
        "path=\"/status/201\"",
        "status=201",
        "bytes=11",
        "completed=true",
    ] {
        assert!(
            line.contains(part),
            "no `{part}` in the access line: {line:?}"
        );
    }
    assert!(
        !proxy.stderr().contains('\u{1b}'),
        "terminal escape codes in a log written to a pipe:\n{}",
        proxy.stderr()
    );
}

#[tokio::test]
async fn log_level_flag_and_rust_log_set_what_is_logged() {
    let up = Upstream::start().await;
    for (flag, env, access_logged) in [
        (Some("warn"), Some("info"), false),
        (None, Some("warn"), false),
        (Some("info"), Some("warn"), true),
    ] {
        let mut b = TestProxy::builder().upstream(&up);
        if let Some(level) = flag {
            b = b.arg("--log-level").arg(level);
        }
        if let Some(level) = env {
            b = b.env("RUST_LOG", level);
        }
        let mut proxy = b.start().await;
        assert_eq!(Http::new().get(&proxy.url("/echo")).await.status, 200);
        proxy.sigterm();
        assert!(proxy.wait().await.success());
        assert_eq!(
            proxy.stderr().contains("heliosburn::access"),
            access_logged,
            "--log-level {flag:?}, RUST_LOG={env:?}; stderr:\n{}",
            proxy.stderr()
        );
    }
}

/// Idle keep-alive connections (to the proxy and to the management API) are closed on
/// shutdown rather than waited for until the drain timeout.
#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_the_exit() {
    let up = Upstream::start().await;
    let mut proxy = TestProxy::start(&up).await;
    let mut idle = crate::harness::RawConn::connect(proxy.proxy_addr()).await;
    idle.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(idle.read_response(false).await.status, 200);
    assert_eq!(proxy.mgmt_get("/status").await.status, 200);

    let signalled = Instant::now();
    proxy.sigterm();
    let status = proxy.wait().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proxy.stderr());
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exit took {:?} with only idle connections open",
        signalled.elapsed()
    );
}

#[test]
fn without_an_upstream_the_start_fails_saying_how_to_give_one() {
    let dir = crate::harness::TempDir::new("no-upstream");
    let data = dir.path().join("data");
    let out = crate::harness::run_to_end(&[
        "--bind",
        "127.0.0.1:0",
        "--mgmt",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no ready line");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no upstream: pass --upstream http://HOST:PORT"),
        "{stderr}"
    );
}

#[test]
fn a_taken_port_fails_the_start_naming_the_address() {
    let dir = crate::harness::TempDir::new("taken");
    let data = dir.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = crate::harness::run_to_end(&[
        "--upstream",
        "http://127.0.0.1:9",
        "--bind",
        &addr,
        "--mgmt",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = format!("cannot listen on {addr} (pass --bind HOST:PORT)");
    // Said once, and nothing else: the listeners are bound before anything opens or
    // starts, so no module logs about a feed that ended and the store is not touched.
    assert_eq!(stderr.matches(&said).count(), 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!data.exists(), "the data directory was created");
}

/// While the store is being reached (a MongoDB that accepts connections and never
/// answers, with a long server selection timeout), a signal ends the wait at once.
#[tokio::test]
async fn a_signal_ends_the_wait_for_a_store_that_does_not_answer() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    // Accepts and holds connections, says nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let dir = crate::harness::TempDir::new("silent-mongo");
    let modules = dir.write(
        "modules.yaml",
        &format!(
            "pipeline: [{{name: TrafficReader}}]\n\
             support: [{{name: TrafficRecorder, kwargs: {{mongo_uri: 'mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=60000'}}}}]\n"
        ),
    );
    let mut child = tokio::process::Command::new(crate::harness::proxy::BIN)
        .args(["--upstream", "http://127.0.0.1:9", "--bind", "127.0.0.1:0"])
        .args(["--mgmt", "127.0.0.1:0", "--modules"])
        .arg(&modules)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Said at once: which backend it is reaching.
    let said = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("connecting to MongoDB at 127.0.0.1:") {
                return line;
            }
        }
        panic!("stderr ended without naming the MongoDB it reaches");
    })
    .await
    .expect("the backend is named within 10 s");
    assert!(said.contains(&port.to_string()), "{said}");

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the signal ends the wait (server selection would take 60 s)")
        .unwrap();
    assert!(status.success(), "{status}");
    held.abort();
}
