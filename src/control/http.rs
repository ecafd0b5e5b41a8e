//! The HTTP management API: the control operations plus recordings as resources and the
//! live window. JSON in, JSON out; errors are `{"error": ...}` with a fitting status.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::access::{self, Access};
use super::{recording_reply, ControlCommand, ControlRequest, Controller, Reply};
use crate::recording::RecordingError;
use crate::store::RecordingPatch;

/// Most traffic documents one page may hold.
pub const MAX_PAGE: u64 = 10_000;

/// The OpenAPI 3.1 description of every route below, served at [`OPENAPI_PATH`].
///
/// A static document, hand-maintained: the API's shapes are custom-serialized (the seed's
/// `{name: [values]}` maps, `{size, truncated, encoding, data}` bodies, replies whose
/// `message` is text or data), which a derive crate (utoipa) would describe only with as
/// many hand-written schemas. It is kept true by `tests/it/openapi.rs` instead: every
/// route here must be in it, and schemathesis fuzzes the running binary against it.
pub const OPENAPI: &str = include_str!("openapi.json");
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Every route: its path and the methods it has.
fn routes() -> Vec<(&'static str, MethodRouter<Arc<Controller>>)> {
    vec![
        (access::HEALTH_PATH, get(healthz)),
        ("/status", get(status)),
        ("/metrics", get(metrics)),
        ("/control", post(control)),
        ("/modules/{name}/{action}", post(module_action)),
        ("/proxy", get(proxy).put(proxy_update)),
        ("/proxy/tls/reload", post(reload_tls)),
        ("/proxy/{action}", post(proxy_action)),
        ("/test", post(selftest)),
        ("/recording", get(list_recordings).post(create_recording)),
        ("/recording/import", post(import_recording)),
        (
            "/recording/{id}",
            get(get_recording)
                .put(update_recording)
                .delete(delete_recording),
        ),
        ("/recording/{id}/traffic", get(recording_traffic)),
        ("/recording/{id}/har", get(recording_har)),
        ("/recording/{id}/start", post(start_recording)),
        ("/recording/{id}/stop", post(stop_recording)),
        ("/traffic", get(live_traffic)),
        ("/traffic/stream", get(super::stream::traffic_stream)),
        (OPENAPI_PATH, get(openapi)),
    ]
}

/// The path of every route, as [`OPENAPI`] must list them (the tests compare).
pub fn route_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(path, _)| path).collect()
}

/// The API's routes behind the access guard.
pub fn router(ctl: Arc<Controller>, access: Arc<Access>) -> Router {
    let mut router = Router::new();
    for (path, methods) in routes() {
        // The JSON rule runs for the methods the route has (a route layer of its own):
        // one it has not is answered 405 with `Allow`, not 415.
        let methods = methods.route_layer(axum::middleware::from_fn(access::require_json));
        router = router.route(path, methods);
    }
    // The page's files are not the API: not in the table, nor in the description.
    router
        .merge(super::ui::routes())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint; see the README for the API",
            )
        })
        .with_state(ctl)
        .layer(axum::middleware::from_fn_with_state(access, access::guard))
}

/// An error as the API returns it.
pub struct ApiError {
    code: StatusCode,
    body: Value,
}

impl ApiError {
    pub fn new(code: StatusCode, message: impl ToString) -> Self {
        Self {
            code,
            body: json!({ "error": message.to_string() }),
        }
    }

