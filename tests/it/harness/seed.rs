//! The seed's distributed setup for the tests: Redis (the shared server on 6379, or a
//! private `redis-server` a test can stop and restart), the MongoDB stand-in, the seed's
//! `modules.yaml` pointed at names of the test's own, and a control-channel client.
//!
//! Every test gets its own channel, sorted-set key, control channels and MongoDB database
//! (unique names), so tests run in parallel without seeing each other's traffic.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mongodb::bson::Document;
use redis::aio::{MultiplexedConnection, PubSubStream};
use serde_json::{json, Value};

pub use super::mongo::{mongo_uri, MongoDefects, TestMongo};

use super::client::Resp;
use super::proxy::{ProxyBuilder, TestProxy};
use super::upstream::Upstream;

/// The Redis every machine of this project runs (`.ci/run` starts it where it is not).
pub const SHARED_REDIS_PORT: u16 = 6379;

/// The seed's `modules.yaml` as the repository ships it (top-level keys aligned).
pub const SEED_MODULES: &str = include_str!("../../../examples/seed-modules.yaml");

/// A name no other test (or run) uses.
pub fn unique(prefix: &str) -> String {
    format!("hb-it.{prefix}.{}", uuid::Uuid::new_v4().simple())
}

/// Polls `check` every 50 ms until it returns `Some`, at most `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Redis

pub fn redis_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

pub async fn redis_conn(port: u16) -> MultiplexedConnection {
    redis::Client::open(redis_url(port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis on 127.0.0.1:{port}: {e}"))
}

/// A raw `SUBSCRIBE`, as `redis-cli SUBSCRIBE channel` would do it.
pub async fn subscribe(port: u16, channel: &str) -> PubSubStream {
    let client = redis::Client::open(redis_url(port)).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(channel).await.unwrap();
    pubsub.into_on_message()
}

/// The next message on a subscription, as JSON; `None` when none comes within `timeout`.
pub async fn next_json(sub: &mut PubSubStream, timeout: Duration) -> Option<Value> {
    let msg = tokio::time::timeout(timeout, sub.next()).await.ok()??;
    Some(
        serde_json::from_slice(msg.get_payload_bytes()).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(msg.get_payload_bytes())
            )
        }),
    )
}

/// How many clients subscribe to `channel` (`PUBSUB NUMSUB`).
pub async fn numsub(conn: &mut MultiplexedConnection, channel: &str) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(conn)
        .await
        .unwrap();
    n
}

/// Every member of a sorted set with its score, oldest first.
pub async fn zrange(conn: &mut MultiplexedConnection, key: &str) -> Vec<(String, i64)> {
    let all: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(conn)
        .await
        .unwrap();
    all.into_iter().map(|(m, s)| (m, s as i64)).collect()
}

/// A private `redis-server` on a free port, which a test can stop and start again.
/// Killed when dropped.
pub struct TestRedis {
    pub port: u16,
    /// `--requirepass`, when the server was started with one.
    password: Option<String>,
    /// Where an append-only file keeps every write (synced each time), for a server that
    /// loses nothing it acknowledged across a kill.
    aof_dir: Option<std::path::PathBuf>,
    child: Option<Child>,
}

impl TestRedis {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server that asks every client for `password` (`--requirepass`).
    pub async fn with_password(password: &str) -> Self {
        Self::start_with(Some(password.to_owned())).await
    }

    async fn start_with(password: Option<String>) -> Self {
        let mut r = Self {
            port: super::closed_port(),
            password,
            aof_dir: None,
            child: None,
        };
        r.restart().await;
        r
    }

