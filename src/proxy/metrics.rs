//! What the proxy counts for Prometheus (`GET /metrics`): exchanges by method and status
//! class, their duration, upstream errors by kind, body bytes each way, open
//! connections, and the modules' counters as they are when scraped, with the histograms
//! modules keep (the recorder's store write latency).
//!
//! One registry per proxy, made by `app` and handed in (no global registry); exchanges
//! count into it as they complete, off nothing but atomics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExchangeLabels {
    method: &'static str,
    /// `2xx` … `5xx`, or `none` for an exchange that got no status.
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    module: String,
    counter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabel {
    module: String,
}

/// A histogram a module keeps (modules observe into it; the metrics read it when scraped).
#[derive(Clone, Debug)]
pub struct ModuleHistogram {
    /// The metric's name, after the `heliosburn_` prefix.
    pub name: &'static str,
    pub help: &'static str,
    pub histogram: Histogram,
}

impl ModuleHistogram {
    /// Seconds, from 0.5 ms to about 16 s, doubling: a store write's range.
    pub fn seconds(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            histogram: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        }
    }
}

/// The modules' histograms as the last scrape listed them, encoded one family per name
/// with a `module` label.
#[derive(Debug, Default)]
struct ModuleHistograms(Arc<Mutex<Vec<(String, ModuleHistogram)>>>);

impl Collector for ModuleHistograms {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut sorted: Vec<&(String, ModuleHistogram)> = list.iter().collect();
        sorted.sort_by_key(|(_, h)| h.name);
        for members in sorted.chunk_by(|a, b| a.1.name == b.1.name) {
            let first = &members[0].1;
            let mut family = encoder.encode_descriptor(
                first.name,
                first.help,
                None,
                prometheus_client::metrics::MetricType::Histogram,
            )?;
            for (module, h) in members {
                let labels = ModuleLabel {
                    module: module.clone(),
                };
                h.histogram.encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Why an exchange got no answer of the upstream's, as the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// Refused, unreachable, or the name did not resolve.
    Connect,
    /// No connection, or no response head, in time.
    Timeout,
    /// The TLS handshake failed, the protocol is not spoken, or the request was refused
    /// unprocessed.
    Declined,
    /// The connection broke before a response.
    Broken,
    /// A response the proxy cannot pass on.
    BadResponse,
}

impl UpstreamErrorKind {
    fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Declined => "declined",
            Self::Broken => "broken",
            Self::BadResponse => "bad_response",
        }
    }
}