    /// 401, with the `WWW-Authenticate: Bearer` challenge.
    pub fn unauthorized(message: impl ToString) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn status(&self) -> StatusCode {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.code, Json(self.body)).into_response();
        if self.code == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl ApiError {
    /// A control reply that is not a success: an error text becomes `{"error": ...}`,
    /// a structured message (409 busy) is the body as it is.
    fn from_reply(r: Reply) -> Self {
        let code = StatusCode::from_u16(r.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match r.message {
            Value::String(s) => ApiError::new(code, s),
            body => ApiError { code, body },
        }
    }
}

impl From<RecordingError> for ApiError {
    fn from(e: RecordingError) -> Self {
        ApiError::from_reply(recording_reply::<()>(Err(e)))
    }
}

/// A control reply as an HTTP response: the code becomes the status.
fn reply(r: Reply) -> Response {
    let code = StatusCode::from_u16(r.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(r)).into_response()
}

/// A control reply as a resource: its message is the body (an error text becomes
/// `{"error": ...}`), its code the status.
fn resource(r: Reply) -> Response {
    if r.code == 200 {
        Json(r.message).into_response()
    } else {
        ApiError::from_reply(r).into_response()
    }
}

/// Query parameters, with a bad value answered in the API's JSON error shape (axum's
/// own `Query` answers in plain text).
pub(super) struct JsonQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for JsonQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| JsonQuery(q.0))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

/// Path parameters, with a bad one (a `%FF` that is not UTF-8) answered in the API's JSON
/// error shape (axum's own `Path` answers in plain text).
struct JsonPath<T>(T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for JsonPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| JsonPath(p.0))
            .map_err(|e| ApiError::new(e.status(), e.body_text()))
    }
}

/// A request body read whole, with a failure (longer than axum's 2 MiB default limit:
/// 413; the client gone midway: 400) answered in the API's JSON error shape.
struct JsonBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(JsonBody)
            .map_err(|e| ApiError::new(e.status(), e.body_text()))
    }
}

/// Decodes a request's query and body as the route with this path would, acting on
/// nothing: the 400 it would answer, if any. The fuzz targets run every input through it.
pub fn decode(path_and_query: &str, body: &[u8]) -> Result<(), String> {
    let body = Bytes::copy_from_slice(body);
    let uri: axum::http::Uri = path_and_query.parse().map_err(|e| format!("{e}"))?;
    let query = |e: axum::extract::rejection::QueryRejection| e.body_text();
    match uri.path() {
        "/recording" => {
            let _: NewRecording = parse_json(&body).map_err(|e| e.body.to_string())?;
        }
        "/proxy" => {
            let u: ProxyUpdate = parse_json(&body).map_err(|e| e.body.to_string())?;
            for (op, param) in u.operations() {
                ControlCommand::parse(op, &param).map_err(|r| r.message.to_string())?;
            }
        }
        "/traffic" => {
            axum::extract::Query::<Since>::try_from_uri(&uri).map_err(query)?;
        }
        "/traffic/stream" => {
            let q = axum::extract::Query::<super::stream::FilterQuery>::try_from_uri(&uri)
                .map_err(query)?;
            super::stream::Filter::parse(q.0)?;
        }
        "/status" => {
            axum::extract::Query::<ModuleQuery>::try_from_uri(&uri).map_err(query)?;
        }
        // The body is a HAR document, which the `har` fuzz target reads.
        "/recording/import" => {
            axum::extract::Query::<ImportQuery>::try_from_uri(&uri).map_err(query)?;
        }
        _ => {
            let _: RecordingPatch = parse_json(&body).map_err(|e| e.body.to_string())?;
            axum::extract::Query::<Page>::try_from_uri(&uri).map_err(query)?;
        }
    }
    Ok(())
}

/// Parses a JSON body, answering 400 with serde's reason when it does not fit. Every body
/// the API takes is an object: serde would also read a struct from an array of its
/// fields (`[null, null]`), which is refused here.
fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let body: &[u8] = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => b"{}",
        Some(b'{') => body,
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid JSON body: it must be an object (`{...}`)",
            ))
        }
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

#[derive(Deserialize)]
struct ModuleQuery {
    module: Option<String>,
}

/// Liveness: answers while the management API runs (no token needed).
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn status(
    State(ctl): State<Arc<Controller>>,
    JsonQuery(q): JsonQuery<ModuleQuery>,
) -> Response {
    let module = q.module.as_deref().and_then(super::module_or_all);
    reply(ctl.apply(ControlCommand::Status(module)).await)
}

