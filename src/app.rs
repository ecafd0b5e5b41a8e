//! Wiring: configuration in, every part built and started, shutdown on a signal.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::cli::{RunArgs, ServeArgs};
use crate::config::{
    ConfigError, ModulesConfig, Overrides, Problem, Settings, SettingsFile, Upstream,
};
use crate::control::{self, Controller};
use crate::modules::registry::{self, ModulePlan};
use crate::modules::ModuleSet;
use crate::proxy::tls::ListenerCert;
use crate::proxy::upstream::Dialer;
use crate::proxy::{listener, ForwardSettings, Forwarder, Proxy, RunningPipeline, UpstreamTarget};
use crate::resources::{self, Plan};

/// The whole configuration, validated: settings, modules with typed kwargs, and the
/// shared resources resolved from them.
pub struct Loaded {
    pub settings: Settings,
    /// Where requests go (the settings' `upstream`, which a run cannot do without).
    pub upstream: Upstream,
    pub modules: ModulePlan,
    pub resources: Plan,
    /// How upstream connections are made: the TLS roots (or CA file) read already.
    pub dialer: Dialer,
    /// The listener's certificate, read already, when it serves HTTPS.
    pub listener_cert: Option<Arc<ListenerCert>>,
}

/// Reads both files and the flags, reporting the problems of every file together.
pub fn load(
    args: &RunArgs,
    mgmt: Option<String>,
    mgmt_token: Option<String>,
) -> Result<Loaded, ConfigError> {
    load_with(args, mgmt, mgmt_token, None)
}

/// [`load`], or with `heliosburn serve`'s playback as the modules instead of those of
/// `--modules`. Playback may do without an upstream: it answers every request itself,
/// so the upstream is then a placeholder nothing reaches.
fn load_with(
    args: &RunArgs,
    mgmt: Option<String>,
    mgmt_token: Option<String>,
    serve: Option<&ServeArgs>,
) -> Result<Loaded, ConfigError> {
    let upstream_optional = serve.is_some();
    let mut problems = Vec::new();
    let (file_name, file) = match &args.config {
        Some(p) => (p.display().to_string(), SettingsFile::load(p)),
        None => ("(flags)".to_owned(), Ok(SettingsFile::default())),
    };
    let overrides = Overrides {
        bind: args.bind.clone(),
        upstream: args.upstream.clone(),
        upstream_protocol: args.upstream_protocol.clone(),
        upstream_ca: args.upstream_ca.clone(),
        upstream_insecure: args.upstream_insecure,
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        mgmt,
        mgmt_token,
        idle_timeout: args.idle_timeout,
        preserve_host: args.preserve_host,
        data_dir: args.data_dir.clone(),
        log_level: args.log_level.clone(),
    };
    let settings = match file {
        Ok(f) => Settings::build(&file_name, f, &overrides)
            .map_err(|e| problems.extend(e.problems))
            .ok(),
        Err(e) => {
            problems.extend(e.problems);
            None
        }
    };
    let upstream = settings.as_ref().and_then(|s| s.upstream.clone());
    // From the flags or the settings file, for serve's misses.
    let has_upstream = upstream.is_some();
    let upstream = match upstream {
        None if upstream_optional => Some(Upstream::http("127.0.0.1", 0)),
        other => other,
    };
    if settings.is_some() && upstream.is_none() {
        problems.push(Problem {
            file: file_name.clone(),
            key: "upstream".into(),
            message: "no upstream: pass --upstream http://HOST:PORT or set `upstream:` in the settings file (--config)".into(),
        });
    }
    let modules = match (serve, &args.modules) {
        (Some(serve), _) if serve.on_miss.trim() == "forward" && !has_upstream => {
            Err(ConfigError {
                problems: vec![Problem {
                    file: file_name.clone(),
                    key: "upstream".into(),
                    message: "--on-miss forward needs an upstream to forward misses to: pass --upstream URL or set `upstream:` in the settings file".into(),
                }],
            })
        }
        (Some(serve), _) => Ok(registry::playback_config(
            &serve.recording,
            &serve.on_miss,
            serve.match_body,
            &serve.match_headers,
            has_upstream,
        )),
        (None, Some(p)) => ModulesConfig::load(p),
        (None, None) => Ok(registry::default_config()),
    };
    let modules = match modules.and_then(|m| registry::configure(&m)) {
        Ok(m) => Some(m),
        Err(e) => {
            problems.extend(e.problems);
            None
        }
    };
    let plan = match (&settings, &modules) {
        (Some(s), Some(m)) => {
            match resources::resolve(&m.file, &m.claimants(), s.control.as_ref()) {
                Ok(p) => Some(p),
                Err(e) => {
                    problems.extend(e.problems);
                    None
                }
            }
        }
        _ => None,
    };
    // The files TLS needs are read now, so that --check-config reports them too.
    let tls = settings.as_ref().map(|s| {
        let dialer = Dialer::new(
            s.upstream_protocol,
            &s.upstream_tls,
            s.connect_timeout,
            s.limits.max_header_size,
        )
        .map_err(|e| problem(&file_name, "upstream_ca (or --upstream-ca)", e.to_string()));
        let cert = match &s.tls {
            Some(t) => ListenerCert::load(&t.cert, &t.key)
                .map(Some)
                .map_err(|e| problem(&file_name, "tls (or --tls-cert, --tls-key)", e.to_string())),
            None => Ok(None),
        };
        (dialer, cert)
    });
    let (dialer, listener_cert) = match tls {
        Some((Ok(d), Ok(c))) => (Some(d), c),
        Some((d, c)) => {
            problems.extend(d.err());
            problems.extend(c.err());
            (None, None)
        }
        None => (None, None),
    };
    match (settings, upstream, modules, plan, dialer) {
        (Some(settings), Some(upstream), Some(modules), Some(resources), Some(dialer))
            if problems.is_empty() =>
        {
            Ok(Loaded {
                settings,
                upstream,
                modules,
                resources,
                dialer,
                listener_cert,
            })
        }
        _ => Err(ConfigError { problems }),
    }
}

