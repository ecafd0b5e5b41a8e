//! Control operations: one command type, decoded from the HTTP API or the Redis control
//! channel, applied by one [`Controller`] (mini-redis's `Command` + `apply`).

pub mod access;
pub mod client;
pub mod http;
pub mod import;
pub mod redis;
pub mod selftest;
pub mod stream;
pub mod ui;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::Upstream;
use crate::modules::{ModuleOpError, ModuleSet};
use crate::proxy::{ListenerCommand, ListenerError, Proxy, UpstreamTarget};
use crate::recording::{RecordingError, Recordings};
use crate::window::tail::Tail;
use crate::window::Window;

/// A control request as both transports carry it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ControlRequest {
    pub operation: String,
    #[serde(default)]
    pub param: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Value>,
}

/// The reply: an HTTP-like code and a message (text or data).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    pub code: u16,
    pub message: Value,
    /// The proxy's own state, beside a `status` reply's list of modules. Boxed: a reply
    /// is also the error of `ControlCommand::parse`, and errors are kept small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Box<Value>>,
}

impl Reply {
    pub fn ok(message: impl Serialize) -> Self {
        Self {
            code: 200,
            message: serde_json::to_value(message).unwrap_or(Value::Null),
            proxy: None,
        }
    }

    pub fn error(code: u16, message: impl ToString) -> Self {
        Self {
            code,
            message: Value::String(message.to_string()),
            proxy: None,
        }
    }
}

/// The operations of the control channel and the management API.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlCommand {
    /// `start`/`stop`/`reset`/`reload` with a module name act on that module; `start` and
    /// `stop` without one act on the proxy listener, `reset`/`reload` on every module.
    Start(Option<String>),
    Stop(Option<String>),
    Reset(Option<String>),
    Reload(Option<String>),
    UpstreamHost(String),
    UpstreamPort(u16),
    BindHost(IpAddr),
    BindPort(u16),
    StartRecording(String),
    StopRecording(Option<String>),
    Status(Option<String>),
    Test,
}

pub const OPERATIONS: &[&str] = &[
    "start",
    "stop",
    "reset",
    "reload",
    "upstream_host",
    "upstream_port",
    "bind_host",
    "bind_port",
    "start_recording",
    "stop_recording",
    "status",
    "test",
];

impl ControlCommand {
    /// Decodes an operation and its param; the error is a 400 reply naming the problem.
    pub fn parse(operation: &str, param: &Value) -> Result<Self, Reply> {
        let bad = |what: &str| {
            Reply::error(
                400,
                format!("operation `{operation}`: param must be {what}"),
            )
        };
        let opt_name = || match param {
            Value::Null => Ok(None),
            Value::String(s) => Ok(module_or_all(s)),
            _ => Err(bad("a module name (a string) or absent")),
        };
        let port = || match param {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|p| *p != 0),
            Value::String(s) => s.trim().parse::<u16>().ok().filter(|p| *p != 0),
            _ => None,
        };
        let text = || match param {
            Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            _ => Err(bad("a non-empty string")),
        };
        Ok(match operation {
            "start" => Self::Start(opt_name()?),
            "stop" => Self::Stop(opt_name()?),
            "reset" => Self::Reset(opt_name()?),
            "reload" => Self::Reload(opt_name()?),
            "status" => Self::Status(opt_name()?),
            "test" => Self::Test,
            "upstream_host" => {
                let host = text()?;
                Upstream::parse(&format!("{host}:1"))
                    .map_err(|_| bad("a host name or IP address"))?;
                Self::UpstreamHost(host)
            }
            "upstream_port" => {
                Self::UpstreamPort(port().ok_or_else(|| bad("a port from 1 to 65535"))?)
            }
            "bind_host" => Self::BindHost(text()?.parse().map_err(|_| bad("an IP address"))?),
            "bind_port" => Self::BindPort(port().ok_or_else(|| bad("a port from 1 to 65535"))?),
            "start_recording" => Self::StartRecording(text().map_err(|_| bad("a recording id"))?),
            "stop_recording" => Self::StopRecording(match param {
                Value::Null => None,
                _ => Some(text().map_err(|_| bad("a recording id or absent"))?),
            }),
            other => {
                return Err(Reply::error(
                    400,
                    format!(
                        "unknown operation `{other}`; operations are: {}",
                        OPERATIONS.join(", ")
                    ),
                ))
            }
        })
    }
}

