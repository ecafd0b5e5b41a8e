//! The modules of a run: built from the configured modules on the opened resources, in
//! `modules.yaml` order, with start/stop/reset/reload/status. Every change to which
//! pipeline modules run publishes a new [`Pipeline`] for new exchanges.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::factory::{Factory, Kind, ModuleConfig};
use super::lifecycle::{Lifecycle, State};
use super::registry::{configure, Configured, ModulePlan};
use super::{Built, ModuleError};
use crate::config::{ConfigError, ModulesConfig, Problem};
use crate::proxy::metrics::ModuleHistogram;
use crate::proxy::{Phase, Pipeline, RunningPipeline};
use crate::resources::{Claimed, Plan, Resources};

/// A built module with its name and lifecycle.
pub struct Slot {
    pub name: String,
    pub factory: &'static Factory,
    /// The kwargs it was built from and what they claim (replaced by a reload).
    config: Mutex<(Arc<dyn ModuleConfig>, Vec<Claimed>)>,
    module: ArcSwap<Built>,
    lifecycle: Lifecycle,
}

/// A module's entry in status: the original API's `{module, state, status}`, where
/// `status` is when the module entered its state or the error text, with its kind,
/// `since` and its counters alongside.
#[derive(Debug, Serialize)]
pub struct ModuleStatus {
    pub module: String,
    pub state: State,
    pub status: String,
    pub kind: Kind,
    /// When the module entered its state (RFC 3339 UTC, microseconds), error or not.
    pub since: String,
    pub counters: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleOpError {
    #[error("no module named `{name}`; modules: {known}")]
    Unknown { name: String, known: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Module(#[from] ModuleError),
}

pub struct ModuleSet {
    pipeline: Vec<Arc<Slot>>,
    support: Vec<Arc<Slot>>,
    resources: Resources,
    /// What new exchanges run: the running pipeline modules, republished on every change.
    running: Arc<RunningPipeline>,
    /// The file to re-read on reload (none: the built-in default).
    source: Option<PathBuf>,
    /// The shared resources as opened: a reload may not name others.
    plan: Plan,
    /// One operation at a time, so that the published pipeline matches the lifecycles.
    ops: tokio::sync::Mutex<()>,
}

impl ModuleSet {
    /// Builds every module (opening what each needs of its own, e.g. a publisher's
    /// connection). Nothing runs until [`ModuleSet::start_all`].
    pub async fn build(
        plan: &ModulePlan,
        resources: Resources,
        running: Arc<RunningPipeline>,
        source: Option<PathBuf>,
        resolved: Plan,
    ) -> Result<Self, ModuleError> {
        let mut set = Self {
            pipeline: Vec::new(),
            support: Vec::new(),
            resources,
            running,
            source,
            plan: resolved,
            ops: tokio::sync::Mutex::new(()),
        };
        for (list, entries) in [
            (&mut set.pipeline, &plan.pipeline),
            (&mut set.support, &plan.support),
        ] {
            for c in entries {
                let built = c.config.build(&set.resources).await?;
                list.push(Arc::new(Slot {
                    name: c.name.clone(),
                    factory: c.factory,
                    config: Mutex::new((c.config.clone(), c.claims.clone())),
                    module: ArcSwap::from_pointee(built),
                    lifecycle: Lifecycle::default(),
                }));
            }
        }
        Ok(set)
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.pipeline.iter().chain(self.support.iter())
    }

    /// Status names of every module, in order.
    pub fn names(&self) -> Vec<String> {
        self.all().map(|s| s.name.clone()).collect()
    }

    fn find(&self, name: &str) -> Result<&Arc<Slot>, ModuleOpError> {
        self.all()
            .find(|s| s.name == name || s.factory.answers_to(name))
            .ok_or_else(|| ModuleOpError::Unknown {
                name: name.into(),
                known: self.names().join(", "),
            })
    }

    /// The running pipeline modules become what new exchanges run.
    fn publish_pipeline(&self) {
        let phases: Vec<Arc<dyn Phase>> = self
            .pipeline
            .iter()
            .filter(|s| s.lifecycle.state() == State::Running)
            .filter_map(|s| match &**s.module.load() {
                Built::Pipeline(p) => Some(p.clone() as Arc<dyn Phase>),
                Built::Support(_) => None,
            })
            .collect();
        self.running.replace(Pipeline::new(phases));
    }

    /// Starts every module; the first that cannot start fails the whole start.
    pub async fn start_all(&self) -> Result<(), ModuleError> {
        let _op = self.ops.lock().await;
        let started = async {
            for slot in self.all() {
                start_slot(slot).await?;
            }
            Ok(())
        }
        .await;
        self.publish_pipeline();
        started
    }

    /// Stops support modules (so the recorder writes what it holds), then the pipeline.
    pub async fn stop_all(&self) {
        let _op = self.ops.lock().await;
        for slot in self.support.iter().chain(self.pipeline.iter()) {
            stop_slot(slot).await;
        }
        self.publish_pipeline();
    }

    pub async fn start(&self, name: &str) -> Result<ModuleStatus, ModuleOpError> {
        let _op = self.ops.lock().await;
        let slot = self.find(name)?;
        let started = start_slot(slot).await;
        self.publish_pipeline();
        started?;
        Ok(status_of(slot))
    }

    pub async fn stop(&self, name: &str) -> Result<ModuleStatus, ModuleOpError> {
        let _op = self.ops.lock().await;
        let slot = self.find(name)?;
        stop_slot(slot).await;
        self.publish_pipeline();
        Ok(status_of(slot))
    }

    /// Clears the module's counters and error, and starts it again.
    pub async fn reset(&self, name: &str) -> Result<ModuleStatus, ModuleOpError> {
        let _op = self.ops.lock().await;
        let slot = self.find(name)?;
        stop_slot(slot).await;
        slot.module.load().reset();
        let started = start_slot(slot).await;
        self.publish_pipeline();
        started?;
        Ok(status_of(slot))
    }

    /// Rebuilds the module from the current `modules.yaml` (its kwargs may have changed)
    /// and restarts it. A file that no longer validates, or kwargs that name another
    /// shared resource (opened at startup), leave the module as it was.
    pub async fn reload(&self, name: &str) -> Result<ModuleStatus, ModuleOpError> {
        let _op = self.ops.lock().await;
        let slot = self.find(name)?;
        let (config, claims) = match &self.source {
            Some(path) => {
                let plan = configure(&ModulesConfig::load(path)?)?;
                let section = match slot.factory.kind {
                    Kind::Pipeline => &plan.pipeline,
                    Kind::Support => &plan.support,
                };
                match section.iter().find(|c| c.name == slot.name) {
                    Some(c) => {
                        self.check_claims(slot, &plan.file, c)?;
                        (c.config.clone(), c.claims.clone())
                    }
                    // Gone from the file: rebuilt as it was.
                    None => slot.config(),
                }
            }
            None => slot.config(),
        };
        let built = config.build(&self.resources).await?;
        stop_slot(slot).await;
        slot.module.store(Arc::new(built));
        slot.set_config(config, claims);
        let started = start_slot(slot).await;
        self.publish_pipeline();
        started?;
        Ok(status_of(slot))
    }

    /// A reload may not move a shared resource: each is opened once, at startup.
    fn check_claims(&self, slot: &Slot, file: &str, new: &Configured) -> Result<(), ConfigError> {
        let moved = new.claims.iter().find(|c| !self.plan.admits(&c.claim));
        match moved {
            None => Ok(()),
            Some(c) => Err(ConfigError {
                problems: vec![Problem {
                    file: file.to_owned(),
                    key: format!("{}.kwargs", new.key),
                    message: format!(
                        "{}: {} name {}, but {} was opened at startup; restart to change it",
                        slot.name,
                        c.keys,
                        c.claim.describe(),
                        self.plan.opened_for(&c.claim)
                    ),
                }],
            }),
        }
    }

    /// Every module's histograms, by the module's status name.
    pub fn histograms(&self) -> Vec<(String, ModuleHistogram)> {
        self.all()
            .flat_map(|s| {
                let module = s.module.load();
                let name = s.name.clone();
                module
                    .histograms()
                    .into_iter()
                    .map(move |h| (name.clone(), h))
            })
            .collect()
    }

    pub fn status(&self, name: Option<&str>) -> Result<Vec<ModuleStatus>, ModuleOpError> {
        match name {
            Some(n) => Ok(vec![status_of(self.find(n)?)]),
            None => Ok(self.all().map(|s| status_of(s)).collect()),
        }
    }
}

impl Slot {
    /// The kwargs it runs on and their claims.
    fn config(&self) -> (Arc<dyn ModuleConfig>, Vec<Claimed>) {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_config(&self, config: Arc<dyn ModuleConfig>, claims: Vec<Claimed>) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = (config, claims);
    }
}

async fn start_slot(slot: &Slot) -> Result<(), ModuleError> {
    let module = slot.module.load_full();
    match &*module {
        Built::Pipeline(_) => slot.lifecycle.set(State::Running),
        Built::Support(s) => match s.start().await {
            Ok(()) => slot.lifecycle.set(State::Running),
            Err(e) => {
                slot.lifecycle.fail(&e);
                return Err(e);
            }
        },
    }
    Ok(())
}

async fn stop_slot(slot: &Slot) {
    if let Built::Support(s) = &**slot.module.load() {
        s.stop().await;
    }
    if slot.lifecycle.state() != State::Error {
        slot.lifecycle.set(State::Stopped);
    }
}

fn status_of(slot: &Slot) -> ModuleStatus {
    let status = slot.lifecycle.status();
    let since = crate::traffic::timestamp(status.since);
    ModuleStatus {
        module: slot.name.clone(),
        state: slot.lifecycle.state(),
        status: status.error.unwrap_or_else(|| since.clone()),
        kind: slot.factory.kind,
        since,
        counters: slot.module.load().counters(),
    }
}
