//! `modules.yaml`: the `pipeline:` and `support:` lists of `{name, kwargs}`.
//!
//! This layer checks the file's shape; the module registry checks names and kwargs.

use std::path::Path;

use super::{parse_yaml, read_file, yaml_kind, ConfigError, Problems};

/// One `{name, kwargs}` entry, with where it sits in the file for messages.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleEntry {
    pub name: String,
    pub kwargs: yaml_serde::Value,
    /// `pipeline[0]`, `support[1]`.
    pub key: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModulesConfig {
    /// The file it came from (`(default)` for the built-in default).
    pub file: String,
    pub pipeline: Vec<ModuleEntry>,
    pub support: Vec<ModuleEntry>,
}

impl ModulesConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&path.display().to_string(), &read_file(path)?)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let value = parse_yaml(file, text, &["pipeline", "support"])?;
        let mut problems = Problems::new(file);
        let mut out = Self {
            file: file.to_owned(),
            ..Self::default()
        };
        let map = match value {
            yaml_serde::Value::Mapping(m) => m,
            yaml_serde::Value::Null => return Ok(out),
            other => {
                problems.add(
                    "",
                    format!(
                        "expected a mapping with `pipeline:` and `support:`, found {}",
                        yaml_kind(&other)
                    ),
                );
                return Err(ConfigError {
                    problems: problems.list,
                });
            }
        };
        for (k, v) in map {
            match k.as_str() {
                Some("pipeline") => out.pipeline = entries(&mut problems, "pipeline", v),
                Some("support") => out.support = entries(&mut problems, "support", v),
                Some(other) => problems.add(
                    other,
                    "unknown section; expected `pipeline:` and `support:`",
                ),
                None => problems.add("", format!("keys must be strings, found {}", yaml_kind(&k))),
            }
        }
        if problems.list.is_empty() {
            Ok(out)
        } else {
            Err(ConfigError {
                problems: problems.list,
            })
        }
    }
}

fn entries(problems: &mut Problems, section: &str, v: yaml_serde::Value) -> Vec<ModuleEntry> {
    let list = match v {
        yaml_serde::Value::Sequence(s) => s,
        yaml_serde::Value::Null => return Vec::new(),
        other => {
            problems.add(
                section,
                format!(
                    "expected a list of {{name, kwargs}}, found {}",
                    yaml_kind(&other)
                ),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in list.into_iter().enumerate() {
        let key = format!("{section}[{i}]");
        let yaml_serde::Value::Mapping(map) = item else {
            problems.add(
                &key,
                format!("expected {{name, kwargs}}, found {}", yaml_kind(&item)),
            );
            continue;
        };
        let mut name = None;
        let mut kwargs = yaml_serde::Value::Mapping(Default::default());
        for (k, v) in map {
            match k.as_str() {
                Some("name") => match v {
                    yaml_serde::Value::String(s) => name = Some(s),
                    other => problems.add(
                        format!("{key}.name"),
                        format!("expected a module name, found {}", yaml_kind(&other)),
                    ),
                },
                Some("kwargs") => match v {
                    yaml_serde::Value::Mapping(_) => kwargs = v,
                    yaml_serde::Value::Null => {}
                    other => problems.add(
                        format!("{key}.kwargs"),
                        format!("expected a mapping, found {}", yaml_kind(&other)),
                    ),
                },
                _ => problems.add(
                    format!("{key}.{}", k.as_str().unwrap_or("?")),
                    "unknown key; an entry has `name` and `kwargs`",
                ),
            }
        }
        match name {
            Some(name) => out.push(ModuleEntry { name, kwargs, key }),
            None => problems.add(&key, "missing `name`"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_style_with_trailing_commas_loads() {
        let text = "pipeline:\n  [\n    {\n      name: 'TrafficReader',\n      kwargs:\n      {\n        redis_port: 6379,\n      }\n    },\n ]\nsupport:\n  [ { name: 'TrafficRecorder', kwargs: { mongo_port: '27017', } }, ]\n";
        let m = ModulesConfig::parse("m.yaml", text).unwrap();
        assert_eq!(m.pipeline[0].name, "TrafficReader");
        assert_eq!(m.support[0].key, "support[0]");
    }

    #[test]
    fn the_seeds_one_space_indent_names_the_line() {
        let text = "pipeline:\n  [\n    { name: 'TrafficReader' },\n ]\n support:\n   [\n   ]\n";
        let err = ModulesConfig::parse("modules.yaml", text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 5"), "{err}");
        assert!(err.contains("must line up"), "{err}");
    }

    #[test]
    fn shape_errors_are_collected() {
        let err = ModulesConfig::parse(
            "m.yaml",
            "pipeline: 3\nsupport: [ {kwargs: {}} , {name: X, extra: 1}]\nother: 1\n",
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 4, "{err}");
    }
}
