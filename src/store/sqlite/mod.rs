//! SQLite store, the embedded default: one file, `heliosburn.sqlite3`, in the data directory.
//!
//! rusqlite is blocking, so every call runs on tokio's blocking pool while it holds a
//! connection behind a `std::sync::Mutex`: the async runtime, and with it the proxy path,
//! never waits on the disk. Writes and reads use separate connections so that, in WAL
//! mode, a page of traffic can be read while a batch is being written.
//!
//! Traffic rows are upserted by (recording, transaction); `seq`, the rowid, is assigned by
//! the first insert and is the capture order that pagination follows. Bodies are kept
//! apart, raw and once per distinct content ([`bodies`], [`rows`]).
//!
//! One store per data directory: `open` takes an exclusive lock on `heliosburn.lock` there
//! for the life of the store, so a second heliosburn on the same directory fails at
//! startup instead of silently sharing the file. Recorded traffic holds whatever clients
//! sent (credentials included), so the files are the owner's only (0600).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use mongodb::bson::oid::ObjectId;
use rusqlite::{params, Connection, Row};

use super::{RecordingPatch, Store, StoreError};
use crate::traffic::{timestamp, Recording, TrafficDoc};

mod bodies;
mod rows;

use bodies::BodyIds;

/// The database file inside the data directory.
pub const FILE_NAME: &str = "heliosburn.sqlite3";

/// The lock file inside the data directory, held (exclusively) while a store is open.
pub const LOCK_FILE_NAME: &str = "heliosburn.lock";

/// Kept in `PRAGMA user_version`, so that a newer layout is refused instead of misread.
/// 2: bodies apart (the `bodies` table, `request_body` and `response_body`).
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS recordings (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    started_at  TEXT,
    stopped_at  TEXT
);
CREATE TABLE IF NOT EXISTS traffic (
    seq            INTEGER PRIMARY KEY, -- the rowid: grows with each insert (capture order)
    recording_id   TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    request        TEXT NOT NULL,
    response       TEXT,
    request_body   INTEGER, -- bodies.id
    response_body  INTEGER, -- bodies.id
    UNIQUE (recording_id, transaction_id)
);
-- An index entry carries the rowid (seq), so this index alone serves
-- `WHERE recording_id = ? ORDER BY seq` and the per-recording count.
CREATE INDEX IF NOT EXISTS traffic_recording ON traffic (recording_id);
-- Which rows point at a body: a body no row points at is garbage.
CREATE INDEX IF NOT EXISTS traffic_request_body ON traffic (request_body)
    WHERE request_body IS NOT NULL;
CREATE INDEX IF NOT EXISTS traffic_response_body ON traffic (response_body)
    WHERE response_body IS NOT NULL;
";

/// From schema 1: the columns that point at bodies (its rows keep theirs in the JSON).
const FROM_SCHEMA_1: &str = "
ALTER TABLE traffic ADD COLUMN request_body INTEGER;
ALTER TABLE traffic ADD COLUMN response_body INTEGER;
";

const SELECT_RECORDING: &str = "
SELECT r.id, r.name, r.description, r.created_at, r.updated_at, r.started_at, r.stopped_at,
       (SELECT COUNT(*) FROM traffic t WHERE t.recording_id = r.id)
FROM recordings r";

/// How long a connection waits for a lock held by another one (the other connection of
/// this store, or another process on the same file) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Writer>,
    reader: Mutex<Connection>,
    /// Holds the data directory's lock; released when the last handle goes.
    _lock: Option<File>,
}

/// The write connection, and what it remembers of the bodies it wrote.
struct Writer {
    conn: Connection,
    bodies: BodyIds,
    /// A write of traffic began and has not ended (a panic left it so): what `bodies`
    /// learned in it may name rows that were rolled back.
    writing: bool,
}