    /// A server with `appendonly yes` and `appendfsync always` in a directory of its own:
    /// what it acknowledged survives `kill -9`.
    pub async fn persistent() -> Self {
        let port = super::closed_port();
        let dir =
            std::env::temp_dir().join(format!("heliosburn-it-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Self {
            port,
            password: None,
            aof_dir: Some(dir),
            child: None,
        };
        r.restart().await;
        r
    }

    /// `redis://[:password@]127.0.0.1:port/`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/", self.port),
            None => redis_url(self.port),
        }
    }

    /// Kills the server at once (SIGKILL): connections break as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts the server on the same port and waits until it answers PING.
    pub async fn restart(&mut self) {
        self.kill();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no"]);
        match &self.aof_dir {
            Some(dir) => cmd
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir),
            None => cmd.args(["--appendonly", "no"]),
        };
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (Debian package redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                    let pong: Result<String, _> = redis::cmd("PING").query_async(&mut c).await;
                    if pong.is_ok() {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.aof_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The seed's configuration, on names of the test's own

/// The names one test uses: feed channel, window key, control channels, MongoDB database.
pub struct Seed {
    pub redis_port: u16,
    pub channel: String,
    pub key: String,
    pub collection: String,
    pub request_channel: String,
    pub response_channel: String,
    pub mongo: TestMongo,
}

impl Seed {
    pub async fn new(redis_port: u16) -> Self {
        Self {
            redis_port,
            channel: unique("traffic"),
            key: unique("window"),
            collection: "traffic".into(),
            request_channel: unique("mgmt-request"),
            response_channel: unique("mgmt-response"),
            mongo: TestMongo::new().await,
        }
    }

    /// The seed's `modules.yaml` exactly as shipped, but for the Redis port and the
    /// channel, key and database names, which become this test's own.
    pub fn modules_yaml(&self) -> String {
        let mut text = SEED_MODULES.to_owned();
        let mut replace = |from: &str, to: &str, times: usize| {
            assert_eq!(
                text.matches(from).count(),
                times,
                "examples/seed-modules.yaml changed: `{from}`"
            );
            text = text.replace(from, to);
        };
        replace(
            "redis_key: 'heliosburn.traffic'",
            &format!("redis_key: '{}'", self.key),
            1,
        );
        replace("'heliosburn.traffic'", &format!("'{}'", self.channel), 3);
        replace(
            "redis_port: 6379",
            &format!("redis_port: {}", self.redis_port),
            3,
        );
        replace(
            "mongo_db: 'proxy'",
            &format!("mongo_db: '{}'", self.mongo.name()),
            1,
        );
        replace(
            "mongo_collection: 'traffic'",
            &format!("mongo_collection: '{}'", self.collection),
            1,
        );
        text
    }

    /// Only the seed's TrafficReader (a proxy that publishes and records nothing itself).
    pub fn reader_only_yaml(&self) -> String {
        format!(
            "pipeline:\n  [{{ name: 'TrafficReader', kwargs: {{ redis_host: '127.0.0.1', \
             redis_port: {}, redis_db: 0, redis_pub_queue: '{}' }} }}]\nsupport: []\n",
            self.redis_port, self.channel
        )
    }

    /// Only the seed's support modules, with an empty pipeline: a recorder process.
    pub fn support_only_yaml(&self) -> String {
        let seed = self.modules_yaml();
        let support = &seed[seed.find("\nsupport:").expect("a support section")..];
        format!("pipeline: []{support}")
    }

    /// A settings file whose `control:` section names this test's control channels.
    pub fn settings_yaml(&self) -> String {
        format!(
            "control:\n  redis_host: 127.0.0.1\n  redis_port: {}\n  redis_db: 0\n  \
             request_channel: {}\n  response_channel: {}\n",
            self.redis_port, self.request_channel, self.response_channel
        )
    }

    /// A proxy in front of `up` on the seed's modules and this test's control channels.
    pub fn proxy(&self, up: &Upstream) -> ProxyBuilder {
        TestProxy::builder()
            .upstream(up)
            .config_yaml(&self.settings_yaml())
            .modules_yaml(&self.modules_yaml())
    }

    /// The traffic documents in `mongo_db.mongo_collection`, by a plain driver query.
    pub async fn traffic_docs(&self) -> Vec<Document> {
        self.mongo.all(&self.collection).await
    }
}

/// Removes the window's sorted set from Redis (the database goes with `mongo`). Declare
/// the `Seed` before the proxies that use it: they are then killed first, and the pause
/// lets a push still under way land before the key is deleted.
impl Drop for Seed {
    fn drop(&mut self) {
        let (port, key) = (self.redis_port, self.key.clone());
        let _ = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let Ok(client) = redis::Client::open(redis_url(port)) else {
                return;
            };
            if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(2)) {
                let _: Result<i64, _> = redis::cmd("DEL").arg(&key).query(&mut c);
            }
        })
        .join();
    }
}

