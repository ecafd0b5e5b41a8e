//! Replay: a recording's requests (or a HAR file's) sent again to a target, in recorded
//! order, paced as recorded (or faster, or at a fixed rate), each answer compared with
//! the recorded one ([`diff`]).
//!
//! It runs as a client command (`heliosburn replay`), beside any proxy: the recording is
//! read a page at a time from the management API (or the HAR a entry at a time from its
//! file), so a replay holds a page, the requests in flight and a bounded report, however
//! long the recording.

pub mod diff;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::cli::ReplayArgs;
use crate::control::client::Api;
use crate::redact::contains_mark;
use crate::traffic::{header_multimap, TrafficDoc, FRAMING_HEADERS};
use diff::{Difference, Replayed, Rules};

/// Transactions read from the management API per page.
const PAGE: u64 = 100;
/// Most bytes of a replayed response body read for the comparison.
const MAX_BODY: usize = 16 << 20;
/// Most exchanges each list of the report names (all are counted).
const MAX_LISTED: usize = 1000;

/// The latest a request is due after the replay's start: a year (a recording that
/// spans more is replayed with its later requests at that).
const MAX_OFFSET: Duration = Duration::from_secs(365 * 24 * 3600);

/// How requests are spaced.
#[derive(Debug, Clone, Copy)]
enum Pacing {
    /// As recorded, `speed` times faster.
    Recorded { speed: f64 },
    /// A fixed number of requests per second.
    Rate(f64),
    /// Each as soon as there is room.
    AsFastAsPossible,
}

impl Pacing {
    /// When the request of the `index`th transaction, which began at `at` in a recording
    /// that began at `t0`, is due, from the replay's start.
    /// At most [`MAX_OFFSET`].
    fn offset(self, t0: DateTime<Utc>, at: DateTime<Utc>, index: u64) -> Duration {
        let secs = match self {
            Pacing::Recorded { speed } => {
                (at - t0).to_std().unwrap_or_default().as_secs_f64() / speed
            }
            Pacing::Rate(rate) => index as f64 / rate,
            Pacing::AsFastAsPossible => 0.0,
        };
        Duration::try_from_secs_f64(secs)
            .unwrap_or(MAX_OFFSET)
            .min(MAX_OFFSET)
    }
}

/// The report: counts, and the exchanges that differed, failed or were skipped.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub source: String,
    pub target: String,
    /// Requests sent.
    pub sent: u64,
    /// Requests that got no answer (refused, timed out, broken).
    pub errors: u64,
    /// Answers equal to the recorded ones, under the rules.
    pub same: u64,
    /// Answers that differ.
    pub different: u64,
    /// Recorded requests that were not sent (a request body recorded only in part).
    pub skipped: u64,
    /// Requests sent whose recording has no response to compare with.
    pub not_compared: u64,
    /// Header values the recording holds redacted, not sent.
    pub redacted_headers_dropped: u64,
    /// Requests sent with a redacted value in their query or body (sent as the mark: the
    /// secret is not known).
    pub sent_with_redacted_values: u64,
    pub duration_ms: f64,
    /// Requests per second over the whole replay.
    pub rate: f64,
    /// The differing exchanges, in recorded order (at most 1000 listed).
    pub differences: Vec<Differing>,
    pub failures: Vec<Listed>,
    pub skips: Vec<Listed>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Differing {
    /// Position in the recording (0-based).
    pub index: u64,
    pub transaction_id: String,
    pub method: String,
    /// The full URL replayed.
    pub url: String,
    pub what: Vec<Difference>,
}

/// An exchange that failed or was skipped, and why.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    pub index: u64,
    pub transaction_id: String,
    pub method: String,
    pub url: String,
    pub reason: String,
}

/// What became of one recorded exchange.
enum Outcome {
    Same,
    Different(Vec<Difference>),
    NotCompared,
    Failed(String),
    Skipped(String),
}

