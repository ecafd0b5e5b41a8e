//! The registry: every module built into the binary, as the list of their factories, and
//! the one pass that turns `modules.yaml` into configured modules (names, sections and
//! typed kwargs checked, every problem collected). Nothing else matches on a module's name.

use std::sync::Arc;

use super::factory::{Factory, Kind, ModuleConfig};
use super::{
    slow_consumer, static_response, tag_header, traffic_playback, traffic_reader, traffic_recorder,
    traffic_streamer,
};
use crate::config::{ConfigError, ModuleEntry, ModulesConfig, Problem};
use crate::resources::{Claimant, Claimed, FeedUse};

/// Every module, in the order `--help`-like listings show them. Adding a module is one
/// file and one line here.
pub static REGISTRY: &[&Factory] = &[
    &traffic_reader::FACTORY,
    &tag_header::FACTORY,
    &static_response::FACTORY,
    &traffic_playback::FACTORY,
    &traffic_recorder::FACTORY,
    &traffic_streamer::FACTORY,
    &slow_consumer::FACTORY,
];

pub fn lookup(name: &str) -> Option<&'static Factory> {
    REGISTRY.iter().copied().find(|f| f.answers_to(name))
}

fn known_names(kind: Kind) -> String {
    REGISTRY
        .iter()
        .filter(|f| f.kind == kind)
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One entry of `modules.yaml`, checked and parsed.
#[derive(Clone)]
pub struct Configured {
    /// Unique name in status: the module's name, or `Name#2` for a second one.
    pub name: String,
    /// Where it is in the file (`pipeline[0]`).
    pub key: String,
    pub factory: &'static Factory,
    pub config: Arc<dyn ModuleConfig>,
    pub claims: Vec<Claimed>,
    pub feed: Option<FeedUse>,
}

/// `modules.yaml`, checked and parsed.
#[derive(Clone)]
pub struct ModulePlan {
    pub file: String,
    pub pipeline: Vec<Configured>,
    pub support: Vec<Configured>,
}

impl ModulePlan {
    pub fn all(&self) -> impl Iterator<Item = &Configured> {
        self.pipeline.iter().chain(self.support.iter())
    }

    /// Each module's claims, for [`crate::resources::resolve`].
    pub fn claimants(&self) -> Vec<Claimant<'_>> {
        self.all()
            .map(|c| Claimant {
                module: &c.name,
                key: &c.key,
                claims: &c.claims,
                feed: c.feed.clone(),
            })
            .collect()
    }
}

/// Checks names, sections and kwargs of every entry and parses them, without I/O.
pub fn configure(cfg: &ModulesConfig) -> Result<ModulePlan, ConfigError> {
    let mut problems = Vec::new();
    let mut names: Vec<&'static str> = Vec::new();
    let mut section = |entries: &[ModuleEntry], kind: Kind| {
        let mut out = Vec::new();
        for e in entries {
            let mut add = |key: String, message: String| {
                problems.push(Problem {
                    file: cfg.file.clone(),
                    key,
                    message,
                })
            };
            let factory = match lookup(&e.name) {
                None => {
                    add(
                        format!("{}.name", e.key),
                        format!(
                            "unknown module `{}`; known {} modules: {}",
                            e.name,
                            kind.section(),
                            known_names(kind)
                        ),
                    );
                    continue;
                }
                Some(f) if f.kind != kind => {
                    add(
                        format!("{}.name", e.key),
                        format!(
                            "`{}` is a {} module; put it under `{}:`",
                            e.name,
                            f.kind.section(),
                            f.kind.section()
                        ),
                    );
                    continue;
                }
                Some(f) => f,
            };
            // A module listed twice is told apart in status as `Name#2`.
            let n = names.iter().filter(|n| **n == factory.name).count();
            names.push(factory.name);
            let name = match n {
                0 => factory.name.to_owned(),
                n => format!("{}#{}", factory.name, n + 1),
            };
            match factory.parse(&e.kwargs) {
                Ok(config) => out.push(Configured {
                    name,
                    key: e.key.clone(),
                    factory,
                    claims: config.claims(),
                    feed: config.feed(),
                    config,
                }),
                Err(msg) => add(
                    format!("{}.kwargs", e.key),
                    format!("{}: {msg}", factory.name),
                ),
            }
        }
        out
    };
    let pipeline = section(&cfg.pipeline, Kind::Pipeline);
    let support = section(&cfg.support, Kind::Support);
    if problems.is_empty() {
        Ok(ModulePlan {
            file: cfg.file.clone(),
            pipeline,
            support,
        })
    } else {
        Err(ConfigError { problems })
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
        pipeline: vec![entry(traffic_reader::FACTORY.name, "pipeline[0]")],
        support: vec![
            entry(traffic_recorder::FACTORY.name, "support[0]"),
            entry(traffic_streamer::FACTORY.name, "support[1]"),
        ],
    }
}

