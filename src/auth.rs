//! Who may publish and subscribe: JSON Web Tokens (HS256 with a shared secret, RS256/ES256 with a
//! public key) whose claims name the channels a holder may use, plus channels anyone may read.
//!
//! Claims: `{"exp": ..., "nbf": ..., "ssehub": {"publish": ["chat/*"], "subscribe": ["*"]}}`.
//! A pattern is a channel name, `prefix/*` (every channel under `prefix/`) or `*` (all).
//! Tokens come from `Authorization: Bearer`, a cookie (for EventSource `withCredentials`), or
//! `?access_token=` (least safe: URLs end up in logs and histories).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::{HeaderMap, AUTHORIZATION, COOKIE};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The access policy of a hub.
pub struct Auth {
    publisher: Option<Verifier>,
    subscriber: Option<Verifier>,
    public: Vec<String>,
    cookie: String,
}

/// The channels a publisher may write to (`None`: any, the hub has no publisher key).
pub struct PublishGrant(Option<Vec<String>>);

impl PublishGrant {
    pub fn check(&self, channel: &str) -> Result<(), AuthError> {
        match &self.0 {
            Some(patterns) if !allows(patterns, channel) => Err(AuthError::Forbidden {
                action: "publishing to",
                channel: channel.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

/// Checks tokens signed with one key.
struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// What a token allows.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Permissions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default)]
    ssehub: Permissions,
}

/// Why a request may not go on: 401 (no usable token) or 403 (the token does not allow it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required (Authorization: Bearer, the {cookie} cookie, or ?access_token=)")]
    Missing { cookie: String },
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token does not allow {action} channel {channel:?}")]
    Forbidden {
        action: &'static str,
        channel: String,
    },
}

impl AuthError {
    /// 403 for a valid token that lacks the permission; 401 otherwise.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::Forbidden { .. })
    }
}

/// A key setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is neither an RSA nor an EC public key in PEM")]
    Pem { path: String },
    #[error("a shared secret must be at least 32 bytes")]
    ShortSecret,
}

impl Verifier {
    /// `file:PATH` is a PEM public key (RSA: RS256, EC P-256: ES256); anything else is an
    /// HS256 secret.
    fn new(spec: &str) -> Result<Verifier, KeyError> {
        let (key, algorithm) = match spec.strip_prefix("file:") {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| KeyError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                    (key, Algorithm::RS256)
                } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                    (key, Algorithm::ES256)
                } else {
                    return Err(KeyError::Pem {
                        path: path.to_owned(),
                    });
                }
            }
            None if spec.len() < 32 => return Err(KeyError::ShortSecret),
            None => (DecodingKey::from_secret(spec.as_bytes()), Algorithm::HS256),
        };
        let mut validation = Validation::new(algorithm);
        validation.validate_nbf = true;
        validation.leeway = 0;
        Ok(Verifier { key, validation })
    }

    fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::Invalid(err.to_string()),
            })
    }
}

impl Auth {
    pub fn from_config(config: &Config) -> Result<Auth, KeyError> {
        let publisher = config
            .publisher_jwt_key
            .as_ref()
            .or(config.jwt_key.as_ref());
        let subscriber = config
            .subscriber_jwt_key
            .as_ref()
            .or(config.jwt_key.as_ref());
        Ok(Auth {
            publisher: publisher.map(|k| Verifier::new(&k.0)).transpose()?,
            subscriber: subscriber.map(|k| Verifier::new(&k.0)).transpose()?,
            public: config.public_channels.clone(),
            cookie: config.jwt_cookie.clone(),
        })
    }

    /// No key at all: anyone who reaches the port may publish and subscribe.
    pub fn is_open(&self) -> bool {
        self.publisher.is_none() && self.subscriber.is_none()
    }

    /// Checks a publisher's token before its body is read; the grant then checks channels.
    pub fn publisher(&self, headers: &HeaderMap, query: &str) -> Result<PublishGrant, AuthError> {
        let Some(verifier) = &self.publisher else {
            return Ok(PublishGrant(None));
        };
        let claims = verifier.verify(&self.token(headers, query)?)?;
        Ok(PublishGrant(Some(claims.ssehub.publish)))
    }