/// What the replay of one exchange needs, shared by all.
struct Sender {
    client: reqwest::Client,
    target: String,
    keep_host: bool,
    rules: Rules,
}

/// Runs `heliosburn replay`; returns whether it should fail the command
/// (`--fail-on-diff` with a difference or an error).
pub async fn run(mgmt: &str, token: Option<&str>, json: bool, args: ReplayArgs) -> Result<bool> {
    let rules = Rules::new(
        &args.ignore_headers,
        &args.ignore_paths,
        &args.matches,
        !args.no_default_ignores,
    )?;
    let target = target_base(&args.target)?;
    let pacing = match (args.speed, args.rate, args.as_fast_as_possible) {
        (_, _, true) => Pacing::AsFastAsPossible,
        (_, Some(rate), _) => Pacing::Rate(rate),
        (speed, None, false) => Pacing::Recorded {
            speed: speed.unwrap_or(1.0),
        },
    };
    if let Pacing::Recorded { speed } = pacing {
        if !(0.001..=1e6).contains(&speed) {
            bail!(
                "--speed must be a factor from 0.001 to 1000000 (2 is twice as fast), not {speed}"
            );
        }
    }
    if !(1..=10_000).contains(&args.concurrency) {
        bail!("--concurrency must be from 1 to 10000");
    }
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .context("--timeout must be a positive number of seconds")?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .context("cannot make an HTTP client")?;

    let (tx, rx) = mpsc::channel::<Result<TrafficDoc>>(2 * PAGE as usize);
    let (source, total) = match (&args.id, &args.har) {
        (_, Some(file)) => (format!("{}", file.display()), read_har(file.clone(), tx)?),
        (Some(id), None) => {
            let source = Source {
                api: Api::new(mgmt, token)?,
                id: id.clone(),
            };
            let total = source.count().await?;
            tokio::spawn(source.pages(tx));
            (format!("recording {id}"), Some(total))
        }
        (None, None) => bail!("name a recording ID, or a HAR file with --har FILE"),
    };
    let sender = Arc::new(Sender {
        client,
        target: target.clone(),
        keep_host: args.keep_host,
        rules,
    });
    let progress = progress_bar(total);
    let mut report = Report {
        source,
        target,
        ..Report::default()
    };
    let started = Instant::now();
    drive(rx, pacing, args.concurrency, sender, &mut report, &progress).await?;
    progress.finish_and_clear();
    // Requests run side by side may finish out of order: the lists are in recorded order.
    report.differences.sort_by_key(|d| d.index);
    report.failures.sort_by_key(|d| d.index);
    let elapsed = started.elapsed().as_secs_f64();
    report.duration_ms = elapsed * 1000.0;
    report.rate = if elapsed > 0.0 {
        report.sent as f64 / elapsed
    } else {
        0.0
    };
    let text = if json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        summary(&report)
    };
    crate::cli::emit(&text)?;
    Ok(args.fail_on_diff && (report.different > 0 || report.errors > 0))
}

