//! The registry: every module built into the binary, by the name `modules.yaml` uses,
//! with its kwargs check and its builder. And the module set built from a config.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::kwargs::check;
use super::lifecycle::{State, Status};
use super::slow_consumer::{SlowConsumer, SlowConsumerKwargs};
use super::tag_header::AddHeaderKwargs;
use super::traffic_reader::{ReaderKwargs, TrafficReader};
use super::traffic_recorder::{RecorderKwargs, TrafficRecorder};
use super::traffic_streamer::{StreamerKwargs, TrafficStreamer};
use super::{Built, ModuleError, Slot};
use crate::config::{ConfigError, ModuleEntry, ModulesConfig, Problem};
use crate::feed::memory::MemoryBus;
use crate::feed::redis::{RedisFeed, RedisPublisher};
use crate::feed::{Feed, Publisher};
use crate::recording::Recordings;
use crate::redis_link::Endpoint;
use crate::window::Window;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pipeline,
    Support,
}

pub struct ModuleSpec {
    pub name: &'static str,
    /// Other spellings accepted (the seed writes `TrafficStream`).
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    pub about: &'static str,
    check: fn(&yaml_serde::Value) -> Result<(), String>,
}

pub static REGISTRY: &[ModuleSpec] = &[
    ModuleSpec {
        name: "TrafficReader",
        aliases: &[],
        kind: Kind::Pipeline,
        about: "publishes each request and response to the traffic feed",
        check: |v| check::<ReaderKwargs>(v).map(drop),
    },
    ModuleSpec {
        name: "AddHeader",
        aliases: &[],
        kind: Kind::Pipeline,
        about: "adds headers to requests and responses",
        check: |v| check::<AddHeaderKwargs>(v)?.parse().map(drop),
    },
    ModuleSpec {
        name: "TrafficRecorder",
        aliases: &[],
        kind: Kind::Support,
        about: "stores the feed into recordings",
        check: |v| check::<RecorderKwargs>(v).map(drop),
    },
    ModuleSpec {
        name: "TrafficStreamer",
        aliases: &["TrafficStream"],
        kind: Kind::Support,
        about: "keeps the last second of the feed in the live window",
        check: |v| check::<StreamerKwargs>(v).map(drop),
    },
    ModuleSpec {
        name: "SlowConsumer",
        aliases: &[],
        kind: Kind::Support,
        about: "a deliberately slow feed subscriber (for testing loss accounting)",
        check: |v| check::<SlowConsumerKwargs>(v).map(drop),
    },
];

pub fn lookup(name: &str) -> Option<&'static ModuleSpec> {
    REGISTRY
        .iter()
        .find(|s| s.name == name || s.aliases.contains(&name))
}