/// The proxy's metrics and the registry that encodes them.
pub struct ProxyMetrics {
    /// Encoding reads it whole; a lock only scrapes take.
    registry: Mutex<Registry>,
    exchanges: Family<ExchangeLabels, Counter>,
    duration: Histogram,
    upstream_errors: Family<ErrorLabels, Counter>,
    bytes_received: Counter,
    bytes_sent: Counter,
    open_connections: Gauge,
    modules: Family<ModuleLabels, Gauge>,
    module_histograms: Arc<Mutex<Vec<(String, ModuleHistogram)>>>,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyMetrics {
    pub fn new() -> Self {
        let exchanges = Family::<ExchangeLabels, Counter>::default();
        // 1 ms to about 65 s, doubling.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let upstream_errors = Family::<ErrorLabels, Counter>::default();
        let (bytes_received, bytes_sent) = (Counter::default(), Counter::default());
        let open_connections = Gauge::default();
        let modules = Family::<ModuleLabels, Gauge>::default();
        let mut registry = Registry::with_prefix("heliosburn");
        registry.register(
            "exchanges",
            "Exchanges the proxy completed, by request method and response status class",
            exchanges.clone(),
        );
        registry.register(
            "exchange_duration_seconds",
            "From the request's arrival to the response's last byte",
            duration.clone(),
        );
        registry.register(
            "upstream_errors",
            "Exchanges the upstream did not answer, by why",
            upstream_errors.clone(),
        );
        registry.register(
            "request_body_bytes",
            "Request body bytes taken from clients",
            bytes_received.clone(),
        );
        registry.register(
            "response_body_bytes",
            "Response body bytes sent to clients",
            bytes_sent.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open on the proxy listener",
            open_connections.clone(),
        );
        registry.register(
            "module_counter",
            "Each module's counters (as GET /status shows them, nested ones joined by _), when scraped",
            modules.clone(),
        );
        let module_histograms = Arc::<Mutex<Vec<_>>>::default();
        registry.register_collector(Box::new(ModuleHistograms(module_histograms.clone())));
        Self {
            registry: Mutex::new(registry),
            exchanges,
            duration,
            upstream_errors,
            bytes_received,
            bytes_sent,
            open_connections,
            modules,
            module_histograms,
        }
    }

    /// One exchange completed: its method, status, duration and body bytes each way,
    /// and the upstream error it met, if any.
    pub fn exchange(
        &self,
        method: &http::Method,
        status: Option<http::StatusCode>,
        took: Duration,
        received: u64,
        sent: u64,
        error: Option<UpstreamErrorKind>,
    ) {
        let status = match status.map(|s| s.as_u16() / 100) {
            Some(1) => "1xx",
            Some(2) => "2xx",
            Some(3) => "3xx",
            Some(4) => "4xx",
            Some(5) => "5xx",
            _ => "none",
        };
        // Methods are a small set in practice, but a client may send any token: others
        // share one label, so the series stay bounded.
        let method = match *method {
            http::Method::GET => "GET",
            http::Method::POST => "POST",
            http::Method::PUT => "PUT",
            http::Method::DELETE => "DELETE",
            http::Method::PATCH => "PATCH",
            http::Method::HEAD => "HEAD",
            http::Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        self.exchanges
            .get_or_create(&ExchangeLabels { method, status })
            .inc();
        self.duration.observe(took.as_secs_f64());
        self.bytes_received.inc_by(received);
        self.bytes_sent.inc_by(sent);
        if let Some(kind) = error {
            self.upstream_errors
                .get_or_create(&ErrorLabels { kind: kind.label() })
                .inc();
        }
    }

    /// The text exposition (OpenMetrics), with the gauges read now: the modules'
    /// counters as `(module, counter, value)`, and their histograms.
    pub fn encode(
        &self,
        open_connections: usize,
        modules: impl IntoIterator<Item = (String, String, u64)>,
        histograms: Vec<(String, ModuleHistogram)>,
    ) -> String {
        *self
            .module_histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = histograms;
        self.open_connections
            .set(i64::try_from(open_connections).unwrap_or(i64::MAX));
        for (module, counter, value) in modules {
            self.modules
                .get_or_create(&ModuleLabels { module, counter })
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges_are_counted_by_method_and_status_class() {
        let m = ProxyMetrics::new();
        let ms = Duration::from_millis(3);
        let ok = Some(http::StatusCode::OK);
        for _ in 0..2 {
            m.exchange(&http::Method::GET, ok, ms, 0, 10, None);
        }
        let weird = http::Method::from_bytes(b"BREW").unwrap();
        let bad = Some(http::StatusCode::BAD_GATEWAY);
        m.exchange(&weird, bad, ms, 5, 0, Some(UpstreamErrorKind::Connect));
        let writes = ModuleHistogram::seconds("store_write_seconds", "Store writes");
        writes.histogram.observe(0.002);
        let second = ModuleHistogram::seconds("store_write_seconds", "Store writes");
        second.histogram.observe(0.5);
        let histograms = vec![
            ("TrafficRecorder".to_owned(), writes),
            ("TrafficRecorder#2".to_owned(), second),
        ];
        let text = m.encode(7, [("R".to_owned(), "published".to_owned(), 3)], histograms);
        assert!(
            text.contains(r#"heliosburn_exchanges_total{method="GET",status="2xx"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"heliosburn_exchanges_total{method="other",status="5xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"heliosburn_upstream_errors_total{kind="connect"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("heliosburn_response_body_bytes_total 20"),
            "{text}"
        );
        assert!(text.contains("heliosburn_open_connections 7"), "{text}");
        assert!(
            text.contains(r#"heliosburn_module_counter{module="R",counter="published"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"heliosburn_store_write_seconds_count{module="TrafficRecorder"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"heliosburn_store_write_seconds_bucket{le="0.002",module="TrafficRecorder"} 1"#
            ),
            "{text}"
        );
        // Two recorders: one family, two label sets.
        assert_eq!(
            text.matches("# TYPE heliosburn_store_write_seconds histogram")
                .count(),
            1,
            "{text}"
        );
        assert!(
            text.contains(r#"heliosburn_store_write_seconds_sum{module="TrafficRecorder#2"} 0.5"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
