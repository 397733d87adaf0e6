//! Settings: command-line flags, their `SSEHUB_*` environment twins and an optional TOML file,
//! merged and validated into one [`Config`] where every bound has its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;

/// Most worker threads `workers` may ask for.
const MAX_WORKERS: usize = 1024;

/// Validated settings of one hub. Every resource the hub holds is bounded by a field here.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Redis URL; `None` runs the in-memory broker.
    pub redis_url: Option<String>,
    /// PEM file of the CA that signed Redis's certificate (`rediss://`); system roots otherwise.
    pub redis_ca_file: Option<PathBuf>,
    /// Prefix of every Redis key and pub/sub channel name.
    pub redis_prefix: String,
    /// Longest wait for one Redis command (a publish gets `503` after it).
    pub redis_timeout: Duration,
    /// How long a node stays subscribed to a channel after its last local subscriber left.
    pub redis_linger: Duration,
    /// Events kept per channel for replay.
    pub history_size: usize,
    /// Bytes of encoded events kept per channel for replay.
    pub history_bytes: usize,
    /// Age after which an event leaves the history.
    pub history_ttl: Duration,
    /// Interval of comment heartbeats on idle streams.
    pub heartbeat: Duration,
    /// Reconnect delay sent to clients in the stream's first `retry:` line.
    pub retry: Duration,
    /// Open connections accepted at once; more get `503`.
    pub max_connections: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Largest `data` of one event.
    pub max_event_bytes: usize,
    /// Events in one publish request (batch, or channels of one event).
    pub max_batch: usize,
    /// Channels alive at once in this hub.
    pub max_channels: usize,
    /// Channels one subscription may read.
    pub max_channels_per_connection: usize,
    /// Events a subscriber may fall behind its channel before it is evicted.
    pub max_lag: usize,
    /// How long a subscriber's socket may accept nothing while events wait.
    pub write_timeout: Duration,
    /// How long a client may take to send request headers.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request body.
    pub body_read_timeout: Duration,
    /// Deadline for draining connections on shutdown.
    pub shutdown_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Origins allowed by CORS (exact match; `*` allows any origin without credentials).
    pub cors_origins: Vec<String>,
    /// Key checking both publishers' and subscribers' tokens (see `auth`).
    pub jwt_key: Option<KeySpec>,
    /// Key checking publishers' tokens (overrides `jwt_key` for them).
    pub publisher_jwt_key: Option<KeySpec>,
    /// Key checking subscribers' tokens (overrides `jwt_key` for them).
    pub subscriber_jwt_key: Option<KeySpec>,
    /// Cookie that may carry a token.
    pub jwt_cookie: String,
    /// Channel patterns anyone may read without a token.
    pub public_channels: Vec<String>,
    /// Open connections one IP address may hold (0: no limit).
    pub max_connections_per_ip: usize,
    /// Events per second one publisher (token, else IP) may publish (0: no limit).
    pub publish_rate: u32,
    /// Events a publisher may publish at once above the rate.
    pub publish_burst: u32,
    /// Log output format.
    pub log_format: LogFormat,
    /// PEM certificate chain served over TLS; with `tls_key`, the port speaks only TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Serve the demo page at `/`.
    pub demo: bool,
    /// Threads running connections; 0: one per core.
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            redis_url: None,
            redis_ca_file: None,
            redis_prefix: "ssehub".into(),
            redis_timeout: Duration::from_secs(2),
            redis_linger: Duration::from_secs(2),
            history_size: 1000,
            history_bytes: 1 << 20,
            history_ttl: Duration::from_secs(3600),
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            max_connections: 10_000,
            max_body_bytes: 1 << 20,
            max_event_bytes: 64 << 10,
            max_batch: 1000,
            max_channels: 100_000,
            max_channels_per_connection: 32,
            max_lag: 1000,
            write_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
            cors_origins: Vec::new(),
            jwt_key: None,
            publisher_jwt_key: None,
            subscriber_jwt_key: None,
            jwt_cookie: "ssehub_token".into(),
            public_channels: Vec::new(),
            max_connections_per_ip: 0,
            publish_rate: 0,
            publish_burst: 0,
            log_format: LogFormat::Text,
            tls_cert: None,
            tls_key: None,
            demo: true,
            workers: 0,
        }
    }
}

