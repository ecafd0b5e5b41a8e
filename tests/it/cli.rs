//! The CLI as a client of a running proxy: `heliosburn recording ...` and
//! `heliosburn status`, as tables for people and as `--json` for scripts.

use std::process::Output;

use serde_json::Value;

use crate::harness::{Http, TestProxy, Upstream};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "heliosburn {args:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

async fn run(proxy: &TestProxy, args: &[&str]) -> String {
    ok(args, &proxy.cli(args).await)
}

async fn run_json(proxy: &TestProxy, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let text = run(proxy, &all).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?} --json: {e}: {text}"))
}

/// Asserts failure and returns stderr.
async fn fails(proxy: &TestProxy, args: &[&str]) -> String {
    let out = proxy.cli(args).await;
    assert!(
        !out.status.success(),
        "heliosburn {args:?} should fail; stdout:\n{}",
        stdout(&out)
    );
    stderr(&out)
}

/// The table's header line and the rows, each split on runs of two or more spaces.
fn table(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let split = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = split(
        lines
            .next()
            .unwrap_or_else(|| panic!("no table in {text:?}")),
    );
    let rows = lines.map(split).collect();
    (header, rows)
}

#[tokio::test]
async fn recording_commands_print_tables_and_json() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;

    let created = run_json(
        &proxy,
        &[
            "recording",
            "create",
            "cli-rec",
            "--description",
            "made by the CLI",
        ],
    )
    .await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["name"], "cli-rec");
    assert_eq!(created["description"], "made by the CLI");
    assert_eq!(created["count"], 0);

    let text = run(&proxy, &["recording", "create", "second"]).await;
    let (header, rows) = table(&text);
    assert_eq!(
        header,
        ["ID", "NAME", "COUNT", "STARTED", "STOPPED", "DESCRIPTION"]
    );
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(&rows[0][1..], ["second", "0", "-", "-"], "{text}");
    let second = rows[0][0].clone();

    let text = run(&proxy, &["recording", "start", &id]).await;
    let (_, rows) = table(&text);
    assert_eq!(rows[0][0], id, "{text}");
    assert_ne!(rows[0][3], "-", "no start time: {text}");
    let err = fails(&proxy, &["recording", "start", &second]).await;
    assert!(
        err.contains("409") && err.contains(&id) && err.contains("running"),
        "{err}"
    );

    let http = Http::new();
    for i in 0..3 {
        assert_eq!(
            http.get(&proxy.url(&format!("/cli/{i}?n={i}")))
                .await
                .status,
            200
        );
    }
    let stopped = run_json(&proxy, &["recording", "stop", &id]).await;
    assert_eq!(stopped["count"], 3, "{stopped}");
    assert!(stopped["stoppedAt"].is_string(), "{stopped}");

    let text = run(&proxy, &["recording", "show", &id]).await;
    // Under the table, what became of the exchanges it served.
    let (table_text, accounting) = text.rsplit_once("served ").expect("an accounting line");
    assert_eq!(
        accounting.trim_end(),
        "3 = stored 3 + queued 0 + lost 0 (spool full 0, spool error 0, store 0)"
    );
    let (_, rows) = table(table_text);
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(
        (
            rows[0][0].as_str(),
            rows[0][1].as_str(),
            rows[0][2].as_str()
        ),
        (id.as_str(), "cli-rec", "3"),
        "{text}"
    );
    assert_eq!(rows[0][5], "made by the CLI", "{text}");
    let shown = run_json(&proxy, &["recording", "show", &id]).await;
    assert_eq!(shown, stopped);

    let text = run(&proxy, &["recording", "list"]).await;
    let (_, rows) = table(&text);
    let names: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str()))
        .collect();
    assert_eq!(
        names,
        [
            (id.as_str(), "cli-rec", "3"),
            (second.as_str(), "second", "0")
        ],
        "{text}"
    );
    let list = run_json(&proxy, &["recording", "list"]).await;
    assert_eq!(list["count"], 2, "{list}");
    assert_eq!(list["recordings"][0]["id"], id);

    let text = run(&proxy, &["recording", "traffic", &id]).await;
    let (header, rows) = table(&text);
    assert_eq!(
        header,
        ["CREATED", "METHOD", "URI", "STATUS", "TRANSACTION"]
    );
    let shown: Vec<(&str, &str, &str)> = rows
        .iter()
        .filter(|r| r.len() == 5)
        .map(|r| (r[1].as_str(), r[2].as_str(), r[3].as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            ("GET", "/cli/0?n=0", "200"),
            ("GET", "/cli/1?n=1", "200"),
            ("GET", "/cli/2?n=2", "200"),
        ],
        "{text}"
    );
    assert!(text.contains("(3 of 3 from 0)"), "{text}");
    let page = run_json(
        &proxy,
        &["recording", "traffic", &id, "--start", "1", "--offset", "1"],
    )
    .await;
    assert_eq!(page["count"], 3, "{page}");
    let traffic = page["traffic"].as_array().unwrap();
    assert_eq!(traffic.len(), 1, "{page}");
    assert_eq!(traffic[0]["request"]["uri"], "/cli/1?n=1");
    assert_eq!(traffic[0]["recordingId"], id);

    let text = run(&proxy, &["recording", "delete", &id]).await;
    assert_eq!(text.trim(), format!("deleted {id}"));
    let err = fails(&proxy, &["recording", "show", &id]).await;
    assert!(err.contains("404") && err.contains(&id), "{err}");
    let err = fails(&proxy, &["recording", "delete", &id]).await;
    assert!(err.contains("404"), "{err}");
    let err = fails(&proxy, &["recording", "stop", &second]).await;
    assert!(err.contains("409"), "{err}");
    let list = run_json(&proxy, &["recording", "list"]).await;
    assert_eq!(list["count"], 1, "{list}");
}

