//! AddHeader: sets headers on requests and/or responses. Small, but it shows (and the
//! tests check) that pipeline modules can change the exchange and run in order.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use http::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::factory::{Factory, Kind, ModuleConfig};
use super::kwargs::header_pairs;
use super::{Built, ModuleError, PipelineModule};
use crate::proxy::{Decision, Exchange, Phase};
use crate::resources::Resources;

/// Adds headers to requests and responses.
pub static FACTORY: Factory = Factory::new::<AddHeaderKwargs>("AddHeader", Kind::Pipeline);

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddHeaderKwargs {
    /// Headers appended to each request before it goes upstream.
    #[serde(default)]
    pub request: BTreeMap<String, String>,
    /// Headers appended to each response before it goes to the client.
    #[serde(default)]
    pub response: BTreeMap<String, String>,
}

pub struct AddHeader {
    request: Vec<(HeaderName, HeaderValue)>,
    response: Vec<(HeaderName, HeaderValue)>,
}

impl AddHeaderKwargs {
    /// Checks every name and value; the error names the bad one.
    fn parse(&self) -> Result<AddHeader, String> {
        Ok(AddHeader {
            request: header_pairs("request", &self.request)?,
            response: header_pairs("response", &self.response)?,
        })
    }
}

#[async_trait]
impl ModuleConfig for AddHeaderKwargs {
    fn validate(&self) -> Result<(), String> {
        self.parse().map(drop)
    }

    async fn build(&self, _: &Resources) -> Result<Built, ModuleError> {
        let module = self.parse().map_err(ModuleError::kwargs(FACTORY.name))?;
        Ok(Built::Pipeline(Arc::new(module)))
    }
}

impl PipelineModule for AddHeader {}

impl Phase for AddHeader {
    fn on_request(&self, _ex: &mut Exchange, req: &mut http::request::Parts) -> Decision {
        for (k, v) in &self.request {
            req.headers.append(k.clone(), v.clone());
        }
        Decision::Forward
    }

    fn on_response(&self, _ex: &mut Exchange, resp: &mut http::response::Parts) {
        for (k, v) in &self.response {
            resp.headers.append(k.clone(), v.clone());
        }
    }
}
