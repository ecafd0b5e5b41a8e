//! Recordings as a service: the store plus which recording is running.
//!
//! One recording runs at a time. A transaction belongs to the recording that was running
//! when its request arrived (its `createdAt`), however late its messages reach the
//! recorder: the spans of the last [`REMEMBERED_SPANS`] stopped recordings are kept to
//! file them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::{mpsc, oneshot, watch};

use crate::store::{RecordingPatch, Store, StoreError};
use crate::traffic::{Accounting, Loss, LostBy, Recording, RecordingFailure, TrafficDoc};

/// How long a stop waits for the recorder to write what it received before the stop.
pub const FLUSH_WAIT: Duration = Duration::from_secs(10);

/// Stopped recordings whose spans are remembered, so that their late messages are filed
/// in them (a message of an older one is counted as ignored).
pub const REMEMBERED_SPANS: usize = 64;

/// A stopped recording's span: (id, started, stopped).
pub type Span = (String, DateTime<Utc>, DateTime<Utc>);

/// Which recording(s) the recorder files messages into.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    pub active: Option<(String, DateTime<Utc>)>,
    /// The last stopped recordings, oldest first, at most [`REMEMBERED_SPANS`].
    pub recent: Vec<Span>,
}

impl Target {
    /// The recording a transaction that began at `t` belongs to, however long ago.
    pub fn recording_for(&self, t: DateTime<Utc>) -> Option<&str> {
        if let Some((id, start)) = &self.active {
            if t >= *start {
                return Some(id);
            }
        }
        self.recent
            .iter()
            .rev()
            .find(|(_, start, stop)| t >= *start && t <= *stop)
            .map(|(id, _, _)| id.as_str())
    }

    /// The running recording stops at `at`; its span is remembered.
    fn stop_active(&mut self, at: DateTime<Utc>) {
        if let Some((id, start)) = self.active.take() {
            // A recording started again has a span per run: each keeps its late messages.
            if self.recent.len() >= REMEMBERED_SPANS {
                self.recent.remove(0);
            }
            self.recent.push((id, start, at));
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("no recording with id `{0}`")]
    NotFound(String),
    #[error("recording {busy_with} is running since {busy_since}; stop it first")]
    Busy {
        busy_with: String,
        busy_since: DateTime<Utc>,
    },
    #[error(
        "no TrafficRecorder is running: add it to the `support:` list of modules.yaml or start it"
    )]
    NoRecorder,
    #[error("no recording is running")]
    NotRunning,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request to the recorder to write everything it has received so far.
pub type FlushRequest = oneshot::Sender<()>;

pub struct Recordings {
    store: Arc<dyn Store>,
    target: watch::Sender<Target>,
    /// Serializes start/stop so two clients cannot both start.
    switch: tokio::sync::Mutex<()>,
    recorder: Mutex<Option<mpsc::Sender<FlushRequest>>>,
    /// Recordings the proxy stopped because their traffic could not be stored, shown with
    /// them until they start again (kept here: the store that failed may not take it).
    failures: Mutex<HashMap<String, RecordingFailure>>,
    /// What became of the traffic of each recording run in this process.
    tallies: Mutex<HashMap<String, Tally>>,
}

/// A recording's counts since it last started in this process.
#[derive(Debug, Default)]
struct Tally {
    /// Its transactions in the store when it started.
    base: u64,
    served: u64,
    lost: LostBy,
}

