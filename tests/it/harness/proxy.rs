//! The real `heliosburn` binary under test: started on ephemeral ports with its own data
//! directory, ready when it prints its ready line, killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::client::{Http, Resp};
use super::upstream::Upstream;

pub const BIN: &str = env!("CARGO_BIN_EXE_heliosburn");
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A directory removed when dropped (with everything in it).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "heliosburn-it-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a file in the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How to start the proxy. Cloned on [`TestProxy::restart`], so a restart runs the same
/// command against the same data directory.
#[derive(Clone, Default)]
pub struct ProxyBuilder {
    /// A subcommand and its arguments, before the common flags (`serve ID`).
    command: Vec<String>,
    upstream: Option<String>,
    args: Vec<String>,
    config: Option<String>,
    modules: Option<String>,
    env: Vec<(String, String)>,
    data_dir: Option<Arc<TempDir>>,
    /// A command the binary runs under (`nsenter -t PID -m --`), its arguments after it.
    wrapper: Vec<String>,
}

impl ProxyBuilder {
    pub fn upstream(mut self, up: &Upstream) -> Self {
        self.upstream = Some(up.url());
        self
    }

    pub fn upstream_url(mut self, url: impl Into<String>) -> Self {
        self.upstream = Some(url.into());
        self
    }

    /// Runs a subcommand (`["serve", ID]`) instead of the plain proxy; the common flags
    /// (`--bind`, `--mgmt`, `--data-dir`) follow it.
    pub fn command(mut self, words: &[&str]) -> Self {
        self.command = words.iter().map(|w| w.to_string()).collect();
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn preserve_host(self) -> Self {
        self.arg("--preserve-host")
    }

    /// A settings file (`--config`) with this YAML.
    pub fn config_yaml(mut self, yaml: &str) -> Self {
        self.config = Some(yaml.to_owned());
        self
    }

    /// A modules file (`--modules`) with this YAML.
    pub fn modules_yaml(mut self, yaml: &str) -> Self {
        self.modules = Some(yaml.to_owned());
        self
    }

    /// No pipeline and no support modules.
    pub fn no_modules(self) -> Self {
        self.modules_yaml("pipeline: []\nsupport: []\n")
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Shares a data directory (e.g. across a restart made by hand).
    /// Runs the binary under a command that execs it (so the pid stays the proxy's).
    pub fn wrapped(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn data_dir(mut self, dir: Arc<TempDir>) -> Self {
        self.data_dir = Some(dir);
        self
    }

    pub async fn start(mut self) -> TestProxy {
        let dir = self
            .data_dir
            .get_or_insert_with(|| Arc::new(TempDir::new("proxy")))
            .clone();
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.args(&self.command)
            .args([
                "--bind",
                "127.0.0.1:0",
                "--mgmt",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path().join("data"));
        if let Some(u) = &self.upstream {
            cmd.args(["--upstream", u]);
        }
        if let Some(yaml) = &self.config {
            cmd.arg("--config").arg(dir.write("settings.yaml", yaml));
        }
        if let Some(yaml) = &self.modules {
            cmd.arg("--modules").arg(dir.write("modules.yaml", yaml));
        }
        cmd.args(&self.args)
            .env_remove("RUST_LOG")
            .env_remove("HELIOSBURN_MGMT")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn heliosburn");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_task = tokio::spawn(collect_lines(child.stderr.take().unwrap(), stderr.clone()));
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();

        let deadline = Instant::now() + READY_TIMEOUT;
        let ready = loop {
            let line = match tokio::time::timeout_at(deadline.into(), stdout.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(_) => {
                    // The process closed stdout: it has exited (or is about to).
                    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    let _ = tokio::time::timeout(Duration::from_secs(5), stderr_task).await;
                    panic!(
                        "heliosburn exited before it was ready ({status:?}); stderr:\n{}",
                        stderr.lock().unwrap()
                    );
                }
                Err(_) => {
                    let _ = child.start_kill();
                    panic!(
                        "heliosburn printed no ready line within {READY_TIMEOUT:?}; stderr:\n{}",
                        stderr.lock().unwrap()
                    );
                }
            };
            if line.starts_with("heliosburn ready:") {
                break line;
            }
        };
        let (proxy_addr, mgmt_addr) = parse_ready(&ready);
        // Keep reading stdout so the process never blocks on a full pipe.
        let stdout_rest = Arc::new(Mutex::new(String::new()));
        let rest = stdout_rest.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                let mut s = rest.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        TestProxy {
            child,
            proxy_addr,
            mgmt_addr,
            ready_line: ready,
            stdout_rest,
            stderr,
            stderr_task: Some(stderr_task),
            builder: self,
            http: Http::new(),
        }
    }
}

async fn collect_lines(stream: impl AsyncRead + Unpin, into: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut s = into.lock().unwrap();
        s.push_str(&line);
        s.push('\n');
    }
}

/// `heliosburn ready: proxy http://ADDR -> UPSTREAM, management http://ADDR` (the
/// proxy `https://` when it serves TLS).
fn parse_ready(line: &str) -> (SocketAddr, SocketAddr) {
    let addr_after = |marker: &str| -> SocketAddr {
        let rest = line
            .split_once(marker)
            .unwrap_or_else(|| panic!("no `{marker}` in the ready line {line:?}"))
            .1;
        let addr = rest.split([' ', ',']).next().unwrap();
        addr.parse()
            .unwrap_or_else(|e| panic!("`{addr}` in the ready line {line:?}: {e}"))
    };
    let proxy = if line.contains("proxy https://") {
        "proxy https://"
    } else {
        "proxy http://"
    };
    (addr_after(proxy), addr_after("management http://"))
}

/// A running proxy.
pub struct TestProxy {
    child: Child,
    proxy_addr: SocketAddr,
    mgmt_addr: SocketAddr,
    ready_line: String,
    /// What stdout said after the ready line.
    stdout_rest: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
    builder: ProxyBuilder,
    http: Http,
}

impl TestProxy {
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::default()
    }

    /// The proxy in front of `up`, with the default modules.
    pub async fn start(up: &Upstream) -> TestProxy {
        Self::builder().upstream(up).start().await
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    pub fn mgmt_addr(&self) -> SocketAddr {
        self.mgmt_addr
    }

    /// `http://ADDR` of the proxy listener.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    /// `http://ADDR` of the proxy listener with this path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy_addr)
    }

    pub fn mgmt_url(&self) -> String {
        format!("http://{}", self.mgmt_addr)
    }

    /// The proxy's temporary directory: `data/` (the store), and `settings.yaml` and
    /// `modules.yaml` when the builder wrote them.
    pub fn dir(&self) -> &Path {
        self.builder.data_dir.as_ref().expect("set by start").path()
    }

    /// The `--modules` file the builder wrote (to change it before a reload).
    pub fn modules_path(&self) -> PathBuf {
        self.dir().join("modules.yaml")
    }

    pub fn ready_line(&self) -> &str {
        &self.ready_line
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the proxy has already been reaped")
    }

    /// The process's peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// Everything written to stdout so far (the ready line and what came after it).
    pub fn stdout(&self) -> String {
        format!("{}\n{}", self.ready_line, self.stdout_rest.lock().unwrap())
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr holds a line containing every one of `parts`, and returns it.
    pub async fn wait_for_log(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self
                .stderr()
                .lines()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return line.to_owned();
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line with {parts:?} within 10 s; stderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A management API request; returns the status and the JSON body.
    pub async fn mgmt(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.http
            .json(method, &format!("{}{path}", self.mgmt_url()), body)
            .await
    }

    pub async fn mgmt_get(&self, path: &str) -> Resp {
        self.mgmt("GET", path, None).await
    }

    pub async fn mgmt_post(&self, path: &str, body: Value) -> Resp {
        self.mgmt("POST", path, Some(body)).await
    }

    pub async fn mgmt_put(&self, path: &str, body: Value) -> Resp {
        self.mgmt("PUT", path, Some(body)).await
    }

    pub async fn mgmt_delete(&self, path: &str) -> Resp {
        self.mgmt("DELETE", path, None).await
    }

    /// Sends SIGTERM (as systemd or `kill` would).
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`TERM`, `INT`, ...).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Waits for the process to exit (at most 30 s) and for its stderr to be read.
    pub async fn wait(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "heliosburn did not exit within 30 s; stderr:\n{}",
                    self.stderr()
                )
            })
            .expect("wait for heliosburn");
        if let Some(t) = self.stderr_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        status
    }

