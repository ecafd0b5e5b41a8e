//! StaticResponse: answers requests under a path prefix itself, without the upstream, or
//! fails them with a status. Small, but it shows (and the tests check) that a phase can
//! answer a request, as playback and fault injection will.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use serde::Deserialize;

use super::factory::{Factory, Kind, ModuleConfig};
use super::kwargs::header_pairs;
use super::{Built, ModuleError, PipelineModule};
use crate::proxy::{Decision, Exchange, Phase};
use crate::resources::Resources;

/// Answers requests under a path prefix itself (or fails them), without the upstream.
pub static FACTORY: Factory =
    Factory::new::<StaticResponseKwargs>("StaticResponse", Kind::Pipeline);

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticResponseKwargs {
    /// Requests whose path starts with this are answered (default `/`: all of them).
    pub path: Option<String>,
    /// The status of the answer (default 200; 500 with `fail`).
    pub status: Option<u16>,
    /// The body of the answer.
    #[serde(default)]
    pub body: String,
    /// Headers of the answer.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Fail the exchange with `status` and this reason instead of answering.
    pub fail: Option<String>,
}

pub struct StaticResponse {
    path: String,
    status: StatusCode,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    fail: Option<String>,
}

impl StaticResponseKwargs {
    fn parse(&self) -> Result<StaticResponse, String> {
        let code = self
            .status
            .unwrap_or(if self.fail.is_some() { 500 } else { 200 });
        let status = StatusCode::from_u16(code)
            .ok()
            .filter(|s| !s.is_informational())
            .ok_or_else(|| format!("status: `{code}` is not a final status (200 to 999)"))?;
        let headers = header_pairs("headers", &self.headers)?;
        Ok(StaticResponse {
            path: self.path.clone().unwrap_or_else(|| "/".into()),
            status,
            body: Bytes::from(self.body.clone()),
            headers,
            fail: self.fail.clone(),
        })
    }
}

#[async_trait]
impl ModuleConfig for StaticResponseKwargs {
    fn validate(&self) -> Result<(), String> {
        self.parse().map(drop)
    }

    async fn build(&self, _: &Resources) -> Result<Built, ModuleError> {
        let module = self.parse().map_err(ModuleError::kwargs(FACTORY.name))?;
        Ok(Built::Pipeline(Arc::new(module)))
    }
}

impl Phase for StaticResponse {
    fn on_request(&self, _ex: &mut Exchange, req: &mut http::request::Parts) -> Decision {
        if !req.uri.path().starts_with(&self.path) {
            return Decision::Forward;
        }
        if let Some(reason) = &self.fail {
            return Decision::Fail {
                status: self.status,
                reason: reason.clone(),
            };
        }
        let mut resp = http::Response::new(self.body.clone());
        *resp.status_mut() = self.status;
        for (k, v) in &self.headers {
            resp.headers_mut().append(k.clone(), v.clone());
        }
        Decision::Respond(resp)
    }
}

impl PipelineModule for StaticResponse {}
