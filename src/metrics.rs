//! Prometheus metrics: a struct of handles on the hub's own registry, shared by `Arc`.

use crate::hub::{EvictionReason, GapReason};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric the hub exports. No per-channel labels: channel names are unbounded.
pub struct Metrics {
    registry: Registry,
    pub connections: IntGauge,
    pub connections_rejected: IntCounter,
    pub subscribers: IntGauge,
    pub channels: IntGauge,
    pub events_published: IntCounter,
    pub events_delivered: IntCounter,
    pub frames_written: IntCounter,
    pub bytes_written: IntCounter,
    pub evictions: IntCounterVec,
    pub replays: IntCounter,
    pub events_replayed: IntCounter,
    pub gaps: IntCounterVec,
    pub publish_latency: Histogram,
    pub http_requests: IntCounterVec,
    /// Redis metrics: registered only when Redis is configured.
    pub redis_up: IntGauge,
    pub redis_reconnects: IntCounter,
    pub redis_catchups: IntCounter,
}

impl Metrics {
    pub fn new(with_redis: bool) -> Metrics {
        let registry = Registry::new_custom(Some("ssehub".into()), None)
            .expect("static metric prefix is valid");
        let counter_if = |name: &str, help: &str, register: bool| {
            let metric = IntCounter::new(name, help).expect("static metric is valid");
            if register {
                registry
                    .register(Box::new(metric.clone()))
                    .expect("metric registered once");
            }
            metric
        };
        let counter = |name: &str, help: &str| counter_if(name, help, true);
        let gauge_if = |name: &str, help: &str, register: bool| {
            let metric = IntGauge::new(name, help).expect("static metric is valid");
            if register {
                registry
                    .register(Box::new(metric.clone()))
                    .expect("metric registered once");
            }
            metric
        };
        let gauge = |name: &str, help: &str| gauge_if(name, help, true);
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric =
                IntCounterVec::new(Opts::new(name, help), labels).expect("static metric is valid");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric registered once");
            metric
        };
        let publish_latency = Histogram::with_opts(
            HistogramOpts::new(
                "publish_latency_seconds",
                "Time from accepting a publish request to waking every subscriber",
            )
            .buckets(vec![
                0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )
        .expect("static metric is valid");
        registry
            .register(Box::new(publish_latency.clone()))
            .expect("metric registered once");
        let metrics = Metrics {
            connections: gauge("connections", "Open client connections"),
            connections_rejected: counter(
                "connections_rejected_total",
                "Connections refused with 503 because max-connections was reached",
            ),
            subscribers: gauge("subscribers", "Open event streams"),
            channels: gauge("channels", "Channels alive (with subscribers or history)"),
            events_published: counter("events_published_total", "Events accepted"),
            events_delivered: counter(
                "events_delivered_total",
                "Events written to subscribers (one per event per subscriber)",
            ),
            frames_written: counter(
                "frames_written_total",
                "Body frames handed to connections (a frame holds every event ready)",
            ),
            bytes_written: counter("bytes_written_total", "Event-stream bytes written"),
            evictions: counter_vec(
                "evictions_total",
                "Subscribers disconnected for being too slow, by reason",
                &["reason"],
            ),
            replays: counter("replays_total", "Subscriptions that resumed from history"),
            events_replayed: counter("events_replayed_total", "Events sent from history"),
            gaps: counter_vec(
                "gaps_total",
                "Gap events sent because a cursor could not be honoured, by reason",
                &["reason"],
            ),
            publish_latency,
            http_requests: counter_vec(
                "http_requests_total",
                "HTTP requests answered, by route and status",
                &["route", "status"],
            ),
            redis_up: gauge_if(
                "redis_up",
                "1 while the Redis pub/sub connection is up",
                with_redis,
            ),
            redis_reconnects: counter_if(
                "redis_reconnects_total",
                "Reconnections of the Redis pub/sub connection",
                with_redis,
            ),
            redis_catchups: counter_if(
                "redis_catchups_total",
                "Holes in the Redis feed filled from the stream (missed messages, reconnects)",
                with_redis,
            ),
            registry,
        };
        for reason in EvictionReason::ALL {
            metrics.evictions.with_label_values(&[reason.as_str()]);
        }
        for reason in GapReason::ALL {
            metrics.gaps.with_label_values(&[reason.as_str()]);
        }
        metrics
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 << 10);
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(false)
    }
}