    /// The builder this proxy was started from, data directory included: after a kill,
    /// `proxy.again().start()` starts on the same data.
    pub fn again(&self) -> ProxyBuilder {
        self.builder.clone()
    }

    /// Runs the binary as a client of this proxy's management API (`status`,
    /// `recording ...`), at most 20 s.
    pub async fn cli(&self, args: &[&str]) -> Output {
        let run = Command::new(BIN)
            .args(args)
            .arg("--mgmt")
            .arg(self.mgmt_addr.to_string())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .unwrap_or_else(|_| panic!("heliosburn {args:?} did not finish within 20 s"))
            .expect("run heliosburn")
    }

    /// Stops the proxy with SIGTERM (asserting a clean exit) and starts it again with the
    /// same arguments and data directory. Its ports change.
    pub async fn restart(mut self) -> TestProxy {
        self.sigterm();
        let status = self.wait().await;
        assert!(
            status.success(),
            "exit on SIGTERM: {status}; stderr:\n{}",
            self.stderr()
        );
        self.builder.clone().start().await
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("--- heliosburn stderr ---\n{}", self.stderr());
        }
    }
}

/// Runs the binary to completion (e.g. `--check-config`), at most 20 s.
pub fn run_to_end(args: &[&str]) -> Output {
    let child = std::process::Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn heliosburn");
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.expect("collect output"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
            panic!("heliosburn {args:?} did not finish within 20 s");
        }
    }
}