#[tokio::test]
async fn status_prints_the_proxy_and_every_module() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let http = Http::new();
    for i in 0..2 {
        assert_eq!(http.get(&proxy.url(&format!("/s/{i}"))).await.status, 200);
    }

    let text = run(&proxy, &["status"]).await;
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("proxy: listening on {} -> {}", proxy.proxy_addr(), up.url()),
        "{text}"
    );
    let (header, rows) = table(&lines.collect::<Vec<_>>().join("\n"));
    assert_eq!(
        header,
        ["MODULE", "KIND", "STATE", "SINCE/ERROR", "COUNTERS"]
    );
    let modules: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str()))
        .collect();
    assert_eq!(
        modules,
        [
            ("TrafficReader", "pipeline", "running"),
            ("TrafficRecorder", "support", "running"),
            ("TrafficStreamer", "support", "running"),
        ],
        "{text}"
    );
    let reader = &rows[0];
    assert!(
        reader[4].contains("published=4") && reader[4].contains("dropped=0"),
        "{text}"
    );
    assert!(rows[1][4].contains("received=4"), "{text}");

    let status = run_json(&proxy, &["status"]).await;
    assert_eq!(status["code"], 200);
    assert_eq!(status["message"].as_array().unwrap().len(), 3);
    assert_eq!(status["proxy"]["bind"], proxy.proxy_addr().to_string());
    let one = run_json(&proxy, &["status", "--module", "TrafficRecorder"]).await;
    let modules = one["message"].as_array().unwrap();
    assert_eq!(modules.len(), 1, "{one}");
    assert_eq!(modules[0]["module"], "TrafficRecorder");
    assert_eq!(modules[0]["counters"]["received"], 4, "{one}");
    let err = fails(&proxy, &["status", "--module", "Nope"]).await;
    assert!(err.contains("404") && err.contains("Nope"), "{err}");
}

#[tokio::test]
async fn the_cli_says_when_no_proxy_answers() {
    let port = crate::harness::closed_port();
    let out =
        crate::harness::run_to_end(&["recording", "list", "--mgmt", &format!("127.0.0.1:{port}")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the management API") && err.contains(&port.to_string()),
        "{err}"
    );
}
