//! `GET /ui` (issue 13, part 2): the management page, built into the binary. Its files
//! answer without the token (they hold no data) under a strict Content-Security-Policy;
//! the API behind it still needs the token. In a real browser (Debian's `chromium`
//! driven by npm `playwright-core`, installed by scripts/test.sh into tests/ui), the
//! page shows the traffic as it passes, opens an exchange, and makes a recording.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::proxy::BIN;
use crate::harness::{body, Http, Resp, TestProxy, Upstream};

const TOKEN: &str = "t0ken-for-the-page";

async fn get(proxy: &TestProxy, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = http::Request::get(format!("{}{path}", proxy.mgmt_url()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Http::new().send(req.body(body("")).unwrap()).await
}

#[tokio::test]
async fn the_page_is_served_without_the_token_and_the_api_still_needs_it() {
    let up = Upstream::start().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .env("HELIOSBURN_MGMT_TOKEN", TOKEN)
        .start()
        .await;
    for (path, kind) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
    ] {
        let r = get(&proxy, path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some(kind), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let csp = r.header("content-security-policy").unwrap_or_default();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
    }
    let page = get(&proxy, "/ui", &[]).await.text();
    assert!(page.contains("src=\"/ui/app.js\""), "{page}");

    // What the page then reads needs the token, as before.
    for path in ["/status", "/recording", "/traffic/stream", "/ui/other"] {
        let r = get(&proxy, path, &[]).await;
        assert_eq!(r.status, 401, "{path}: {}", r.text());
    }
    let bearer = format!("Bearer {TOKEN}");
    let r = get(&proxy, "/status", &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A page served under a rebound name gets nothing, not even the files.
    let rebound = format!("evil.example:{}", proxy.mgmt_addr().port());
    let r = get(&proxy, "/ui", &[("host", &rebound)]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // Only reads are public: anything else at /ui is the API's (token first).
    let req = http::Request::post(format!("{}/ui", proxy.mgmt_url()))
        .header("content-type", "application/json")
        .body(body("{}"))
        .unwrap();
    assert_eq!(Http::new().send(req).await.status, 401);
}

/// Where the browser test writes its screenshots: `target/ui/` (the target directory
/// the binary under test was built in).
fn shots_dir() -> PathBuf {
    let target = Path::new(BIN)
        .ancestors()
        .nth(2)
        .expect("the binary lives in target/PROFILE/");
    target.join("ui")
}

#[tokio::test]
async fn in_a_browser_the_page_shows_traffic_opens_an_exchange_and_records() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run scripts/test.sh (or npm ci --prefix tests/ui)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/test.sh (or apt-get install chromium)"
    );
    let up = Upstream::new().name("ui").run().await;
    let proxy = TestProxy::builder()
        .upstream(&up)
        .env("HELIOSBURN_MGMT_TOKEN", TOKEN)
        .start()
        .await;
    let shots = shots_dir();
    // The script's own traffic and the browser's requests need this runtime to serve the
    // upstream meanwhile: the child is awaited, not waited for.
    let run = tokio::process::Command::new("node")
        .arg(dir.join("ui.mjs"))
        .args(["--mgmt", &proxy.mgmt_url()])
        .args(["--proxy", &proxy.proxy_url()])
        .args(["--token", TOKEN])
        .arg("--shots")
        .arg(&shots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser test ends within 3 minutes")
        .expect("node runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        // The proxy's log ends with the access lines of the traffic: its last part is enough.
        let log = proxy.stderr();
        let mut start = log.len().saturating_sub(4000);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        let tail = &log[start..];
        let tail = tail.find('\n').map_or(tail, |nl| &tail[nl + 1..]);
        panic!(
            "the browser test failed ({}):\n{report}\nthe proxy's log ends:\n{tail}",
            out.status
        );
    }
    assert!(report.contains("all checks passed"), "{report}");
    println!("{report}");
    for shot in ["live.png", "recordings.png", "modules.png"] {
        let len = std::fs::metadata(shots.join(shot)).map_or(0, |m| m.len());
        assert!(
            len > 10_000,
            "{} is {len} bytes",
            shots.join(shot).display()
        );
    }
}
