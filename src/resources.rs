//! The resources modules share, resolved once from every module's kwargs (vector's
//! `check_resources`): the store, the live window, the Redis that carries the control
//! channel, and the feeds.
//!
//! Two steps, as for the rest of the configuration: [`resolve`] turns the modules'
//! [`Claim`]s into a [`Plan`] without I/O, and names both modules and their keys when two
//! of them claim different resources for the same role; [`Plan::open`] then connects, and
//! modules get the opened [`Resources`] as handles instead of opening their own.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::settings::{ControlChannel, FsyncPolicy, OnFullPolicy, SpoolSettings};
use crate::config::{ConfigError, Problem};
use crate::feed::bus::Bus;
use crate::feed::redis::{RedisFeed, RedisPublisher};
use crate::feed::spool::{Fsync, OnFull, SpoolConfig};
use crate::feed::stream::{StreamFeed, StreamPublisher, DEFAULT_MAXLEN};
use crate::feed::{Feed, FeedError, Interest, Publisher, Refusal};
use crate::recording::Recordings;
use crate::redis_link::Endpoint;
use crate::store::mongo::MongoStore;
use crate::store::sqlite::SqliteStore;
use crate::store::unavailable::UnavailableStore;
use crate::store::{Store, StoreError};
use crate::traffic::{Loss, TrafficMessage};
use crate::window::memory::MemoryWindow;
use crate::window::redis::RedisWindow;
use crate::window::tail::Tail;
use crate::window::{Window, WindowError};

/// Where recordings live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// SQLite under the data directory.
    Embedded,
    Mongo {
        uri: String,
        db: String,
        collection: String,
    },
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Embedded => f.write_str("the embedded store (SQLite in the data directory)"),
            StoreSpec::Mongo {
                uri,
                db,
                collection,
            } => {
                write!(
                    f,
                    "MongoDB {} ({db}.{collection})",
                    crate::store::mongo::redact(uri)
                )
            }
        }
    }
}

/// Where the live window lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowSpec {
    Memory,
    Redis { endpoint: Endpoint, key: String },
}

impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowSpec::Memory => f.write_str("the in-memory window"),
            WindowSpec::Redis { endpoint, key } => {
                write!(f, "the sorted set `{key}` on {endpoint}")
            }
        }
    }
}

/// A feed a module publishes to or subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FeedEndpoint {
    /// The in-process bus.
    Memory,
    Redis {
        endpoint: Endpoint,
        /// The channel, or the stream's key.
        channel: String,
        mode: RedisMode,
    },
}

/// How a feed uses Redis (`redis_mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// PUBLISH/SUBSCRIBE, the seed's: what is published while a subscriber is away is
    /// lost to it (counted where it can be).
    #[default]
    Pubsub,
    /// A stream read through consumer groups: at least once.
    Stream,
}

/// A resource one module's kwargs name for a role that the whole proxy shares.
#[derive(Debug, Clone)]
pub enum Claim {
    Store(StoreSpec),
    Window(WindowSpec),
    /// A Redis the module uses: the control channel lives there unless the settings
    /// file's `control:` says where. Its channels span databases, so two claims of one
    /// server agree whatever their `redis_db`.
    ControlHost(Endpoint),
}

impl PartialEq for Claim {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Claim::Store(a), Claim::Store(b)) => a == b,
            (Claim::Window(a), Claim::Window(b)) => a == b,
            (Claim::ControlHost(a), Claim::ControlHost(b)) => a.same_server(b),
            _ => false,
        }
    }
}

impl Eq for Claim {}

impl Claim {
    fn role(&self) -> &'static str {
        match self {
            Claim::Store(_) => "store",
            Claim::Window(_) => "live window",
            Claim::ControlHost(_) => "Redis for the control channel",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Claim::Store(s) => s.to_string(),
            Claim::Window(w) => w.to_string(),
            Claim::ControlHost(e) => e.to_string(),
        }
    }
}

/// A claim with the kwargs that made it, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub claim: Claim,
    pub keys: &'static str,
}

/// How a module uses a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedUse {
    Publishes(FeedEndpoint),
    Reads(FeedEndpoint),
}