/// The module an operation names, or `None` for all of them: the seed's clients send an
/// empty name or `proxy` for the whole proxy. Both transports read names through this.
pub fn module_or_all(name: &str) -> Option<String> {
    (!name.is_empty() && name != "proxy").then(|| name.to_owned())
}

/// Everything the operations act on.
pub struct Controller {
    pub proxy: Proxy,
    pub modules: Arc<ModuleSet>,
    pub recordings: Arc<Recordings>,
    pub window: Arc<dyn Window>,
    pub tail: Tail,
}

impl Controller {
    /// Decodes and applies a request from either transport.
    pub async fn handle(&self, req: &ControlRequest) -> Reply {
        match ControlCommand::parse(&req.operation, &req.param) {
            Ok(cmd) => self.apply(cmd).await,
            Err(reply) => reply,
        }
    }

    pub async fn apply(&self, cmd: ControlCommand) -> Reply {
        match cmd {
            ControlCommand::Start(None) => self.listener(ListenerCommand::Start).await,
            ControlCommand::Stop(None) => self.listener(ListenerCommand::Stop).await,
            ControlCommand::Start(Some(m)) => module_reply(self.modules.start(&m).await),
            ControlCommand::Stop(Some(m)) => module_reply(self.modules.stop(&m).await),
            ControlCommand::Reset(Some(m)) => module_reply(self.modules.reset(&m).await),
            ControlCommand::Reload(Some(m)) => module_reply(self.modules.reload(&m).await),
            ControlCommand::Reset(None) | ControlCommand::Reload(None) => {
                let reload = matches!(cmd, ControlCommand::Reload(None));
                let mut out = Vec::new();
                for n in self.modules.names() {
                    let r = if reload {
                        self.modules.reload(&n).await
                    } else {
                        self.modules.reset(&n).await
                    };
                    match r {
                        Ok(s) => out.push(s),
                        Err(e) => return module_reply::<()>(Err(e)),
                    }
                }
                Reply::ok(out)
            }
            // `message` is the original API's list of `{module, state, status}`; the
            // proxy's own state rides beside it.
            ControlCommand::Status(name) => match self.modules.status(name.as_deref()) {
                Ok(list) => {
                    let mut proxy = self.proxy_status();
                    // The recording running (or stopped last), accounted for.
                    proxy["recording"] = match self.recordings.current().await {
                        Some((rec, running)) => json!({
                            "id": rec.id,
                            "name": rec.name,
                            "running": running,
                            "accounting": rec.accounting,
                        }),
                        None => Value::Null,
                    };
                    Reply {
                        proxy: Some(Box::new(proxy)),
                        ..Reply::ok(list)
                    }
                }
                Err(e) => module_reply::<()>(Err(e)),
            },
            ControlCommand::UpstreamHost(host) => {
                let now = self.proxy.forwarder.target().upstream.clone();
                self.set_upstream(Upstream { host, ..now })
            }
            ControlCommand::UpstreamPort(port) => {
                let now = self.proxy.forwarder.target().upstream.clone();
                self.set_upstream(Upstream { port, ..now })
            }
            ControlCommand::BindHost(ip) => {
                let port = self.proxy.listener.status().addr.port();
                self.listener(ListenerCommand::Bind(SocketAddr::new(ip, port)))
                    .await
            }
            ControlCommand::BindPort(port) => {
                let ip = self.proxy.listener.status().addr.ip();
                self.listener(ListenerCommand::Bind(SocketAddr::new(ip, port)))
                    .await
            }
            ControlCommand::StartRecording(id) => recording_reply(self.recordings.start(&id).await),
            ControlCommand::StopRecording(id) => {
                recording_reply(self.recordings.stop(id.as_deref()).await)
            }
            ControlCommand::Test => selftest::run(&self.proxy).await,
        }
    }

    pub fn proxy_status(&self) -> Value {
        let l = self.proxy.listener.status();
        let (target, dialer) = (self.proxy.forwarder.target(), self.proxy.forwarder.dialer());
        json!({
            "listening": l.listening,
            "bind": l.addr.to_string(),
            "tls": self.proxy.listener.tls_status(),
            "upstream": target.upstream.to_string(),
            "upstream_protocol": dialer.protocol(),
            "upstream_tls_verify": if !target.upstream.tls {
                "none (plain HTTP)"
            } else if dialer.insecure() {
                "OFF (--upstream-insecure: any certificate is accepted)"
            } else {
                "on"
            },
            "upstream_idle_connections": target.pool.idle(),
            "upstream_h2_connections": target.pool.h2_connections(),
            "connections": self.proxy.listener.connections(),
            "capture": self.proxy.forwarder.capture_stats(),
        })
    }

