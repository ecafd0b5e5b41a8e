//! HTTP clients for the tests: hyper-util's pooled client (HTTP/1.1, or h2c with prior
//! knowledge) that keeps what a user sees (status, reason phrase, version, headers, body),
//! and a raw TCP connection for what only the wire shows.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub type ReqBody = BoxBody<Bytes, Infallible>;

/// A fixed body with its length known (sent with Content-Length).
pub fn body(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).boxed()
}

/// A body of these chunks with no length known (sent chunked).
pub fn chunked(chunks: Vec<Bytes>) -> ReqBody {
    let frames = chunks.into_iter().map(|c| Ok(Frame::data(c)));
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// A body the test writes while the request is under way; it ends when the sender drops.
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, ReqBody) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    (tx, StreamBody::new(stream).boxed())
}

/// A response as the client saw it, body read to the end.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    /// The reason phrase when it is not the canonical one for the status.
    pub reason: Option<String>,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        super::upstream::header_values(&self.headers, name)
    }
}

/// A pooled client: requests to the same address share keep-alive connections.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, ReqBody>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// HTTP/2 over cleartext, with prior knowledge (no upgrade dance).
    pub fn h2c() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// Sends and returns the response with its body still streaming.
    pub async fn stream(&self, req: Request<ReqBody>) -> Response<Incoming> {
        let what = format!("{} {}", req.method(), req.uri());
        tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .unwrap_or_else(|_| panic!("{what}: no response within 30 s"))
            .unwrap_or_else(|e| panic!("{what}: {e:?}"))
    }

    /// GETs `url` and counts the response body's bytes as they come, keeping none.
    pub async fn download_len(&self, url: &str) -> usize {
        let req = Request::get(url).body(body("")).unwrap();
        let mut resp = self.stream(req).await;
        let mut got = 0usize;
        while let Some(frame) = resp.body_mut().frame().await {
            got += frame.unwrap().data_ref().map_or(0, |d| d.len());
        }
        got
    }

    /// POSTs the frames (made as they are sent; chunked) to `url`.
    pub async fn upload(
        &self,
        url: &str,
        frames: impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>>
            + Send
            + Sync
            + 'static,
    ) -> Resp {
        use futures_util::StreamExt;
        let frames = frames.map(|f| Ok::<_, Infallible>(f.expect("generated frames do not fail")));
        let req = Request::post(url)
            .body(BodyExt::boxed(StreamBody::new(frames)))
            .unwrap();
        self.send(req).await
    }

    /// Sends and reads the whole response.
    pub async fn send(&self, req: Request<ReqBody>) -> Resp {
        let what = format!("{} {}", req.method(), req.uri());
        let resp = self.stream(req).await;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
            .await
            .unwrap_or_else(|_| panic!("{what}: body not complete within 30 s"))
            .unwrap_or_else(|e| panic!("{what}: body: {e:?}"))
            .to_bytes();
        Resp {
            status: parts.status,
            reason: parts
                .extensions
                .get::<hyper::ext::ReasonPhrase>()
                .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned()),
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }

    pub async fn request(&self, method: &str, url: &str, b: ReqBody) -> Resp {
        let req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(url)
            .body(b)
            .unwrap();
        self.send(req).await
    }

    /// Sends and reads the whole response, or says why not (for clients of a proxy that
    /// a test kills under load).
    pub async fn try_request(&self, method: &str, url: &str, b: ReqBody) -> Result<Resp, String> {
        let req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(url)
            .body(b)
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| "no response within 30 s".to_owned())?
            .map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
            .await
            .map_err(|_| "body not complete within 30 s".to_owned())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Resp {
            status: parts.status,
            reason: None,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&self, url: &str) -> Resp {
        self.request("GET", url, body("")).await
    }

    /// A JSON request (body `None`: no body). Anything but a GET says it is JSON, as the
    /// management API wants of requests that change state.
    pub async fn json(&self, method: &str, url: &str, json: Option<Value>) -> Resp {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(url);
        if method != "GET" {
            req = req.header("content-type", "application/json");
        }
        let b = match json {
            Some(v) => body(v.to_string()),
            None => body(""),
        };
        self.send(req.body(b).unwrap()).await
    }
}

/// A response read off the wire by [`RawConn`].
#[derive(Debug)]
pub struct RawResponse {
    /// `HTTP/1.1 200 OK`, as sent.
    pub status_line: String,
    pub status: u16,
    /// Names lowercased, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_names(&self) -> Vec<&str> {
        self.headers.iter().map(|(k, _)| k.as_str()).collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client TCP connection, written and read by hand.
pub struct RawConn {
    stream: BufReader<TcpStream>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Self {
            stream: BufReader::new(stream),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.unwrap();
    }

    /// Whether anything (bytes or the end of the stream) arrives within `within`; reads
    /// nothing.
    pub async fn readable_within(&mut self, within: Duration) -> bool {
        use tokio::io::AsyncBufReadExt;
        tokio::time::timeout(within, self.stream.fill_buf())
            .await
            .is_ok()
    }

    /// Whether the peer closes the connection (end of stream or a reset) within 10 s,
    /// with nothing more to read.
    pub async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(Duration::from_secs(10), self.stream.read_to_end(&mut rest))
            .await
        {
            Ok(Ok(_)) => rest.is_empty(),
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }

    /// Reads one response (framed by Content-Length, chunked, or the connection's end).
    pub async fn read_response(&mut self, head_request: bool) -> RawResponse {
        tokio::time::timeout(Duration::from_secs(30), self.read_inner(head_request))
            .await
            .expect("no complete response within 30 s")
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        self.stream.read_line(&mut line).await.unwrap();
        assert!(line.ends_with("\r\n"), "truncated line: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    async fn read_inner(&mut self, head_request: bool) -> RawResponse {
        let status_line = self.line().await;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').expect("header line");
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let mut resp = RawResponse {
            status_line,
            status,
            headers,
            body: Vec::new(),
        };
        if head_request || status < 200 || status == 204 || status == 304 {
            return resp;
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let size = self.line().await;
                let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
                    .expect("chunk size");
                if size == 0 {
                    // Trailers, then the empty line.
                    while !self.line().await.is_empty() {}
                    break;
                }
                let mut chunk = vec![0; size];
                self.stream.read_exact(&mut chunk).await.unwrap();
                resp.body.extend_from_slice(&chunk);
                assert!(self.line().await.is_empty(), "chunk not followed by CRLF");
            }
        } else if let Some(len) = resp.header("content-length") {
            let mut b = vec![0; len.parse().expect("content-length")];
            self.stream.read_exact(&mut b).await.unwrap();
            resp.body = b;
        } else {
            self.stream.read_to_end(&mut resp.body).await.unwrap();
        }
        resp
    }
}