/// A token key as given: an HS256 secret, or `file:PATH`. Its `Debug` hides secrets, so
/// `check-config` and logs never print them.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySpec(pub String);

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.starts_with("file:") {
            write!(f, "{:?}", self.0)
        } else {
            f.write_str("\"<secret>\"")
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A setting that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid duration {value:?} for {name}: {reason}")]
    Duration {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        name: &'static str,
        reason: &'static str,
    },
}

/// Command line of the `ssehub` binary.
#[derive(Debug, Parser)]
#[command(name = "ssehub", version, about = "Server-Sent Events fan-out hub")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

/// Subcommands besides running the hub.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the effective configuration and exit.
    CheckConfig,
    /// Mint a token for publishers and subscribers and print it.
    Token {
        /// Signing key: an HS256 secret, or `file:PATH` to an RSA (RS256) or EC (ES256)
        /// private key in PEM.
        #[arg(long, env = "SSEHUB_TOKEN_KEY")]
        key: String,
        /// Channel patterns the token may publish to (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        publish: Vec<String>,
        /// Channel patterns the token may subscribe to (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        subscribe: Vec<String>,
        /// Lifetime, e.g. 1h, 30m.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Exit 0 if the hub at the configured listen address answers `GET /healthz` with 200
    /// within 2 s (for container health checks; over TLS when --tls-cert is set).
    Health,
}