fn problem(file: &str, key: &str, message: String) -> Problem {
    Problem {
        file: file.to_owned(),
        key: key.to_owned(),
        message,
    }
}

/// `heliosburn serve`'s configuration: the settings from its flags (and `--config`), and
/// TrafficPlayback on the recording as the modules. Returns the run's arguments with it.
pub fn load_serve(
    args: ServeArgs,
    mgmt: Option<String>,
    mgmt_token: Option<String>,
) -> Result<(RunArgs, Loaded), ConfigError> {
    let run = RunArgs {
        upstream: args.upstream.clone(),
        bind: args.bind.clone(),
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
        log_level: args.log_level.clone(),
        ..RunArgs::default()
    };
    let loaded = load_with(&run, mgmt, mgmt_token, Some(&args))?;
    Ok((run, loaded))
}

/// Runs the proxy until SIGINT/SIGTERM, then drains and stops.
pub async fn run(loaded: Loaded, modules_path: Option<&Path>) -> Result<()> {
    let Loaded {
        settings,
        upstream,
        modules: module_plan,
        resources: plan,
        dialer,
        listener_cert,
    } = loaded;
    let target = UpstreamTarget::new(upstream).map_err(anyhow::Error::msg)?;
    if dialer.insecure() {
        tracing::warn!(
            "--upstream-insecure: the upstream's TLS certificate is NOT verified; anyone on \
             the path can read and change the traffic (for self-signed test services only)"
        );
    }
    let shutdown = CancellationToken::new();
    // Watched from now on, so that a signal during a slow connect ends the wait.
    let mut signalled = std::pin::pin!(shutdown_signal());

    // Listeners first: a busy port is the commonest reason a second instance fails, and
    // it must fail before it touches the store or starts anything.
    let proxy_listener = listener::listen(settings.bind)
        .with_context(|| format!("cannot listen on {} (pass --bind HOST:PORT)", settings.bind))?;
    let mgmt_listener = listener::listen(settings.mgmt).with_context(|| {
        format!(
            "cannot listen for management on {} (pass --mgmt HOST:PORT)",
            settings.mgmt
        )
    })?;

    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let proxy_addr = proxy_listener.local_addr()?;
    let mgmt_addr = mgmt_listener.local_addr()?;
    tracing::info!(store = %plan.store, window = %plan.window, "opening the shared resources");
    let opened = tokio::select! {
        r = plan.open(settings.data_dir.clone(), settings.bus_capacity, settings.spool) => r?,
        _ = &mut signalled => {
            tracing::info!("interrupted while opening the store and the window; exiting");
            return Ok(());
        }
    };
    // A recording a crash cut off ran until at least its last heartbeat (and the last
    // start the spool holds): its messages still on the way are filed in it.
    let alive_path = settings.data_dir.join(ALIVE_FILE);
    let alive_until = std::fs::read_to_string(&alive_path)
        .ok()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).ok())
        .map(|t| t.with_timezone(&chrono::Utc) + HEARTBEAT);
    let spooled_until = opened
        .feeds
        .bus()
        .spool_last_started()
        .max(alive_until)
        .map(|t| t.min(chrono::Utc::now()));
    opened
        .recordings
        .close_interrupted(spooled_until)
        .await
        .context("closing recordings a crash left running")?;
    // Messages still in the spool from before are filed in the recordings they began in.
    if let Err(e) = opened.recordings.remember_stopped().await {
        tracing::warn!(error = %e, "cannot read which recordings stopped last; messages of theirs still in the spool will be ignored");
    }

    let running = Arc::new(RunningPipeline::default());
    let modules = Arc::new(
        ModuleSet::build(
            &module_plan,
            opened.clone(),
            running.clone(),
            modules_path.map(Path::to_path_buf),
            plan.clone(),
        )
        .await
        .context("building the modules")?,
    );
    if let Err(e) = modules.start_all().await {
        modules.stop_all().await;
        return Err(anyhow::Error::new(e).context("starting the modules"));
    }

    let forward = ForwardSettings {
        preserve_host: settings.preserve_host,
        connect_timeout: settings.connect_timeout,
        upstream_timeout: settings.upstream_timeout,
        client_body_timeout: settings.client_body_timeout,
        capture_memory: settings.capture_memory,
        max_header_size: settings.limits.max_header_size,
    };
    let forwarder = Arc::new(Forwarder::new(target, dialer, running, forward));
    let (listener, proxy_task) = match listener::spawn(
        proxy_listener,
        forwarder.clone(),
        shutdown.clone(),
        settings.drain_timeout,
        settings.limits,
        listener_cert,
    ) {
        Ok(spawned) => spawned,
        Err(e) => {
            modules.stop_all().await;
            return Err(anyhow::Error::new(e).context("starting the proxy listener"));
        }
    };

    let controller = Arc::new(Controller {
        proxy: Proxy {
            forwarder: forwarder.clone(),
            listener,
        },
        modules: modules.clone(),
        recordings: opened.recordings.clone(),
        window: opened.window.clone(),
        tail: opened.tail.clone(),
    });
    let access = control::access::Access::new(
        mgmt_addr,
        settings.mgmt_hosts.clone(),
        settings.mgmt_token.clone(),
    );
    if settings.mgmt_token.is_none() {
        tracing::info!(management = %mgmt_addr, "management API without a token: any local user can use it (set --mgmt-token)");
    }
    let router = control::http::router(controller.clone(), Arc::new(access));
    // The proxy's bounds (idle and header-read timeouts, a cap), with a small cap: the
    // management API has few clients, and a flood of them must not cost the proxy.
    let mgmt_limits = crate::config::settings::ConnectionLimits {
        max_connections: 256,
        ..settings.limits
    };
    let mgmt_task = listener::serve_bounded(
        mgmt_listener,
        hyper_util::service::TowerToHyperService::new(router),
        mgmt_limits,
        shutdown.clone(),
        settings.drain_timeout,
    );
    let control_task = plan.control.clone().map(|channel| {
        tokio::spawn(control::redis::serve(
            channel,
            controller.clone(),
            shutdown.clone(),
        ))
    });

    let heartbeat = tokio::spawn(heartbeat(
        controller.recordings.watch(),
        |target| target.active.is_some(),
        alive_path,
        shutdown.clone(),
    ));

    // Only a proxy that serves HTTPS takes SIGHUP as "read the certificate again"; for
    // any other, a hang-up stops it, as it always did.
    let reload_task = settings.tls.is_some().then(|| {
        tokio::spawn(reload_on_sighup(
            controller.proxy.listener.clone(),
            shutdown.clone(),
        ))
    });

    // One line on stdout that scripts (and the tests) can wait for.
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!(
        "heliosburn ready: proxy {scheme}://{proxy_addr} -> {}, management http://{mgmt_addr}",
        forwarder.target().upstream
    );
    tracing::info!(proxy = %proxy_addr, management = %mgmt_addr, upstream = %forwarder.target().upstream, "started");

    signalled.await;
    tracing::info!("shutting down: no new connections; letting exchanges in flight finish");
    shutdown.cancel();
    let _ = proxy_task.await;
    let _ = mgmt_task.await;
    if let Some(t) = control_task {
        let _ = t.await;
    }
    // The exchanges in flight have finished: a recording still running ends here, with
    // what they sent, so that it reads as stopped (not as running) after a restart.
    if controller.recordings.target().active.is_some() {
        if let Err(e) = controller.recordings.stop(None).await {
            tracing::warn!(error = %e, "cannot stop the running recording");
        }
    }
    modules.stop_all().await;
    let _ = heartbeat.await;
    if let Some(t) = reload_task {
        let _ = t.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP reloads the listener's certificate from its files (as nginx does), keeping the
/// connections open; a file that cannot be used is logged and the old one stays. The
/// handler is installed when this is called (before the ready line), the wait returned.
fn reload_on_sighup(
    listener: crate::proxy::ListenerHandle,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let hup = signal(SignalKind::hangup());
        async move {
            let mut hup = match hup {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGHUP; reload the certificate with POST /proxy/tls/reload");
                    return;
                }
            };
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    got = hup.recv() => if got.is_none() { return },
                }
                if let Err(e) = listener.reload_tls() {
                    tracing::warn!("SIGHUP: cannot reload the listener's certificate: {e}");
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (listener, shutdown);
        async {}
    }
}