/// What can go wrong on the blocking side; the path is added when it becomes a
/// `StoreError`.
enum Failure {
    Sql(rusqlite::Error),
    Corrupt(String),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

type Blocking<T> = Result<T, Failure>;

fn store_error(path: &Path, failure: Failure) -> StoreError {
    match failure {
        Failure::Sql(source) => StoreError::Sqlite {
            path: path.display().to_string(),
            source,
        },
        Failure::Corrupt(what) => StoreError::Corrupt(format!("{}: {what}", path.display())),
    }
}

impl SqliteStore {
    /// Opens (creating when missing) `heliosburn.sqlite3` in `data_dir`, creating the
    /// directory and the schema as needed. Blocking: call it at startup or on the
    /// blocking pool.
    ///
    /// Fails with [`StoreError::Locked`] while another store (in this or another process)
    /// has the directory open. The database file is made owner-only (0600); SQLite gives
    /// its `-wal` and `-shm` files the database file's mode.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Io { path, source }
        };
        std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        let lock = lock_dir(data_dir)?;
        let path = data_dir.join(FILE_NAME);
        for file in [
            path.clone(),
            data_dir.join(format!("{FILE_NAME}-wal")),
            data_dir.join(format!("{FILE_NAME}-shm")),
        ] {
            owner_only(&file, file == path).map_err(io(&file))?;
        }
        let (writer, reader) = open_connections(&path).map_err(|e| store_error(&path, e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(Writer {
                    conn: writer,
                    bodies: BodyIds::default(),
                    writing: false,
                }),
                reader: Mutex::new(reader),
                _lock: lock,
            }),
        })
    }

    /// Runs `f` on the blocking pool with the write connection.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Blocking<T> + Send + 'static,
    {
        self.run(move |w: &mut Writer| f(&mut w.conn), |inner| &inner.writer)
            .await
    }

    /// Runs `f` on the blocking pool with the read connection.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Blocking<T> + Send + 'static,
    {
        self.run(f, |inner| &inner.reader).await
    }

    async fn run<C: 'static, T, F>(
        &self,
        f: F,
        which: fn(&Inner) -> &Mutex<C>,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut C) -> Blocking<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let joined = tokio::task::spawn_blocking(move || {
            // A panic while the lock was held cannot leave the connection half-written:
            // an open rusqlite transaction rolls back when it is dropped. So a poisoned
            // lock is still a usable connection.
            let mut conn = which(&inner).lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn).map_err(|e| store_error(&inner.path, e))
        })
        .await;
        match joined {
            Ok(result) => result,
            // A bug in the closure: let it surface as the panic it is.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(_) => Err(StoreError::Gone),
        }
    }
}

/// Takes the data directory's lock (an advisory `flock`, released by the OS when the
/// process dies, however it dies). `None` where the file system cannot lock (some network
/// file systems): then a warning, and the store opens unguarded as before.
fn lock_dir(data_dir: &Path) -> Result<Option<File>, StoreError> {
    let path = data_dir.join(LOCK_FILE_NAME);
    let io = |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            dir: data_dir.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            tracing::warn!(path = %path.display(), error = %e, "cannot lock the data directory; make sure no other heliosburn uses it");
            Ok(None)
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Makes `path` readable and writable by its owner only: creates it so when `create`
/// (the database file, before SQLite opens it: an empty file is a new database), and
/// tightens it when it exists from an older run.
#[cfg(unix)]
fn owner_only(path: &Path, create: bool) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if create {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => Ok(()),
        other => other,
    }
}

#[cfg(not(unix))]
fn owner_only(_path: &Path, _create: bool) -> std::io::Result<()> {
    Ok(())
}