    /// May the request read every one of `channels`? On success, how long its token is valid
    /// (the stream ends then); `None` when no token limits it.
    pub fn check_subscribe(
        &self,
        headers: &HeaderMap,
        query: &str,
        channels: &[String],
    ) -> Result<Option<Duration>, AuthError> {
        let Some(verifier) = &self.subscriber else {
            return Ok(None);
        };
        let token = match self.token(headers, query) {
            Err(missing) if !channels.iter().all(|c| allows(&self.public, c)) => {
                return Err(missing)
            }
            Err(_) => return Ok(None),
            Ok(token) => token,
        };
        let claims = verifier.verify(&token)?;
        for channel in channels {
            if !allows(&self.public, channel) && !allows(&claims.ssehub.subscribe, channel) {
                return Err(AuthError::Forbidden {
                    action: "subscribing to",
                    channel: channel.clone(),
                });
            }
        }
        Ok(Some(Duration::from_secs(
            claims.exp.saturating_sub(unix_now()),
        )))
    }

    /// The token of a request: bearer header, then cookie, then `access_token` query parameter.
    fn token(&self, headers: &HeaderMap, query: &str) -> Result<String, AuthError> {
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_owned());
        let cookie = || {
            headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| *name == self.cookie)
                .map(|(_, value)| value.to_owned())
        };
        let query = || {
            form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == "access_token")
                .map(|(_, value)| value.into_owned())
        };
        bearer
            .or_else(cookie)
            .or_else(query)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthError::Missing {
                cookie: self.cookie.clone(),
            })
    }
}

/// Whether one of `patterns` covers `channel`.
pub fn allows(patterns: &[String], channel: &str) -> bool {
    patterns
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some("") => true,
            Some(prefix) if prefix.ends_with('/') => channel.starts_with(prefix),
            _ => pattern == channel,
        })
}

/// Signs a token allowing `permissions` for `lifetime` with `key` (`file:PATH` to a PEM private
/// key: RS256 for RSA, ES256 for EC; otherwise an HS256 secret). For `ssehub token`.
pub fn mint(key: &str, permissions: Permissions, lifetime: Duration) -> Result<String, String> {
    let (key, algorithm) = match key.strip_prefix("file:") {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|err| format!("cannot read {path}: {err}"))?;
            if let Ok(key) = EncodingKey::from_rsa_pem(&pem) {
                (key, Algorithm::RS256)
            } else if let Ok(key) = EncodingKey::from_ec_pem(&pem) {
                (key, Algorithm::ES256)
            } else {
                return Err(format!(
                    "{path} is neither an RSA nor an EC private key in PEM"
                ));
            }
        }
        None => (EncodingKey::from_secret(key.as_bytes()), Algorithm::HS256),
    };
    let claims = Claims {
        exp: unix_now() + lifetime.as_secs(),
        nbf: None,
        ssehub: permissions,
    };
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).map_err(|err| err.to_string())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn patterns_match_names_prefixes_and_everything() {
        let p = patterns(&["chat/*", "status"]);
        assert!(allows(&p, "chat/room1"));
        assert!(allows(&p, "chat/a/b"));
        assert!(!allows(&p, "chat"));
        assert!(!allows(&p, "chatter/x"));
        assert!(allows(&p, "status"));
        assert!(!allows(&p, "status/x"));
        assert!(allows(&patterns(&["*"]), "anything/at:all"));
        assert!(!allows(&[], "x"));
    }

    #[test]
    fn minted_tokens_verify_and_carry_permissions() {
        let secret = "0123456789abcdef0123456789abcdef";
        let permissions = Permissions {
            publish: patterns(&["chat/*"]),
            subscribe: patterns(&["*"]),
        };
        let token = mint(secret, permissions.clone(), Duration::from_secs(60)).unwrap();
        let claims = Verifier::new(secret).unwrap().verify(&token).unwrap();
        assert_eq!(claims.ssehub, permissions);
        let other = Verifier::new("another secret of thirty-two bytes!!").unwrap();
        assert!(matches!(other.verify(&token), Err(AuthError::Invalid(_))));
        assert!(matches!(Verifier::new("short"), Err(KeyError::ShortSecret)));
    }
}
