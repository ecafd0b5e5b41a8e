//! The CLI's side of the management API: requests, then tables for people or JSON.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cli::{Command, RecordingCommand};

pub async fn run(mgmt: &str, json: bool, cmd: Command) -> Result<()> {
    let base = if mgmt.starts_with("http://") {
        mgmt.trim_end_matches('/').to_owned()
    } else {
        format!("http://{mgmt}")
    };
    let client = reqwest::Client::new();
    let (method, path, body) = match &cmd {
        Command::Status { module } => (
            reqwest::Method::GET,
            match module {
                Some(m) => format!("/status?module={m}"),
                None => "/status".into(),
            },
            None,
        ),
        Command::Recording(r) => match r {
            RecordingCommand::List => (reqwest::Method::GET, "/recording".into(), None),
            RecordingCommand::Create { name, description } => (
                reqwest::Method::POST,
                "/recording".into(),
                Some(serde_json::json!({ "name": name, "description": description })),
            ),
            RecordingCommand::Show { id } => {
                (reqwest::Method::GET, format!("/recording/{id}"), None)
            }
            RecordingCommand::Start { id } => (
                reqwest::Method::POST,
                format!("/recording/{id}/start"),
                None,
            ),
            RecordingCommand::Stop { id } => {
                (reqwest::Method::POST, format!("/recording/{id}/stop"), None)
            }
            RecordingCommand::Delete { id } => {
                (reqwest::Method::DELETE, format!("/recording/{id}"), None)
            }
            RecordingCommand::Traffic { id, start, offset } => (
                reqwest::Method::GET,
                format!("/recording/{id}/traffic?start={start}&offset={offset}"),
                None,
            ),
        },
    };
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.with_context(|| {
        format!("cannot reach the management API at {base}: is heliosburn running? (pass --mgmt HOST:PORT)")
    })?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .context("reading the management API's answer")?;
    let value: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    if !status.is_success() {
        let msg = value
            .get("error")
            .or_else(|| value.get("message"))
            .map_or_else(
                || value.to_string(),
                |m| m.as_str().map_or_else(|| m.to_string(), str::to_owned),
            );
        bail!("{status}: {msg}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match cmd {
        Command::Status { .. } => print_status(&value),
        Command::Recording(RecordingCommand::List) => print_recordings(
            value["recordings"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
        ),
        Command::Recording(RecordingCommand::Delete { id }) => println!("deleted {id}"),
        Command::Recording(RecordingCommand::Traffic { .. }) => print_traffic(&value),
        Command::Recording(_) => print_recordings(std::slice::from_ref(&value)),
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn print_status(v: &Value) {
    let m = &v["message"];
    let p = &m["proxy"];
    println!(
        "proxy: {} on {} -> {}",
        if p["listening"].as_bool() == Some(true) {
            "listening"
        } else {
            "stopped"
        },
        s(&p["bind"]),
        s(&p["upstream"])
    );
    let rows = m["modules"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|x| {
                    let counters = x["counters"]
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(k, v)| format!("{k}={}", s(v)))
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default();
                    let since = x["status"]["error"]
                        .as_str()
                        .map_or_else(|| s(&x["status"]["since"]), str::to_owned);
                    vec![
                        s(&x["module"]),
                        s(&x["kind"]),
                        s(&x["state"]),
                        since,
                        counters,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &["MODULE", "KIND", "STATE", "SINCE/ERROR", "COUNTERS"],
        rows,
    );
}

fn print_recordings(list: &[Value]) {
    let rows = list
        .iter()
        .map(|r| {
            vec![
                s(&r["id"]),
                s(&r["name"]),
                s(&r["count"]),
                s(&r["startedAt"]),
                s(&r["stoppedAt"]),
                s(&r["description"]),
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "COUNT", "STARTED", "STOPPED", "DESCRIPTION"],
        rows,
    );
}

fn print_traffic(v: &Value) {
    let rows = v["traffic"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|t| {
                    vec![
                        s(&t["createdAt"]),
                        s(&t["request"]["method"]),
                        s(&t["request"]["uri"]),
                        s(&t["response"]["statusCode"]),
                        s(&t["transactionId"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["CREATED", "METHOD", "URI", "STATUS", "TRANSACTION"], rows);
    println!(
        "({} of {} from {})",
        s(&v["offset"]),
        s(&v["count"]),
        s(&v["start"])
    );
}
