//! The settings file: parsed, then merged with no flags and validated, as a start does.
#![no_main]

use heliosburn::config::settings::{Overrides, Settings, SettingsFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(file) = SettingsFile::parse("fuzz.yaml", text) {
        let _ = Settings::build("fuzz.yaml", file, &Overrides::default());
    }
});
