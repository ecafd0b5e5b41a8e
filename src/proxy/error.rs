//! Why an exchange could not be forwarded, which side is to blame, and the one place
//! such an error becomes the client's response.

use std::time::Duration;

use http::{header, Response, StatusCode};

use crate::proxy::body::{ClientFault, Completion, ResponseBody};
use crate::proxy::metrics::UpstreamErrorKind;
use crate::proxy::upstream::SendError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream could not be reached (refused, unreachable, bad address).
    #[error("upstream {upstream} could not be reached: {cause}")]
    Connect { upstream: String, cause: String },
    /// The upstream declined: the TLS handshake failed (its certificate, most often),
    /// it does not speak the protocol asked of it, or it refused the request unprocessed.
    #[error("upstream {upstream} refused: {cause}")]
    Declined { upstream: String, cause: String },
    /// The upstream accepted the request but broke off before a response.
    #[error("upstream {upstream} closed the connection without a response: {cause}")]
    Upstream { upstream: String, cause: String },
    /// The upstream answered with something that is not a response the proxy can pass on
    /// (malformed, or a head larger than `max_header_size`).
    #[error("upstream {upstream} sent a response the proxy cannot pass on: {cause}")]
    BadResponse { upstream: String, cause: String },
    /// The upstream did not answer in the configured time.
    #[error("upstream {upstream} did not respond within {timeout:?}")]
    Timeout { upstream: String, timeout: Duration },
    /// A pipeline phase failed the exchange before it was forwarded, or the request was
    /// one the proxy does not forward (CONNECT, two `Host`s, a smuggling-shaped framing).
    #[error("{reason}")]
    Refused { status: StatusCode, reason: String },
    /// The client's request body broke or stalled: its fault, not the upstream's.
    #[error("{}", match fault {
        ClientFault::Malformed => format!("the request body was malformed or cut short: {cause}"),
        ClientFault::Stalled => format!("the request body stopped arriving: {cause}"),
    })]
    Client { fault: ClientFault, cause: String },
}

impl ProxyError {
    /// Classifies why the upstream could not be asked.
    pub fn from_send(upstream: String, err: SendError, timeout: Duration) -> Self {
        match err {
            SendError::ConnectTimeout => ProxyError::Timeout { upstream, timeout },
            SendError::Connect(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                ProxyError::Timeout { upstream, timeout }
            }
            SendError::Connect(e) => ProxyError::Connect {
                upstream,
                cause: e.to_string(),
            },
            SendError::Tls(cause) | SendError::Protocol(cause) => {
                ProxyError::Declined { upstream, cause }
            }
            SendError::Refused { body } => ProxyError::Declined {
                upstream,
                cause: if body {
                    "it did not take this request (an HTTP/2 GOAWAY or REFUSED_STREAM), so it \
                     was not processed; its body was streamed and could not be sent again by \
                     the proxy, but the request can be sent again"
                        .into()
                } else {
                    format!(
                        "it did not take this request on {} connections in a row (HTTP/2 \
                         GOAWAY or REFUSED_STREAM); it was not processed and can be sent again",
                        crate::proxy::upstream::H2_ATTEMPTS
                    )
                },
            },
            SendError::Exchange(e) if e.is_parse_too_large() => ProxyError::BadResponse {
                upstream,
                cause: "its head is larger than max_header_size allows (raise max_header_size)"
                    .into(),
            },
            SendError::Exchange(e) if e.is_parse() => ProxyError::BadResponse {
                upstream,
                cause: root_cause(&e),
            },
            SendError::Exchange(e) => ProxyError::Upstream {
                upstream,
                cause: root_cause(&e),
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Connect { .. }
            | ProxyError::Declined { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::BadResponse { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Refused { status, .. } => *status,
            ProxyError::Client {
                fault: ClientFault::Malformed,
                ..
            } => StatusCode::BAD_REQUEST,
            ProxyError::Client {
                fault: ClientFault::Stalled,
                ..
            } => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// What the metrics call it, when the upstream is to blame.
    fn upstream_kind(&self) -> Option<UpstreamErrorKind> {
        Some(match self {
            ProxyError::Connect { .. } => UpstreamErrorKind::Connect,
            ProxyError::Timeout { .. } => UpstreamErrorKind::Timeout,
            ProxyError::Declined { .. } => UpstreamErrorKind::Declined,
            ProxyError::Upstream { .. } => UpstreamErrorKind::Broken,
            ProxyError::BadResponse { .. } => UpstreamErrorKind::BadResponse,
            ProxyError::Refused { .. } | ProxyError::Client { .. } => return None,
        })
    }

    /// The client's response: the status and one plain-text line naming upstream and cause.
    pub fn into_response(self, mut done: Box<Completion>) -> Response<ResponseBody> {
        let status = self.status();
        done.ex.status = Some(status);
        done.failure = self.upstream_kind();
        match &self {
            ProxyError::Refused { .. } => {
                tracing::debug!(status = status.as_u16(), reason = %self, "exchange refused")
            }
            ProxyError::Client { .. } => {
                tracing::info!(status = status.as_u16(), error = %self, "client error")
            }
            _ => tracing::warn!(error = %self, "upstream error"),
        }
        let body = format!("heliosburn: {self}\n");
        let mut resp = Response::new(ResponseBody::full(body, Some(done)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}

fn source_chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    source_chain(err)
        .last()
        .map(|e| e.to_string())
        .unwrap_or_default()
}
