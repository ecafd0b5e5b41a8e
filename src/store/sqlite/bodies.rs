//! Bodies stored once by content. The `bodies` table keeps each distinct body once, as
//! raw bytes, named by its BLAKE3 hash; a traffic row points at its bodies by id. An API
//! answers the same body many times, and each answer then costs a hash and a lookup, not
//! the bytes again.
//!
//! Nothing counts references: a body goes when no traffic row points at it any more,
//! which [`BodyIds::collect_garbage`] finds through the two partial indexes of the
//! traffic table (`traffic_request_body`, `traffic_response_body`).

use std::collections::HashMap;

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

/// The writer's memory of which body has which id, so that a body seen lately costs no
/// query. Lives beside the write connection and is used only with it.
#[derive(Default)]
pub struct BodyIds {
    known: HashMap<[u8; 32], i64>,
}

impl BodyIds {
    /// The id of the row holding `data`, inserted when no row holds it yet. Inside the
    /// caller's transaction: if it rolls back, [`BodyIds::forget`] must follow.
    pub fn id(&mut self, conn: &Connection, data: &[u8]) -> rusqlite::Result<i64> {
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
        self.known.clear();
    }

    /// Deletes the bodies no traffic row points at; returns how many.
    pub fn collect_garbage(&mut self, conn: &Connection) -> rusqlite::Result<usize> {
        self.forget();
        conn.prepare_cached(
            "DELETE FROM bodies WHERE
                NOT EXISTS (SELECT 1 FROM traffic WHERE request_body = bodies.id)
                AND NOT EXISTS (SELECT 1 FROM traffic WHERE response_body = bodies.id)",
        )?
        .execute([])
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
        let a = ids.id(&conn, b"same").unwrap();
        assert_eq!(ids.id(&conn, b"same").unwrap(), a, "remembered");
        let mut fresh = BodyIds::default();
        assert_eq!(fresh.id(&conn, b"same").unwrap(), a, "found by its hash");
        assert_ne!(ids.id(&conn, b"other").unwrap(), a);
        assert_eq!(count(&conn), 2);
    }

    #[test]
    fn garbage_is_what_no_row_points_at() {
        let conn = conn();
        let mut ids = BodyIds::default();
        let kept = ids.id(&conn, b"kept").unwrap();
        let answer = ids.id(&conn, b"answer").unwrap();
        ids.id(&conn, b"gone").unwrap();
        conn.execute("INSERT INTO traffic VALUES (?1, ?2)", params![kept, answer])
            .unwrap();
        assert_eq!(ids.collect_garbage(&conn).unwrap(), 1);
        assert_eq!(count(&conn), 2);
        // Forgotten: asking again stores it again rather than naming a deleted row.
        let again = ids.id(&conn, b"gone").unwrap();
        assert_eq!(count(&conn), 3);
        assert!(again > answer);
    }
}
