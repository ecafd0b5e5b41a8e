//! Bodies stored once by content. The `bodies` table keeps each distinct body once, as
//! raw bytes, named by its BLAKE3 hash; a traffic row points at its bodies by id. An API
//! answers the same body many times, and each answer then costs a hash and a lookup, not
//! the bytes again.
//!
//! Nothing counts references: when a recording is deleted, each body its rows pointed at
//! goes if no other row points at it, which [`BodyIds::collect_garbage`] finds through
//! the two partial indexes of the traffic table (`traffic_request_body`,
//! `traffic_response_body`).

use std::collections::HashMap;

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};

/// The table; the traffic table's columns and indexes that point at it are in its schema.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bodies (
    id   INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE, -- BLAKE3 of data, 32 bytes
    data BLOB NOT NULL
);
";

/// How many hashes the writer remembers (32 bytes and an id each): enough for the
/// bodies an API repeats, and bounded whatever the traffic.
const REMEMBERED: usize = 4096;

/// Bytes of recent bodies the writer keeps to recognise them again by comparison, which
/// costs less than hashing them (a 64 KiB body: a few µs against about 17); each entry
/// is charged its body and [`ENTRY_COST`].
const RECENT_BYTES: usize = 16 << 20;
/// What an entry of the recent bodies costs besides its bytes (the map's slot, the
/// shared buffer's header), about.
const ENTRY_COST: usize = 128;
/// Bodies shorter than this are hashed rather than kept: hashing them is cheap.
const RECENT_MIN: usize = 256;

/// A body's length and its first and last 16 bytes: where two bodies that differ
/// usually differ, so a body found under the same fingerprint is compared whole.
type Fingerprint = (usize, [u8; 16], [u8; 16]);

fn fingerprint(data: &[u8]) -> Fingerprint {
    let mut head = [0; 16];
    let mut tail = [0; 16];
    let n = data.len().min(16);
    head[..n].copy_from_slice(&data[..n]);
    tail[..n].copy_from_slice(&data[data.len() - n..]);
    (data.len(), head, tail)
}

/// The writer's memory of which body has which id, so that a body seen lately costs no
/// query, and a body seen very lately no hash either. Lives beside the write connection
/// and is used only with it.
#[derive(Default)]
pub struct BodyIds {
    known: HashMap<[u8; 32], i64>,
    /// Recent bodies by fingerprint, with their ids: equal bytes are the same body, so
    /// a match needs no hash (and no trust in one).
    recent: HashMap<Fingerprint, (Bytes, i64)>,
    recent_bytes: usize,
}

impl BodyIds {
    /// The id of the row holding `data`, inserted when no row holds it yet. Inside the
    /// caller's transaction: if it rolls back, [`BodyIds::forget`] must follow.
    pub fn id(&mut self, conn: &Connection, data: &Bytes) -> rusqlite::Result<i64> {
        let print = fingerprint(data);
        if let Some((seen, id)) = self.recent.get(&print) {
            if seen == data {
                return Ok(*id);
            }
        }
        let id = self.id_by_hash(conn, data)?;
        if (RECENT_MIN..=RECENT_BYTES / 16).contains(&data.len()) {
            let cost = data.len() + ENTRY_COST;
            if self.recent_bytes + cost > RECENT_BYTES {
                // A new map: a cleared one would keep its capacity.
                self.recent = HashMap::new();
                self.recent_bytes = 0;
            }
            self.recent_bytes += cost;
            if let Some((old, _)) = self.recent.insert(print, (data.clone(), id)) {
                self.recent_bytes -= old.len() + ENTRY_COST;
            }
        }
        Ok(id)
    }

