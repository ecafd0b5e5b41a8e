//! Connections cost what configuration allows, not what clients want (issue 8, item 3):
//! idle connections are closed after the idle timeout, an exchange in flight is not cut,
//! and beyond the connection cap new connections wait (counted, logged once).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::upstream::{SLOW_DELAY, SLOW_FIRST, SLOW_REST};
use crate::harness::{Http, RawConn, TestProxy, Upstream};

/// A proxy with these settings in front of a fresh upstream.
async fn proxy_with(settings: &str) -> (Upstream, TestProxy) {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .config_yaml(settings)
        .start()
        .await;
    (up, proxy)
}

/// Waits until the peer closes `conn` (a read of 0 bytes or an error), at most `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_thousand_idle_connections_are_closed_after_the_idle_timeout() {
    let (_up, proxy) = proxy_with("idle_timeout: 1\n").await;
    let mut conns = Vec::new();
    for i in 0..1000 {
        let mut c = TcpStream::connect(proxy.proxy_addr()).await.unwrap();
        // Half of them after an exchange (kept alive), half never saying anything.
        if i % 2 == 0 {
            c.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = c.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed before answering");
                head.extend_from_slice(&buf[..n]);
            }
        }
        conns.push(c);
    }
    let started = Instant::now();
    for c in &mut conns {
        assert!(
            closed_within(c, Duration::from_secs(10)).await,
            "a connection was still open 10 s after the 1 s idle timeout"
        );
    }
    println!(
        "1000 idle connections closed {:?} after the last one opened",
        started.elapsed()
    );
    // The client sees the close a moment before the proxy counts it.
    let status = open_falls_to(&proxy, 0).await;
    assert!(
        status["connections"]["idle_closed"].as_u64().unwrap() >= 1000,
        "{status}"
    );
}

/// Waits (at most 10 s) until the proxy counts `open` connections; returns its status.
async fn open_falls_to(proxy: &TestProxy, open: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = proxy.mgmt_get("/proxy").await.json();
        if status["connections"]["open"] == open {
            return status;
        }
        assert!(Instant::now() < deadline, "still open: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_exchange_in_flight_outlives_the_idle_timeout() {
    let (_up, proxy) = proxy_with("idle_timeout: 0.5\n").await;
    assert!(SLOW_DELAY > Duration::from_secs(1));
    // The upstream says nothing for SLOW_DELAY mid-body; the exchange is not cut.
    let r = Http::new().get(&proxy.url("/slow")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), format!("{SLOW_FIRST}{SLOW_REST}"));
}

#[tokio::test]
async fn beyond_the_cap_new_connections_wait_until_one_closes() {
    let (_up, proxy) = proxy_with("max_connections: 2\n").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = RawConn::connect(proxy.proxy_addr()).await;
        c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(c.read_response(false).await.status, 200);
        held.push(c);
    }
    // The third is accepted by the kernel and waits; its request is answered once one of
    // the two closes.
    let mut third = RawConn::connect(proxy.proxy_addr()).await;
    third.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    proxy
        .wait_for_log(&["connection limit reached", "max_connections=2"])
        .await;
    drop(held.pop());
    assert_eq!(third.read_response(false).await.status, 200);
    let status = proxy.mgmt_get("/proxy").await.json();
    assert_eq!(status["connections"]["cap_reached"], 1, "{status}");
    assert_eq!(status["connections"]["max"], 2, "{status}");
    assert_eq!(
        proxy.stderr().matches("connection limit reached").count(),
        1,
        "{}",
        proxy.stderr()
    );
}

/// The management listener has the same bounds: an idle connection there is closed too,
/// and one that never sends its request head is closed after the header-read timeout.
#[tokio::test]
async fn the_management_listener_closes_idle_connections_too() {
    let (_up, proxy) = proxy_with("idle_timeout: 0.5\nheader_read_timeout: 0.5\n").await;
    let mut idle = TcpStream::connect(proxy.mgmt_addr()).await.unwrap();
    let mut half = TcpStream::connect(proxy.mgmt_addr()).await.unwrap();
    half.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(10)).await);
    assert!(closed_within(&mut half, Duration::from_secs(10)).await);
    // And it still answers.
    assert_eq!(proxy.mgmt_get("/healthz").await.status, 200);
}

