//! A page of traffic is cut by bytes as well as by count, so reading large bodies back
//! costs bounded memory; `next` continues where it was cut (issue 8, item 3).

use crate::harness::recordings::{create_recording, start_recording, stop_recording};
use crate::harness::{Http, TestProxy, Upstream};

#[tokio::test]
async fn pages_of_large_bodies_are_cut_by_bytes_and_continue_with_next() {
    const N: u64 = 40;
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let id = create_recording(&proxy, "large", "").await;
    start_recording(&proxy, &id).await;
    let http = Http::new();
    for _ in 0..N {
        // 1 MiB each (the default body_limit): base64 in the documents.
        assert_eq!(http.get(&proxy.url("/bytes/1048576")).await.status, 200);
    }
    stop_recording(&proxy, &id).await;

    let warm = proxy.peak_rss_kib();
    let mut start = Some(0u64);
    let (mut seen, mut pages) = (0u64, 0);
    while let Some(s) = start {
        let r = proxy
            .mgmt_get(&format!("/recording/{id}/traffic?start={s}&offset=1000"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.json();
        let got = page["traffic"].as_array().unwrap().len() as u64;
        assert_eq!(page["offset"], got);
        assert!(r.body.len() < 24 << 20, "a page of {} bytes", r.body.len());
        assert!(got > 0 && got < N, "one page held {got} of {N}");
        seen += got;
        pages += 1;
        start = page["next"].as_u64();
        if start.is_some() {
            assert_eq!(start, Some(s + got));
        }
    }
    assert_eq!(seen, N);
    assert!(pages >= 3, "{pages} pages");
    let peak = proxy.peak_rss_kib();
    assert!(
        peak < warm + 96 * 1024,
        "reading {N} MiB of bodies back grew the proxy from {} to {} MiB",
        warm / 1024,
        peak / 1024
    );
}