/// One module's claims, as [`resolve`] reads them.
pub struct Claimant<'a> {
    /// The module's name in status (`TrafficRecorder#2`).
    pub module: &'a str,
    /// Where its entry is in the file (`support[1]`).
    pub key: &'a str,
    pub claims: &'a [Claimed],
    pub feed: Option<FeedUse>,
}

/// The resources of a run, resolved and not yet opened.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub store: StoreSpec,
    pub window: WindowSpec,
    pub control: Option<ControlChannel>,
    /// The control channel came from a module's Redis, not from the settings file.
    pub control_from_modules: bool,
    /// Which module named the window, with the kwargs that did (for messages).
    window_by: Option<(String, &'static str)>,
    /// What is legal but will not do what it seems to (a feed nobody reads).
    pub warnings: Vec<String>,
}

impl Plan {
    /// Whether the opened resources serve this claim: a reload may not move a resource,
    /// as each is opened once, at startup.
    pub fn admits(&self, claim: &Claim) -> bool {
        match claim {
            Claim::Store(s) => *s == self.store,
            Claim::Window(w) => *w == self.window,
            Claim::ControlHost(e) => match (&self.control, self.control_from_modules) {
                (Some(c), true) => c.endpoint.same_server(e),
                _ => true,
            },
        }
    }

    /// What was opened for a claim's role, for messages.
    pub fn opened_for(&self, claim: &Claim) -> String {
        match claim {
            Claim::Store(_) => self.store.to_string(),
            Claim::Window(_) => self.window.to_string(),
            Claim::ControlHost(_) => self.control.as_ref().map_or_else(
                || "no control channel".to_owned(),
                |c| c.endpoint.to_string(),
            ),
        }
    }
}

