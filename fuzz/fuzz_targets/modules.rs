//! The modules file: parsed, every module's kwargs checked, and the shared resources
//! resolved, as a start does.
#![no_main]

use heliosburn::config::ModulesConfig;
use heliosburn::modules::registry;
use heliosburn::resources;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(cfg) = ModulesConfig::parse("fuzz.yaml", text) {
        if let Ok(plan) = registry::configure(&cfg) {
            let _ = resources::resolve(&plan.file, &plan.claimants(), None);
        }
    }
});