/// Settings as given by flags, environment or file; `None` means "not given here".
#[derive(Debug, Default, Parser, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// TOML file with settings (flags and environment override it).
    #[arg(long, global = true, env = "SSEHUB_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8080].
    #[arg(long, global = true, env = "SSEHUB_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Redis URL for running several nodes as one hub [default: none, in memory].
    #[arg(long, global = true, env = "SSEHUB_REDIS_URL")]
    pub redis_url: Option<String>,
    /// PEM CA certificate for `rediss://` Redis [default: system roots].
    #[arg(long, global = true, env = "SSEHUB_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Prefix of Redis keys and pub/sub channels [default: ssehub].
    #[arg(long, global = true, env = "SSEHUB_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// Longest wait for a Redis command; publishes get 503 after it [default: 2s].
    #[arg(long, global = true, env = "SSEHUB_REDIS_TIMEOUT")]
    pub redis_timeout: Option<String>,
    /// Stay subscribed to a channel this long after its last local subscriber left [default: 2s].
    #[arg(long, global = true, env = "SSEHUB_REDIS_LINGER")]
    pub redis_linger: Option<String>,
    /// Events kept per channel for replay [default: 1000].
    #[arg(long, global = true, env = "SSEHUB_HISTORY_SIZE")]
    pub history_size: Option<usize>,
    /// Bytes of events kept per channel for replay [default: 1048576].
    #[arg(long, global = true, env = "SSEHUB_HISTORY_BYTES")]
    pub history_bytes: Option<usize>,
    /// Age after which events leave the history, e.g. 1h, 90s [default: 1h].
    #[arg(long, global = true, env = "SSEHUB_HISTORY_TTL")]
    pub history_ttl: Option<String>,
    /// Heartbeat comment interval on idle streams [default: 15s].
    #[arg(long, global = true, env = "SSEHUB_HEARTBEAT")]
    pub heartbeat: Option<String>,
    /// Reconnect delay advertised to clients with `retry:` [default: 3s].
    #[arg(long, global = true, env = "SSEHUB_RETRY")]
    pub retry: Option<String>,
    /// Connections accepted at once; more get 503 [default: 10000].
    #[arg(long, global = true, env = "SSEHUB_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Largest request body in bytes; larger gets 413 [default: 1048576].
    #[arg(long, global = true, env = "SSEHUB_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest data of one event in bytes [default: 65536].
    #[arg(long, global = true, env = "SSEHUB_MAX_EVENT_BYTES")]
    pub max_event_bytes: Option<usize>,
    /// Events in one publish request [default: 1000].
    #[arg(long, global = true, env = "SSEHUB_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Channels alive at once [default: 100000].
    #[arg(long, global = true, env = "SSEHUB_MAX_CHANNELS")]
    pub max_channels: Option<usize>,
    /// Channels one subscription may read [default: 32].
    #[arg(long, global = true, env = "SSEHUB_MAX_CHANNELS_PER_CONNECTION")]
    pub max_channels_per_connection: Option<usize>,
    /// Events a subscriber may lag behind before it is evicted [default: 1000].
    #[arg(long, global = true, env = "SSEHUB_MAX_LAG")]
    pub max_lag: Option<usize>,
    /// How long a subscriber may accept no bytes while events wait [default: 10s].
    #[arg(long, global = true, env = "SSEHUB_WRITE_TIMEOUT")]
    pub write_timeout: Option<String>,
    /// How long a client may take to send request headers [default: 10s].
    #[arg(long, global = true, env = "SSEHUB_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<String>,
    /// How long a client may take to send a request body [default: 10s].
    #[arg(long, global = true, env = "SSEHUB_BODY_READ_TIMEOUT")]
    pub body_read_timeout: Option<String>,
    /// Drain deadline on SIGTERM/SIGINT [default: 10s].
    #[arg(long, global = true, env = "SSEHUB_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<String>,
    /// Concurrent HTTP/2 streams per connection [default: 256].
    #[arg(long, global = true, env = "SSEHUB_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// Origins allowed by CORS, comma separated; `*` allows any origin without credentials.
    #[arg(long, global = true, env = "SSEHUB_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Option<Vec<String>>,
    /// Key for publishers' and subscribers' tokens: an HS256 secret (32+ bytes) or
    /// `file:PATH` to an RSA/EC public key in PEM [default: none, open hub].
    #[arg(long, global = true, env = "SSEHUB_JWT_KEY")]
    pub jwt_key: Option<String>,
    /// Key for publishers' tokens, overriding --jwt-key for them.
    #[arg(long, global = true, env = "SSEHUB_PUBLISHER_JWT_KEY")]
    pub publisher_jwt_key: Option<String>,
    /// Key for subscribers' tokens, overriding --jwt-key for them.
    #[arg(long, global = true, env = "SSEHUB_SUBSCRIBER_JWT_KEY")]
    pub subscriber_jwt_key: Option<String>,
    /// Cookie that may carry a token [default: ssehub_token].
    #[arg(long, global = true, env = "SSEHUB_JWT_COOKIE")]
    pub jwt_cookie: Option<String>,
    /// Channel patterns anyone may read without a token, comma separated (`news/*,status`).
    #[arg(
        long,
        global = true,
        env = "SSEHUB_PUBLIC_CHANNELS",
        value_delimiter = ','
    )]
    pub public_channels: Option<Vec<String>>,
    /// Open connections one IP address may hold; more get 429 [default: 0, no limit].
    #[arg(long, global = true, env = "SSEHUB_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Events per second one publisher (bearer token, else IP) may publish; more get 429
    /// [default: 0, no limit].
    #[arg(long, global = true, env = "SSEHUB_PUBLISH_RATE")]
    pub publish_rate: Option<u32>,
    /// Events a publisher may send at once above the rate [default: the rate, at least 1].
    #[arg(long, global = true, env = "SSEHUB_PUBLISH_BURST")]
    pub publish_burst: Option<u32>,
    /// Log format [default: text].
    #[arg(long, global = true, env = "SSEHUB_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// PEM certificate chain: serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) instead of plain HTTP.
    #[arg(long, global = true, env = "SSEHUB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, global = true, env = "SSEHUB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Do not serve the demo page at `/`.
    #[arg(
        long,
        global = true,
        env = "SSEHUB_NO_DEMO",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub no_demo: Option<bool>,
    /// Threads running connections; 0 is one per core. Fewer leave cores to other processes
    /// on the same machine [default: 0].
    #[arg(long, global = true, env = "SSEHUB_WORKERS")]
    pub workers: Option<usize>,
}