/// Feeds that no one in this process publishes to or reads: legal (another process may
/// be on the other end of a Redis feed), but on the in-process bus certainly a mistake.
fn feed_warnings(claimants: &[Claimant<'_>]) -> Vec<String> {
    let published = |at: &FeedEndpoint| {
        claimants
            .iter()
            .any(|c| c.feed == Some(FeedUse::Publishes(at.clone())))
    };
    let read = |at: &FeedEndpoint| {
        claimants
            .iter()
            .any(|c| c.feed == Some(FeedUse::Reads(at.clone())))
    };
    let mut out = Vec::new();
    for c in claimants {
        match &c.feed {
            Some(FeedUse::Reads(FeedEndpoint::Memory)) if !published(&FeedEndpoint::Memory) => out
                .push(format!(
                    "{} ({}) reads the in-process feed, but no pipeline module publishes to it: \
                     it will see nothing (give it the Redis feed the publisher uses)",
                    c.module, c.key
                )),
            Some(FeedUse::Publishes(FeedEndpoint::Memory)) if !read(&FeedEndpoint::Memory) => out
                .push(format!(
                    "{} ({}) publishes to the in-process feed, but no support module reads it: \
                     nothing it publishes is recorded or shown",
                    c.module, c.key
                )),
            _ => {}
        }
    }
    out
}

/// Resolves every role from every claim. A role nobody claims gets its embedded default;
/// two different claims for one role are a problem naming both modules and their keys.
pub fn resolve(
    file: &str,
    claimants: &[Claimant<'_>],
    control: Option<&ControlChannel>,
) -> Result<Plan, ConfigError> {
    let mut problems = Vec::new();
    let mut first: HashMap<&'static str, (&Claimant<'_>, &Claimed)> = HashMap::new();
    for c in claimants {
        for claimed in c.claims {
            if matches!(claimed.claim, Claim::ControlHost(_)) && control.is_some() {
                continue;
            }
            let role = claimed.claim.role();
            match first.get(role) {
                None => {
                    first.insert(role, (c, claimed));
                }
                Some((other, theirs)) if theirs.claim != claimed.claim => {
                    let hint = if matches!(claimed.claim, Claim::ControlHost(_)) {
                        "; name the same Redis, or say where the control channel is with `control:` in the settings file"
                    } else {
                        "; one serves the whole proxy, so every module must name the same one"
                    };
                    problems.push(Problem {
                        file: file.to_owned(),
                        key: format!("{}.kwargs", c.key),
                        message: format!(
                            "{} names {} as the {role} ({}), but {} ({}) names {} ({}){hint}",
                            c.module,
                            claimed.claim.describe(),
                            claimed.keys,
                            other.module,
                            other.key,
                            theirs.claim.describe(),
                            theirs.keys,
                        ),
                    });
                }
                Some(_) => {}
            }
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    let claim = |role: &str| first.get(role).map(|(_, c)| c.claim.clone());
    let store = match claim("store") {
        Some(Claim::Store(s)) => s,
        _ => StoreSpec::Embedded,
    };
    let window = match claim("live window") {
        Some(Claim::Window(w)) => w,
        _ => WindowSpec::Memory,
    };
    let (control, control_from_modules) = match (control, claim("Redis for the control channel")) {
        (Some(c), _) => (Some(c.clone()), false),
        (None, Some(Claim::ControlHost(endpoint))) => (Some(ControlChannel::new(endpoint)), true),
        (None, _) => (None, false),
    };
    let window_by = first
        .get("live window")
        .map(|(c, claimed)| (c.module.to_owned(), claimed.keys));
    Ok(Plan {
        store,
        window,
        control,
        control_from_modules,
        window_by,
        warnings: feed_warnings(claimants),
    })
}

/// Why a resource could not be opened, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the embedded store in {dir} (pass --data-dir to use another directory)")]
    Embedded {
        dir: String,
        #[source]
        source: StoreError,
    },
    /// Its message names the server and the kwargs already.
    #[error(transparent)]
    Mongo { source: StoreError },
    #[error("cannot use the redaction key {path}")]
    Key {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the live window ({by})")]
    Window {
        #[source]
        source: WindowError,
        /// The module and kwargs that named it.
        by: String,
    },
}

impl Plan {
    /// Opens the store and the window (connecting now, so a backend that is not there is
    /// an error at once) and makes the feeds.
    pub async fn open(
        &self,
        data_dir: PathBuf,
        bus_capacity: usize,
        spool: SpoolSettings,
    ) -> Result<Resources, OpenError> {
        // First, so that the directory is made owner-only before anything goes in it.
        let key_path = data_dir.join(KEY_FILE);
        let redaction_key = match redaction_key(&data_dir) {
            Ok(key) => key,
            // A full disk must not stop the proxy: marks made with this key will not
            // match those of another run.
            Err(e) if disk_full(&e) => {
                tracing::warn!(path = %key_path.display(), error = %e, "cannot write the redaction key (disk full); using a key for this run only");
                fresh_key()
            }
            Err(source) => {
                return Err(OpenError::Key {
                    path: key_path.display().to_string(),
                    source,
                })
            }
        };
        let store: Arc<dyn Store> = match &self.store {
            StoreSpec::Embedded => match SqliteStore::open(&data_dir) {
                Ok(store) => Arc::new(store),
                // The proxy serves without recording rather than not at all.
                Err(e) if e.is_disk_full() => {
                    let reason = format!(
                        "the disk of the data directory {} is full ({e}); free space and restart heliosburn to record",
                        data_dir.display()
                    );
                    tracing::error!("{reason}; serving without recording");
                    Arc::new(UnavailableStore::new(reason))
                }
                Err(source) => {
                    return Err(OpenError::Embedded {
                        dir: data_dir.display().to_string(),
                        source,
                    })
                }
            },
            StoreSpec::Mongo {
                uri,
                db,
                collection,
            } => Arc::new(
                MongoStore::connect(uri, db, collection)
                    .await
                    .map_err(|source| OpenError::Mongo { source })?,
            ),
        };
        let window: Arc<dyn Window> = match &self.window {
            WindowSpec::Memory => Arc::new(MemoryWindow::default()),
            WindowSpec::Redis { endpoint, key } => Arc::new(
                RedisWindow::connect(endpoint, key)
                    .await
                    .map_err(|source| OpenError::Window {
                        source,
                        by: self.window_by.as_ref().map_or_else(
                            || "the live window's Redis".to_owned(),
                            |(module, keys)| format!("{module}'s {keys} kwargs"),
                        ),
                    })?,
            ),
        };
        let recordings = Arc::new(Recordings::new(store));
        let bus = open_bus(&data_dir, bus_capacity, spool);
        bus.set_interest(Arc::new(RecordingInterest(recordings.clone())));
        Ok(Resources {
            redaction_key,
            recordings,
            window,
            tail: Tail::default(),
            feeds: Arc::new(Feeds {
                bus,
                redis: Mutex::default(),
                data_dir: data_dir.clone(),
                outboxes: Default::default(),
            }),
        })
    }
}

/// The in-process feed, with its spool under the data directory unless that is turned
/// off or cannot be opened (then said: the recorder can lose what it falls behind on).
fn open_bus(data_dir: &std::path::Path, capacity: usize, settings: SpoolSettings) -> Bus {
    if !settings.enabled {
        return Bus::new(capacity);
    }
    let config = SpoolConfig {
        max_bytes: settings.max_bytes,
        fsync: match settings.fsync {
            FsyncPolicy::Never => Fsync::Never,
            FsyncPolicy::Batch => Fsync::Batch,
            FsyncPolicy::Always => Fsync::Always,
        },
        on_full: match settings.on_full {
            OnFullPolicy::Drop => OnFull::Drop,
            OnFullPolicy::Wait => OnFull::Wait,
        },
        ..SpoolConfig::new(data_dir.join(SPOOL_DIR))
    };
    let dir = config.dir.clone();
    match Bus::with_spool(capacity, config) {
        Ok(bus) => bus,
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot open the spool: the recorder reads the in-memory ring only, and loses (counted) what it falls behind on");
            Bus::new(capacity)
        }
    }
}

/// Where the spool lives in the data directory.
pub const SPOOL_DIR: &str = "spool";

/// The spool keeps what some recording will file (the response messages), and tells
/// the recordings of what it could not keep.
struct RecordingInterest(Arc<Recordings>);

impl Interest for RecordingInterest {
    /// The response message of a transaction some recording files: it carries the
    /// request again, so a request message on its own adds nothing a recording needs once
    /// the exchange was answered (the ring still hands it to a recorder that keeps up).
    fn wants(&self, msg: &TrafficMessage) -> bool {
        msg.response.is_some() && msg.started_at().is_some_and(|t| self.0.wants(t))
    }

    fn refused(&self, msg: &TrafficMessage, why: Refusal) {
        self.count(msg, why, true);
    }

    fn recovered(&self, msg: &TrafficMessage, why: Refusal) {
        self.count(msg, why, false);
    }
}

impl RecordingInterest {
    /// A transaction is lost when its response message is: the request message's
    /// content comes again with it. A WebSocket upgrade's later events (its messages)
    /// complete no transaction, and losing one loses none.
    fn count(&self, msg: &TrafficMessage, why: Refusal, lost: bool) {
        let completes = msg
            .response
            .as_ref()
            .is_some_and(|r| r.web_socket_messages.is_none());
        if !completes {
            return;
        }
        let cause = match why {
            Refusal::SpoolFull => Loss::SpoolFull,
            Refusal::SpoolError => Loss::SpoolError,
        };
        if let Some(t) = msg.started_at() {
            match lost {
                true => self.0.lost_at(t, cause, 1),
                false => self.0.found_at(t, cause, 1),
            }
        }
    }
}

/// The proxy's redaction key: read from `redaction.key` in the data directory, or made
/// (random, owner-only) the first time. The directory itself is made owner-only.
fn redaction_key(dir: &std::path::Path) -> std::io::Result<[u8; 32]> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // A directory that was there before keeps its mode (it may be the user's own): said.
    if let Ok(meta) = std::fs::metadata(dir) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = %format!("{mode:o}"), "the data directory is open to other users: its files are owner-only, but run `chmod 700` on it to keep even their names private");
        }
    }
    let path = dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes);
            return Ok(key);
        }
        Ok(_) => return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a key (32 bytes); delete it to make a new one (marks made before will not match)",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key = fresh_key();
    // Written whole under a name of this process's, then linked into place: another
    // process starting at the same moment never reads half a key, and the first link
    // wins (the loser reads the winner's key).
    let tmp = dir.join(format!("{KEY_FILE}.{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(&key)?;
            file.sync_all()
        });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, &path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let bytes = std::fs::read(&path)?;
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not a key (32 bytes)")
            })
        }
        Err(e) => Err(e),
    }
}