/// The writer (which creates the schema) and the reader. Prepared statements are cached
/// per connection; each runs only a handful, so the default capacity (16) is plenty.
fn open_connections(path: &Path) -> Blocking<(Connection, Connection)> {
    let mut writer = Connection::open(path)?;
    configure(&writer)?;
    create_schema(&mut writer)?;
    let reader = Connection::open(path)?;
    configure(&reader)?;
    // The reader must never take the write lock away from the writer.
    reader.pragma_update(None, "query_only", true)?;
    Ok((writer, reader))
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers do not block the writer and a commit is one append to the log.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "sqlite could not switch to WAL; writes will be slower");
    }
    // NORMAL in WAL mode: a power loss may lose the last commits, never corrupt the file;
    // and it spares an fsync per batch.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

fn create_schema(conn: &mut Connection) -> Blocking<()> {
    let tx = conn.transaction()?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Failure::Corrupt(format!(
            "schema version {version} is newer than this binary's ({SCHEMA_VERSION})"
        )));
    }
    if version == 1 {
        tx.execute_batch(FROM_SCHEMA_1)?;
    }
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(bodies::SCHEMA)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

fn parse_time(text: &str) -> Blocking<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Failure::Corrupt(format!("bad timestamp {text:?}: {e}")))
}

fn parse_opt_time(text: Option<String>) -> Blocking<Option<DateTime<Utc>>> {
    text.as_deref().map(parse_time).transpose()
}

/// Reads a row of `SELECT_RECORDING`.
fn recording_from_row(row: &Row<'_>) -> Blocking<Recording> {
    let count: i64 = row.get(7)?;
    Ok(Recording {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        created_at: parse_time(&row.get::<_, String>(3)?)?,
        updated_at: parse_time(&row.get::<_, String>(4)?)?,
        started_at: parse_opt_time(row.get(5)?)?,
        stopped_at: parse_opt_time(row.get(6)?)?,
        count: u64::try_from(count).unwrap_or(0),
        failure: None,
        accounting: None,
    })
}

fn select_recording(conn: &Connection, id: &str) -> Blocking<Option<Recording>> {
    let mut stmt = conn.prepare_cached(&format!("{SELECT_RECORDING} WHERE r.id = ?1"))?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(row) => recording_from_row(row).map(Some),
        None => Ok(None),
    }
}