    fn set_upstream(&self, upstream: Upstream) -> Reply {
        match UpstreamTarget::new(upstream) {
            Ok(t) => {
                tracing::info!(upstream = %t.upstream, "upstream changed");
                self.proxy.forwarder.set_target(t);
                Reply::ok(self.proxy_status())
            }
            Err(e) => Reply::error(400, e),
        }
    }

    /// A listener that cannot listen where it is asked to (the address is taken, not
    /// this machine's, or not permitted) is the request's conflict with the machine, not
    /// the server failing: 409, and it stays as it was.
    async fn listener(&self, cmd: ListenerCommand) -> Reply {
        match self.proxy.listener.command(cmd).await {
            Ok(_) => Reply::ok(self.proxy_status()),
            Err(e @ ListenerError::Bind { .. }) if e.is_the_address() => Reply::error(409, e),
            Err(e @ ListenerError::Bind { .. }) => Reply::error(500, e),
            Err(e @ ListenerError::ShutDown) => Reply::error(503, e),
        }
    }
}

fn module_reply<T: Serialize>(r: Result<T, ModuleOpError>) -> Reply {
    match r {
        Ok(v) => Reply::ok(v),
        Err(e @ ModuleOpError::Unknown { .. }) => Reply::error(404, e),
        Err(e @ ModuleOpError::Config(_)) => Reply::error(400, e.to_string().trim_end()),
        Err(e) => Reply::error(500, e),
    }
}

pub fn recording_reply<T: Serialize>(r: Result<T, RecordingError>) -> Reply {
    match r {
        Ok(v) => Reply::ok(v),
        Err(e) => {
            let code = recording_error_code(&e);
            match e {
                RecordingError::Busy {
                    busy_with,
                    busy_since,
                } => Reply {
                    code,
                    message: json!({
                        "status": "busy",
                        "busySince": busy_since,
                        "busyWith": busy_with,
                        "error": format!("recording {busy_with} is running; stop it first"),
                    }),
                    proxy: None,
                },
                other => Reply::error(code, other),
            }
        }
    }
}

fn recording_error_code(e: &RecordingError) -> u16 {
    match e {
        RecordingError::NotFound(_) => 404,
        RecordingError::Busy { .. } | RecordingError::NotRunning => 409,
        RecordingError::NoRecorder => 503,
        // Not opened (a full disk at start), or out of space: the server's condition.
        RecordingError::Store(crate::store::StoreError::Unavailable(_)) => 503,
        RecordingError::Store(e) if e.is_disk_full() => 507,
        RecordingError::Store(_) => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_decode_with_their_params() {
        assert_eq!(
            ControlCommand::parse("stop", &Value::Null).unwrap(),
            ControlCommand::Stop(None)
        );
        assert_eq!(
            ControlCommand::parse("stop", &json!("TrafficReader")).unwrap(),
            ControlCommand::Stop(Some("TrafficReader".into()))
        );
        assert_eq!(
            ControlCommand::parse("upstream_port", &json!("8081")).unwrap(),
            ControlCommand::UpstreamPort(8081)
        );
        assert_eq!(
            ControlCommand::parse("bind_host", &json!("127.0.0.2")).unwrap(),
            ControlCommand::BindHost("127.0.0.2".parse().unwrap())
        );
    }

    #[test]
    fn bad_requests_say_what_was_wrong() {
        let r = ControlCommand::parse("upstream_port", &json!(70000)).unwrap_err();
        assert_eq!(r.code, 400);
        assert!(r
            .message
            .as_str()
            .unwrap()
            .contains("a port from 1 to 65535"));
        let r = ControlCommand::parse("explode", &Value::Null).unwrap_err();
        assert!(r
            .message
            .as_str()
            .unwrap()
            .contains("unknown operation `explode`"));
        assert_eq!(
            ControlCommand::parse("bind_host", &json!("nope"))
                .unwrap_err()
                .code,
            400
        );
    }
}
