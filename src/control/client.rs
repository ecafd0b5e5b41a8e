//! The CLI's side of the management API: requests, then tables for people or JSON.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cli::{ApiCommand as Command, RecordingCommand};

/// A running proxy's management API, as its clients (the CLI, `replay`) reach it.
pub struct Api {
    base: reqwest::Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// `HOST:PORT` or `http://HOST:PORT`; the token, if the API wants one.
    pub fn new(mgmt: &str, token: Option<&str>) -> Result<Self> {
        let base = if mgmt.starts_with("http://") {
            mgmt.trim_end_matches('/').to_owned()
        } else {
            format!("http://{mgmt}")
        };
        Ok(Self {
            base: reqwest::Url::parse(&base).with_context(|| {
                format!("`{mgmt}` is not a management address (pass --mgmt HOST:PORT)")
            })?,
            token: token.map(str::to_owned),
            http: reqwest::Client::new(),
        })
    }

    /// The URL of a route. Path segments and query values are encoded: a module named
    /// `AddHeader#2` or an id with a `/` stays one segment or value.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> reqwest::Url {
        let mut u = self.base.clone();
        if let Ok(mut path) = u.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            u.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        u
    }

    /// Sends a request (with the token); an unreachable API says what to check.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        req.send().await.with_context(|| {
            format!(
                "cannot reach the management API at {}: is heliosburn running? (pass --mgmt HOST:PORT)",
                self.base
            )
        })
    }

    /// A request to a route.
    pub fn request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        self.http.request(method, url)
    }

    /// `GET` a route; its JSON, or the API's error as `STATUS: message`.
    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Value> {
        let resp = self
            .send(self.request(reqwest::Method::GET, self.url(segments, query)))
            .await?;
        answer(resp).await
    }
}

/// An answer's JSON (a text that is not JSON as a string), or its error as an error.
async fn answer(resp: reqwest::Response) -> Result<Value> {
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
    Ok(value)
}

pub async fn run(mgmt: &str, token: Option<&str>, json: bool, cmd: Command) -> Result<()> {
    let api = Api::new(mgmt, token)?;
    let url = |segments: &[&str], query: &[(&str, String)]| api.url(segments, query);
    // `.` and `..` would be dropped from the path (`recording delete ..` would hit the
    // collection): no id or name is either.
    let ids = match &cmd {
        Command::Status { module } => module.iter().collect::<Vec<_>>(),
        Command::Recording(
            RecordingCommand::Show { id }
            | RecordingCommand::Start { id }
            | RecordingCommand::Stop { id }
            | RecordingCommand::Delete { id }
            | RecordingCommand::Traffic { id, .. }
            | RecordingCommand::Export { id, .. },
        ) => vec![id],
        Command::Recording(_) => Vec::new(),
    };
    if let Some(bad) = ids.iter().find(|i| i.as_str() == "." || i.as_str() == "..") {
        bail!("`{bad}` is not an id");
    }
    use reqwest::Method;
    let (method, target, body) = match &cmd {
        Command::Status { module } => (
            Method::GET,
            match module {
                Some(m) => url(&["status"], &[("module", m.clone())]),
                None => url(&["status"], &[]),
            },
            None,
        ),
        Command::Recording(r) => match r {
            RecordingCommand::List => (Method::GET, url(&["recording"], &[]), None),
            RecordingCommand::Create { name, description } => (
                Method::POST,
                url(&["recording"], &[]),
                Some(serde_json::json!({ "name": name, "description": description })),
            ),
            RecordingCommand::Show { id } => (Method::GET, url(&["recording", id], &[]), None),
            RecordingCommand::Start { id } => {
                (Method::POST, url(&["recording", id, "start"], &[]), None)
            }
            RecordingCommand::Stop { id } => {
                (Method::POST, url(&["recording", id, "stop"], &[]), None)
            }
            RecordingCommand::Delete { id } => (Method::DELETE, url(&["recording", id], &[]), None),
            RecordingCommand::Export { id, .. } => {
                (Method::GET, url(&["recording", id, "har"], &[]), None)
            }
            RecordingCommand::Import { name, .. } => (
                Method::POST,
                url(
                    &["recording", "import"],
                    &name.iter().map(|n| ("name", n.clone())).collect::<Vec<_>>(),
                ),
                None,
            ),
            RecordingCommand::Traffic { id, start, offset } => (
                Method::GET,
                url(
                    &["recording", id, "traffic"],
                    &[("start", start.to_string()), ("offset", offset.to_string())],
                ),
                None,
            ),
        },
    };
    let changes = method != Method::GET;
    let mut req = api.request(method, target);
    // The API takes state changes only as JSON (a browser cannot send that cross-site).
    match (body, &cmd) {
        (_, Command::Recording(RecordingCommand::Import { file, .. })) => {
            let f = tokio::fs::File::open(file)
                .await
                .with_context(|| format!("cannot read {}", file.display()))?;
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(reqwest::Body::from(f));
        }
        (Some(b), _) => req = req.json(&b),
        (None, _) if changes => {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body("{}")
        }
        (None, _) => {}
    }
    let resp = api.send(req).await?;
    if let (true, Command::Recording(RecordingCommand::Export { output, .. })) =
        (resp.status().is_success(), &cmd)
    {
        return export(resp, output.as_deref()).await;
    }
    let value = answer(resp).await?;
    let out = if json {
        serde_json::to_string_pretty(&value)? + "\n"
    } else {
        match cmd {
            Command::Status { .. } => status_text(&value),
            Command::Recording(RecordingCommand::List) => recordings_text(
                value["recordings"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
            ),
            Command::Recording(RecordingCommand::Delete { id }) => format!("deleted {id}\n"),
            Command::Recording(RecordingCommand::Traffic { .. }) => traffic_text(&value),
            Command::Recording(_) => {
                recordings_text(std::slice::from_ref(&value)) + &accounting_text(&value)
            }
        }
    };
    emit(&out)
}

/// Streams an export to `output` (or standard output), a chunk at a time.
async fn export(mut resp: reqwest::Response, output: Option<&std::path::Path>) -> Result<()> {
    use std::io::Write;
    let mut out: Box<dyn Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut bytes = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .context("the export broke off (the proxy's log says why)")?
    {
        bytes += chunk.len() as u64;
        match out.write_all(&chunk) {
            // A reader that went away (`| head`) is no error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other.context("writing the export")?,
        }
    }
    out.flush().context("writing the export")?;
    if let Some(path) = output {
        eprintln!("exported {bytes} bytes to {}", path.display());
    }
    Ok(())
}

fn emit(text: &str) -> Result<()> {
    crate::cli::emit(text).context("writing to stdout")
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The widest a table cell is shown; longer text is cut with `…` (`--json` has it all).
const MAX_CELL: usize = 60;

/// A cell as a terminal may show it: control characters escaped (a name cannot move the
/// cursor or recolour the screen), at most [`MAX_CELL`] characters.
fn cell(text: &str) -> String {
    let mut out = crate::cli::escape(text);
    if out.chars().count() > MAX_CELL {
        out = out.chars().take(MAX_CELL - 1).collect::<String>() + "…";
    }
    out
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.iter().map(|c| cell(c)).collect())
        .collect();
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
            .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(c.chars().count()))))
            .collect();
        format!("{}\n", parts.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out += &line(r);
    }
    out
}