/// Clamps a count from the API to what SQLite's 64-bit signed integers hold.
fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.inner.path.display())
    }

    async fn create_recording(
        &self,
        name: &str,
        description: &str,
    ) -> Result<Recording, StoreError> {
        // Stored with microseconds: what is returned must equal what a later read gives.
        let now = Utc::now().trunc_subsecs(6);
        let recording = Recording {
            // The same id shape as the MongoDB store, so clients need not care which one
            // runs.
            id: ObjectId::new().to_hex(),
            name: name.to_owned(),
            description: description.to_owned(),
            created_at: now,
            updated_at: now,
            started_at: None,
            stopped_at: None,
            count: 0,
            failure: None,
            accounting: None,
        };
        let row = recording.clone();
        let now = timestamp(now);
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO recordings (id, name, description, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
            )?
            .execute(params![row.id, row.name, row.description, now])?;
            Ok(())
        })
        .await?;
        Ok(recording)
    }

    async fn list_recordings(&self) -> Result<Vec<Recording>, StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("{SELECT_RECORDING} ORDER BY r.created_at, r.id"))?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(recording_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn get_recording(&self, id: &str) -> Result<Option<Recording>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| select_recording(conn, &id)).await
    }

    async fn update_recording(
        &self,
        id: &str,
        patch: &RecordingPatch,
    ) -> Result<Option<Recording>, StoreError> {
        let id = id.to_owned();
        let patch = patch.clone();
        let now = timestamp(Utc::now());
        self.write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE recordings SET name = COALESCE(?2, name),
                        description = COALESCE(?3, description), updated_at = ?4
                     WHERE id = ?1",
                )?
                .execute(params![id, patch.name, patch.description, now])?;
            if changed == 0 {
                return Ok(None);
            }
            select_recording(conn, &id)
        })
        .await
    }

    async fn mark_recording(
        &self,
        id: &str,
        started_at: Option<DateTime<Utc>>,
        stopped_at: Option<DateTime<Utc>>,
    ) -> Result<Option<Recording>, StoreError> {
        let id = id.to_owned();
        let now = timestamp(Utc::now());
        let started = started_at.map(timestamp);
        let stopped = stopped_at.map(timestamp);
        self.write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE recordings SET started_at = ?2, stopped_at = ?3, updated_at = ?4
                     WHERE id = ?1",
                )?
                .execute(params![id, started, stopped, now])?;
            if changed == 0 {
                return Ok(None);
            }
            select_recording(conn, &id)
        })
        .await
    }

    async fn count_complete(&self, recording_id: &str) -> Result<u64, StoreError> {
        let id = recording_id.to_owned();
        self.read(move |conn| {
            let n: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM traffic WHERE recording_id = ?1 AND response IS NOT NULL",
                )?
                .query_row([&id], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn delete_recording(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let writer = move |w: &mut Writer| {
            // One transaction: the recording never disappears while its traffic stays,
            // nor its traffic while bodies only it pointed at stay.
            let tx = w.conn.transaction()?;
            let bodies = BodyIds::of_recording(&tx, &id)?;
            tx.prepare_cached("DELETE FROM traffic WHERE recording_id = ?1")?
                .execute([&id])?;
            let deleted = tx
                .prepare_cached("DELETE FROM recordings WHERE id = ?1")?
                .execute([&id])?;
            w.bodies.collect_garbage(&tx, &bodies)?;
            tx.commit()?;
            Ok(deleted > 0)
        };
        self.run(writer, |inner| &inner.writer).await
    }

    /// Writes the whole slice in one transaction (one commit, one WAL sync point), so a
    /// batch is stored entirely or not at all.
    async fn write_traffic(&self, docs: &[TrafficDoc]) -> Result<u64, StoreError> {
        if docs.is_empty() {
            return Ok(0);
        }
        // Serialized and hashed on the blocking pool too: off the runtime's threads.
        let docs = docs.to_vec();
        let writer = move |w: &mut Writer| {
            if w.writing {
                w.bodies.forget();
            }
            w.writing = true;
            let tx = w.conn.transaction()?;
            let written = rows::write(&tx, &mut w.bodies, &docs).and_then(|()| Ok(tx.commit()?));
            if written.is_err() {
                // Rolled back: ids it learned may name rows that are not there.
                w.bodies.forget();
            }
            w.writing = false;
            written.map(|()| docs.len() as u64)
        };
        self.run(writer, |inner| &inner.writer).await
    }

    async fn traffic_after(
        &self,
        recording_id: &str,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Vec<(i64, TrafficDoc)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let recording_id = recording_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "{} WHERE t.recording_id = ?1 AND t.seq > ?2 ORDER BY t.seq LIMIT ?3",
                rows::SELECT
            ))?;
            let rows = stmt.query(params![
                recording_id,
                after.unwrap_or(i64::MIN),
                sql_int(limit)
            ])?;
            rows::read(rows, &recording_id)
        })
        .await
    }

    async fn traffic(
        &self,
        recording_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<TrafficDoc>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let recording_id = recording_id.to_owned();
        let rows = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "{} WHERE t.recording_id = ?1 ORDER BY t.seq LIMIT ?2 OFFSET ?3",
                    rows::SELECT
                ))?;
                let rows = stmt.query(params![recording_id, sql_int(limit), sql_int(offset)])?;
                rows::read(rows, &recording_id)
            })
            .await?;
        Ok(rows.into_iter().map(|(_, doc)| doc).collect())
    }
}

