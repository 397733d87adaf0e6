//! The hub: channels, their subscribers, and the one-way flow from an accepted event to every
//! subscriber's stream.

pub mod channel;
pub mod history;
pub mod registry;
pub mod subscription;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerError};
use crate::config::Config;
use crate::connection::Cut;
use crate::metrics::Metrics;
use crate::sse::{Epoch, EventFields, Position};
use channel::{Channel, Insert, Retention};
use history::Limits;
use registry::{Registry, RegistryFull};
pub use subscription::{Opened, Output, Subscription};

/// One event for one channel, validated by the HTTP layer.
#[derive(Debug, Clone)]
pub struct Publication {
    pub channel: String,
    pub fields: EventFields,
}

/// The id an accepted event got in its channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Receipt {
    pub id: String,
    pub channel: String,
}

/// Why a publish was refused; nothing of the request was published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    RegistryFull(#[from] RegistryFull),
    #[error("channel {0:?} is closed: it took a terminal event")]
    Closed(String),
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error(transparent)]
    RegistryFull(#[from] RegistryFull),
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Why a subscriber was disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionReason {
    /// Fell more than `max-lag` events behind, or behind the retained history.
    Lagged,
    /// Its socket accepted nothing for `write-timeout` while bytes waited.
    WriteTimeout,
}

impl EvictionReason {
    pub const ALL: [EvictionReason; 2] = [EvictionReason::Lagged, EvictionReason::WriteTimeout];

    pub fn as_str(self) -> &'static str {
        match self {
            EvictionReason::Lagged => "lagged",
            EvictionReason::WriteTimeout => "write_timeout",
        }
    }
}

/// Why a cursor could not be honoured (sent in the `gap` event and counted in metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The events after the cursor left the history (count, bytes or age).
    Trimmed,
    /// The cursor is from another epoch: the hub restarted or the history was lost.
    EpochChanged,
    /// The cursor is past the newest event of its epoch.
    CursorAhead,
    /// The cursor is not an id this hub wrote (or names another number of channels).
    InvalidCursor,
}

impl GapReason {
    pub const ALL: [GapReason; 4] = [
        GapReason::Trimmed,
        GapReason::EpochChanged,
        GapReason::CursorAhead,
        GapReason::InvalidCursor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Trimmed => "trimmed",
            GapReason::EpochChanged => "epoch_changed",
            GapReason::CursorAhead => "cursor_ahead",
            GapReason::InvalidCursor => "invalid_cursor",
        }
    }
}

/// Monotonic milliseconds since the hub started, cheap to store in atomics.
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// The bounds the hub applies to channels and subscribers.
#[derive(Debug, Clone)]
pub struct Settings {
    pub history: Limits,
    pub max_lag: u64,
    pub retry_ms: u64,
    pub heartbeat: Duration,
    pub write_timeout: Duration,
    /// Whether channels are mirrors of Redis rather than the only copy.
    pub mirror: bool,
    pub linger: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            history: Limits {
                events: config.history_size,
                bytes: config.history_bytes,
                ttl: config.history_ttl,
            },
            max_lag: config.max_lag as u64,
            retry_ms: config.retry.as_millis() as u64,
            heartbeat: config.heartbeat,
            write_timeout: config.write_timeout,
            mirror: config.redis_url.is_some(),
            linger: config.redis_linger,
        }
    }
}

/// Channels, subscribers and the broker that orders events.
pub struct Hub {
    settings: Settings,
    registry: Registry,
    broker: Broker,
    metrics: Arc<Metrics>,
    clock: Clock,
    next_subscriber: AtomicU64,
    shutting_down: AtomicBool,
}

