//! Pieces of kwargs shared by several modules.

use serde::{Deserialize, Deserializer};

use http::header::{HeaderName, HeaderValue};

use crate::redis_link::Endpoint;
use crate::resources::{Claim, Claimed, FeedEndpoint, RedisMode, StoreSpec};

/// A port written as a number or, as the seed writes `mongo_port`, a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        let bad = || {
            serde::de::Error::custom(
                "expected a port from 1 to 65535 (a number or a string of digits)",
            )
        };
        let n = match Raw::deserialize(d)? {
            Raw::Num(n) => n,
            Raw::Text(s) => s.trim().parse::<u64>().map_err(|_| bad())?,
        };
        u16::try_from(n)
            .ok()
            .filter(|p| *p != 0)
            .map(Port)
            .ok_or_else(bad)
    }
}

/// A `redis_url` kwarg: `redis://[user:pass@]host[:port][/db]` or `rediss://` for TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl(pub Endpoint);

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Endpoint::parse(&text)
            .map(RedisUrl)
            .map_err(serde::de::Error::custom)
    }
}

/// The Redis a module's kwargs name: `redis_url`, or `redis_host`/`redis_port`/`redis_db`
/// when any of host and port is given; none means the embedded backends.
pub fn redis_endpoint(
    url: &Option<RedisUrl>,
    host: &Option<String>,
    port: Option<Port>,
    db: Option<i64>,
) -> Option<Endpoint> {
    if let Some(RedisUrl(e)) = url {
        return Some(e.clone());
    }
    if host.is_none() && port.is_none() {
        return None;
    }
    let host = host.as_deref().unwrap_or("127.0.0.1");
    Some(Endpoint::from_parts(
        host,
        port.map_or(6379, |p| p.0),
        db.unwrap_or(0),
    ))
}

/// The kwargs that name a module's Redis, for messages.
pub const REDIS_KEYS: &str = "redis_url, redis_host, redis_port, redis_db";

/// A module that names a Redis claims it for the control channel (unless the settings
/// file says where that is).
pub fn control_host_claim(redis: Option<Endpoint>) -> Option<Claimed> {
    redis.map(|e| Claimed {
        claim: Claim::ControlHost(e),
        keys: REDIS_KEYS,
    })
}

/// Header names and values from a kwargs map; the error names the bad one under `what`.
pub fn header_pairs(
    what: &str,
    map: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    map.iter()
        .map(|(k, v)| {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("{what}: `{k}` is not a header name"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("{what}: `{v}` is not a header value"))?;
            Ok((name, value))
        })
        .collect()
}

/// The kwargs that name the store.
pub const STORE_KEYS: &str = "mongo_uri, mongo_host, mongo_port, mongo_db, mongo_collection";

/// The MongoDB store that `mongo_*` kwargs name, when any of `mongo_uri`, `mongo_host`
/// and `mongo_port` is given (the URI wins over host and port).
pub fn mongo_store(
    uri: &Option<String>,
    host: &Option<String>,
    port: Option<Port>,
    db: &Option<String>,
    collection: &Option<String>,
) -> Option<StoreSpec> {
    if uri.is_none() && host.is_none() && port.is_none() {
        return None;
    }
    let uri = uri.clone().unwrap_or_else(|| {
        format!(
            "mongodb://{}:{}/?directConnection=true",
            host.as_deref().unwrap_or("127.0.0.1"),
            port.map_or(27017, |p| p.0)
        )
    });
    Some(StoreSpec::Mongo {
        uri,
        db: db.clone().unwrap_or_else(|| "proxy".into()),
        collection: collection.clone().unwrap_or_else(|| "traffic".into()),
    })
}

/// Checks an optional number against its range; the text names the kwarg.
pub fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    value: Option<T>,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), String> {
    match value {
        Some(v) if !range.contains(&v) => Err(format!(
            "{name}: expected {} to {}, found {v}",
            range.start(),
            range.end()
        )),
        _ => Ok(()),
    }
}

/// A channel or key name as written, or the seed's `heliosburn.traffic`.
pub fn name_or_default(name: &Option<String>) -> String {
    name.clone()
        .unwrap_or_else(|| crate::feed::DEFAULT_CHANNEL.into())
}

/// The stream's key unless a module names one: not the channel's name, which is also the
/// live window's sorted set by default.
pub const DEFAULT_STREAM_KEY: &str = "heliosburn.traffic.stream";

/// The feed a module's Redis kwargs, channel (or stream) name and `redis_mode` point at.
pub fn feed_endpoint(
    redis: Option<Endpoint>,
    channel: &Option<String>,
    mode: Option<RedisMode>,
) -> FeedEndpoint {
    let mode = mode.unwrap_or_default();
    match redis {
        Some(endpoint) => FeedEndpoint::Redis {
            endpoint,
            channel: match (channel, mode) {
                (None, RedisMode::Stream) => DEFAULT_STREAM_KEY.into(),
                _ => name_or_default(channel),
            },
            mode,
        },
        None => FeedEndpoint::Memory,
    }
}

/// Checks kwargs against their typed form, turning the serde message into a problem text.
/// serde stops at the first bad field and does not say which it was; as every kwarg is
/// optional, each entry is then checked alone, so the text names every bad one.
pub fn check<T: serde::de::DeserializeOwned>(kwargs: &yaml_serde::Value) -> Result<T, String> {
    yaml_serde::from_value(kwargs.clone()).map_err(|e| {
        let yaml_serde::Value::Mapping(map) = kwargs else {
            return e.to_string();
        };
        let named: Vec<String> = map
            .iter()
            .filter_map(|(k, v)| {
                let one = yaml_serde::Mapping::from_iter([(k.clone(), v.clone())]);
                let err = yaml_serde::from_value::<T>(yaml_serde::Value::Mapping(one)).err()?;
                let detail = err.to_string();
                // An unknown field names itself.
                Some(if detail.starts_with("unknown field") {
                    detail
                } else {
                    format!("{}: {detail}", k.as_str().unwrap_or("?"))
                })
            })
            .collect();
        if named.is_empty() {
            e.to_string()
        } else {
            named.join("; ")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_as_numbers_or_strings() {
        assert_eq!(
            yaml_serde::from_str::<Port>("'27017'").unwrap(),
            Port(27017)
        );
        assert_eq!(yaml_serde::from_str::<Port>("6379").unwrap(), Port(6379));
        assert!(yaml_serde::from_str::<Port>("'x'").is_err());
        assert!(yaml_serde::from_str::<Port>("70000").is_err());
    }

    #[test]
    fn every_bad_kwarg_is_named() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct K {
            port: Option<Port>,
            limit: Option<usize>,
        }
        let v = yaml_serde::from_str("{port: x, limit: lots, other: 1}").unwrap();
        let err = check::<K>(&v).unwrap_err();
        assert!(err.starts_with("port: expected a port"), "{err}");
        assert!(err.contains("; limit: invalid type: string"), "{err}");
        assert!(err.contains("; unknown field `other`"), "{err}");
    }
}