fn status_text(v: &Value) -> String {
    let p = &v["proxy"];
    let https = if p["tls"].is_object() { " (HTTPS)" } else { "" };
    let unverified = if s(&p["upstream_tls_verify"]).starts_with("OFF") {
        " (its certificate NOT verified: --upstream-insecure)"
    } else {
        ""
    };
    let head = format!(
        "proxy: {} on {}{https} -> {}{unverified}\n",
        if p["listening"].as_bool() == Some(true) {
            "listening"
        } else {
            "stopped"
        },
        s(&p["bind"]),
        s(&p["upstream"])
    );
    let rows = v["message"]
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
                    vec![
                        s(&x["module"]),
                        s(&x["kind"]),
                        s(&x["state"]),
                        s(&x["status"]),
                        counters,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let recording = match p["recording"].as_object() {
        Some(r) => format!(
            "recording {} ({}, {}): {}",
            s(&p["recording"]["id"]),
            s(&p["recording"]["name"]),
            if r.get("running").and_then(Value::as_bool) == Some(true) {
                "running"
            } else {
                "stopped"
            },
            match accounting_text(&p["recording"]) {
                t if t.is_empty() => "\n".to_owned(),
                t => t,
            }
        ),
        None => String::new(),
    };
    head + &recording
        + &table(
            &["MODULE", "KIND", "STATE", "SINCE/ERROR", "COUNTERS"],
            rows,
        )
}

fn recordings_text(list: &[Value]) -> String {
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
    )
}

/// A recording's accounting as one line under its table (none for a recording this
/// proxy process did not run).
fn accounting_text(r: &Value) -> String {
    let a = &r["accounting"];
    if !a.is_object() {
        return String::new();
    }
    let l = &a["lost"];
    format!(
        "served {} = stored {} + queued {} + lost {} (spool full {}, spool error {}, store {})\n",
        s(&a["served"]),
        s(&a["stored"]),
        s(&a["queued"]),
        s(&l["total"]),
        s(&l["spoolFull"]),
        s(&l["spoolError"]),
        s(&l["store"]),
    )
}

fn traffic_text(v: &Value) -> String {
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
    table(&["CREATED", "METHOD", "URI", "STATUS", "TRANSACTION"], rows)
        + &format!(
            "({} of {} from {})\n",
            s(&v["offset"]),
            s(&v["count"]),
            s(&v["start"])
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_escaped_and_cut() {
        assert_eq!(cell("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
        let long = cell(&"x".repeat(65_536));
        assert_eq!(long.chars().count(), MAX_CELL);
        assert!(long.ends_with('…'));
        let t = table(&["NAME", "N"], vec![vec!["y".repeat(70_000), "1".into()]]);
        assert!(t.lines().nth(1).unwrap().ends_with("…  1"), "{t}");
    }
}