impl Settings {
    /// Loads the TOML file named by `--config` (if any) under these settings and validates the result.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<Settings>(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source: Box::new(source),
                })?
            }
            None => Settings::default(),
        };
        self.over(file).resolve()
    }

    /// Settings given here win over those of `lower`.
    fn over(self, lower: Settings) -> Settings {
        Settings {
            config: self.config,
            listen: self.listen.or(lower.listen),
            redis_url: self.redis_url.or(lower.redis_url),
            redis_ca_file: self.redis_ca_file.or(lower.redis_ca_file),
            redis_prefix: self.redis_prefix.or(lower.redis_prefix),
            redis_timeout: self.redis_timeout.or(lower.redis_timeout),
            redis_linger: self.redis_linger.or(lower.redis_linger),
            history_size: self.history_size.or(lower.history_size),
            history_bytes: self.history_bytes.or(lower.history_bytes),
            history_ttl: self.history_ttl.or(lower.history_ttl),
            heartbeat: self.heartbeat.or(lower.heartbeat),
            retry: self.retry.or(lower.retry),
            max_connections: self.max_connections.or(lower.max_connections),
            max_body_bytes: self.max_body_bytes.or(lower.max_body_bytes),
            max_event_bytes: self.max_event_bytes.or(lower.max_event_bytes),
            max_batch: self.max_batch.or(lower.max_batch),
            max_channels: self.max_channels.or(lower.max_channels),
            max_channels_per_connection: self
                .max_channels_per_connection
                .or(lower.max_channels_per_connection),
            max_lag: self.max_lag.or(lower.max_lag),
            write_timeout: self.write_timeout.or(lower.write_timeout),
            header_read_timeout: self.header_read_timeout.or(lower.header_read_timeout),
            body_read_timeout: self.body_read_timeout.or(lower.body_read_timeout),
            shutdown_timeout: self.shutdown_timeout.or(lower.shutdown_timeout),
            max_concurrent_streams: self.max_concurrent_streams.or(lower.max_concurrent_streams),
            cors_origin: self.cors_origin.or(lower.cors_origin),
            jwt_key: self.jwt_key.or(lower.jwt_key),
            publisher_jwt_key: self.publisher_jwt_key.or(lower.publisher_jwt_key),
            subscriber_jwt_key: self.subscriber_jwt_key.or(lower.subscriber_jwt_key),
            jwt_cookie: self.jwt_cookie.or(lower.jwt_cookie),
            public_channels: self.public_channels.or(lower.public_channels),
            max_connections_per_ip: self.max_connections_per_ip.or(lower.max_connections_per_ip),
            publish_rate: self.publish_rate.or(lower.publish_rate),
            publish_burst: self.publish_burst.or(lower.publish_burst),
            log_format: self.log_format.or(lower.log_format),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            no_demo: self.no_demo.or(lower.no_demo),
            workers: self.workers.or(lower.workers),
        }
    }

    fn resolve(self) -> Result<Config, ConfigError> {
        let d = Config::default();
        let config = Config {
            listen: self.listen.unwrap_or(d.listen),
            redis_url: self.redis_url.filter(|url| !url.is_empty()),
            redis_ca_file: self.redis_ca_file,
            redis_prefix: self.redis_prefix.unwrap_or(d.redis_prefix),
            redis_timeout: duration("redis-timeout", self.redis_timeout, d.redis_timeout)?,
            redis_linger: duration("redis-linger", self.redis_linger, d.redis_linger)?,
            history_size: self.history_size.unwrap_or(d.history_size),
            history_bytes: self.history_bytes.unwrap_or(d.history_bytes),
            history_ttl: duration("history-ttl", self.history_ttl, d.history_ttl)?,
            heartbeat: duration("heartbeat", self.heartbeat, d.heartbeat)?,
            retry: duration("retry", self.retry, d.retry)?,
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            max_body_bytes: self.max_body_bytes.unwrap_or(d.max_body_bytes),
            max_event_bytes: self.max_event_bytes.unwrap_or(d.max_event_bytes),
            max_batch: self.max_batch.unwrap_or(d.max_batch),
            max_channels: self.max_channels.unwrap_or(d.max_channels),
            max_channels_per_connection: self
                .max_channels_per_connection
                .unwrap_or(d.max_channels_per_connection),
            max_lag: self.max_lag.unwrap_or(d.max_lag),
            write_timeout: duration("write-timeout", self.write_timeout, d.write_timeout)?,
            header_read_timeout: duration(
                "header-read-timeout",
                self.header_read_timeout,
                d.header_read_timeout,
            )?,
            body_read_timeout: duration(
                "body-read-timeout",
                self.body_read_timeout,
                d.body_read_timeout,
            )?,
            shutdown_timeout: duration(
                "shutdown-timeout",
                self.shutdown_timeout,
                d.shutdown_timeout,
            )?,
            max_concurrent_streams: self
                .max_concurrent_streams
                .unwrap_or(d.max_concurrent_streams),
            cors_origins: self.cors_origin.unwrap_or_default(),
            jwt_key: self.jwt_key.map(KeySpec),
            publisher_jwt_key: self.publisher_jwt_key.map(KeySpec),
            subscriber_jwt_key: self.subscriber_jwt_key.map(KeySpec),
            jwt_cookie: self.jwt_cookie.unwrap_or(d.jwt_cookie),
            public_channels: self
                .public_channels
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
            max_connections_per_ip: self.max_connections_per_ip.unwrap_or(0),
            publish_rate: self.publish_rate.unwrap_or(0),
            publish_burst: self
                .publish_burst
                .unwrap_or_else(|| self.publish_rate.unwrap_or(0).max(1)),
            log_format: self.log_format.unwrap_or(d.log_format),
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            demo: !self.no_demo.unwrap_or(false),
            workers: self.workers.unwrap_or(d.workers),
        };
        config.validate()?;
        Ok(config)
    }
}

