//! The test harness: a real upstream, the real proxy binary, and clients.

pub mod client;
pub mod grpc;
pub mod mongo;
pub mod proxy;
pub mod recordings;
pub mod seed;
pub mod tls;
pub mod upstream;

pub use client::{body, channel_body, chunked, Http, RawConn, Resp};
pub use proxy::{run_to_end, TempDir, TestProxy};
pub use upstream::Upstream;

use std::net::SocketAddr;
use std::time::Duration;

/// A local port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Waits until a new TCP connection to `addr` is refused (at most 5 s).
pub async fn wait_refused(addr: SocketAddr) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            // Accepted, or a handshake caught by the listener closing: not yet.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connect to {addr}: {e} (expected: refused)"),
        }
        if std::time::Instant::now() > deadline {
            panic!("{addr} still accepts connections after 5 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that a new TCP connection to `addr` is accepted.
pub async fn assert_accepts(addr: SocketAddr) {
    tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e} (expected: accepted)"));
}
