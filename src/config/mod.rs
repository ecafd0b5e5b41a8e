//! Configuration: the proxy's settings file, `modules.yaml`, and flags over both.
//!
//! Two layers (as sozu and vector do): raw serde types that mirror the YAML with
//! `deny_unknown_fields`, then a validated [`Settings`]. Validation does no I/O and
//! reports every problem it finds with its file, key and what was expected.

mod modules;
pub mod settings;

pub use modules::{ModuleEntry, ModulesConfig};
pub use settings::{Overrides, Settings, SettingsFile, Upstream};

use std::fmt;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

/// Every problem found, so that one run of `--check-config` shows them all.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{n} configuration problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn single(file: &str, key: &str, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                file: file.into(),
                key: key.into(),
                message: message.into(),
            }],
        }
    }
}

/// Collects problems while a file is checked.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    pub(crate) file: String,
    pub(crate) list: Vec<Problem>,
}

impl Problems {
    pub(crate) fn new(file: &str) -> Self {
        Self {
            file: file.to_owned(),
            list: Vec::new(),
        }
    }

    pub(crate) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.list.push(Problem {
            file: self.file.clone(),
            key: key.into(),
            message: message.into(),
        });
    }
}

/// Parses YAML text into a value, turning a syntax error into a problem that names the
/// line, and explaining the commonest mistake: top-level keys that do not line up.
pub(crate) fn parse_yaml(
    file: &str,
    text: &str,
    top_keys: &[&str],
) -> Result<yaml_serde::Value, ConfigError> {
    match yaml_serde::from_str::<yaml_serde::Value>(text) {
        Ok(v) => Ok(v),
        Err(e) => {
            if let Some((line, key, indent)) = misaligned_top_key(text, top_keys) {
                return Err(ConfigError::single(
                    file,
                    key,
                    format!(
                        "line {line}: `{key}:` is indented by {indent} space{} but the top-level keys must line up \
                         (start `{key}:` in the same column as the other top-level keys)",
                        if indent == 1 { "" } else { "s" }
                    ),
                ));
            }
            let at = e
                .location()
                .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
                .unwrap_or_default();
            Err(ConfigError::single(
                file,
                "",
                format!("{at}invalid YAML: {e}"),
            ))
        }
    }
}

/// Finds a known top-level key written with a different indentation from the first one.
fn misaligned_top_key<'a>(text: &str, top_keys: &[&'a str]) -> Option<(usize, &'a str, usize)> {
    let mut first_indent = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let Some(key) = top_keys.iter().find(|k| {
            trimmed
                .strip_prefix(**k)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        }) else {
            continue;
        };
        match first_indent {
            None => first_indent = Some(indent),
            Some(first) if first != indent => return Some((i + 1, key, indent)),
            Some(_) => {}
        }
    }
    None
}

/// The largest configuration file read: real ones are a few KiB, and the YAML parser's
/// time grows with the input (its nesting is capped at 128 levels already).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads an optional file, naming it in the error.
pub(crate) fn read_file(path: &std::path::Path) -> Result<String, ConfigError> {
    let name = path.display().to_string();
    let fail = |message: String| ConfigError::single(&name, "", message);
    let size = std::fs::metadata(path)
        .map_err(|e| fail(format!("cannot read the file: {e}")))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(fail(format!(
            "the file is {size} bytes; a configuration file may be at most {MAX_FILE_BYTES}"
        )));
    }
    std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read the file: {e}")))
}

/// A YAML type name for messages ("a string", "a list").
pub(crate) fn yaml_kind(v: &yaml_serde::Value) -> &'static str {
    match v {
        yaml_serde::Value::Null => "nothing",
        yaml_serde::Value::Bool(_) => "a boolean",
        yaml_serde::Value::Number(_) => "a number",
        yaml_serde::Value::String(_) => "a string",
        yaml_serde::Value::Sequence(_) => "a list",
        yaml_serde::Value::Mapping(_) => "a mapping",
        yaml_serde::Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misaligned_key_is_found_with_its_line() {
        let text = "pipeline:\n  [ ]\n support:\n   [ ]\n";
        assert_eq!(
            misaligned_top_key(text, &["pipeline", "support"]),
            Some((3, "support", 1))
        );
    }

    #[test]
    fn aligned_keys_are_fine() {
        assert_eq!(
            misaligned_top_key("pipeline: []\nsupport: []\n", &["pipeline", "support"]),
            None
        );
    }
}