async fn control(
    State(ctl): State<Arc<Controller>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let req: ControlRequest = parse_json(&body)?;
    Ok(reply(ctl.handle(&req).await))
}

async fn module_action(
    State(ctl): State<Arc<Controller>>,
    JsonPath((name, action)): JsonPath<(String, String)>,
) -> Response {
    let cmd = match action.as_str() {
        "start" => ControlCommand::Start(Some(name)),
        "stop" => ControlCommand::Stop(Some(name)),
        "reset" => ControlCommand::Reset(Some(name)),
        "reload" => ControlCommand::Reload(Some(name)),
        other => {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no module action `{other}`; use start, stop, reset or reload"),
            )
            .into_response()
        }
    };
    reply(ctl.apply(cmd).await)
}

async fn proxy(State(ctl): State<Arc<Controller>>) -> Json<Value> {
    Json(ctl.proxy_status())
}

/// Starts or stops the listener; answers like `GET /proxy`.
async fn proxy_action(
    State(ctl): State<Arc<Controller>>,
    JsonPath(action): JsonPath<String>,
) -> Response {
    match action.as_str() {
        "start" => resource(ctl.apply(ControlCommand::Start(None)).await),
        "stop" => resource(ctl.apply(ControlCommand::Stop(None)).await),
        other => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no proxy action `{other}`; use start or stop"),
        )
        .into_response(),
    }
}

/// The Prometheus text exposition (OpenMetrics 1.0): the proxy's metrics and the
/// modules' counters as they are now.
async fn metrics(State(ctl): State<Arc<Controller>>) -> Response {
    let mut counters = Vec::new();
    for m in ctl.modules.status(None).unwrap_or_default() {
        flatten_counters(&m.module, "", &m.counters, &mut counters);
    }
    let open = ctl.proxy.listener.connections().open;
    let text = ctl
        .proxy
        .forwarder
        .metrics()
        .encode(open, counters, ctl.modules.histograms());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// A module's counters as `(module, name, value)`: the numbers, nested objects' numbers
/// named with their path joined by `_` (the reader's `spool.bytes` is `spool_bytes`).
fn flatten_counters(
    module: &str,
    prefix: &str,
    value: &Value,
    out: &mut Vec<(String, String, u64)>,
) {
    let Some(map) = value.as_object() else {
        return;
    };
    for (name, v) in map {
        let name = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}_{name}")
        };
        match v {
            Value::Object(_) => flatten_counters(module, &name, v, out),
            _ => {
                if let Some(n) = v.as_u64() {
                    out.push((module.to_owned(), name, n));
                }
            }
        }
    }
}