/// A random key: two v4 UUIDs and the time, hashed.
fn fresh_key() -> [u8; 32] {
    let mut seed = Vec::with_capacity(48);
    for _ in 0..2 {
        seed.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    seed.extend_from_slice(
        &chrono::Utc::now()
            .timestamp_nanos_opt()
            .unwrap_or(0)
            .to_le_bytes(),
    );
    *blake3::hash(&seed).as_bytes()
}

/// Out of space or quota: the disk can take nothing more.
fn disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28 | 122)) // ENOSPC, EDQUOT
}

const KEY_FILE: &str = "redaction.key";

/// The opened resources: what modules and the management API are handed.
#[derive(Clone)]
pub struct Resources {
    /// The key of redaction marks' hashes: the proxy's own, kept in the data directory so
    /// that marks agree across restarts.
    pub redaction_key: [u8; 32],
    pub recordings: Arc<Recordings>,
    pub window: Arc<dyn Window>,
    /// Completed exchanges as the window takes them, for those who watch.
    pub tail: Tail,
    pub feeds: Arc<Feeds>,
}

/// The feeds: the in-process bus, and one handle per Redis channel, made on first use
/// (a Redis feed connects when it is subscribed to, not before).
pub struct Feeds {
    bus: Bus,
    redis: Mutex<HashMap<(Endpoint, String), Arc<RedisFeed>>>,
    /// Where stream publishers keep their outboxes.
    data_dir: PathBuf,
    /// The stream publishers, by outbox directory.
    outboxes: tokio::sync::Mutex<HashMap<PathBuf, Arc<StreamPublisher>>>,
}