/// SQLite-only behaviour. What every store must do is checked by the conformance suite
/// (`tests/it/store.rs`), over this store and MongoDB alike.
#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let dir =
                std::env::temp_dir().join(format!("heliosburn-test-{}", uuid::Uuid::new_v4()));
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = TempDir::new();
        drop(SqliteStore::open(&dir.0).unwrap());
        let conn = Connection::open(dir.0.join(FILE_NAME)).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = SqliteStore::open(&dir.0).err().unwrap();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    }

    /// A file of schema 1 (bodies inside the JSON) opens as schema 2: its rows read back
    /// as they were written, and new rows keep their bodies apart.
    #[tokio::test]
    async fn a_schema_1_file_is_brought_forward() {
        let dir = TempDir::new();
        std::fs::create_dir_all(&dir.0).unwrap();
        let conn = Connection::open(dir.0.join(FILE_NAME)).unwrap();
        conn.execute_batch(
            "CREATE TABLE recordings (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,
                description TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                started_at TEXT, stopped_at TEXT);
             CREATE TABLE traffic (seq INTEGER PRIMARY KEY, recording_id TEXT NOT NULL,
                transaction_id TEXT NOT NULL, created_at TEXT NOT NULL, request TEXT NOT NULL,
                response TEXT, UNIQUE (recording_id, transaction_id));
             CREATE INDEX traffic_recording ON traffic (recording_id);
             INSERT INTO recordings VALUES ('r', 'old', '', '2026-12-01T00:00:00.000000Z',
                '2026-12-01T00:00:00.000000Z', NULL, NULL);
             INSERT INTO traffic VALUES (1, 'r', 't1', '2026-12-01T00:00:00.000000Z',
                '{\"createdAt\":\"x\",\"clientProtocol\":\"HTTP/1.1\",\"method\":\"POST\",\"uri\":\"/\",\"path\":\"/\",\"args\":{},\"headers\":{},\"body\":{\"size\":2,\"truncated\":false,\"encoding\":\"base64\",\"data\":\"/wA=\"}}',
                NULL);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(conn);

        let store = SqliteStore::open(&dir.0).unwrap();
        let mut old = store.traffic("r", 0, 10).await.unwrap();
        assert_eq!(old.len(), 1);
        let body = old[0].request.body.clone().unwrap();
        assert_eq!((&body.bytes[..], body.size), (&[0xff, 0][..], 2));
        old[0].transaction_id = "t2".into();
        store.write_traffic(&old).await.unwrap();
        let both = store.traffic("r", 0, 10).await.unwrap();
        assert_eq!(both[1].request, both[0].request);
        drop(store);
        let conn = Connection::open(dir.0.join(FILE_NAME)).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        let kept_apart: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM traffic t JOIN bodies b ON b.id = t.request_body",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!((version, kept_apart), (SCHEMA_VERSION, 1));
    }

    #[tokio::test]
    async fn the_file_is_in_wal_mode_and_owner_only() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.0).unwrap();
        store.create_recording("r", "").await.unwrap();

        let conn = Connection::open(dir.0.join(FILE_NAME)).unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for name in [
                FILE_NAME.to_owned(),
                format!("{FILE_NAME}-wal"),
                format!("{FILE_NAME}-shm"),
                LOCK_FILE_NAME.to_owned(),
            ] {
                let meta =
                    std::fs::metadata(dir.0.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
            }
        }
    }

    /// A file left readable by others (made by an older version) is tightened on open.
    #[cfg(unix)]
    #[test]
    fn an_existing_file_is_made_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new();
        drop(SqliteStore::open(&dir.0).unwrap());
        let path = dir.0.join(FILE_NAME);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(SqliteStore::open(&dir.0).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_second_store_on_the_directory_is_refused_until_the_first_closes() {
        let dir = TempDir::new();
        let first = SqliteStore::open(&dir.0).unwrap();
        let err = SqliteStore::open(&dir.0).err().unwrap();
        assert!(matches!(&err, StoreError::Locked { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&dir.0.display().to_string()), "{text}");
        assert!(text.contains("another heliosburn"), "{text}");
        assert!(text.contains("--data-dir"), "{text}");
        drop(first);
        drop(SqliteStore::open(&dir.0).unwrap());
    }
}