/// Reads the listener's certificate and key files again (as SIGHUP does).
async fn reload_tls(State(ctl): State<Arc<Controller>>) -> Response {
    let listener = &ctl.proxy.listener;
    let code = if listener.tls_status().is_none() {
        StatusCode::CONFLICT
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    match listener.reload_tls() {
        Ok(status) => Json(status).into_response(),
        Err(e) => ApiError::new(code, e).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxyUpdate {
    upstream_host: Option<Value>,
    upstream_port: Option<Value>,
    bind_host: Option<Value>,
    bind_port: Option<Value>,
}

impl ProxyUpdate {
    /// The given fields as control operations, in the order they are applied.
    fn operations(self) -> impl Iterator<Item = (&'static str, Value)> {
        [
            ("upstream_host", self.upstream_host),
            ("upstream_port", self.upstream_port),
            ("bind_host", self.bind_host),
            ("bind_port", self.bind_port),
        ]
        .into_iter()
        .filter_map(|(op, param)| Some((op, param?)))
    }
}

/// Applies each given field as its operation, in a fixed order; stops at the first error.
/// Answers like `GET /proxy`: the proxy's state, or `{"error"}`.
async fn proxy_update(
    State(ctl): State<Arc<Controller>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let u: ProxyUpdate = parse_json(&body)?;
    let mut last = Reply::ok(ctl.proxy_status());
    for (op, param) in u.operations() {
        last = ctl
            .handle(&ControlRequest {
                operation: op.into(),
                param,
                key: None,
            })
            .await;
        if last.code != 200 {
            break;
        }
    }
    Ok(resource(last))
}

async fn selftest(State(ctl): State<Arc<Controller>>) -> Response {
    reply(ctl.apply(ControlCommand::Test).await)
}

async fn list_recordings(State(ctl): State<Arc<Controller>>) -> Result<Json<Value>, ApiError> {
    let list = ctl.recordings.list().await?;
    Ok(Json(json!({ "count": list.len(), "recordings": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRecording {
    name: String,
    #[serde(default)]
    description: String,
}

async fn create_recording(
    State(ctl): State<Arc<Controller>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let new: NewRecording = parse_json(&body)?;
    if new.name.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "`name` must not be empty",
        ));
    }
    let rec = ctl
        .recordings
        .create(new.name.trim(), &new.description)
        .await?;
    Ok(created(rec))
}

/// 201 with the new recording and its Location.
fn created(rec: crate::traffic::Recording) -> Response {
    let location = format!("/recording/{}", rec.id);
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(rec),
    )
        .into_response()
}

#[derive(Deserialize)]
struct ImportQuery {
    /// The new recording's name (default: the HAR's comment, or its creator's).
    name: Option<String>,
}

/// A HAR document (the body, streamed) as a new recording: 201 with it, or 400 naming
/// the entry and field that are not HAR (nothing is kept then).
async fn import_recording(
    State(ctl): State<Arc<Controller>>,
    JsonQuery(q): JsonQuery<ImportQuery>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let name = q.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let rec = super::import::import(&ctl.recordings, name, body)
        .await
        .map_err(|e| match e {
            super::import::ImportError::Har(e) => {
                ApiError::new(StatusCode::BAD_REQUEST, format!("invalid HAR: {e}"))
            }
            super::import::ImportError::Recording(e) => e.into(),
        })?;
    Ok(created(rec))
}

async fn get_recording(
    State(ctl): State<Arc<Controller>>,
    JsonPath(id): JsonPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(ctl.recordings.get(&id).await?).into_response())
}

async fn update_recording(
    State(ctl): State<Arc<Controller>>,
    JsonPath(id): JsonPath<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let patch: RecordingPatch = parse_json(&body)?;
    if patch.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "`name` must not be empty",
        ));
    }
    Ok(Json(ctl.recordings.update(&id, &patch).await?).into_response())
}

