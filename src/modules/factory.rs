//! A module is its factory (vector's typed component configs, pingora's
//! `HttpModuleBuilder`): what `modules.yaml` calls it, its kind, its typed kwargs, the
//! shared resources they claim (which only a restart changes), and how it is built.
//! Kwargs are parsed once, when the configuration loads; building (which may connect)
//! comes after validation.

use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::kwargs::check;
use super::{Built, ModuleError};
use crate::resources::{Claimed, FeedUse, Resources};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pipeline,
    Support,
}

impl Kind {
    /// The `modules.yaml` section modules of this kind go in.
    pub fn section(self) -> &'static str {
        match self {
            Kind::Pipeline => "pipeline",
            Kind::Support => "support",
        }
    }
}

/// A module's kwargs, parsed: what they claim of the shared resources and how the module
/// is built from them.
#[async_trait]
pub trait ModuleConfig: Send + Sync + 'static {
    /// Checks what serde cannot (header names, ranges). The text names the bad kwarg.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    /// The shared resources these kwargs name (the store, the live window, a Redis),
    /// each with the kwargs that name it. Resources are opened once, at startup, so these
    /// are the kwargs a reload cannot change; every other kwarg takes effect on `reload`.
    fn claims(&self) -> Vec<Claimed> {
        Vec::new()
    }
    /// The feed it publishes to or reads, if any (checked for a feed nobody reads).
    fn feed(&self) -> Option<FeedUse> {
        None
    }
    /// Builds the module on the opened resources.
    async fn build(&self, resources: &Resources) -> Result<Built, ModuleError>;
}

/// How a module is declared. Each module's file has one, and the registry lists them.
pub struct Factory {
    pub name: &'static str,
    /// Other spellings accepted (the seed writes `TrafficStream`).
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    parse: fn(&yaml_serde::Value) -> Result<Arc<dyn ModuleConfig>, String>,
}

impl Factory {
    /// A factory whose kwargs are `K` (a `deny_unknown_fields` serde type).
    pub const fn new<K: ModuleConfig + DeserializeOwned>(name: &'static str, kind: Kind) -> Self {
        Self {
            name,
            aliases: &[],
            kind,
            parse: parse::<K>,
        }
    }

    pub const fn aliases(self, aliases: &'static [&'static str]) -> Self {
        Self { aliases, ..self }
    }

    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }

    /// Parses and validates kwargs; the text names every bad kwarg.
    pub fn parse(&self, kwargs: &yaml_serde::Value) -> Result<Arc<dyn ModuleConfig>, String> {
        (self.parse)(kwargs)
    }
}

fn parse<K: ModuleConfig + DeserializeOwned>(
    kwargs: &yaml_serde::Value,
) -> Result<Arc<dyn ModuleConfig>, String> {
    let k: K = check(kwargs)?;
    k.validate()?;
    Ok(Arc::new(k))
}