impl Feeds {
    /// The in-process bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Where a subscriber reads.
    pub fn subscriber(&self, at: &FeedEndpoint) -> Arc<dyn Feed> {
        match at {
            FeedEndpoint::Memory => Arc::new(self.bus.clone()),
            FeedEndpoint::Redis {
                endpoint,
                channel,
                mode: RedisMode::Stream,
            } => Arc::new(StreamFeed::new(endpoint, channel)),
            FeedEndpoint::Redis {
                endpoint,
                channel,
                mode: RedisMode::Pubsub,
            } => {
                let mut feeds = self.redis.lock().unwrap_or_else(|p| p.into_inner());
                feeds
                    .entry((endpoint.clone(), channel.clone()))
                    .or_insert_with(|| Arc::new(RedisFeed::new(endpoint, channel)))
                    .clone()
            }
        }
    }

    /// Where a durable subscriber reads, taking over (on a stream) what another consumer
    /// of its group left pending for `claim_idle`.
    pub fn subscriber_claiming(
        &self,
        at: &FeedEndpoint,
        claim_idle: std::time::Duration,
    ) -> Arc<dyn Feed> {
        match at {
            FeedEndpoint::Redis {
                endpoint,
                channel,
                mode: RedisMode::Stream,
            } => Arc::new(StreamFeed::new(endpoint, channel).with_claim_idle(claim_idle)),
            other => self.subscriber(other),
        }
    }

