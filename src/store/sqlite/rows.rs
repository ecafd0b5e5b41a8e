//! A traffic document as the SQLite store keeps it: one row per (recording, transaction),
//! the request and the response as JSON text without their bodies' bytes (a body's `size`
//! and `truncated` stay in the JSON), and the bytes, raw, in the `bodies` table
//! ([`super::bodies`]), stored once by content.
//!
//! Rows written before the bodies table (schema 1) carry their bodies inside the JSON,
//! in the wire's shape, and read back as they are.

use bytes::Bytes;
use rusqlite::{params, Connection};
use serde::Serialize;

use super::bodies::BodyIds;
use super::{parse_time, Blocking, Failure};
use crate::traffic::{
    timestamp, BodyCapture, MultiMap, RequestInfo, ResponseInfo, TrafficDoc, WebSocketMessage,
};

/// The first insert fixes `seq` and `created_at`; the response event completes the row
/// (its request copy carries the captured body), and a repeat of the request changes
/// nothing.
const UPSERT: &str = "
INSERT INTO traffic
    (recording_id, transaction_id, created_at, request, response, request_body, response_body)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (recording_id, transaction_id) DO UPDATE
SET request = excluded.request, response = excluded.response,
    request_body = excluded.request_body, response_body = excluded.response_body
WHERE excluded.response IS NOT NULL";

/// The columns [`read`] takes, to be followed by a `WHERE` on `t`.
pub const SELECT: &str = "
SELECT t.seq, t.transaction_id, t.created_at, t.request, t.response, qb.data, rb.data
FROM traffic t
LEFT JOIN bodies qb ON qb.id = t.request_body
LEFT JOIN bodies rb ON rb.id = t.response_body";

/// A body in a row's JSON: what the bytes were, not the bytes.
#[derive(Serialize)]
struct BodyShape {
    size: u64,
    truncated: bool,
}

impl BodyShape {
    fn of(body: &BodyCapture) -> Self {
        Self {
            size: body.size,
            truncated: body.truncated,
        }
    }
}

/// [`RequestInfo`] as a row's JSON holds it. Made by destructuring, so that a field added
/// to the request is a compile error here until it is stored.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StoredRequest<'a> {
    created_at: &'a str,
    client_protocol: &'a str,
    method: &'a str,
    uri: &'a str,
    path: &'a str,
    args: &'a MultiMap,
    headers: &'a MultiMap,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<BodyShape>,
}

impl<'a> StoredRequest<'a> {
    fn of(request: &'a RequestInfo) -> Self {
        let RequestInfo {
            created_at,
            client_protocol,
            method,
            uri,
            path,
            args,
            headers,
            body,
        } = request;
        Self {
            created_at,
            client_protocol,
            method,
            uri,
            path,
            args,
            headers,
            body: body.as_ref().map(BodyShape::of),
        }
    }
}

/// [`ResponseInfo`] as a row's JSON holds it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StoredResponse<'a> {
    created_at: &'a str,
    client_protocol: &'a str,
    status_code: u16,
    status_description: &'a str,
    headers: &'a MultiMap,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<BodyShape>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trailers: Option<&'a MultiMap>,
    /// An upgrade's WebSocket messages, data and all (bounded by the capture limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    web_socket_messages: Option<&'a Vec<WebSocketMessage>>,
}

impl<'a> StoredResponse<'a> {
    fn of(response: &'a ResponseInfo) -> Self {
        let ResponseInfo {
            created_at,
            client_protocol,
            status_code,
            status_description,
            headers,
            body,
            trailers,
            web_socket_messages,
        } = response;
        Self {
            created_at,
            client_protocol,
            status_code: *status_code,
            status_description,
            headers,
            body: body.as_ref().map(BodyShape::of),
            trailers: trailers.as_ref(),
            web_socket_messages: web_socket_messages.as_ref(),
        }
    }
}

/// The value's JSON, written into `buf` (cleared first: one buffer serves every row).
fn to_json<'b, T: Serialize>(
    buf: &'b mut Vec<u8>,
    value: &T,
    what: &str,
    doc: &TrafficDoc,
) -> Blocking<&'b str> {
    buf.clear();
    // Only a bug in the serde types can get here: they hold strings and numbers, and
    // serde_json writes UTF-8.
    let corrupt = |e: &dyn std::fmt::Display| {
        Failure::Corrupt(format!(
            "{what} of {} not serializable: {e}",
            doc.transaction_id
        ))
    };
    serde_json::to_writer(&mut *buf, value).map_err(|e| corrupt(&e))?;
    std::str::from_utf8(buf).map_err(|e| corrupt(&e))
}

/// The id of a body's bytes; none for no body or an empty one.
fn body_id(
    conn: &Connection,
    bodies: &mut BodyIds,
    body: Option<&BodyCapture>,
) -> Blocking<Option<i64>> {
    match body.filter(|b| !b.bytes.is_empty()) {
        Some(b) => Ok(Some(bodies.id(conn, &b.bytes)?)),
        None => Ok(None),
    }
}

/// Upserts the documents, in the caller's transaction.
pub fn write(conn: &Connection, bodies: &mut BodyIds, docs: &[TrafficDoc]) -> Blocking<()> {
    let mut stmt = conn.prepare_cached(UPSERT)?;
    let (mut request_json, mut response_json) = (Vec::new(), Vec::new());
    for doc in docs {
        let request = to_json(
            &mut request_json,
            &StoredRequest::of(&doc.request),
            "request",
            doc,
        )?;
        let response = doc
            .response
            .as_deref()
            .map(|r| to_json(&mut response_json, &StoredResponse::of(r), "response", doc))
            .transpose()?;
        let request_body = body_id(conn, bodies, doc.request.body.as_ref())?;
        let response_body = body_id(
            conn,
            bodies,
            doc.response.as_deref().and_then(|r| r.body.as_ref()),
        )?;
        stmt.execute(params![
            doc.recording_id,
            doc.transaction_id,
            timestamp(doc.created_at),
            request,
            response,
            request_body,
            response_body,
        ])?;
    }
    Ok(())
}

/// The documents of a [`SELECT`], each with its position.
pub fn read(mut rows: rusqlite::Rows<'_>, recording_id: &str) -> Blocking<Vec<(i64, TrafficDoc)>> {
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut request: RequestInfo = parse_json("request", &row.get::<_, String>(3)?)?;
        fill(&mut request.body, row.get(5)?);
        let response = match row.get::<_, Option<String>>(4)? {
            Some(text) => {
                let mut response: ResponseInfo = parse_json("response", &text)?;
                fill(&mut response.body, row.get(6)?);
                Some(response.into())
            }
            None => None,
        };
        let doc = TrafficDoc {
            recording_id: recording_id.to_owned(),
            transaction_id: row.get(1)?,
            created_at: parse_time(&row.get::<_, String>(2)?)?,
            request: request.into(),
            response,
        };
        out.push((row.get(0)?, doc));
    }
    Ok(out)
}

/// Puts a body's bytes, kept apart, back in its place.
fn fill(body: &mut Option<BodyCapture>, bytes: Option<Vec<u8>>) {
    if let (Some(body), Some(bytes)) = (body.as_mut(), bytes) {
        body.bytes = Bytes::from(bytes);
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Blocking<T> {
    serde_json::from_str(text).map_err(|e| Failure::Corrupt(format!("bad {what} JSON: {e}")))
}
