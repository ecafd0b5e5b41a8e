//! A full disk is loud (issue 8, item 5): the recording that cannot be stored is stopped
//! and marked failed with the reason, what could not be stored is counted, and the proxy
//! serves on; started on a full disk, it serves and says recording is unavailable.
//!
//! The small disk is a tmpfs mounted in a mount namespace of its own (`unshare -m`, which
//! needs root, as the test machine has), held by a sleeping process; the proxy runs in it
//! through `nsenter`, and nothing outside sees the mount.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use crate::harness::recordings::{counters, create_recording, get_recording, start_recording};
use crate::harness::{Http, TempDir, TestProxy, Upstream};

/// A tmpfs of a given size over a directory, seen by what runs under [`SmallDisk::wrapper`].
struct SmallDisk {
    holder: Child,
    pid: String,
}

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Self {
        use std::io::BufRead;
        std::fs::create_dir_all(dir).unwrap();
        let mut holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o "size=$0" heliosburn-test "$1" && echo mounted && exec sleep 600"#)
            .arg(size)
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) runs");
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "mounted",
            "could not mount a small disk (unshare -m and mount need root)"
        );
        let pid = holder.id().to_string();
        Self { holder, pid }
    }

    /// The command that runs a program on the small disk.
    fn wrapper(&self) -> [&str; 5] {
        ["nsenter", "-t", &self.pid, "-m", "--"]
    }

    /// Fills the small disk to its last byte.
    fn fill(&self, dir: &Path) {
        let status = Command::new("nsenter")
            .args([
                "-t",
                &self.pid,
                "-m",
                "--",
                "sh",
                "-c",
                r#"cat /dev/zero > "$0/fill""#,
            ])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the small disk took endless zeros");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[tokio::test]
async fn a_full_disk_fails_the_recording_loudly_and_the_proxy_serves_on() {
    let up = Upstream::start().await;
    let dir = Arc::new(TempDir::new("disk-full"));
    let disk = SmallDisk::mount(&dir.path().join("data"), "1m");
    let proxy = TestProxy::builder()
        .upstream(&up)
        .data_dir(dir.clone())
        .wrapped(&disk.wrapper())
        .start()
        .await;
    let id = create_recording(&proxy, "onto a small disk", "").await;
    start_recording(&proxy, &id).await;

    // 8 KiB bodies, 16 KiB a transaction: the 1 MiB disk is full after about 60.
    let http = Http::new();
    let mut sent = 0;
    let rec = loop {
        for _ in 0..20 {
            assert_eq!(http.get(&proxy.url("/bytes/8192")).await.status, 200);
            sent += 1;
        }
        let rec = get_recording(&proxy, &id).await;
        if !rec["failure"].is_null() {
            break rec;
        }
        assert!(
            sent < 2000,
            "{sent} transactions of 16 KiB on a 1 MiB disk, and no failure: {rec}"
        );
    };
    let failure = &rec["failure"];
    assert!(
        failure["reason"].as_str().unwrap().contains("disk is full"),
        "{rec}"
    );
    assert!(failure["lost"].as_u64() > Some(0), "{rec}");
    assert!(
        rec["stoppedAt"].is_string(),
        "a failed recording reads as stopped: {rec}"
    );
    proxy
        .wait_for_log(&["ERROR", "recording failed and was stopped", &id])
        .await;

    // The proxy serves on, and what it no longer records is counted: every message is
    // recorded, ignored (no recording runs) or failed.
    for _ in 0..20 {
        assert_eq!(http.get(&proxy.url("/bytes/8192")).await.status, 200);
    }
    // Once the recorder has settled: 80 requests and their responses came through.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let c = loop {
        let c = counters(&proxy, "TrafficRecorder").await;
        let n = |k: &str| c[k].as_u64().unwrap();
        let accounted = n("recorded") + n("ignored") + n("failed") + n("pending");
        if n("received") >= 2 * (sent + 20) && n("pending") == 0 && accounted == n("received") {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "never settled: {c}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let n = |k: &str| c[k].as_u64().unwrap();
    assert!(n("failed") >= failure["lost"].as_u64().unwrap(), "{c}");
    assert!(n("ignored") > 0, "traffic after the failure: {c}");
}

#[tokio::test]
async fn started_on_a_full_disk_the_proxy_serves_and_says_recording_is_unavailable() {
    let up = Upstream::start().await;
    let dir = Arc::new(TempDir::new("disk-full-start"));
    let data = dir.path().join("data");
    let disk = SmallDisk::mount(&data, "256k");
    disk.fill(&data);
    let proxy = TestProxy::builder()
        .upstream(&up)
        .data_dir(dir.clone())
        .wrapped(&disk.wrapper())
        .start()
        .await;
    assert_eq!(Http::new().get(&proxy.url("/echo")).await.status, 200);
    let r = proxy.mgmt_get("/recording").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("recording is unavailable"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("full"), "{}", r.text());
    proxy
        .wait_for_log(&["ERROR", "is full", "serving without recording"])
        .await;
    proxy.wait_for_log(&["WARN", "redaction key"]).await;
}