/// Where a running recording's heartbeat is kept in the data directory.
const ALIVE_FILE: &str = "recording.alive";
/// How often it beats (the interval below is the same second).
const HEARTBEAT: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// While a recording runs, writes the time when it starts and every [`HEARTBEAT`], so
/// that after a crash the recording is known to have run until then.
async fn heartbeat<T: Send + Sync>(
    mut target: tokio::sync::watch::Receiver<T>,
    running: impl Fn(&T) -> bool,
    path: std::path::PathBuf,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            changed = target.changed() => if changed.is_err() { return },
        }
        if !running(&target.borrow_and_update()) {
            continue;
        }
        let now = chrono::Utc::now().to_rfc3339();
        match std::fs::write(&path, now) {
            Ok(()) => failing = false,
            Err(e) if !std::mem::replace(&mut failing, true) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the recording's heartbeat: after a crash, its end is taken from its last capture");
            }
            Err(_) => {}
        }
    }
}

/// Installs the SIGINT/SIGTERM handlers now and returns the wait for either. Installed
/// before the ready line, so a signal sent as soon as that line is read is not met by the
/// default action (death by signal instead of a drain and exit 0).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let handlers = signal(SignalKind::terminate())
            .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
        async move {
            match handlers {
                Ok((mut term, mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the proxy");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