/// `http://host:port[/prefix]` without a trailing slash: a request's target is appended.
fn target_base(text: &str) -> Result<String> {
    let url = reqwest::Url::parse(text)
        .with_context(|| format!("--target `{text}` is not a URL (write http://HOST:PORT)"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("--target `{text}` is not an http:// or https:// URL with a host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("--target `{text}` has a query or fragment: the recorded requests bring theirs");
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Sends every transaction the source yields, paced, at most `concurrency` at once, and
/// files each outcome in the report.
async fn drive(
    mut rx: mpsc::Receiver<Result<TrafficDoc>>,
    pacing: Pacing,
    concurrency: usize,
    sender: Arc<Sender>,
    report: &mut Report,
    progress: &ProgressBar,
) -> Result<()> {
    let room = Arc::new(Semaphore::new(concurrency));
    let mut running = JoinSet::new();
    let start = tokio::time::Instant::now();
    let mut first: Option<DateTime<Utc>> = None;
    let mut due = start;
    let mut index = 0u64;
    while let Some(doc) = rx.recv().await {
        let doc = doc?;
        let t0 = *first.get_or_insert(doc.created_at);
        // Never earlier than the one before: recorded order is kept.
        due = due.max(start + pacing.offset(t0, doc.created_at, index));
        tokio::time::sleep_until(due).await;
        let permit = room.clone().acquire_owned().await?;
        while let Some(done) = running.try_join_next() {
            file(done?, report, progress);
        }
        let sender = sender.clone();
        running.spawn(async move {
            let (url, outcome, redacted) = sender.replay(&doc).await;
            drop(permit);
            (index, doc, url, outcome, redacted)
        });
        index += 1;
    }
    while let Some(done) = running.join_next().await {
        file(done?, report, progress);
    }
    Ok(())
}

type Done = (u64, TrafficDoc, String, Outcome, Redacted);

/// What of a request's secrets the recording held redacted.
#[derive(Debug, Default, Clone, Copy)]
struct Redacted {
    /// Header values left out.
    headers_dropped: u64,
    /// A mark went out in the query or the body.
    marks_sent: bool,
}

fn file((index, doc, url, outcome, redacted): Done, report: &mut Report, progress: &ProgressBar) {
    report.redacted_headers_dropped += redacted.headers_dropped;
    if redacted.marks_sent && !matches!(outcome, Outcome::Skipped(_)) {
        report.sent_with_redacted_values += 1;
    }
    let listed = |reason: String| Listed {
        index,
        transaction_id: doc.transaction_id.clone(),
        method: doc.request.method.clone(),
        url: url.clone(),
        reason,
    };
    match outcome {
        Outcome::Skipped(reason) => {
            report.skipped += 1;
            if report.skips.len() < MAX_LISTED {
                report.skips.push(listed(reason));
            }
        }
        Outcome::Failed(reason) => {
            report.sent += 1;
            report.errors += 1;
            if report.failures.len() < MAX_LISTED {
                report.failures.push(listed(reason));
            }
        }
        Outcome::Same => {
            report.sent += 1;
            report.same += 1;
        }
        Outcome::NotCompared => {
            report.sent += 1;
            report.not_compared += 1;
        }
        Outcome::Different(what) => {
            report.sent += 1;
            report.different += 1;
            if report.differences.len() < MAX_LISTED {
                report.differences.push(Differing {
                    index,
                    transaction_id: doc.transaction_id.clone(),
                    method: doc.request.method.clone(),
                    url,
                    what,
                });
            }
        }
    }
    progress.inc(1);
    let elapsed = progress.elapsed().as_secs_f64().max(1e-3);
    progress.set_message(format!(
        "{} different · {} errors · {:.0} req/s",
        report.different,
        report.errors,
        report.sent as f64 / elapsed
    ));
}

impl Sender {
    /// Sends one recorded request and compares the answer: the URL sent to, what came
    /// of it, and what of its secrets the recording held redacted.
    async fn replay(&self, doc: &TrafficDoc) -> (String, Outcome, Redacted) {
        let req = &doc.request;
        let url = format!("{}{}", self.target, req.uri);
        let mut redacted = Redacted {
            headers_dropped: 0,
            marks_sent: contains_mark(&req.uri)
                || req
                    .body
                    .as_ref()
                    .is_some_and(|b| b.text().is_some_and(contains_mark)),
        };
        let Ok(method) = reqwest::Method::from_bytes(req.method.as_bytes()) else {
            let reason = format!("`{}` is not a method", req.method);
            return (url, Outcome::Skipped(reason), redacted);
        };
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, values) in &req.headers {
            if FRAMING_HEADERS.contains(&name) || (name == "host" && !self.keep_host) {
                continue;
            }
            let Ok(name) = reqwest::header::HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            for value in values {
                // A secret the recording redacted is not known: sending the mark would
                // only be a wrong credential.
                if crate::redact::is_mark(value) {
                    redacted.headers_dropped += 1;
                    continue;
                }
                if let Ok(v) = reqwest::header::HeaderValue::from_str(value) {
                    headers.append(name.clone(), v);
                }
            }
        }
        let body = match &req.body {
            Some(b) if b.truncated => {
                let reason = format!(
                    "its request body was recorded only in part ({} of {} bytes; raise body_limit to replay it)",
                    b.bytes.len(),
                    b.size
                );
                return (url, Outcome::Skipped(reason), redacted);
            }
            Some(b) => b.bytes.clone(),
            // Not captured: sent empty only when the request said it had none.
            None if has_body(&req.headers) => {
                let reason =
                    "its request body was not recorded (body_limit 0, or left out of the HAR)"
                        .to_owned();
                return (url, Outcome::Skipped(reason), redacted);
            }
            None => bytes::Bytes::new(),
        };
        let mut builder = self.client.request(method, &url).headers(headers);
        if !body.is_empty() {
            builder = builder.body(body);
        }
        let outcome = match builder.send().await {
            Err(e) => Outcome::Failed(error_chain(&e)),
            Ok(resp) => match read_answer(resp).await {
                Err(e) => Outcome::Failed(e),
                Ok(replayed) => match &doc.response {
                    None => Outcome::NotCompared,
                    Some(recorded) => {
                        let what = diff::compare(&self.rules, recorded, &replayed);
                        if what.is_empty() {
                            Outcome::Same
                        } else {
                            Outcome::Different(what)
                        }
                    }
                },
            },
        };
        (url, outcome, redacted)
    }
}

/// Whether recorded request headers announce a body.
fn has_body(headers: &crate::traffic::MultiMap) -> bool {
    let length = headers
        .first("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    length.is_some_and(|n| n > 0) || headers.contains_key("transfer-encoding")
}

/// The answer's status, headers and body (at most [`MAX_BODY`] bytes of it).
async fn read_answer(mut resp: reqwest::Response) -> Result<Replayed, String> {
    let status = resp.status().as_u16();
    let headers = header_multimap(resp.headers());
    let mut body = Vec::new();
    let mut cut = false;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return Err(format!("the answer broke off: {}", error_chain(&e))),
        }
        if body.len() > MAX_BODY {
            // Compared on its start; the rest is not read (the connection goes).
            body.truncate(MAX_BODY);
            cut = true;
            break;
        }
    }
    Ok(Replayed {
        status,
        headers,
        body,
        cut,
    })
}

/// An error with its causes: reqwest's own text says little (`error sending request`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn progress_bar(total: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = if total.is_some() {
        "{bar:30} {pos}/{len} sent · {msg} [{elapsed}]"
    } else {
        "{spinner} {pos} sent · {msg} [{elapsed}]"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The report for a person.
fn summary(r: &Report) -> String {
    let mut out = format!(
        "replayed {} requests of {} to {} in {:.1} s ({:.0}/s)\n  same: {}  different: {}  errors: {}  skipped: {}",
        r.sent,
        r.source,
        r.target,
        r.duration_ms / 1000.0,
        r.rate,
        r.same,
        r.different,
        r.errors,
        r.skipped
    );
    if r.not_compared > 0 {
        out += &format!("  not compared (no recorded response): {}", r.not_compared);
    }
    out.push('\n');
    if r.sent_with_redacted_values > 0 {
        out += &format!(
            "  {} requests went out with redacted values in their query or body, as recorded\n",
            r.sent_with_redacted_values
        );
    }
    if r.redacted_headers_dropped > 0 {
        out += &format!(
            "  {} redacted header values were not sent (record with `redact: false` to replay credentials)\n",
            r.redacted_headers_dropped
        );
    }
    let cell = |s: &str| crate::cli::escape(s);
    for d in &r.differences {
        out += &format!(
            "\n{} {}  (transaction {})\n",
            cell(&d.method),
            cell(&d.url),
            cell(&d.transaction_id)
        );
        for w in &d.what {
            out += &format!("  {}\n", cell(&w.to_string()));
        }
    }
    for (title, list) in [("failed", &r.failures), ("skipped", &r.skips)] {
        for l in list {
            out += &format!(
                "\n{title}: {} {}: {}\n",
                cell(&l.method),
                cell(&l.url),
                cell(&l.reason)
            );
        }
    }
    out
}

/// Reads a HAR file a entry at a time into the channel; `None`: its length is unknown.
fn read_har(file: PathBuf, tx: mpsc::Sender<Result<TrafficDoc>>) -> Result<Option<u64>> {
    let f =
        std::fs::File::open(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file.display().to_string();
    let watcher = tx.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let read = crate::har::read(f, "har", |doc| {
            tx.blocking_send(Ok(doc))
                .map_err(|_| "the replay stopped".to_owned())
        });
        if let Err(e) = read {
            let _ = tx.blocking_send(Err(anyhow::anyhow!("{}: {e}", file.display())));
        }
    });
    // A reader that failed without a word must not pass for the file's end.
    tokio::spawn(async move {
        if let Err(e) = reader.await {
            let _ = watcher
                .send(Err(anyhow::anyhow!("{name}: the HAR reader failed: {e}")))
                .await;
        }
    });
    Ok(None)
}

/// A recording as the replay reads it from the management API.
struct Source {
    api: Api,
    id: String,
}

impl Source {
    /// How many transactions the recording holds.
    async fn count(&self) -> Result<u64> {
        let id = self.id.as_str();
        if id == "." || id == ".." {
            bail!("`{id}` is not an id");
        }
        let rec = self.api.get(&["recording", id], &[]).await?;
        Ok(rec["count"].as_u64().unwrap_or(0))
    }

    /// Every transaction of the recording into the channel, a page at a time.
    async fn pages(self, tx: mpsc::Sender<Result<TrafficDoc>>) {
        let Source { api, id } = self;
        let mut start = 0u64;
        loop {
            let page = api
                .get(
                    &["recording", &id, "traffic"],
                    &[("start", start.to_string()), ("offset", PAGE.to_string())],
                )
                .await
                .and_then(|page| {
                    let next = page["next"].as_u64();
                    let docs: Vec<TrafficDoc> = serde_json::from_value(page["traffic"].clone())
                        .context("the recording's traffic is not in the expected shape")?;
                    Ok((docs, next))
                });
            match page {
                Ok((docs, next)) => {
                    for doc in docs {
                        if tx.send(Ok(doc)).await.is_err() {
                            return;
                        }
                    }
                    match next {
                        Some(n) if n > start => start = n,
                        _ => return,
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_due_as_recorded_scaled_or_at_a_rate() {
        let t0 = Utc::now();
        let at = t0 + chrono::Duration::milliseconds(1500);
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(Pacing::Recorded { speed: 1.0 }.offset(t0, at, 3)), 1500);
        assert_eq!(ms(Pacing::Recorded { speed: 3.0 }.offset(t0, at, 3)), 500);
        // Captured slightly out of order: due at once, never before the start.
        assert_eq!(ms(Pacing::Recorded { speed: 1.0 }.offset(at, t0, 3)), 0);
        assert_eq!(ms(Pacing::Rate(4.0).offset(t0, at, 3)), 750);
        assert_eq!(ms(Pacing::AsFastAsPossible.offset(t0, at, 3)), 0);
    }

    #[test]
    fn targets_keep_their_prefix_and_refuse_what_cannot_take_a_path() {
        assert_eq!(target_base("http://h:8/api/").unwrap(), "http://h:8/api");
        assert_eq!(target_base("https://h").unwrap(), "https://h");
        assert!(target_base("h:8").is_err());
        assert!(target_base("http://h/?q=1").is_err());
    }
}