fn known_names(kind: Kind) -> String {
    REGISTRY
        .iter()
        .filter(|s| s.kind == kind)
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks names, sections and kwargs of every entry, without I/O.
pub fn validate(cfg: &ModulesConfig) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    let mut add = |key: String, message: String| {
        problems.push(Problem {
            file: cfg.file.clone(),
            key,
            message,
        })
    };
    for (entries, kind) in [
        (&cfg.pipeline, Kind::Pipeline),
        (&cfg.support, Kind::Support),
    ] {
        for e in entries {
            match lookup(&e.name) {
                None => add(
                    format!("{}.name", e.key),
                    format!(
                        "unknown module `{}`; known {} modules: {}",
                        e.name,
                        section(kind),
                        known_names(kind)
                    ),
                ),
                Some(spec) if spec.kind != kind => add(
                    format!("{}.name", e.key),
                    format!(
                        "`{}` is a {} module; put it under `{}:`",
                        e.name,
                        section(spec.kind),
                        section(spec.kind)
                    ),
                ),
                Some(spec) => {
                    if let Err(msg) = (spec.check)(&e.kwargs) {
                        add(format!("{}.kwargs", e.key), format!("{}: {msg}", spec.name));
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { problems })
    }
}

fn section(kind: Kind) -> &'static str {
    match kind {
        Kind::Pipeline => "pipeline",
        Kind::Support => "support",
    }
}

/// The modules used when no `--modules` file is given: recording on the embedded default.
pub fn default_config() -> ModulesConfig {
    let entry = |name: &str, key: &str| ModuleEntry {
        name: name.into(),
        kwargs: yaml_serde::Value::Mapping(Default::default()),
        key: key.into(),
    };
    ModulesConfig {
        file: "(default modules)".into(),
        pipeline: vec![entry("TrafficReader", "pipeline[0]")],
        support: vec![
            entry("TrafficRecorder", "support[0]"),
            entry("TrafficStreamer", "support[1]"),
        ],
    }
}

/// What builders share: the in-process bus, the recordings and the live window.
#[derive(Clone)]
pub struct BuildContext {
    pub bus: MemoryBus,
    pub recordings: Arc<Recordings>,
    pub window: Arc<dyn Window>,
}

impl BuildContext {
    /// The feed a subscriber's kwargs name: Redis, or the in-process bus.
    fn feed(&self, redis: Option<super::kwargs::RedisTarget>, channel: String) -> Arc<dyn Feed> {
        match redis {
            Some(r) => Arc::new(RedisFeed::new(&Endpoint::unchecked(&r.url), &channel)),
            None => Arc::new(self.bus.clone()),
        }
    }
}

/// Builds one module from its entry (opening connections: this is after validation).
pub async fn build(
    spec: &ModuleSpec,
    kwargs: &yaml_serde::Value,
    ctx: &BuildContext,
) -> Result<Built, ModuleError> {
    let bad = |message: String| ModuleError::Failed {
        module: spec.name.into(),
        message,
    };
    Ok(match spec.name {
        "TrafficReader" => {
            let k: ReaderKwargs = check(kwargs).map_err(bad)?;
            let publisher: Arc<dyn Publisher> = match k.redis() {
                Some(r) => {
                    let endpoint = Endpoint::unchecked(&r.url);
                    Arc::new(
                        RedisPublisher::connect(&endpoint, &k.channel(), k.queue_capacity).await?,
                    )
                }
                None => Arc::new(ctx.bus.clone()),
            };
            Built::Pipeline(Arc::new(TrafficReader::new(publisher, &k)))
        }
        "AddHeader" => Built::Pipeline(Arc::new(
            check::<AddHeaderKwargs>(kwargs)
                .map_err(bad)?
                .parse()
                .map_err(bad)?,
        )),
        "TrafficRecorder" => {
            let k: RecorderKwargs = check(kwargs).map_err(bad)?;
            let feed = ctx.feed(k.redis(), k.channel());
            Built::Support(Arc::new(TrafficRecorder::new(
                feed,
                ctx.recordings.clone(),
                &k,
            )))
        }
        "TrafficStreamer" => {
            let k: StreamerKwargs = check(kwargs).map_err(bad)?;
            let feed = ctx.feed(k.redis(), k.channel());
            Built::Support(Arc::new(TrafficStreamer::new(feed, ctx.window.clone())))
        }
        "SlowConsumer" => {
            let k: SlowConsumerKwargs = check(kwargs).map_err(bad)?;
            Built::Support(Arc::new(SlowConsumer::new(Arc::new(ctx.bus.clone()), &k)))
        }
        other => return Err(bad(format!("`{other}` has no builder"))),
    })
}

/// A module's line in status.
#[derive(Debug, Serialize)]
pub struct ModuleStatus {
    pub module: String,
    pub kind: Kind,
    pub state: State,
    pub status: Status,
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

/// The modules of this run, in `modules.yaml` order.
pub struct ModuleSet {
    pub pipeline: Vec<Arc<Slot>>,
    pub support: Vec<Arc<Slot>>,
    ctx: BuildContext,
    /// The file to re-read on reload (none: the built-in default).
    source: Option<PathBuf>,
}

impl ModuleSet {
    pub async fn build(
        cfg: &ModulesConfig,
        ctx: BuildContext,
        source: Option<PathBuf>,
    ) -> Result<Self, ModuleError> {
        let mut names: Vec<String> = Vec::new();
        let mut slots = |entries: &[ModuleEntry]| {
            let mut out = Vec::new();
            for e in entries {
                let Some(spec) = lookup(&e.name) else {
                    continue;
                };
                // A module listed twice is told apart in status as `Name#2`.
                let n = names
                    .iter()
                    .filter(|x| x.split('#').next() == Some(spec.name))
                    .count();
                let name = if n == 0 {
                    spec.name.to_owned()
                } else {
                    format!("{}#{}", spec.name, n + 1)
                };
                names.push(name.clone());
                out.push((name, spec, e.clone()));
            }
            out
        };
        let (p, s) = (slots(&cfg.pipeline), slots(&cfg.support));
        let mut set = Self {
            pipeline: Vec::new(),
            support: Vec::new(),
            ctx,
            source,
        };
        for (list, entries) in [(&mut set.pipeline, p), (&mut set.support, s)] {
            for (name, spec, e) in entries {
                let built = build(spec, &e.kwargs, &set.ctx).await?;
                list.push(Arc::new(Slot {
                    name,
                    spec,
                    kwargs: arc_swap::ArcSwap::from_pointee(e.kwargs.clone()),
                    module: arc_swap::ArcSwap::from_pointee(built),
                    lifecycle: Default::default(),
                }));
            }
        }
        Ok(set)
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.pipeline.iter().chain(self.support.iter())
    }

    pub fn find(&self, name: &str) -> Result<&Arc<Slot>, ModuleOpError> {
        self.all()
            .find(|s| s.name == name || s.spec.aliases.contains(&name))
            .ok_or_else(|| ModuleOpError::Unknown {
                name: name.into(),
                known: self
                    .all()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Starts every module; the first that cannot start fails the whole start.
    pub async fn start_all(&self) -> Result<(), ModuleError> {
        for slot in self.all() {
            start_slot(slot).await?;
        }
        Ok(())
    }

    /// Stops support modules (so the recorder writes what it holds), then the pipeline.
    pub async fn stop_all(&self) {
        for slot in self.support.iter().chain(self.pipeline.iter()) {
            stop_slot(slot).await;
        }
    }

    pub async fn start(&self, name: &str) -> Result<ModuleStatus, ModuleOpError> {
        let slot = self.find(name)?;
        start_slot(slot).await?;
        Ok(status_of(slot))
    }

    pub async fn stop(&self, name: &str) -> Result<ModuleStatus, ModuleOpError> {
        let slot = self.find(name)?;
        stop_slot(slot).await;
        Ok(status_of(slot))
    }

    /// Clears the module's counters and error, and starts it again.
    pub async fn reset(&self, name: &str) -> Result<ModuleStatus, ModuleOpError> {
        let slot = self.find(name)?;
        stop_slot(slot).await;
        match &**slot.module.load() {
            Built::Pipeline(p) => p.reset(),
            Built::Support(s) => s.reset(),
        }
        start_slot(slot).await?;
        Ok(status_of(slot))
    }

    /// Rebuilds the module from the current `modules.yaml` (its kwargs may have changed)
    /// and restarts it. A file that no longer validates leaves the module as it was.
    pub async fn reload(&self, name: &str) -> Result<ModuleStatus, ModuleOpError> {
        let slot = self.find(name)?;
        let kwargs = match &self.source {
            Some(path) => {
                let cfg = ModulesConfig::load(path)?;
                validate(&cfg)?;
                let section = if slot.spec.kind == Kind::Pipeline {
                    &cfg.pipeline
                } else {
                    &cfg.support
                };
                let position = self.position(slot);
                match section
                    .iter()
                    .filter(|e| lookup(&e.name).is_some_and(|s| s.name == slot.spec.name))
                    .nth(position)
                {
                    Some(e) => {
                        if let Some(why) =
                            fixed_at_startup(slot.spec, &slot.kwargs.load(), &e.kwargs)
                        {
                            return Err(ConfigError {
                                problems: vec![Problem {
                                    file: cfg.file.clone(),
                                    key: format!("{}.kwargs", e.key),
                                    message: why,
                                }],
                            }
                            .into());
                        }
                        e.kwargs.clone()
                    }
                    None => (**slot.kwargs.load()).clone(),
                }
            }
            None => (**slot.kwargs.load()).clone(),
        };
        let built = build(slot.spec, &kwargs, &self.ctx).await?;
        stop_slot(slot).await;
        slot.module.store(Arc::new(built));
        slot.kwargs.store(Arc::new(kwargs));
        start_slot(slot).await?;
        Ok(status_of(slot))
    }

    /// Which occurrence of its module kind this slot is (0 for the first).
    fn position(&self, slot: &Slot) -> usize {
        self.all()
            .filter(|s| s.spec.name == slot.spec.name)
            .position(|s| std::ptr::eq(Arc::as_ptr(s), slot))
            .unwrap_or(0)
    }

    pub fn status(&self, name: Option<&str>) -> Result<Vec<ModuleStatus>, ModuleOpError> {
        match name {
            Some(n) => Ok(vec![status_of(self.find(n)?)]),
            None => Ok(self.all().map(|s| status_of(s)).collect()),
        }
    }
}

/// Why new kwargs cannot take effect on a reload: the store and the live window are opened
/// once, at startup, from the recorder's and the streamer's kwargs. Saying so beats a
/// reload that answers 200 and goes on writing where it did.
fn fixed_at_startup(
    spec: &ModuleSpec,
    old: &yaml_serde::Value,
    new: &yaml_serde::Value,
) -> Option<String> {
    match spec.name {
        "TrafficRecorder" => {
            let (old, new) = (
                check::<RecorderKwargs>(old).ok()?,
                check::<RecorderKwargs>(new).ok()?,
            );
            (old.store() != new.store()).then(|| {
                "TrafficRecorder: the store (mongo_uri, mongo_host, mongo_port, mongo_db, \
                 mongo_collection) is opened at startup; restart to change it"
                    .to_owned()
            })
        }
        "TrafficStreamer" => {
            let (old, new) = (
                check::<StreamerKwargs>(old).ok()?,
                check::<StreamerKwargs>(new).ok()?,
            );
            (old.redis() != new.redis() || old.key() != new.key()).then(|| {
                "TrafficStreamer: the live window (redis_host, redis_port, redis_db, \
                 redis_key) is opened at startup; restart to change it"
                    .to_owned()
            })
        }
        _ => None,
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
    ModuleStatus {
        module: slot.name.clone(),
        kind: slot.spec.kind,
        state: slot.lifecycle.state(),
        status: slot.lifecycle.status(),
        counters: slot.counters(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_misplaced_modules_are_named_with_the_known_ones() {
        let cfg = ModulesConfig::parse(
            "m.yaml",
            "pipeline: [{name: Nope}, {name: TrafficRecorder}]\nsupport: [{name: TrafficStream, kwargs: {bogus: 1}}]\n",
        )
        .unwrap();
        let err = validate(&cfg).unwrap_err().to_string();
        assert!(err.contains("m.yaml: pipeline[0].name: unknown module `Nope`; known pipeline modules: TrafficReader"), "{err}");
        assert!(
            err.contains(
                "pipeline[1].name: `TrafficRecorder` is a support module; put it under `support:`"
            ),
            "{err}"
        );
        assert!(
            err.contains("support[0].kwargs: TrafficStreamer: unknown field `bogus`"),
            "{err}"
        );
    }

    #[test]
    fn reload_refuses_kwargs_fixed_at_startup() {
        let v = |t: &str| yaml_serde::from_str::<yaml_serde::Value>(t).unwrap();
        let streamer = lookup("TrafficStream").unwrap();
        let moved = fixed_at_startup(
            streamer,
            &v("{redis_port: 6379, redis_key: k, redis_sub_queue: a}"),
            &v("{redis_port: 6379, redis_key: k, redis_sub_queue: b}"),
        );
        assert_eq!(moved, None);
        for new in [
            "{redis_port: 6379, redis_key: other}",
            "{redis_port: 6380, redis_key: k}",
            "{}",
        ] {
            let why = fixed_at_startup(streamer, &v("{redis_port: 6379, redis_key: k}"), &v(new));
            assert!(
                why.is_some_and(|w| w.contains("restart to change it")),
                "{new}"
            );
        }
        let recorder = lookup("TrafficRecorder").unwrap();
        let tuned = fixed_at_startup(
            recorder,
            &v("{mongo_db: a, batch_size: 10}"),
            &v("{mongo_db: a, batch_size: 20}"),
        );
        assert_eq!(tuned, None);
        let mongo = |db: &str| v(&format!("{{mongo_port: '27017', mongo_db: {db}}}"));
        assert!(fixed_at_startup(recorder, &mongo("a"), &mongo("b")).is_some());
        assert!(fixed_at_startup(recorder, &v("{}"), &v("{mongo_port: '27017'}")).is_some());
        let reader = lookup("TrafficReader").unwrap();
        assert_eq!(
            fixed_at_startup(reader, &v("{}"), &v("{redis_port: 1}")),
            None
        );
    }

    #[test]
    fn the_seed_modules_validate() {
        let seed = include_str!("../../examples/seed-modules.yaml");
        let cfg = ModulesConfig::parse("seed-modules.yaml", seed).unwrap();
        validate(&cfg).unwrap();
        assert_eq!(cfg.support[1].name, "TrafficStream");
    }
}
