//! `--check-config`: bad files fail with exit 2 and a message naming the file, the key and
//! what was expected; good ones pass with exit 0. Fixtures are in `tests/fixtures/`.

use std::process::Output;

use crate::harness::{run_to_end, TempDir};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `--check-config` with these flags; asserts exit 2 and returns stderr.
fn check_fails(args: &[&str]) -> String {
    let out = check(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}: expected exit 2; stderr:\n{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout when the configuration is bad: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// `--check-config` with these flags, and an upstream unless they name one (or a
/// settings file that may).
fn check(args: &[&str]) -> Output {
    let mut all = vec!["--check-config"];
    all.extend_from_slice(args);
    if !args.iter().any(|a| *a == "--upstream" || *a == "--config") {
        all.extend_from_slice(&["--upstream", "http://127.0.0.1:9"]);
    }
    run_to_end(&all)
}

fn assert_has(stderr: &str, expected: &str) {
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in:\n{stderr}"
    );
}

#[test]
fn seed_modules_as_printed_name_the_line_that_must_line_up() {
    let path = fixture("seed-modules-as-printed.yaml");
    let stderr = check_fails(&["--modules", &path]);
    assert_has(&stderr, "1 configuration problem:");
    assert_has(&stderr, &format!("{path}: support: line 14:"));
    assert_has(&stderr, "`support:` is indented by 1 space");
    assert_has(&stderr, "must line up");
}

#[test]
fn seed_modules_with_aligned_keys_pass() {
    let out = check(&["--modules", &example("seed-modules.yaml")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "configuration OK\n");
}

#[test]
fn every_setting_with_a_valid_value_passes() {
    let out = check(&["--config", &fixture("good-settings.yaml")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_module_lists_the_known_ones() {
    let path = fixture("unknown-module.yaml");
    let stderr = check_fails(&["--modules", &path]);
    assert_has(
        &stderr,
        &format!(
            "{path}: pipeline[0].name: unknown module `TrafficReeder`; known pipeline modules: TrafficReader, AddHeader"
        ),
    );
}

#[test]
fn unknown_module_kwarg_is_named() {
    let path = fixture("unknown-kwarg.yaml");
    let stderr = check_fails(&["--modules", &path]);
    assert_has(
        &stderr,
        &format!("{path}: pipeline[0].kwargs: AddHeader: unknown field `requests`"),
    );
}

#[test]
fn unknown_setting_lists_the_known_ones() {
    let path = fixture("unknown-setting.yaml");
    let stderr = check_fails(&["--config", &path]);
    assert_has(
        &stderr,
        &format!("{path}: upstrem: unknown setting; known settings are: bind, upstream,"),
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    let path = fixture("wrong-types.yaml");
    let stderr = check_fails(&["--config", &path]);
    assert_has(&stderr, "3 configuration problems:");
    assert_has(
        &stderr,
        &format!("{path}: preserve_host: expected true or false, found a string"),
    );
    assert_has(
        &stderr,
        &format!("{path}: upstream_timeout: expected seconds, a number, found a string"),
    );
    assert_has(
        &stderr,
        &format!("{path}: log: expected a mapping with `level`, found a string"),
    );

    let path = fixture("wrong-shape-modules.yaml");
    let stderr = check_fails(&["--modules", &path]);
    assert_has(
        &stderr,
        &format!("{path}: pipeline: expected a list of {{name, kwargs}}, found a mapping"),
    );
}

#[test]
fn tls_settings_are_checked_with_their_files() {
    let stderr = check_fails(&["--tls-cert", "tests/fixtures/tls/cert.pem"]);
    assert_has(&stderr, "tls.key: a certificate without its key");
    let stderr = check_fails(&[
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "tests/fixtures/tls/key.pem",
    ]);
    assert_has(
        &stderr,
        "tls (or --tls-cert, --tls-key): cannot read certificate /nonexistent/cert.pem",
    );
    // A key file that holds no key (the certificate in its place).
    let stderr = check_fails(&[
        "--tls-cert",
        "tests/fixtures/tls/cert.pem",
        "--tls-key",
        "tests/fixtures/tls/cert.pem",
    ]);
    assert_has(&stderr, "holds no private key");
    let stderr = check_fails(&["--upstream-protocol", "h3"]);
    assert_has(
        &stderr,
        "`h3` is not an upstream protocol (auto, http1, h2 or h2c)",
    );
    let stderr = check_fails(&[
        "--upstream-ca",
        "tests/fixtures/tls/cert.pem",
        "--upstream-insecure",
    ]);
    assert_has(&stderr, "contradict each other");
    let stderr = check_fails(&["--upstream-ca", "/nonexistent/ca.pem"]);
    assert_has(
        &stderr,
        "upstream_ca (or --upstream-ca): cannot read CA certificate /nonexistent/ca.pem",
    );
}

#[test]
fn bad_addresses_are_named() {
    let path = fixture("bad-addresses.yaml");
    let stderr = check_fails(&["--config", &path]);
    assert_has(&stderr, "3 configuration problems:");
    assert_has(
        &stderr,
        &format!("{path}: bind (or --bind): `nowhere` is not an address like 127.0.0.1:8880"),
    );
    assert_has(
        &stderr,
        &format!(
            "{path}: management (or --mgmt): `127.0.0.1:99999` is not an address like 127.0.0.1:5150"
        ),
    );
    assert_has(
        &stderr,
        &format!("{path}: upstream (or --upstream): `ftp://127.0.0.1:21`: an upstream is http:// or https://, not ftp://"),
    );

    // The same check on a flag.
    let stderr = check_fails(&["--bind", "127.0.0.1"]);
    assert_has(
        &stderr,
        "bind (or --bind): `127.0.0.1` is not an address like 127.0.0.1:8880",
    );
}

#[test]
fn problems_of_both_files_are_reported_together() {
    let settings = fixture("unknown-setting.yaml");
    let modules = fixture("unknown-module.yaml");
    let stderr = check_fails(&["--config", &settings, "--modules", &modules]);
    assert_has(&stderr, "2 configuration problems:");
    assert_has(&stderr, &format!("{settings}: upstrem:"));
    assert_has(&stderr, &format!("{modules}: pipeline[0].name:"));
}

/// Started for real (not only checked), a bad file stops the proxy before it listens.
#[test]
fn a_bad_file_stops_the_start_with_exit_2() {
    let out = run_to_end(&[
        "--upstream",
        "http://127.0.0.1:9",
        "--bind",
        "127.0.0.1:0",
        "--mgmt",
        "127.0.0.1:0",
        "--modules",
        &fixture("unknown-module.yaml"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "no ready line");
    assert_has(
        &String::from_utf8_lossy(&out.stderr),
        "unknown module `TrafficReeder`",
    );
}

/// A wrong value inside a section is named by its own key and what it should be, not as
/// "expected a mapping, found a mapping".
#[test]
fn wrong_types_inside_a_section_name_their_own_key() {
    let path = fixture("wrong-nested-types.yaml");
    let stderr = check_fails(&["--config", &path]);
    assert_has(&stderr, "3 configuration problems:");
    assert_has(
        &stderr,
        &format!("{path}: log.level: expected a log level (error, warn, info, debug, trace), found a list"),
    );
    assert_has(
        &stderr,
        &format!("{path}: control.redis_port: expected a port from 1 to 65535, found a string"),
    );
    assert_has(
        &stderr,
        &format!("{path}: control.redis_db: expected a database number, found a string"),
    );
    assert!(!stderr.contains("found a mapping"), "{stderr}");
}

#[test]
fn a_missing_file_is_named() {
    let path = fixture("no-such-file.yaml");
    let stderr = check_fails(&["--modules", &path]);
    assert_has(&stderr, &format!("{path}: cannot read the file: "));
}

/// Every bad kwarg of a module is reported, each by its name.
#[test]
fn bad_kwargs_are_each_named() {
    let path = fixture("bad-kwargs.yaml");
    let stderr = check_fails(&["--modules", &path]);
    assert_has(
        &stderr,
        &format!("{path}: pipeline[0].kwargs: TrafficReader: "),
    );
    assert_has(
        &stderr,
        "redis_port: expected a port from 1 to 65535 (a number or a string of digits)",
    );
    assert_has(&stderr, "body_limit: invalid type: string \"lots\"");
}

#[test]
fn check_config_without_an_upstream_says_so() {
    let out = run_to_end(&["--check-config"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_has(
        &stderr,
        "(flags): upstream: no upstream: pass --upstream http://HOST:PORT",
    );
}

#[test]
fn check_config_with_a_file_points_at_the_flags() {
    let out = run_to_end(&["--check-config", &example("seed-modules.yaml")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_has(&stderr, "--check-config takes no file");
    assert_has(&stderr, "--modules MODULES.yaml");
    assert!(!stderr.contains("unrecognized subcommand"), "{stderr}");
}

#[test]
fn two_modules_naming_different_stores_are_a_conflict_naming_both() {
    let dir = TempDir::new("conflict");
    let path = dir.write(
        "modules.yaml",
        "pipeline: [{name: TrafficReader}]\n\
         support:\n\
         \x20 - {name: TrafficRecorder, kwargs: {mongo_host: 127.0.0.1, mongo_db: a}}\n\
         \x20 - {name: TrafficRecorder, kwargs: {mongo_host: 127.0.0.1, mongo_db: b}}\n",
    );
    let path = path.display().to_string();
    let stderr = check_fails(&["--modules", &path]);
    assert_has(&stderr, "1 configuration problem:");
    assert_has(
        &stderr,
        &format!("{path}: support[1].kwargs: TrafficRecorder#2 names MongoDB mongodb://127.0.0.1:27017 (b.traffic) as the store"),
    );
    assert_has(
        &stderr,
        "but TrafficRecorder (support[0]) names MongoDB mongodb://127.0.0.1:27017 (a.traffic)",
    );
    assert_has(&stderr, "mongo_host");
    // A run refuses it the same way, before connecting to anything.
    let out = run_to_end(&["--upstream", "http://127.0.0.1:9", "--modules", &path]);
    assert_eq!(out.status.code(), Some(2));
    assert_has(
        &String::from_utf8_lossy(&out.stderr),
        "TrafficRecorder#2 names",
    );
}

/// Numbers have ranges, checked at load: a typo is an error naming its file and key, not
/// an allocation that takes the host's memory or a panic.
#[test]
fn out_of_range_numbers_are_named_with_their_file_and_key() {
    let dir = TempDir::new("ranges");
    let settings = dir
        .write(
            "settings.yaml",
            "upstream: http://127.0.0.1:9\nbus_capacity: 4000000000\nconnect_timeout: 1e30\n\
             max_header_size: 100\ncapture_memory: 18446744073709551615\n",
        )
        .display()
        .to_string();
    let modules = dir
        .write(
            "modules.yaml",
            "pipeline: [{name: TrafficReader, kwargs: {queue_capacity: 9223372036854775808, body_limit: 99999999999}}]\n\
             support: [{name: TrafficRecorder, kwargs: {batch_size: 0, flush_ms: 18446744073709551615}}]\n",
        )
        .display()
        .to_string();
    let stderr = check_fails(&["--config", &settings, "--modules", &modules]);
    assert_has(&stderr, &format!("{settings}: bus_capacity: expected a number of messages from 1 to 1048576, found 4000000000"));
    assert_has(
        &stderr,
        &format!("{settings}: max_header_size: expected a number of bytes from 8192 to 1048576, found 100"),
    );
    assert_has(
        &stderr,
        &format!("{settings}: capture_memory: expected a number of bytes from 0 to 68719476736 (64 GiB), found 18446744073709551615"),
    );
    assert_has(
        &stderr,
        &format!(
            "{settings}: connect_timeout: expected a number of seconds above 0 and at most 86400"
        ),
    );
    assert_has(
        &stderr,
        &format!(
            "{modules}: pipeline[0].kwargs: TrafficReader: body_limit: expected 0 to 1073741824"
        ),
    );
    assert_has(&stderr, &format!("{modules}: support[0].kwargs: TrafficRecorder: batch_size: expected 1 to 100000, found 0"));
}

/// Hostile YAML is refused quickly: nesting past the parser's limit, and files larger
/// than any configuration.
#[test]
fn deep_or_huge_yaml_is_refused() {
    let dir = TempDir::new("hostile-yaml");
    let deep = dir
        .write("deep.yaml", &"[".repeat(100_000))
        .display()
        .to_string();
    let stderr = check_fails(&["--modules", &deep]);
    assert_has(&stderr, "recursion limit exceeded");
    let huge = dir
        .write("huge.yaml", &format!("# {}\n", "x".repeat(2 << 20)))
        .display()
        .to_string();
    let stderr = check_fails(&["--modules", &huge]);
    assert_has(&stderr, &format!("{huge}: the file is "));
    assert_has(&stderr, "may be at most 1048576");
}