    fn id_by_hash(&mut self, conn: &Connection, data: &[u8]) -> rusqlite::Result<i64> {
        let hash = *blake3::hash(data).as_bytes();
        if let Some(&id) = self.known.get(&hash) {
            return Ok(id);
        }
        let found = conn
            .prepare_cached("SELECT id FROM bodies WHERE hash = ?1")?
            .query_row([&hash[..]], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                conn.prepare_cached("INSERT INTO bodies (hash, data) VALUES (?1, ?2)")?
                    .execute(params![&hash[..], data])?;
                conn.last_insert_rowid()
            }
        };
        if self.known.len() >= REMEMBERED {
            self.known.clear();
        }
        self.known.insert(hash, id);
        Ok(id)
    }

    /// Forgets every id: after a rollback (ids of rows that were never committed) and
    /// after a collection (ids of rows deleted).
    pub fn forget(&mut self) {
        self.known = HashMap::new();
        self.recent = HashMap::new();
        self.recent_bytes = 0;
    }

    /// The bodies the traffic rows of a recording point at: the candidates for
    /// [`BodyIds::collect_garbage`] once those rows are deleted.
    pub fn of_recording(conn: &Connection, recording_id: &str) -> rusqlite::Result<Vec<i64>> {
        let mut stmt = conn.prepare_cached(
            "SELECT request_body FROM traffic WHERE recording_id = ?1 AND request_body IS NOT NULL
             UNION SELECT response_body FROM traffic WHERE recording_id = ?1 AND response_body IS NOT NULL",
        )?;
        let ids = stmt.query_map([recording_id], |r| r.get(0))?;
        ids.collect()
    }

    /// Deletes those of `candidates` no traffic row points at; returns how many.
    pub fn collect_garbage(
        &mut self,
        conn: &Connection,
        candidates: &[i64],
    ) -> rusqlite::Result<usize> {
        self.forget();
        let mut stmt = conn.prepare_cached(
            "DELETE FROM bodies WHERE id = ?1
                AND NOT EXISTS (SELECT 1 FROM traffic WHERE request_body = ?1)
                AND NOT EXISTS (SELECT 1 FROM traffic WHERE response_body = ?1)",
        )?;
        let mut deleted = 0;
        for id in candidates {
            deleted += stmt.execute([id])?;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch("CREATE TABLE traffic (request_body INTEGER, response_body INTEGER);")
            .unwrap();
        conn
    }

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT COUNT(*) FROM bodies", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_body_is_stored_once_whoever_asks() {
        let conn = conn();
        let mut ids = BodyIds::default();
        let a = ids.id(&conn, &Bytes::from_static(b"same")).unwrap();
        assert_eq!(
            ids.id(&conn, &Bytes::from_static(b"same")).unwrap(),
            a,
            "remembered"
        );
        let mut fresh = BodyIds::default();
        assert_eq!(
            fresh.id(&conn, &Bytes::from_static(b"same")).unwrap(),
            a,
            "found by its hash"
        );
        assert_ne!(ids.id(&conn, &Bytes::from_static(b"other")).unwrap(), a);
        assert_eq!(count(&conn), 2);
    }

    /// Same length, same first and last 16 bytes, different middle: compared, not
    /// taken for the recent one.
    #[test]
    fn a_body_that_only_looks_like_a_recent_one_is_its_own() {
        let conn = conn();
        let mut ids = BodyIds::default();
        let a = Bytes::from(vec![b'a'; RECENT_MIN]);
        let mut b = vec![b'a'; RECENT_MIN];
        b[RECENT_MIN / 2] = b'b';
        let b = Bytes::from(b);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let id_a = ids.id(&conn, &a).unwrap();
        let id_b = ids.id(&conn, &b).unwrap();
        assert_ne!(id_a, id_b);
        assert_eq!(ids.id(&conn, &a).unwrap(), id_a);
        assert_eq!(count(&conn), 2);
    }

    #[test]
    fn garbage_is_what_no_row_points_at() {
        let conn = conn();
        let mut ids = BodyIds::default();
        let kept = ids.id(&conn, &Bytes::from_static(b"kept")).unwrap();
        let answer = ids.id(&conn, &Bytes::from_static(b"answer")).unwrap();
        let gone = ids.id(&conn, &Bytes::from_static(b"gone")).unwrap();
        conn.execute("INSERT INTO traffic VALUES (?1, ?2)", params![kept, answer])
            .unwrap();
        assert_eq!(ids.collect_garbage(&conn, &[kept, gone]).unwrap(), 1);
        assert_eq!(count(&conn), 2);
        // Forgotten: asking again stores it again rather than naming a deleted row.
        let again = ids.id(&conn, &Bytes::from_static(b"gone")).unwrap();
        assert_eq!(count(&conn), 3);
        assert!(again > answer);
    }
}
