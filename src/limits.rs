//! Per-client limits: open connections per IP address, and a publish rate per token or IP
//! (token bucket). Both are off unless configured.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::{HeaderMap, AUTHORIZATION};
use parking_lot::Mutex;

/// Most clients whose publish buckets are remembered; past it, full buckets are forgotten.
const MAX_TRACKED_CLIENTS: usize = 100_000;

/// Open connections per IP address, bounded by `max`.
pub struct ConnectionsPerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; dropping it frees the slot.
pub struct IpSlot {
    limits: Arc<ConnectionsPerIp>,
    ip: IpAddr,
}

impl ConnectionsPerIp {
    pub fn new(max: usize) -> Arc<ConnectionsPerIp> {
        Arc::new(ConnectionsPerIp {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a connection from `ip`; `None` when `ip` already holds `max`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Events per second each client may publish, with bursts up to `burst`.
pub struct PublishRate {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl PublishRate {
    pub fn new(per_second: u32, burst: u32) -> PublishRate {
        PublishRate {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `events` from `client`'s bucket, or says how long until it holds them.
    pub fn take(&self, client: u64, events: usize, now: Instant) -> Result<(), Duration> {
        let wanted = events as f64;
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_TRACKED_CLIENTS {
            buckets.retain(|_, bucket| self.refilled(*bucket, now) < self.burst);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = self.refilled(*bucket, now);
        if tokens >= wanted {
            *bucket = Bucket {
                tokens: tokens - wanted,
                at: now,
            };
            return Ok(());
        }
        *bucket = Bucket { tokens, at: now };
        if wanted > self.burst {
            // Never fits: say when a full bucket would be there, the client must split it.
            return Err(Duration::from_secs_f64(self.burst / self.per_second));
        }
        Err(Duration::from_secs_f64((wanted - tokens) / self.per_second))
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }
}

/// Who a publisher is for rate limiting: its bearer token when it sends one, else its address.
pub fn client_key(headers: &HeaderMap, peer: IpAddr) -> u64 {
    let mut hasher = DefaultHasher::new();
    match headers.get(AUTHORIZATION) {
        Some(token) => token.as_bytes().hash(&mut hasher),
        None => peer.hash(&mut hasher),
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_bursts_then_the_rate() {
        let rate = PublishRate::new(10, 5);
        let start = Instant::now();
        assert!(rate.take(1, 5, start).is_ok());
        let wait = rate.take(1, 1, start).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(rate.take(1, 1, start + Duration::from_millis(100)).is_ok());
        assert!(
            rate.take(2, 5, start).is_ok(),
            "clients have their own buckets"
        );
        assert!(
            rate.take(3, 6, start).is_err(),
            "more than a burst never fits"
        );
    }

    #[test]
    fn connection_slots_free_on_drop() {
        let limits = ConnectionsPerIp::new(2);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let a = limits.admit(ip).unwrap();
        let _b = limits.admit(ip).unwrap();
        assert!(limits.admit(ip).is_none());
        drop(a);
        assert!(limits.admit(ip).is_some());
        assert!(limits.admit([10, 0, 0, 1].into()).is_some());
    }
}