async fn delete_recording(
    State(ctl): State<Arc<Controller>>,
    JsonPath(id): JsonPath<String>,
) -> Result<StatusCode, ApiError> {
    ctl.recordings.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct Page {
    /// Index of the first document (0-based).
    start: Option<u64>,
    /// How many documents, at most [`MAX_PAGE`].
    offset: Option<u64>,
}

/// A page holds at most this many bytes of documents (the one that crosses it included):
/// large bodies must not make one request hold hundreds of MiB.
pub const MAX_PAGE_BYTES: usize = 16 << 20;
/// Documents read from the store at a time while a page is made.
const READ_CHUNK: u64 = 8;

/// The recording as a HAR 1.2 document, streamed: written a few entries at a time as
/// they are read from the store, so memory stays flat whatever the recording holds. A
/// store error midway ends the stream early (the document is then incomplete JSON, and
/// the log says why): the status line was sent before it.
async fn recording_har(
    State(ctl): State<Arc<Controller>>,
    JsonPath(id): JsonPath<String>,
) -> Result<Response, ApiError> {
    let rec = ctl.recordings.get(&id).await?;
    let disposition = format!("attachment; filename=\"{}.har\"", rec_file_name(&id));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let recordings = ctl.recordings.clone();
    tokio::spawn(async move {
        let comment = format!("heliosburn recording {} ({})", rec.name, rec.id);
        let head = crate::har::head(env!("CARGO_PKG_VERSION"), &comment);
        if tx.send(Ok(Bytes::from(head))).await.is_err() {
            return;
        }
        let mut after = None;
        let mut first = true;
        loop {
            let chunk = match recordings.traffic_after(&id, after, READ_CHUNK).await {
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::warn!(recording = %id, error = %e, "HAR export cut short");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let mut out = Vec::new();
            for (pos, doc) in &chunk {
                if !first {
                    out.push(b',');
                }
                first = false;
                after = Some(*pos);
                if let Err(e) = serde_json::to_writer(&mut out, &crate::har::entry(doc)) {
                    tracing::warn!(recording = %id, error = %e, "HAR export cut short");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            }
            // The client went away: nothing more to read.
            if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                return;
            }
            if (chunk.len() as u64) < READ_CHUNK {
                break;
            }
        }
        let _ = tx.send(Ok(Bytes::from_static(crate::har::TAIL))).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// An id as a file name: only its letters, digits, `-` and `_`.
fn rec_file_name(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// A page of a recording's traffic, read a few documents at a time and cut at
/// [`MAX_PAGE_BYTES`]; `next` is the `start` that continues it (`null` at the end).
async fn recording_traffic(
    State(ctl): State<Arc<Controller>>,
    JsonPath(id): JsonPath<String>,
    JsonQuery(page): JsonQuery<Page>,
) -> Result<Response, ApiError> {
    let start = page.start.unwrap_or(0);
    let limit = page.offset.unwrap_or(100).min(MAX_PAGE);
    let rec = ctl.recordings.get(&id).await?;
    // The documents are written straight into the body, the page's other fields after
    // them (`{"traffic": [...], …}`): a page of large bodies is held once, not copied.
    const OPEN: &[u8] = b"{\"traffic\":[";
    let mut docs: Vec<u8> = OPEN.to_vec();
    let mut got = 0u64;
    while got < limit && docs.len() - OPEN.len() < MAX_PAGE_BYTES {
        let want = READ_CHUNK.min(limit - got);
        let chunk = ctl
            .recordings
            .traffic(&id, start.saturating_add(got), want)
            .await?;
        for doc in &chunk {
            if docs.len() - OPEN.len() >= MAX_PAGE_BYTES {
                break;
            }
            if got > 0 {
                docs.push(b',');
            }
            serde_json::to_writer(&mut docs, doc).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("a document did not serialize: {e}"),
                )
            })?;
            got += 1;
        }
        if (chunk.len() as u64) < want {
            break;
        }
    }
    let end = start.saturating_add(got);
    let next = (end < rec.count && got > 0).then_some(end);
    let head = json!({
        "recordingId": id,
        "start": start,
        "offset": got,
        "count": rec.count,
        "next": next,
    });
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let mut body = docs;
    body.extend_from_slice(b"],");
    // The head's fields without its opening brace; its closing one ends the page.
    body.extend_from_slice(head.get(1..).unwrap_or(b"}"));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn start_recording(
    State(ctl): State<Arc<Controller>>,
    JsonPath(id): JsonPath<String>,
) -> Response {
    resource(ctl.apply(ControlCommand::StartRecording(id)).await)
}

async fn stop_recording(
    State(ctl): State<Arc<Controller>>,
    JsonPath(id): JsonPath<String>,
) -> Response {
    resource(ctl.apply(ControlCommand::StopRecording(Some(id))).await)
}

#[derive(Deserialize)]
struct Since {
    since: Option<i64>,
}

async fn live_traffic(
    State(ctl): State<Arc<Controller>>,
    JsonQuery(q): JsonQuery<Since>,
) -> Result<Json<Value>, ApiError> {
    let page = ctl
        .window
        .read_since(q.since.unwrap_or(0))
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(Json(
        json!({ "cursor": page.cursor, "count": page.messages.len(), "messages": page.messages }),
    ))
}