impl Hub {
    pub fn new(config: &Config, broker: Broker, metrics: Arc<Metrics>) -> Arc<Hub> {
        Arc::new(Hub {
            settings: Settings::from_config(config),
            registry: Registry::new(
                config.max_channels,
                retention(config),
                metrics.channels.clone(),
            ),
            broker,
            metrics,
            clock: Clock {
                start: Instant::now(),
            },
            next_subscriber: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Has the broker order `batch` (all or nothing) and answers once it is accepted. In memory
    /// the events are in their channels at once and subscribers are woken here; with Redis
    /// they come back through the feed like everyone else's.
    pub async fn publish(
        &self,
        batch: &[Publication],
        accepted: Instant,
    ) -> Result<Vec<Receipt>, PublishError> {
        if self.is_shutting_down() {
            return Err(PublishError::ShuttingDown);
        }
        let receipts = match &self.broker {
            Broker::Memory(memory) => {
                let appended = memory.publish(&self.registry, batch, &self.settings)?;
                let mut woken: Vec<&Arc<Channel>> = Vec::new();
                for (channel, event) in appended.iter().rev() {
                    if !woken.iter().any(|c| Arc::ptr_eq(c, channel)) {
                        self.deliver(channel, event.seq);
                        woken.push(channel);
                    }
                }
                self.metrics
                    .publish_latency
                    .observe(accepted.elapsed().as_secs_f64());
                appended
                    .iter()
                    .map(|(channel, event)| Receipt {
                        id: event.position().to_string(),
                        channel: channel.name().to_owned(),
                    })
                    .collect()
            }
            Broker::Redis(redis) => redis.publish(batch, &self.settings).await?,
        };
        self.metrics.events_published.inc_by(receipts.len() as u64);
        Ok(receipts)
    }

    /// Mirrors an event ordered by Redis into `channel` and wakes its subscribers when it is
    /// the next one.
    pub fn mirror(
        &self,
        channel: &Channel,
        position: Position,
        fields: &EventFields,
        published_at: Instant,
    ) -> Insert {
        let insert =
            channel
                .log_mut()
                .insert(position, fields, published_at, self.settings.history);
        if let Insert::Appended(event) = &insert {
            self.deliver(channel, event.seq);
        }
        insert
    }

    /// Points a mirrored channel at a new epoch (its history was lost): streams reading the
    /// old one end, and their clients reconnect to a `gap` event.
    pub fn reset(&self, channel: &Channel, epoch: Epoch, head: u64, closed_at: Option<u64>) {
        channel.log_mut().sync(epoch, head, closed_at);
        let now_ms = self.clock.now_ms();
        channel.for_each_subscriber(|waiter, _| waiter.end(now_ms));
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Wakes the subscribers of `channel`, whose newest event is now `head`.
    fn deliver(&self, channel: &Channel, head: u64) {
        let now_ms = self.clock.now_ms();
        channel.for_each_subscriber(|waiter, index| {
            waiter.notify(index, head, self.settings.max_lag, now_ms, &self.metrics)
        });
    }

    /// Opens a stream over `channels` resuming after `cursor` (a `Last-Event-ID`), ending
    /// cleanly after `valid_for` (the subscriber's token expires then).
    pub async fn subscribe(
        self: &Arc<Self>,
        channels: &[String],
        cursor: Option<&str>,
        connection: Cut,
        valid_for: Option<Duration>,
    ) -> Result<Opened, SubscribeError> {
        if self.is_shutting_down() {
            return Err(SubscribeError::ShuttingDown);
        }
        let mut subscription = Subscription::register(self, channels, connection, valid_for)?;
        for channel in subscription.channels() {
            self.broker.sync(channel).await?;
        }
        for backlog in subscription.place(cursor, self.settings.mirror) {
            let channel = &subscription.channels()[backlog.index];
            let events = self
                .broker
                .backlog(channel, backlog.after, backlog.upto, &self.settings)
                .await?;
            subscription.fill(&backlog, events);
        }
        Ok(subscription.finish())
    }

    /// A subscription left `channel`: an owned channel without subscribers or history goes at
    /// once; a mirror goes after the linger (housekeeping), so churn does not resubscribe.
    fn release(&self, channel: &Arc<Channel>) {
        if !self.settings.mirror && channel.subscriber_count() == 0 {
            self.registry.remove_if_idle(channel);
        }
    }

    fn next_subscriber_id(&self) -> u64 {
        self.next_subscriber.fetch_add(1, Relaxed)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Relaxed)
    }

    /// Whether the hub accepts publishes and subscriptions.
    pub fn is_ready(&self) -> bool {
        !self.is_shutting_down() && self.broker.is_ready()
    }

    /// Tells every stream to send a short randomized `retry:` and end, so clients reconnect
    /// elsewhere and resume by `Last-Event-ID`.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Relaxed);
        let now_ms = self.clock.now_ms();
        for channel in self.registry.snapshot() {
            channel.for_each_subscriber(|waiter, _| waiter.shut_down(now_ms));
        }
    }

    /// Runs until `stop`: expires history, sends heartbeats, evicts stalled subscribers and
    /// removes idle channels.
    pub async fn housekeeping(self: Arc<Self>, stop: CancellationToken) {
        let shortest = [
            self.settings.heartbeat,
            self.settings.write_timeout,
            self.settings.history.ttl,
        ]
        .into_iter()
        .min()
        .unwrap_or(Duration::from_secs(1));
        let tick = (shortest / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = interval.tick() => self.sweep(),
            }
        }
    }

    fn sweep(&self) {
        let now = Instant::now();
        let now_ms = self.clock.now_ms();
        let heartbeat_ms = self.settings.heartbeat.as_millis() as u64;
        let write_timeout_ms = self.settings.write_timeout.as_millis() as u64;
        for channel in self.registry.snapshot() {
            let empty = channel.expire(now, self.settings.history.ttl);
            channel.for_each_subscriber(|waiter, _| {
                waiter.check(now_ms, heartbeat_ms, write_timeout_ms, &self.metrics)
            });
            let idle = channel.subscriber_count() == 0 && (empty || self.settings.mirror);
            if idle && self.registry.remove_if_idle(&channel) {
                self.broker.release(channel.name());
            }
        }
    }
}

/// When channels without subscribers may be dropped.
fn retention(config: &Config) -> Retention {
    if config.redis_url.is_some() {
        Retention::Mirror {
            linger: config.redis_linger,
        }
    } else {
        // A closed channel outlives its history long enough for clients to reconnect and be
        // told it ended.
        Retention::Owner {
            closed_linger: config
                .history_ttl
                .saturating_add(config.history_ttl.max(Duration::from_secs(60))),
        }
    }
}
