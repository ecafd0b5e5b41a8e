//! Wiring: configuration in, every part built and started, shutdown on a signal.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::config::{ConfigError, ModulesConfig, Overrides, Settings, SettingsFile};
use crate::control::{self, Controller};
use crate::feed::memory::MemoryBus;
use crate::modules::registry::{self, BuildContext, ModuleSet};
use crate::modules::traffic_recorder::{RecorderKwargs, StoreTarget};
use crate::modules::traffic_streamer::StreamerKwargs;
use crate::proxy::pipeline::Pipeline;
use crate::proxy::{listener, ForwardSettings, Forwarder, Proxy, Target};
use crate::recording::Recordings;
use crate::store::mongo::MongoStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use crate::window::memory::MemoryWindow;
use crate::window::redis::RedisWindow;
use crate::window::Window;

/// The whole configuration, validated.
pub struct Loaded {
    pub settings: Settings,
    pub modules: ModulesConfig,
}

/// Reads both files and the flags, reporting the problems of every file together.
pub fn load(args: &RunArgs, mgmt: Option<String>) -> Result<Loaded, ConfigError> {
    let mut problems = Vec::new();
    let (file_name, file) = match &args.config {
        Some(p) => (p.display().to_string(), SettingsFile::load(p)),
        None => ("(flags)".to_owned(), Ok(SettingsFile::default())),
    };
    let overrides = Overrides {
        bind: args.bind.clone(),
        upstream: args.upstream.clone(),
        mgmt,
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
    let modules = match &args.modules {
        Some(p) => ModulesConfig::load(p),
        None => Ok(registry::default_config()),
    };
    let modules = match modules.and_then(|m| registry::validate(&m).map(|()| m)) {
        Ok(m) => Some(m),
        Err(e) => {
            problems.extend(e.problems);
            None
        }
    };
    match (settings, modules) {
        (Some(settings), Some(modules)) if problems.is_empty() => Ok(Loaded { settings, modules }),
        _ => Err(ConfigError { problems }),
    }
}

/// Kwargs of the first module of that name, typed.
fn kwargs_of<T: serde::de::DeserializeOwned + Default>(cfg: &ModulesConfig, name: &str) -> T {
    cfg.support
        .iter()
        .find(|e| registry::lookup(&e.name).is_some_and(|s| s.name == name))
        .and_then(|e| yaml_serde::from_value(e.kwargs.clone()).ok())
        .unwrap_or_default()
}

async fn open_store(cfg: &ModulesConfig, data_dir: &Path) -> Result<Arc<dyn Store>> {
    let kwargs: RecorderKwargs = kwargs_of(cfg, "TrafficRecorder");
    Ok(match kwargs.store() {
        StoreTarget::Sqlite => Arc::new(SqliteStore::open(data_dir).with_context(|| {
            format!(
                "opening the embedded store in {} (pass --data-dir)",
                data_dir.display()
            )
        })?),
        StoreTarget::Mongo {
            uri,
            db,
            collection,
        } => Arc::new(
            MongoStore::connect(&uri, &db, &collection)
                .await
                .with_context(|| {
                    format!("connecting to MongoDB at {uri} (TrafficRecorder kwargs)")
                })?,
        ),
    })
}

async fn open_window(cfg: &ModulesConfig) -> Result<Arc<dyn Window>> {
    let kwargs: StreamerKwargs = kwargs_of(cfg, "TrafficStreamer");
    Ok(match kwargs.redis() {
        Some(r) => Arc::new(
            RedisWindow::connect(
                &crate::redis_link::Endpoint::unchecked(&r.url),
                &kwargs.key(),
            )
            .await
            .with_context(|| {
                format!("connecting to Redis at {} (TrafficStreamer kwargs)", r.url)
            })?,
        ),
        None => Arc::new(MemoryWindow::default()),
    })
}

/// Where the control channel lives: the settings' `control:` section, or else the Redis
/// the modules use.
fn control_channel(loaded: &Loaded) -> Option<crate::config::settings::ControlChannel> {
    if let Some(c) = &loaded.settings.control {
        return Some(c.clone());
    }
    let reader = loaded
        .modules
        .pipeline
        .iter()
        .find(|e| e.name == "TrafficReader");
    let redis = reader
        .and_then(|e| {
            yaml_serde::from_value::<crate::modules::traffic_reader::ReaderKwargs>(e.kwargs.clone())
                .ok()
        })
        .and_then(|k| k.redis())
        .or_else(|| kwargs_of::<RecorderKwargs>(&loaded.modules, "TrafficRecorder").redis())
        .or_else(|| kwargs_of::<StreamerKwargs>(&loaded.modules, "TrafficStreamer").redis())?;
    Some(crate::config::settings::ControlChannel::new(
        crate::redis_link::Endpoint::unchecked(&redis.url),
    ))
}

/// Runs the proxy until SIGINT/SIGTERM, then drains and stops.
pub async fn run(loaded: Loaded, modules_path: Option<&Path>) -> Result<()> {
    let Loaded {
        settings,
        modules: modules_cfg,
    } = &loaded;
    let upstream = settings.upstream.clone().context(
        "no upstream: pass --upstream http://HOST:PORT or set `upstream:` in the settings file (--config)",
    )?;
    let shutdown = CancellationToken::new();

    let store = open_store(modules_cfg, &settings.data_dir).await?;
    let window = open_window(modules_cfg).await?;
    let recordings = Arc::new(Recordings::new(store));
    recordings
        .close_interrupted()
        .await
        .context("closing recordings a crash left running")?;
    let ctx = BuildContext {
        bus: MemoryBus::new(settings.bus_capacity),
        recordings: recordings.clone(),
        window: window.clone(),
    };
    let modules = Arc::new(
        ModuleSet::build(modules_cfg, ctx, modules_path.map(Path::to_path_buf))
            .await
            .context("building the modules")?,
    );
    modules.start_all().await.context("starting the modules")?;

    let pipeline = Arc::new(Pipeline::new(modules.pipeline.clone()));
    let target = Target::new(upstream).map_err(anyhow::Error::msg)?;
    let forward = ForwardSettings {
        preserve_host: settings.preserve_host,
        connect_timeout: settings.connect_timeout,
        upstream_timeout: settings.upstream_timeout,
    };
    let forwarder = Arc::new(Forwarder::new(target, pipeline, forward));

    let proxy_listener = TcpListener::bind(settings.bind)
        .await
        .with_context(|| format!("cannot listen on {} (pass --bind HOST:PORT)", settings.bind))?;
    let mgmt_listener = TcpListener::bind(settings.mgmt).await.with_context(|| {
        format!(
            "cannot listen for management on {} (pass --mgmt HOST:PORT)",
            settings.mgmt
        )
    })?;
    let proxy_addr = proxy_listener.local_addr()?;
    let mgmt_addr = mgmt_listener.local_addr()?;
    let (listener, proxy_task) = listener::spawn(
        proxy_listener,
        forwarder.clone(),
        shutdown.clone(),
        settings.drain_timeout,
    )?;

    let controller = Arc::new(Controller {
        proxy: Proxy {
            forwarder: forwarder.clone(),
            listener,
        },
        modules: modules.clone(),
        recordings,
        window,
    });
    let router = control::http::router(controller.clone());
    let mgmt_shutdown = shutdown.clone();
    let mgmt_task = tokio::spawn(async move {
        axum::serve(mgmt_listener, router)
            .with_graceful_shutdown(mgmt_shutdown.cancelled_owned())
            .await
    });
    let control_task = control_channel(&loaded).map(|channel| {
        tokio::spawn(control::redis::serve(
            channel,
            controller.clone(),
            shutdown.clone(),
        ))
    });

    let signalled = shutdown_signal();
    // One line on stdout that scripts (and the tests) can wait for.
    println!(
        "heliosburn ready: proxy http://{proxy_addr} -> {}, management http://{mgmt_addr}",
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
    tracing::info!("stopped");
    Ok(())
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
