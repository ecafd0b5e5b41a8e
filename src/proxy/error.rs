//! Why an exchange could not be forwarded, which side is to blame, and the one place
//! such an error becomes the client's response.

use std::time::Duration;

use http::{header, Response, StatusCode};

use crate::proxy::body::{Completion, ResponseBody};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream could not be reached (refused, unreachable, bad address).
    #[error("upstream {upstream} could not be reached: {cause}")]
    Connect { upstream: String, cause: String },
    /// The upstream accepted the request but broke off before a response.
    #[error("upstream {upstream} closed the connection without a response: {cause}")]
    Upstream { upstream: String, cause: String },
    /// The upstream did not answer in the configured time.
    #[error("upstream {upstream} did not respond within {timeout:?}")]
    Timeout { upstream: String, timeout: Duration },
}

impl ProxyError {
    /// Classifies a client error by walking its sources.
    pub fn from_client(
        upstream: String,
        err: &hyper_util::client::legacy::Error,
        timeout: Duration,
    ) -> Self {
        let cause = root_cause(err);
        let timed_out = source_chain(err).any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        });
        if timed_out {
            ProxyError::Timeout { upstream, timeout }
        } else if err.is_connect() {
            ProxyError::Connect { upstream, cause }
        } else {
            ProxyError::Upstream { upstream, cause }
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The client's response: the status and one plain-text line naming upstream and cause.
    pub fn into_response(self, mut done: Box<Completion>) -> Response<ResponseBody> {
        let status = self.status();
        done.ex.status = Some(status);
        tracing::warn!(error = %self, "upstream error");
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
