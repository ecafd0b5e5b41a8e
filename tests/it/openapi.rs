//! `GET /openapi.json`, kept true: it lists every route the router has, and schemathesis
//! (PyPI, in `.tools-venv` from scripts/test.sh) fuzzes the running binary against it:
//! no 5xx, every status, content type, header and body as documented, invalid input
//! refused, undocumented methods 405.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::recordings::{create_recording, start_recording, stop_recording};
use crate::harness::{body, Http, TestProxy, Upstream};

/// What schemathesis checks, all but `positive_data_acceptance`: the API refuses input
/// that fits the schema and is still wrong (a port taken, a HAR entry missing a field,
/// a host that does not resolve), which no schema can say.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
    response_schema_conformance,response_headers_conformance,negative_data_rejection,\
    missing_required_header,unsupported_method,allow_header_conformance,use_after_free,\
    ensure_resource_availability,ignored_auth";

/// Operations left out of the run: a stream never ends (schemathesis would wait on it).
const EXCLUDED_PATHS: &[&str] = &["/traffic/stream"];

/// Examples per operation and phase; with the seed fixed, a run is repeatable.
const MAX_EXAMPLES: &str = "30";
const SEED: &str = "20260513";

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_every_route() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    let r = proxy.mgmt_get("/openapi.json").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert_eq!(
        doc,
        serde_json::from_str::<Value>(heliosburn::control::http::OPENAPI).unwrap()
    );
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "openapi: {version}");

    let documented: BTreeSet<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    let routed: BTreeSet<&str> = heliosburn::control::http::route_paths()
        .into_iter()
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from src/control/openapi.json: {undocumented:?}"
    );
    let gone: Vec<_> = documented.difference(&routed).collect();
    assert!(
        gone.is_empty(),
        "src/control/openapi.json documents paths no route has: {gone:?}"
    );
    // Every operation says what its errors look like, and where a JSON body goes.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|c| c.starts_with('2')),
                "{method} {path}: no success documented"
            );
            assert!(
                responses.contains_key("403"),
                "{method} {path}: the guard's 403 is not documented"
            );
            if method != "get" {
                assert!(
                    responses.contains_key("415"),
                    "{method} {path}: the JSON rule's 415 is not documented"
                );
            }
        }
    }
}

/// Whether `instance` fits the document's schema `name`, by the JSON Schema validator
/// schemathesis itself uses (PyPI `jsonschema_rs`): the errors, if any.
fn schema_errors(name: &str, instance: &Value) -> Vec<String> {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.tools-venv/bin/python");
    let script = r##"
import json, sys, jsonschema_rs
name, doc, instance = json.load(sys.stdin)
schema = {"$ref": "#/components/schemas/" + name, "components": doc["components"]}
validator = jsonschema_rs.Draft202012Validator(schema)
print(json.dumps([str(e) for e in validator.iter_errors(instance)]))
"##;
    let doc: Value = serde_json::from_str(heliosburn::control::http::OPENAPI).unwrap();
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e}; scripts/test.sh installs it"));
    let input = json!([name, doc, instance]).to_string();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn schemathesis_finds_the_api_as_documented() {
    let up = Upstream::start().await;
    let proxy = TestProxy::start(&up).await;
    // A recording with traffic in it (text, binary and query arguments), for the pages
    // and the HAR export the fuzzer reaches by the recordings it lists.
    let id = create_recording(&proxy, "seeded", "before the fuzzer").await;
    start_recording(&proxy, &id).await;
    let http = Http::new();
    assert_eq!(http.get(&proxy.url("/echo?a=1&a=2&b")).await.status, 200);
    let r = http
        .request("POST", &proxy.url("/echo"), body(vec![0u8, 159, 146, 150]))
        .await;
    assert_eq!(r.status, 200);
    let r = http
        .request(
            "PUT",
            &proxy.url("/echo"),
            body(json!({"k": "v"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200);
    stop_recording(&proxy, &id).await;
    // What the fuzzer may not reach with traffic in it, checked against the schemas here.
    let page = proxy
        .mgmt_get(&format!("/recording/{id}/traffic"))
        .await
        .json();
    assert_eq!(page["offset"], 3, "{page}");
    assert_eq!(schema_errors("TrafficPage", &page), Vec::<String>::new());
    let har = proxy.mgmt_get(&format!("/recording/{id}/har")).await.json();
    assert_eq!(schema_errors("Har", &har), Vec::<String>::new());
    let since = Instant::now();
    let window = loop {
        let _ = http.get(&proxy.url("/echo?live=1")).await;
        let w = proxy.mgmt_get("/traffic").await.json();
        if w["count"].as_u64() > Some(0) || since.elapsed() > Duration::from_secs(5) {
            break w;
        }
    };
    assert!(window["count"].as_u64() > Some(0), "{window}");
    assert_eq!(schema_errors("WindowPage", &window), Vec::<String>::new());
    // No traffic goes through the proxy while the fuzzer runs: it points the upstream at
    // whatever host or address it makes up, and nothing may connect there.

    let dir = crate::harness::TempDir::new("schemathesis");
    let exe = concat!(env!("CARGO_MANIFEST_DIR"), "/.tools-venv/bin/schemathesis");
    let mut cmd = tokio::process::Command::new(exe);
    cmd.current_dir(dir.path())
        .arg("run")
        .arg(format!("{}/openapi.json", proxy.mgmt_url()))
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args(["--workers", "1", "--request-timeout", "10"])
        .args(["--generation-database", "none", "--no-color"]);
    for path in EXCLUDED_PATHS {
        cmd.args(["--exclude-path", path]);
    }
    cmd.env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(240), cmd.output())
        .await
        .expect("schemathesis ran for 4 minutes")
        .unwrap_or_else(|e| panic!("{exe}: {e}; scripts/test.sh installs it"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found the API other than documented ({}):\n{stdout}\n{}\nproxy stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        proxy.stderr()
    );
    let cases = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Test cases:"))
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned();
    eprintln!("schemathesis: {cases} in {:?}", started.elapsed());
    // It tested every operation but those left out (schemathesis leaves out the
    // document's own URL by itself: the test above reads it).
    let doc: Value = serde_json::from_str(heliosburn::control::http::OPENAPI).unwrap();
    let operations = |paths: &mut dyn Iterator<Item = (&String, &Value)>| -> usize {
        paths
            .map(|(_, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| *k != "parameters")
                    .count()
            })
            .sum()
    };
    let paths = doc["paths"].as_object().unwrap();
    let tested = operations(
        &mut paths
            .iter()
            .filter(|(p, _)| !EXCLUDED_PATHS.contains(&p.as_str()) && *p != "/openapi.json"),
    );
    assert!(stdout.contains(&format!("Tested: {tested}")), "{stdout}");
}