    /// A publisher of its own (its counters are its module's): the bus, a new Redis
    /// connection with a queue of `queue` messages, or a stream's outbox sending to a
    /// stream of at most `maxlen` entries.
    pub async fn publisher(
        &self,
        at: &FeedEndpoint,
        queue: Option<usize>,
        maxlen: Option<u64>,
    ) -> Result<Arc<dyn Publisher>, FeedError> {
        Ok(match at {
            FeedEndpoint::Memory => Arc::new(self.bus.clone()),
            FeedEndpoint::Redis {
                endpoint,
                channel,
                mode: RedisMode::Pubsub,
            } => Arc::new(RedisPublisher::connect(endpoint, channel, queue).await?),
            FeedEndpoint::Redis {
                endpoint,
                channel,
                mode: RedisMode::Stream,
            } => {
                // One outbox per stream, named so that it is found again after a restart.
                let name: String = format!("{}-{channel}", endpoint.addr())
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let dir = self.data_dir.join("outbox").join(name);
                // One writer per outbox: a reader built again (reload) shares it.
                let mut outboxes = self.outboxes.lock().await;
                match outboxes.get(&dir) {
                    Some(p) => p.clone(),
                    None => {
                        let p = Arc::new(
                            StreamPublisher::connect(
                                endpoint,
                                channel,
                                maxlen.unwrap_or(DEFAULT_MAXLEN),
                                dir.clone(),
                            )
                            .await?,
                        );
                        outboxes.insert(dir, p.clone());
                        p
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mongo(db: &str) -> Claimed {
        Claimed {
            claim: Claim::Store(StoreSpec::Mongo {
                uri: "mongodb://u:secret@h:27017/".into(),
                db: db.into(),
                collection: "traffic".into(),
            }),
            keys: "mongo_host, mongo_port, mongo_db",
        }
    }

    #[test]
    fn two_modules_claiming_different_stores_are_both_named() {
        let (a, b) = ([mongo("a")], [mongo("b")]);
        let err = resolve(
            "m.yaml",
            &[
                Claimant {
                    module: "TrafficRecorder",
                    key: "support[0]",
                    claims: &a,
                    feed: None,
                },
                Claimant {
                    module: "TrafficRecorder#2",
                    key: "support[1]",
                    claims: &b,
                    feed: None,
                },
            ],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("m.yaml: support[1].kwargs: TrafficRecorder#2 names MongoDB mongodb://h:27017 (b.traffic) as the store"), "{err}");
        assert!(
            err.contains(
                "but TrafficRecorder (support[0]) names MongoDB mongodb://h:27017 (a.traffic)"
            ),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn the_same_claim_twice_is_one_resource_and_unclaimed_roles_are_embedded() {
        let (a, b) = ([mongo("a")], [mongo("a")]);
        let plan = resolve(
            "m.yaml",
            &[
                Claimant {
                    module: "R",
                    key: "support[0]",
                    claims: &a,
                    feed: None,
                },
                Claimant {
                    module: "R#2",
                    key: "support[1]",
                    claims: &b,
                    feed: None,
                },
            ],
            None,
        )
        .unwrap();
        assert!(matches!(plan.store, StoreSpec::Mongo { .. }));
        assert_eq!(plan.window, WindowSpec::Memory);
        assert_eq!(plan.control, None);
    }

    #[test]
    fn the_control_channel_follows_the_modules_redis_unless_the_settings_name_one() {
        let host = |port| Claimed {
            claim: Claim::ControlHost(Endpoint::from_parts("127.0.0.1", port, 0)),
            keys: "redis_host, redis_port, redis_db",
        };
        let (a, b) = ([host(6379)], [host(6380)]);
        let claimants = [
            Claimant {
                module: "TrafficReader",
                key: "pipeline[0]",
                claims: &a,
                feed: None,
            },
            Claimant {
                module: "TrafficRecorder",
                key: "support[0]",
                claims: &b,
                feed: None,
            },
        ];
        let err = resolve("m.yaml", &claimants, None).unwrap_err().to_string();
        assert!(err.contains("`control:` in the settings file"), "{err}");
        let set = ControlChannel::new(Endpoint::from_parts("10.0.0.1", 6379, 0));
        let plan = resolve("m.yaml", &claimants, Some(&set)).unwrap();
        assert_eq!(plan.control, Some(set));
        assert!(!plan.control_from_modules);
        let plan = resolve("m.yaml", &claimants[..1], None).unwrap();
        let c = plan.control.unwrap();
        assert_eq!(
            (c.endpoint.url(), c.request_channel.as_str()),
            ("redis://127.0.0.1:6379/0", "proxy_mgmt_request")
        );
        assert!(plan.control_from_modules);
    }
}