// ---------------------------------------------------------------------------------------
// The management API, for recordings and status

/// Creates a recording through the HTTP API and returns its id.
pub async fn create_recording(proxy: &TestProxy, name: &str) -> String {
    let r = proxy
        .mgmt_post("/recording", json!({ "name": name, "description": "it" }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

pub async fn start_recording(proxy: &TestProxy, id: &str) -> Resp {
    let r = proxy
        .mgmt_post(&format!("/recording/{id}/start"), json!(null))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

pub async fn stop_recording(proxy: &TestProxy, id: &str) -> Resp {
    let r = proxy
        .mgmt_post(&format!("/recording/{id}/stop"), json!(null))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

/// Every traffic document of a recording as the API pages it.
pub async fn api_traffic(proxy: &TestProxy, id: &str) -> Vec<Value> {
    let r = proxy
        .mgmt_get(&format!("/recording/{id}/traffic?start=0&offset=10000"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["traffic"].as_array().unwrap().clone()
}

/// One module's line of `GET /status`.
pub async fn module_status(proxy: &TestProxy, module: &str) -> Value {
    let r = proxy.mgmt_get(&format!("/status?module={module}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["message"][0].clone()
}

/// A counter of one module in `GET /status`.
pub async fn counter(proxy: &TestProxy, module: &str, name: &str) -> u64 {
    let m = module_status(proxy, module).await;
    m["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter `{name}` in {m}"))
}

/// Transaction ids that occur more than once.
pub fn duplicates<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    ids.into_iter().filter(|id| !seen.insert(*id)).collect()
}

// ---------------------------------------------------------------------------------------
// The control channel

/// A client of the Redis control channel: publishes requests, reads replies.
pub struct ControlClient {
    conn: MultiplexedConnection,
    replies: PubSubStream,
    request_channel: String,
    next_key: u64,
}

impl ControlClient {
    /// Subscribes to the replies, then waits until the proxy listens for requests.
    pub async fn connect(seed: &Seed) -> Self {
        let replies = subscribe(seed.redis_port, &seed.response_channel).await;
        let conn = redis_conn(seed.redis_port).await;
        wait_for_subscriber(&conn, &seed.request_channel).await;
        Self {
            conn,
            replies,
            request_channel: seed.request_channel.clone(),
            next_key: 0,
        }
    }

    /// Publishes a payload as it is; returns how many subscribers got it.
    pub async fn publish(&mut self, payload: &str) -> i64 {
        redis::cmd("PUBLISH")
            .arg(&self.request_channel)
            .arg(payload)
            .query_async(&mut self.conn)
            .await
            .unwrap()
    }

    /// The next reply, if one comes within `timeout`.
    pub async fn reply(&mut self, timeout: Duration) -> Option<Value> {
        next_json(&mut self.replies, timeout).await
    }

    /// Sends `{"operation", "param", "key"}` with a fresh key and returns the reply,
    /// checking it answers that key and carries only `code`, `message` and `key`.
    pub async fn ask(&mut self, operation: &str, param: Value) -> Value {
        self.next_key += 1;
        let key = format!("key-{}-{operation}", self.next_key);
        let req = json!({ "operation": operation, "param": param, "key": key });
        assert_eq!(self.publish(&req.to_string()).await, 1, "one proxy listens");
        let reply = self
            .reply(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("no reply to {req} within 30 s"));
        assert_eq!(reply["key"], key, "reply to {req}: {reply}");
        let mut fields: Vec<&str> = reply
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        // The seed's reply, and for `status` the proxy's own state beside its list.
        let expected: &[&str] = if operation == "status" && reply["code"] == 200 {
            &["code", "key", "message", "proxy"]
        } else {
            &["code", "key", "message"]
        };
        assert_eq!(fields, expected, "{reply}");
        reply
    }
}

/// Waits (at most 15 s) until something subscribes to `channel`: the proxy's control
/// channel is listening.
pub async fn wait_for_subscriber(conn: &MultiplexedConnection, channel: &str) {
    eventually(
        "the proxy subscribes to its control channel",
        Duration::from_secs(15),
        || {
            let (mut conn, channel) = (conn.clone(), channel.to_owned());
            async move { (numsub(&mut conn, &channel).await > 0).then_some(()) }
        },
    )
    .await;
}