/// What `heliosburn serve` runs: TrafficPlayback on the recording (with the live window
/// fed, so the traffic can be watched), and, when there is no upstream, a last phase that
/// fails what playback lets through (were it stopped) instead of forwarding it nowhere.
pub fn playback_config(
    recording: &str,
    on_miss: &str,
    match_body: bool,
    match_headers: &[String],
    has_upstream: bool,
) -> ModulesConfig {
    use yaml_serde::{Mapping, Value};
    let entry = |name: &str, key: &str, kwargs: Mapping| ModuleEntry {
        name: name.into(),
        kwargs: Value::Mapping(kwargs),
        key: key.into(),
    };
    let mut matching = Mapping::new();
    matching.insert("body".into(), match_body.into());
    matching.insert(
        "headers".into(),
        Value::Sequence(match_headers.iter().map(|h| h.as_str().into()).collect()),
    );
    let mut playback = Mapping::new();
    playback.insert("recording".into(), recording.into());
    playback.insert("on_miss".into(), on_miss.into());
    playback.insert("match".into(), Value::Mapping(matching));
    let mut pipeline = vec![
        entry(traffic_reader::FACTORY.name, "pipeline[0]", Mapping::new()),
        entry(traffic_playback::FACTORY.name, "pipeline[1]", playback),
    ];
    if !has_upstream {
        let mut fail = Mapping::new();
        fail.insert("status".into(), 502.into());
        fail.insert(
            "fail".into(),
            format!("heliosburn serve has no upstream: only recording {recording} answers (start TrafficPlayback)").into(),
        );
        pipeline.push(entry(static_response::FACTORY.name, "pipeline[2]", fail));
    }
    ModulesConfig {
        file: format!("(serve {recording})"),
        pipeline,
        support: vec![entry(
            traffic_streamer::FACTORY.name,
            "support[0]",
            Mapping::new(),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{resolve, Claim, StoreSpec};

    fn plan(text: &str) -> Result<ModulePlan, ConfigError> {
        configure(&ModulesConfig::parse("m.yaml", text).unwrap())
    }

    #[test]
    fn serve_configures_playback_and_a_guard_without_upstream() {
        let p = configure(&playback_config(
            "r1",
            "404",
            true,
            &["accept".into()],
            false,
        ))
        .unwrap();
        let names: Vec<&str> = p.all().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "TrafficReader",
                "TrafficPlayback",
                "StaticResponse",
                "TrafficStreamer"
            ]
        );
        assert!(resolve(&p.file, &p.claimants(), None)
            .unwrap()
            .warnings
            .is_empty());
        let err = configure(&playback_config("r1", "410", false, &[], true))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("on_miss: expected 404, 502 or forward, found `410`"),
            "{err}"
        );
    }

    #[test]
    fn playback_reads_the_store_it_names_or_the_one_resolved() {
        let p = plan("pipeline: [{name: TrafficPlayback, kwargs: {recording: r}}]\nsupport: [{name: TrafficRecorder, kwargs: {mongo_port: 27017}}]\n").unwrap();
        let resolved = resolve(&p.file, &p.claimants(), None).unwrap();
        assert!(matches!(resolved.store, StoreSpec::Mongo { .. }));
        let p = plan("pipeline: [{name: TrafficPlayback, kwargs: {recording: r, mongo_port: 27017, mongo_db: other}}]\nsupport: [{name: TrafficRecorder, kwargs: {mongo_port: 27017}}]\n").unwrap();
        let err = resolve(&p.file, &p.claimants(), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("but TrafficPlayback (pipeline[0]) names MongoDB"),
            "{err}"
        );
    }

    #[test]
    fn unknown_and_misplaced_modules_are_named_with_the_known_ones() {
        let err = plan(
            "pipeline: [{name: Nope}, {name: TrafficRecorder}]\nsupport: [{name: TrafficStream, kwargs: {bogus: 1}}]\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("m.yaml: pipeline[0].name: unknown module `Nope`; known pipeline modules: TrafficReader, AddHeader, StaticResponse"), "{err}");
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
    fn a_second_module_of_a_kind_is_numbered_and_aliases_resolve() {
        let p = plan(
            "pipeline: [{name: AddHeader}, {name: AddHeader}]\nsupport: [{name: TrafficStream}]\n",
        )
        .unwrap();
        let names: Vec<&str> = p.all().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["AddHeader", "AddHeader#2", "TrafficStreamer"]);
    }

    #[test]
    fn semantic_kwarg_errors_are_collected_too() {
        let err = plan("pipeline: [{name: AddHeader, kwargs: {request: {'bad name': x}}}, {name: StaticResponse, kwargs: {status: 99}}]\n")
            .err()
            .unwrap();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(
            err.to_string().contains("`bad name` is not a header name"),
            "{err}"
        );
    }

    #[test]
    fn the_seed_modules_configure_and_claim_one_store_and_one_redis() {
        let seed = include_str!("../../examples/seed-modules.yaml");
        let p = configure(&ModulesConfig::parse("seed-modules.yaml", seed).unwrap()).unwrap();
        assert_eq!(p.support[1].name, "TrafficStreamer");
        let resolved = resolve(&p.file, &p.claimants(), None).unwrap();
        assert!(matches!(resolved.store, StoreSpec::Mongo { ref db, .. } if db == "proxy"));
        assert!(resolved.control_from_modules);
        assert!(p.support[0]
            .claims
            .iter()
            .any(|c| matches!(c.claim, Claim::ControlHost(_))));
    }

    #[test]
    fn one_redis_written_two_ways_or_with_another_db_is_no_conflict() {
        let p = plan(
            "pipeline: [{name: TrafficReader, kwargs: {redis_url: 'redis://127.0.0.1:6379'}}]\n\
             support: [{name: TrafficStreamer, kwargs: {redis_host: 127.0.0.1, redis_port: 6379, redis_db: 3}}]\n",
        )
        .unwrap();
        let resolved = resolve(&p.file, &p.claimants(), None).unwrap();
        assert!(resolved.control_from_modules);
        assert!(resolved.warnings.is_empty(), "{:?}", resolved.warnings);
    }

    #[test]
    fn a_feed_nobody_reads_or_publishes_is_a_warning() {
        let p = plan("pipeline: [{name: TrafficReader, kwargs: {redis_port: 6379}}]\nsupport: [{name: TrafficRecorder}]\n").unwrap();
        let w = resolve(&p.file, &p.claimants(), None).unwrap().warnings;
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("TrafficRecorder (support[0]) reads the in-process feed, but no pipeline module publishes to it"), "{w:?}");
        let p = plan("pipeline: [{name: TrafficReader}]\n").unwrap();
        let w = resolve(&p.file, &p.claimants(), None).unwrap().warnings;
        assert!(
            w[0].contains("publishes to the in-process feed, but no support module reads it"),
            "{w:?}"
        );
        let p = configure(&default_config()).unwrap();
        assert!(resolve(&p.file, &p.claimants(), None)
            .unwrap()
            .warnings
            .is_empty());
    }

    #[test]
    fn two_recorders_naming_different_stores_conflict() {
        let p = plan("support: [{name: TrafficRecorder}, {name: TrafficRecorder, kwargs: {mongo_port: '27017'}}]\n").unwrap();
        let err = resolve(&p.file, &p.claimants(), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("support[1].kwargs: TrafficRecorder#2 names MongoDB"),
            "{err}"
        );
        assert!(
            err.contains("but TrafficRecorder (support[0]) names the embedded store"),
            "{err}"
        );
        assert!(err.contains("mongo_port"), "{err}");
    }
}