impl Recordings {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            target: watch::Sender::new(Target::default()),
            switch: tokio::sync::Mutex::new(()),
            recorder: Mutex::new(None),
            failures: Mutex::default(),
            tallies: Mutex::default(),
        }
    }

    /// An exchange that began at `started` was answered: counted in its recording.
    pub fn served(&self, started: DateTime<Utc>) {
        self.tally_at(started, |t| t.served += 1);
    }

    /// `n` exchanges of the recording running at `started` could not be stored.
    pub fn lost_at(&self, started: DateTime<Utc>, cause: Loss, n: u64) {
        self.tally_at(started, |t| t.lost.count(cause, n));
    }

    /// `n` exchanges of the recording running at `started` counted lost were stored after
    /// all.
    pub fn found_at(&self, started: DateTime<Utc>, cause: Loss, n: u64) {
        self.tally_at(started, |t| t.lost.uncount(cause, n));
    }

    /// `n` exchanges of recording `id` could not be stored.
    pub fn lost_in(&self, id: &str, cause: Loss, n: u64) {
        if let Some(t) = self.tallies().get_mut(id) {
            t.lost.count(cause, n);
        }
    }

    /// Whether a transaction that began at `started` belongs to a recording.
    pub fn wants(&self, started: DateTime<Utc>) -> bool {
        self.target.borrow().recording_for(started).is_some()
    }

    fn tally_at(&self, started: DateTime<Utc>, f: impl FnOnce(&mut Tally)) {
        let target = self.target.borrow();
        let Some(id) = target.recording_for(started) else {
            return;
        };
        if let Some(t) = self.tallies().get_mut(id) {
            f(t);
        }
    }

    fn tallies(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tally>> {
        self.tallies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers the spans of the recordings the store says were stopped last, so that
    /// their messages still on the way (in the spool, from before a restart) are filed in
    /// them.
    pub async fn remember_stopped(&self) -> Result<(), RecordingError> {
        let mut spans: Vec<Span> = self
            .store
            .list_recordings()
            .await?
            .into_iter()
            .filter_map(|r| Some((r.id, r.started_at?, r.stopped_at?)))
            .collect();
        spans.sort_by_key(|s| s.2);
        let keep = spans.len().saturating_sub(REMEMBERED_SPANS);
        spans.drain(..keep);
        self.target.send_modify(|t| t.recent = spans);
        Ok(())
    }

    /// The store cannot take the traffic of recording `id` (a full disk): it stops now,
    /// marked failed with the reason, and `lost` messages of it are counted as not stored.
    /// Called by the recorder; never waits for it.
    pub async fn fail(&self, id: &str, reason: &str, lost: u64) {
        let now = Utc::now().trunc_subsecs(6);
        let mut started = None;
        self.target.send_if_modified(|t| match &t.active {
            Some((a, start)) if a == id => {
                started = Some(*start);
                t.stop_active(now);
                true
            }
            _ => false,
        });
        {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let failure = failures
                .entry(id.to_owned())
                .or_insert_with(|| RecordingFailure {
                    failed_at: now,
                    reason: reason.to_owned(),
                    lost: 0,
                });
            failure.lost += lost;
        }
        let Some(started) = started else {
            tracing::error!(recording = id, lost, %reason, "more of a failed recording could not be stored");
            return;
        };
        tracing::error!(recording = id, lost, %reason, "recording failed and was stopped: its traffic cannot be stored (free space, then start it again)");
        if let Err(e) = self
            .store
            .mark_recording(id, Some(started), Some(now))
            .await
        {
            tracing::warn!(recording = id, error = %e, "the failed recording's stop could not be stored either");
        }
    }

    /// The recording as it is shown: with its failure, if it has one (and the stop the
    /// failure made, which the failing store may not have taken), and its accounting.
    async fn shown(&self, mut rec: Recording) -> Recording {
        {
            let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            rec.failure = failures.get(&rec.id).cloned();
        }
        if let (Some(f), None) = (&rec.failure, rec.stopped_at) {
            rec.stopped_at = Some(f.failed_at);
        }
        let Some((base, served, lost)) = self
            .tallies()
            .get(&rec.id)
            .map(|t| (t.base, t.served, t.lost))
        else {
            return rec;
        };
        // Complete transactions only: a request whose response was lost is not stored.
        match self.store.count_complete(&rec.id).await {
            Ok(complete) => {
                let stored = complete.saturating_sub(base);
                rec.accounting = Some(Accounting {
                    served,
                    stored,
                    queued: served.saturating_sub(stored + lost.total),
                    lost,
                });
            }
            Err(e) => {
                tracing::warn!(recording = %rec.id, error = %e, "cannot count the recording's stored transactions");
            }
        }
        rec
    }

    async fn shown_opt(&self, rec: Option<Recording>) -> Option<Recording> {
        match rec {
            Some(r) => Some(self.shown(r).await),
            None => None,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// For the recorder: the target, kept current.
    pub fn watch(&self) -> watch::Receiver<Target> {
        self.target.subscribe()
    }

    pub fn target(&self) -> Target {
        self.target.borrow().clone()
    }

    /// The recorder registers (or with `None`, withdraws) where flush requests go.
    pub fn set_recorder(&self, flush: Option<mpsc::Sender<FlushRequest>>) {
        *self.recorder.lock().unwrap_or_else(|p| p.into_inner()) = flush;
    }

    fn recorder(&self) -> Option<mpsc::Sender<FlushRequest>> {
        self.recorder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// At startup nothing records, so a recording left with a start and no stop was cut
    /// off by a crash (kill -9, power loss): it gets the stop it never had, at its last
    /// captured transaction (or its start), instead of reading as running. Returns how
    /// many were closed.
    /// Without a store, or with a full disk, there is nothing to close now: it says so
    /// and the proxy starts.
    ///
    /// `spooled_until` is when the spool was last written: its messages may belong to
    /// the interrupted recording, so it is not stopped before then.
    pub async fn close_interrupted(
        &self,
        spooled_until: Option<DateTime<Utc>>,
    ) -> Result<usize, RecordingError> {
        match self.close_interrupted_now(spooled_until).await {
            Err(RecordingError::Store(e))
                if e.is_disk_full() || matches!(e, StoreError::Unavailable(_)) =>
            {
                tracing::warn!(error = %e, "recordings a crash left running stay open until the store can take a write");
                Ok(0)
            }
            other => other,
        }
    }

    async fn close_interrupted_now(
        &self,
        spooled_until: Option<DateTime<Utc>>,
    ) -> Result<usize, RecordingError> {
        let mut closed = 0;
        for rec in self.store.list_recordings().await? {
            let (Some(started), None) = (rec.started_at, rec.stopped_at) else {
                continue;
            };
            let last = match rec.count.checked_sub(1) {
                Some(i) => self.store.traffic(&rec.id, i, 1).await?.pop(),
                None => None,
            };
            let stopped = last
                .map_or(started, |doc| {
                    doc.response
                        .as_ref()
                        .and_then(|r| chrono::DateTime::parse_from_rfc3339(&r.created_at).ok())
                        .map_or(doc.created_at, |t| t.with_timezone(&Utc))
                        .max(started)
                })
                .max(spooled_until.unwrap_or(started))
                .trunc_subsecs(6);
            self.store
                .mark_recording(&rec.id, Some(started), Some(stopped))
                .await?;
            tracing::warn!(recording = %rec.id, stopped_at = %stopped, "recording was interrupted (the proxy did not stop cleanly); marked stopped at its last capture");
            closed += 1;
        }
        Ok(closed)
    }

    /// For status: the running recording, else the one that stopped last, with its
    /// accounting (`None` when neither is known to this process).
    pub async fn current(&self) -> Option<(Recording, bool)> {
        let target = self.target();
        let (id, running) = match (&target.active, target.recent.last()) {
            (Some((id, _)), _) => (id.clone(), true),
            (None, Some((id, _, _))) => (id.clone(), false),
            (None, None) => return None,
        };
        self.get(&id).await.ok().map(|r| (r, running))
    }

    pub async fn create(&self, name: &str, description: &str) -> Result<Recording, RecordingError> {
        Ok(self.store.create_recording(name, description).await?)
    }

    pub async fn list(&self) -> Result<Vec<Recording>, RecordingError> {
        let list = self.store.list_recordings().await?;
        let mut shown = Vec::with_capacity(list.len());
        for rec in list {
            shown.push(self.shown(rec).await);
        }
        Ok(shown)
    }

    pub async fn get(&self, id: &str) -> Result<Recording, RecordingError> {
        let rec = self.store.get_recording(id).await?;
        self.shown_opt(rec)
            .await
            .ok_or_else(|| RecordingError::NotFound(id.to_owned()))
    }

    pub async fn update(
        &self,
        id: &str,
        patch: &RecordingPatch,
    ) -> Result<Recording, RecordingError> {
        let rec = self.store.update_recording(id, patch).await?;
        self.shown_opt(rec)
            .await
            .ok_or_else(|| RecordingError::NotFound(id.to_owned()))
    }

    pub async fn delete(&self, id: &str) -> Result<(), RecordingError> {
        let _guard = self.switch.lock().await;
        if self.target().active.as_ref().is_some_and(|(a, _)| a == id) {
            self.stop_locked(id).await?;
        }
        self.target
            .send_modify(|t| t.recent.retain(|(r, _, _)| r != id));
        self.tallies().remove(id);
        if self.store.delete_recording(id).await? {
            Ok(())
        } else {
            Err(RecordingError::NotFound(id.to_owned()))
        }
    }

    pub async fn traffic(
        &self,
        id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<TrafficDoc>, RecordingError> {
        self.get(id).await?;
        Ok(self.store.traffic(id, offset, limit).await?)
    }

    /// A recording's traffic after position `after` (see [`Store::traffic_after`]); the
    /// recording is not looked up again (for a reader going through a whole recording).
    pub async fn traffic_after(
        &self,
        id: &str,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Vec<(i64, TrafficDoc)>, RecordingError> {
        Ok(self.store.traffic_after(id, after, limit).await?)
    }

    pub async fn start(&self, id: &str) -> Result<Recording, RecordingError> {
        let _guard = self.switch.lock().await;
        // An id that names no recording is a 404 whether or not another one runs.
        self.get(id).await?;
        if let Some((busy_with, busy_since)) = self.target().active {
            return Err(RecordingError::Busy {
                busy_with,
                busy_since,
            });
        }
        if self.recorder().is_none() {
            return Err(RecordingError::NoRecorder);
        }
        let now = Utc::now().trunc_subsecs(6);
        let rec = self.store.mark_recording(id, Some(now), None).await?;
        let rec = rec.ok_or_else(|| RecordingError::NotFound(id.to_owned()))?;
        // The start as the store keeps it (microseconds; milliseconds in MongoDB), so that
        // `busySince` is the recording's `startedAt`, not a nanosecond-precise neighbour.
        let since = rec.started_at.unwrap_or(now);
        let base = self.store.count_complete(id).await?;
        self.tallies().insert(
            id.to_owned(),
            Tally {
                base,
                ..Tally::default()
            },
        );
        self.target
            .send_modify(|t| t.active = Some((id.to_owned(), since)));
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        tracing::info!(recording = id, "recording started");
        Ok(self.shown(rec).await)
    }

    /// Stops the running recording (`id`, if given, must be it) once the recorder has
    /// written what it received before the stop.
    pub async fn stop(&self, id: Option<&str>) -> Result<Recording, RecordingError> {
        let _guard = self.switch.lock().await;
        let active = match (self.target().active, id) {
            (Some((a, _)), Some(id)) if a != id => {
                self.get(id).await?;
                return Err(RecordingError::NotRunning);
            }
            (Some((a, _)), _) => a,
            (None, Some(id)) => {
                self.get(id).await?;
                return Err(RecordingError::NotRunning);
            }
            (None, None) => return Err(RecordingError::NotRunning),
        };
        self.stop_locked(&active).await
    }

    async fn stop_locked(&self, id: &str) -> Result<Recording, RecordingError> {
        let now = Utc::now().trunc_subsecs(6);
        self.target.send_modify(|t| t.stop_active(now));
        if let Some(recorder) = self.recorder() {
            let (tx, rx) = oneshot::channel();
            if recorder.send(tx).await.is_ok()
                && tokio::time::timeout(FLUSH_WAIT, rx).await.is_err()
            {
                // A slow store must not hold the API: what arrives later is still filed
                // here (its span is remembered), and the recorder's counters show it.
                tracing::warn!(recording = id, wait = ?FLUSH_WAIT, "the recorder is still writing; stopping without waiting for it");
            }
        }
        let started = self.get(id).await?.started_at;
        let rec = self.store.mark_recording(id, started, Some(now)).await?;
        let rec = self.shown_opt(rec).await;
        match rec.as_ref().and_then(|r| r.accounting.as_ref()) {
            Some(a) if a.queued > 0 => tracing::info!(
                recording = id,
                served = a.served,
                stored = a.stored,
                queued = a.queued,
                lost = a.lost.total,
                "recording stopped; what is queued is still being stored"
            ),
            _ => tracing::info!(recording = id, "recording stopped"),
        }
        rec.ok_or_else(|| RecordingError::NotFound(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_messages_go_to_the_recording_they_began_in() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(1);
        let t2 = t0 + chrono::Duration::seconds(2);
        let target = Target {
            active: Some(("b".into(), t2)),
            recent: vec![("a".into(), t0, t1)],
        };
        assert_eq!(
            target.recording_for(t0 + chrono::Duration::milliseconds(500)),
            Some("a")
        );
        assert_eq!(
            target.recording_for(t1 + chrono::Duration::milliseconds(500)),
            None
        );
        assert_eq!(target.recording_for(t2), Some("b"));
    }

    #[test]
    fn stopped_spans_are_remembered_without_a_deadline_up_to_a_bound() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let mut target = Target::default();
        for i in 0..(REMEMBERED_SPANS as i64 + 1) {
            target.active = Some((format!("r{i}"), at(10 * i)));
            target.stop_active(at(10 * i + 5));
        }
        assert_eq!(target.recent.len(), REMEMBERED_SPANS);
        // Months later, a message of the second recording still goes to it.
        assert_eq!(target.recording_for(at(12)), Some("r1"));
        assert_eq!(target.recording_for(at(17)), None, "between two recordings");
        assert_eq!(target.recording_for(at(2)), None, "r0 was forgotten");
        let last = REMEMBERED_SPANS as i64 * 10;
        assert_eq!(
            target.recording_for(at(last + 5)),
            Some(&*format!("r{REMEMBERED_SPANS}"))
        );
        // Started again and stopped again: both runs keep their late messages.
        let mut target = Target::default();
        for run in [0, 100] {
            target.active = Some(("r".into(), at(run)));
            target.stop_active(at(run + 5));
        }
        assert_eq!(target.recording_for(at(2)), Some("r"));
        assert_eq!(target.recording_for(at(102)), Some("r"));
    }
}
