//! Placeholder for the Redis layer (being written on the `redis-layer` branch): only the
//! endpoint type the configuration needs.

use std::fmt;

/// Where a Redis is. Display and Debug never show a password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    url: String,
}

impl Endpoint {
    pub fn from_parts(host: &str, port: u16, db: i64) -> Self {
        let url = if host.contains(':') && !host.starts_with('[') {
            format!("redis://[{host}]:{port}/{db}")
        } else {
            format!("redis://{host}:{port}/{db}")
        };
        Self { url }
    }

    pub fn parse(url: &str) -> Result<Self, String> {
        Ok(Self { url: url.into() })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                write!(f, "{}{}", &self.url[..s + 3], &self.url[at + 1..])
            }
            _ => f.write_str(&self.url),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}