/// A client that never reads its response is dropped: closing gracefully would wait for
/// an exchange that cannot end, so after another idle timeout with its writes blocked the
/// connection goes.
#[tokio::test]
async fn a_client_that_never_reads_is_dropped() {
    let (_up, proxy) = proxy_with("idle_timeout: 0.5\n").await;
    let mut c = TcpStream::connect(proxy.proxy_addr()).await.unwrap();
    c.write_all(b"GET /stream/268435456 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = proxy.mgmt_get("/proxy").await.json();
        if status["connections"]["open"] == 0 && status["connections"]["idle_closed"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "still held: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(c);
}

/// How a slow client of [`slow_client`] is slow.
#[derive(Clone, Copy)]
enum Slow {
    /// Downloads, reading a little at a time.
    Reader,
    /// Uploads, sending a little at a time.
    Sender,
}

/// Moves `fast` bytes as fast as the proxy takes them (a download read, or an upload
/// sent), says so on `reached`, then goes on a KiB every 100 ms until `stop` is set.
async fn slow_client(
    addr: std::net::SocketAddr,
    slow: Slow,
    fast: usize,
    reached: std::sync::Arc<tokio::sync::Semaphore>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    const TOTAL: usize = 64 << 20;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // Small kernel buffers, so that what is measured is the proxy's own buffering.
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.set_send_buffer_size(16 * 1024).unwrap();
    let mut c = socket.connect(addr).await.unwrap();
    let head = match slow {
        Slow::Reader => format!("GET /stream/{TOTAL} HTTP/1.1\r\nHost: x\r\n\r\n"),
        Slow::Sender => {
            format!("POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: {TOTAL}\r\n\r\n")
        }
    };
    c.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![b'u'; 64 * 1024];
    let mut moved = 0usize;
    async fn step(c: &mut TcpStream, slow: Slow, buf: &mut [u8]) -> usize {
        let n = match slow {
            Slow::Reader => c.read(buf).await.unwrap(),
            Slow::Sender => c.write(buf).await.unwrap(),
        };
        assert!(n > 0, "the proxy closed the connection");
        n
    }
    while moved < fast {
        moved += step(&mut c, slow, &mut buf).await;
    }
    reached.add_permits(1);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        moved += step(&mut c, slow, &mut buf[..1024]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(moved < TOTAL);
}

/// 1,000 clients through a running recording, each far enough that its capture would be
/// full (the default `body_limit`, 1 MiB), then slow: the proxy stays under 256 MiB in
/// all, the captures hold no more than `capture_memory`, and those it cut short are
/// counted. (A debug build, whose own size is about 60 MiB of it.)
async fn a_thousand_slow_clients(slow: Slow) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const CLIENTS: usize = 1000;
    let (_up, proxy) = proxy_with("").await;
    let id = crate::harness::recordings::create_recording(&proxy, "slow", "").await;
    crate::harness::recordings::start_recording(&proxy, &id).await;
    let reached = Arc::new(tokio::sync::Semaphore::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(slow_client(
                proxy.proxy_addr(),
                slow,
                (1 << 20) + (256 << 10),
                reached.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let all = tokio::time::timeout(
        Duration::from_secs(120),
        reached.acquire_many(CLIENTS as u32),
    )
    .await;
    assert!(
        all.is_ok(),
        "not every client moved its first MiB within 120 s"
    );
    // A while slow, so whatever the proxy buffers for them has filled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = proxy.mgmt_get("/proxy").await.json();
    let peak = proxy.peak_rss_kib();
    println!(
        "{CLIENTS} slow clients: peak RSS {} MiB; {status}",
        peak / 1024
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(status["connections"]["open"], CLIENTS, "{status}");
    let capture = &status["capture"];
    assert_eq!(capture["memory_max"], 32 << 20, "{status}");
    // Spent: the budget is what holds the captures, and the exchanges past it are counted.
    let in_use = capture["memory_in_use"].as_u64().expect("memory_in_use");
    assert!(in_use > (24 << 20) && in_use <= 32 << 20, "{status}");
    assert!(capture["cut_short"].as_u64() > Some(0), "{status}");
    assert!(peak < 256 * 1024, "the proxy peaked at {} MiB", peak / 1024);
    proxy.wait_for_log(&["capture budget spent"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_readers_fit_in_256_mib_with_capture_on() {
    a_thousand_slow_clients(Slow::Reader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_senders_fit_in_256_mib_with_capture_on() {
    a_thousand_slow_clients(Slow::Sender).await;
}

/// An upgraded connection (a WebSocket) stays under the bounds: it counts as open under
/// the cap while its tunnel lives, and a tunnel that moves no byte for the idle timeout is
/// closed; then the connection waiting in the backlog gets its turn.
#[tokio::test]
async fn a_websocket_tunnel_counts_under_the_cap_and_closes_when_idle() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (_up, proxy) = proxy_with("max_connections: 1\nidle_timeout: 1\n").await;
    let url = format!("ws://{}/ws", proxy.proxy_addr());
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(&url),
    )
    .await
    .expect("WebSocket handshake timed out")
    .expect("WebSocket handshake through the proxy");
    let greeting = ws.next().await.expect("a greeting").expect("a message");
    assert!(matches!(greeting, Message::Text(_)), "{greeting:?}");
    // Busy for three idle timeouts: the tunnel is kept.
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ws.send(Message::text(format!("still here {i}")))
            .await
            .unwrap();
        let echo = ws.next().await.expect("an echo").expect("a message");
        assert_eq!(echo, Message::text(format!("still here {i}")));
    }
    let status = proxy.mgmt_get("/proxy").await.json();
    assert_eq!(status["connections"]["open"], 1, "{status}");
    // The one place is the tunnel's: a new connection waits, unanswered while the tunnel
    // is busy.
    let mut waiting = RawConn::connect(proxy.proxy_addr()).await;
    waiting.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    proxy.wait_for_log(&["connection limit reached"]).await;
    for i in 0..4 {
        ws.send(Message::text(format!("busy {i}"))).await.unwrap();
        let echo = ws.next().await.expect("an echo").expect("a message");
        assert_eq!(echo, Message::text(format!("busy {i}")));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        !waiting.readable_within(Duration::from_millis(100)).await,
        "the waiting connection was served while the tunnel held the only place"
    );
    // Quiet now: within a few idle timeouts the tunnel is closed, and the waiting
    // request is answered.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle tunnel was still open after 10 s");
    assert_eq!(waiting.read_response(false).await.status, 200);
    let status = proxy.mgmt_get("/proxy").await.json();
    assert!(
        status["connections"]["idle_closed"].as_u64() >= Some(1),
        "{status}"
    );
}
