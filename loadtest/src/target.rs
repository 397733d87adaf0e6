//! Targets as URL templates (`http://127.0.0.1:8080/events/{channel}`), so one command measures
//! ssehub or Nchan alike. Only loopback addresses are accepted: a load test never leaves the box.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Placeholder replaced by the channel name.
pub const CHANNEL: &str = "{channel}";

/// One server endpoint with a path template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
    /// The path and query, with `{channel}` where the channel goes.
    pub path: String,
}

impl Target {
    /// Parses `http://HOST[:PORT]/PATH`; HOST must be a loopback address or `localhost`.
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("{url}: bad port {port:?}"))?,
            ),
            _ => (authority, 80),
        };
        let ip: IpAddr = match host.trim_start_matches('[').trim_end_matches(']') {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            literal => literal
                .parse()
                .map_err(|_| format!("{url}: the host must be an IP address or localhost"))?,
        };
        if !ip.is_loopback() {
            return Err(format!(
                "{url}: only loopback addresses (127.0.0.0/8, ::1) may be load-tested"
            ));
        }
        Ok(Target {
            url: url.to_string(),
            addr: SocketAddr::new(ip, port),
            host: authority.to_string(),
            path: path.to_string(),
        })
    }

    /// The request path for `channel`.
    pub fn path_for(&self, channel: &str) -> String {
        self.path.replace(CHANNEL, channel)
    }

    /// True when the channel goes into the URL (a raw-body publisher needs that).
    pub fn has_channel(&self) -> bool {
        self.path.contains(CHANNEL)
    }
}

/// Parses several URLs.
pub fn parse_all(urls: &[String]) -> Result<Vec<Target>, String> {
    urls.iter().map(|url| Target::parse(url)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_loopback_only() {
        let target = Target::parse("http://127.0.0.1:8080/events/{channel}").expect("valid");
        assert_eq!(target.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(target.path_for("a"), "/events/a");
        assert_eq!(target.host, "127.0.0.1:8080");
        let nchan = Target::parse("http://localhost:9000/pub?id={channel}").expect("valid");
        assert_eq!(nchan.path_for("c1"), "/pub?id=c1");
        assert!(Target::parse("http://[::1]:1/x").is_ok());
        assert!(Target::parse("http://10.0.0.1:80/x").is_err());
        assert!(Target::parse("http://example.com/x").is_err());
        assert!(Target::parse("https://127.0.0.1/x").is_err());
    }
}