fn duration(
    name: &'static str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text.trim()).map_err(|err| ConfigError::Duration {
            name,
            value: text,
            reason: err.to_string(),
        }),
    }
}

impl Config {
    /// Rejects settings the hub cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, reason| Err(ConfigError::Invalid { name, reason });
        let positive = [
            ("history-size", self.history_size),
            ("history-bytes", self.history_bytes),
            ("max-connections", self.max_connections),
            ("max-body-bytes", self.max_body_bytes),
            ("max-event-bytes", self.max_event_bytes),
            ("max-batch", self.max_batch),
            ("max-channels", self.max_channels),
            (
                "max-channels-per-connection",
                self.max_channels_per_connection,
            ),
            ("max-lag", self.max_lag),
        ];
        for (name, value) in positive {
            if value == 0 {
                return invalid(name, "must be at least 1");
            }
        }
        let durations = [
            ("history-ttl", self.history_ttl),
            ("heartbeat", self.heartbeat),
            ("write-timeout", self.write_timeout),
            ("header-read-timeout", self.header_read_timeout),
            ("body-read-timeout", self.body_read_timeout),
        ];
        for (name, value) in durations {
            if value < Duration::from_millis(10) {
                return invalid(name, "must be at least 10ms");
            }
        }
        if self.retry.as_millis() > u128::from(u32::MAX) {
            return invalid("retry", "is too long");
        }
        if self.workers > MAX_WORKERS {
            return invalid("workers", "must be at most 1024");
        }
        if self.max_concurrent_streams == 0 {
            return invalid("max-concurrent-streams", "must be at least 1");
        }
        if self.redis_prefix.is_empty()
            || self.redis_prefix.contains(['{', '}'])
            || self.redis_prefix.chars().any(char::is_whitespace)
        {
            return invalid(
                "redis-prefix",
                "must be non-empty, without braces or whitespace",
            );
        }
        if self.redis_timeout < Duration::from_millis(10) {
            return invalid("redis-timeout", "must be at least 10ms");
        }
        let pattern_ok = |p: &String| {
            let name = p.strip_suffix("/*").unwrap_or(p);
            p == "*" || crate::names::check_channel(name).is_ok()
        };
        if !self.public_channels.iter().all(pattern_ok) {
            return invalid(
                "public-channels",
                "each pattern must be a channel name, `prefix/*` or `*`",
            );
        }
        if self.jwt_cookie.is_empty()
            || !self
                .jwt_cookie
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'=' && b != b';')
        {
            return invalid("jwt-cookie", "must be a cookie name");
        }
        if self.cors_origins.iter().any(|o| o.trim().is_empty()) {
            return invalid("cors-origin", "origins must not be empty");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return invalid("tls-cert", "needs tls-key, and tls-key needs tls-cert");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn flags_win_over_file() {
        let dir = std::env::temp_dir().join(format!("ssehub-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ssehub.toml");
        std::fs::write(
            &path,
            "history-size = 5\nheartbeat = \"2s\"\nlisten = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "ssehub",
            "--config",
            path.to_str().unwrap(),
            "--history-size",
            "7",
        ])
        .unwrap();
        let config = cli.settings.into_config().unwrap();
        assert_eq!(config.history_size, 7);
        assert_eq!(config.heartbeat, Duration::from_secs(2));
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.retry, Duration::from_secs(3));
    }

    #[test]
    fn bad_values_are_rejected() {
        let cli = Cli::try_parse_from(["ssehub", "--heartbeat", "soon"]).unwrap();
        let err = cli.settings.into_config().unwrap_err();
        assert!(err.to_string().contains("heartbeat"), "{err}");
        let cli = Cli::try_parse_from(["ssehub", "--history-size", "0"]).unwrap();
        assert!(cli.settings.into_config().is_err());
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let err = toml::from_str::<Settings>("histroy-size = 3").unwrap_err();
        assert!(err.to_string().contains("histroy-size"), "{err}");
    }
}
