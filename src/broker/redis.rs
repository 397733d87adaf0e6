//! The Redis broker: any number of nodes as one hub. One Lua script per publish assigns each
//! event its channel's epoch and next seq, appends it to a capped per-channel stream and
//! `PUBLISH`es it. Every node, the publishing one included, receives events only through its
//! feed (one pub/sub connection, `SUBSCRIBE` per channel with local subscribers), fills holes
//! from the stream, and mirrors them into its local channels: one delivery path, in seq order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::{Client, Msg, Script};
use tokio::sync::{mpsc, oneshot, OnceCell};
use tokio_util::sync::CancellationToken;

use super::BrokerError;
use crate::config::Config;
use crate::hub::channel::{Channel, Insert};
use crate::hub::{Hub, Publication, PublishError, Receipt, Settings};
use crate::metrics::Metrics;
use crate::sse::{Epoch, Event, EventFields, Position};

const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Commands the feed handles together (one `SUBSCRIBE`, one pipeline).
const MAX_COMMAND_BATCH: usize = 1024;

/// Publishes through Redis and serves history older than the local logs from its streams.
pub struct RedisBroker {
    client: Client,
    connection: OnceCell<ConnectionManager>,
    publish: Script,
    keys: Keys,
    timeout: Duration,
    closed_ttl: Duration,
    feed: mpsc::UnboundedSender<Command>,
    up: Arc<AtomicBool>,
}

/// The node's pub/sub side; run it with [`Feed::run`].
pub struct Feed {
    client: Client,
    commands: mpsc::UnboundedReceiver<Command>,
    sync: Script,
    keys: Keys,
    timeout: Duration,
    up: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    subscribed: HashSet<String>,
}

enum Command {
    /// Subscribe to a channel and learn where it stands; answered when done.
    Sync {
        channel: Arc<Channel>,
        reply: oneshot::Sender<Result<(), BrokerError>>,
    },
    /// The channel left the registry: unsubscribe unless it came back.
    Release { name: String },
}

/// Key and topic names; everything of a channel shares the hash tag `{channel}`.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn meta(&self, channel: &str) -> String {
        format!("{}:{{{channel}}}:m", self.prefix)
    }

    fn stream(&self, channel: &str) -> String {
        format!("{}:{{{channel}}}:s", self.prefix)
    }

    fn topic(&self, channel: &str) -> String {
        format!("{}:{{{channel}}}", self.prefix)
    }

    fn channel_of<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix('}')
    }
}

impl RedisBroker {
    /// The broker and its feed; nothing is connected yet (Redis may come up later).
    pub fn new(
        config: &Config,
        url: &str,
        metrics: Arc<Metrics>,
    ) -> Result<(RedisBroker, Feed), BrokerError> {
        let client = match &config.redis_ca_file {
            None => Client::open(url),
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|err| {
                    BrokerError::Config(format!("cannot read {}: {err}", path.display()))
                })?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                Client::build_with_tls(url, certificates)
            }
        }
        .map_err(|err| BrokerError::Config(err.to_string()))?;
        let keys = Keys {
            prefix: config.redis_prefix.clone(),
        };
        let (feed, commands) = mpsc::unbounded_channel();
        let up = Arc::new(AtomicBool::new(false));
        let broker = RedisBroker {
            client: client.clone(),
            connection: OnceCell::new(),
            publish: Script::new(include_str!("lua/publish.lua")),
            keys: keys.clone(),
            timeout: config.redis_timeout,
            closed_ttl: config
                .history_ttl
                .saturating_add(config.history_ttl.max(Duration::from_secs(60))),
            feed,
            up: up.clone(),
        };
        let feed = Feed {
            client,
            commands,
            sync: Script::new(include_str!("lua/sync.lua")),
            keys,
            timeout: config.redis_timeout,
            up,
            metrics,
            subscribed: HashSet::new(),
        };
        Ok((broker, feed))
    }

    pub fn is_ready(&self) -> bool {
        self.up.load(Relaxed)
    }

    async fn connection(&self) -> Result<ConnectionManager, BrokerError> {
        let timeout = self.timeout;
        let connection = self
            .connection
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_max_delay(MAX_BACKOFF);
                self.client
                    .get_connection_manager_with_config(config)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        Ok(connection.clone())
    }

    /// Runs `command` within `redis-timeout`, once more if the connection turned out to be dead
    /// before the command could be sent (the first use after Redis restarted). The inner
    /// result carries Redis's own answer.
    async fn command<T, F, Fut>(&self, command: F) -> Result<redis::RedisResult<T>, BrokerError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let attempt = async {
            let result = command(self.connection().await?).await;
            match result {
                Err(err) if err.is_connection_dropped() => {
                    Ok(command(self.connection().await?).await)
                }
                result => Ok(result),
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| BrokerError::Timeout(self.timeout))?
    }

    /// Runs the publish script: all events of `batch` or none.
    pub async fn publish(
        &self,
        batch: &[Publication],
        settings: &Settings,
    ) -> Result<Vec<Receipt>, PublishError> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut names: Vec<&str> = Vec::new();
        let mut closing = Vec::new();
        for publication in batch {
            let i = *index.entry(&publication.channel).or_insert_with(|| {
                names.push(&publication.channel);
                closing.push(false);
                names.len() - 1
            });
            if closing[i] {
                return Err(PublishError::Closed(publication.channel.clone()));
            }
            closing[i] = publication.fields.close;
        }
        let mut invocation = self.publish.prepare_invoke();
        for name in &names {
            invocation
                .key(self.keys.meta(name))
                .key(self.keys.stream(name));
        }
        invocation
            .arg(names.len())
            .arg(millis(settings.history.ttl))
            .arg(millis(self.closed_ttl))
            .arg(settings.history.events)
            .arg(unix_micros());
        for _ in &names {
            invocation.arg(Epoch::random().to_string());
        }
        for name in &names {
            invocation.arg(self.keys.topic(name));
        }
        for publication in batch {
            let fields = &publication.fields;
            invocation
                .arg(index[publication.channel.as_str()] + 1)
                .arg(fields.event.as_deref().unwrap_or(""))
                .arg(fields.data.as_str())
                .arg(fields.retry.map(|r| r.to_string()).unwrap_or_default())
                .arg(if fields.close { "1" } else { "0" });
        }
        let result = self
            .command(|mut connection| {
                let invocation = &invocation;
                async move {
                    invocation
                        .invoke_async::<Vec<(String, u64)>>(&mut connection)
                        .await
                }
            })
            .await?;
        let ids = match result {
            Ok(ids) => ids,
            Err(err) if err.code() == Some("SSEHUB_CLOSED") => {
                let i: usize = err
                    .detail()
                    .and_then(|d| d.trim().parse().ok())
                    .unwrap_or(1);
                let name = names.get(i.saturating_sub(1)).copied().unwrap_or_default();
                return Err(PublishError::Closed(name.to_owned()));
            }
            Err(err) => return Err(unavailable(err).into()),
        };
        if ids.len() != batch.len() {
            return Err(BrokerError::Unavailable(format!(
                "Redis answered {} ids for {} events",
                ids.len(),
                batch.len()
            ))
            .into());
        }
        Ok(batch
            .iter()
            .zip(ids)
            .map(|(publication, (epoch, seq))| Receipt {
                id: format!("{epoch}-{seq}"),
                channel: publication.channel.clone(),
            })
            .collect())
    }

    /// Subscribes this node to `channel` and learns its epoch and head (once per channel).
    pub async fn sync(&self, channel: &Arc<Channel>) -> Result<(), BrokerError> {
        if channel.log().is_synced() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let command = Command::Sync {
            channel: channel.clone(),
            reply,
        };
        self.feed
            .send(command)
            .map_err(|_| BrokerError::Unavailable("the feed stopped".into()))?;
        match tokio::time::timeout(self.timeout, answer).await {
            Err(_) => Err(BrokerError::Timeout(self.timeout)),
            Ok(Err(_)) => Err(BrokerError::Unavailable("the feed stopped".into())),
            Ok(Ok(result)) => result,
        }
    }

    /// Events after `after` up to `upto` of `channel`'s current epoch, from its stream,
    /// without those older than the history TTL.
    pub async fn backlog(
        &self,
        channel: &Channel,
        after: u64,
        upto: u64,
        settings: &Settings,
    ) -> Result<Vec<Arc<Event>>, BrokerError> {
        let epoch = channel.log().epoch();
        let stream = self.keys.stream(channel.name());
        let entries = self
            .command(|mut connection| {
                let stream = &stream;
                async move { xrange(&mut connection, stream, after, upto).await }
            })
            .await?
            .map_err(unavailable)?;
        let now = Instant::now();
        let now_us = unix_micros();
        Ok(entries
            .iter()
            .filter_map(|payload| Message::parse(payload))
            .filter(|m| m.position.epoch == epoch)
            .map(|m| {
                let published_at = m.published_at(now, now_us);
                (m, published_at)
            })
            .filter(|(_, at)| now.duration_since(*at) < settings.history.ttl)
            .map(|(m, at)| Arc::new(Event::encode(m.position, &m.fields, at)))
            .collect())
    }

    /// `channel` left the registry: the feed unsubscribes unless it is back.
    pub fn release(&self, channel: &str) {
        let _ = self.feed.send(Command::Release {
            name: channel.to_owned(),
        });
    }
}

impl Feed {
    /// Keeps the pub/sub connection up until `stop`: reconnects with backoff, resubscribes,
    /// and catches every channel up from its stream after each reconnect.
    pub async fn run(mut self, hub: Arc<Hub>, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        let mut first = true;
        loop {
            let connect = tokio::time::timeout(self.timeout, self.client.get_async_pubsub());
            let pubsub = tokio::select! {
                _ = stop.cancelled() => return,
                connected = connect => connected,
            };
            match pubsub {
                Ok(Ok(pubsub)) => {
                    if !first {
                        self.metrics.redis_reconnects.inc();
                    }
                    first = false;
                    backoff = Duration::from_millis(50);
                    if self.serve(pubsub, &hub, &stop).await {
                        return;
                    }
                    tracing::warn!("lost the Redis pub/sub connection; reconnecting");
                }
                Ok(Err(err)) => tracing::warn!(error = %err, "cannot reach Redis"),
                Err(_) => tracing::warn!(timeout = ?self.timeout, "Redis did not answer"),
            }
            self.set_up(false);
            self.subscribed.clear();
            let pause = tokio::time::sleep(backoff);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = &mut pause => break,
                    command = self.commands.recv() => match command {
                        None => return,
                        Some(command) => refuse(command),
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Serves one pub/sub connection; `true` when told to stop, `false` when the connection
    /// was lost.
    async fn serve(
        &mut self,
        pubsub: redis::aio::PubSub,
        hub: &Arc<Hub>,
        stop: &CancellationToken,
    ) -> bool {
        let (mut sink, mut stream) = pubsub.split();
        let Ok(mut connection) = self.command_connection().await else {
            return false;
        };
        let channels: Vec<Arc<Channel>> = hub
            .registry()
            .snapshot()
            .into_iter()
            .filter(|c| c.log().is_synced())
            .collect();
        if let Err(err) = self
            .resume(hub, &mut sink, &mut connection, &channels)
            .await
        {
            tracing::warn!(error = %err, "resubscribing after reconnect failed");
            return false;
        }
        self.set_up(true);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return true,
                command = self.commands.recv() => {
                    let Some(first) = command else { return true };
                    let mut batch = vec![first];
                    while batch.len() < MAX_COMMAND_BATCH {
                        match self.commands.try_recv() {
                            Ok(command) => batch.push(command),
                            Err(_) => break,
                        }
                    }
                    if !self.handle(hub, &mut sink, &mut connection, batch).await {
                        return false;
                    }
                }
                message = stream.next() => match message {
                    None => return false,
                    Some(message) => {
                        if let Err(err) = self.on_message(hub, &mut connection, &message).await {
                            tracing::warn!(error = %err, "cannot fill a hole from Redis");
                            return false;
                        }
                    }
                },
            }
        }
    }

    async fn command_connection(&self) -> Result<redis::aio::MultiplexedConnection, BrokerError> {
        within(self.timeout, self.client.get_multiplexed_async_connection()).await
    }

    /// Handles a batch of commands with one `SUBSCRIBE`, one pipeline of head reads and one
    /// `UNSUBSCRIBE`; `false` when the connection failed.
    async fn handle(
        &mut self,
        hub: &Arc<Hub>,
        sink: &mut PubSubSink,
        connection: &mut redis::aio::MultiplexedConnection,
        batch: Vec<Command>,
    ) -> bool {
        let mut channels = Vec::new();
        let mut replies = Vec::new();
        let mut released = Vec::new();
        for command in batch {
            match command {
                Command::Sync { channel, reply } => {
                    channels.push(channel);
                    replies.push(reply);
                }
                Command::Release { name } => {
                    let topic = self.keys.topic(&name);
                    if hub.registry().get(&name).is_none() && self.subscribed.remove(&topic) {
                        released.push(topic);
                    }
                }
            }
        }
        if !released.is_empty()
            && within(self.timeout, sink.unsubscribe(&released))
                .await
                .is_err()
        {
            return false;
        }
        if channels.is_empty() {
            return true;
        }
        let result = self.sync(hub, sink, connection, &channels).await;
        let ok = result.is_ok();
        for reply in replies {
            let _ = reply.send(result.clone());
        }
        ok
    }

    /// Subscribes to the topics of `channels` this connection is not subscribed to yet.
    async fn subscribe(
        &mut self,
        sink: &mut PubSubSink,
        channels: &[&Arc<Channel>],
    ) -> Result<(), BrokerError> {
        let topics: Vec<String> = channels
            .iter()
            .map(|c| self.keys.topic(c.name()))
            .filter(|t| !self.subscribed.contains(t))
            .collect();
        if !topics.is_empty() {
            within(self.timeout, sink.subscribe(&topics)).await?;
            self.subscribed.extend(topics);
        }
        Ok(())
    }

    /// Subscribes first, then reads the heads: every later event arrives on the feed.
    async fn sync(
        &mut self,
        hub: &Hub,
        sink: &mut PubSubSink,
        connection: &mut redis::aio::MultiplexedConnection,
        channels: &[Arc<Channel>],
    ) -> Result<(), BrokerError> {
        let mut pending: Vec<&Arc<Channel>> = Vec::new();
        for channel in channels {
            if !channel.log().is_synced() && !pending.iter().any(|c| Arc::ptr_eq(c, channel)) {
                pending.push(channel);
            }
        }
        self.subscribe(sink, &pending).await?;
        let heads = self.heads(hub, connection, &pending).await?;
        for (channel, (epoch, head, closed_at)) in pending.iter().zip(heads) {
            channel.log_mut().sync(epoch, head, closed_at);
        }
        Ok(())
    }

    /// Epoch, head and terminal seq of each channel in Redis (creating epochs as needed), in
    /// one pipeline.
    async fn heads(
        &self,
        hub: &Hub,
        connection: &mut redis::aio::MultiplexedConnection,
        channels: &[&Arc<Channel>],
    ) -> Result<Vec<(Epoch, u64, Option<u64>)>, BrokerError> {
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let ttl = millis(hub.settings().history.ttl);
        let mut pipe = redis::pipe();
        for channel in channels {
            let name = channel.name();
            pipe.cmd("EVALSHA")
                .arg(self.sync.get_hash())
                .arg(2)
                .arg(self.keys.meta(name))
                .arg(self.keys.stream(name))
                .arg(Epoch::random().to_string())
                .arg(ttl);
        }
        let query = async {
            self.sync.load_async(connection).await?;
            pipe.query_async::<Vec<(String, u64, Option<u64>)>>(connection)
                .await
        };
        let heads = within(self.timeout, query).await?;
        heads
            .into_iter()
            .map(|(epoch, seq, closed)| {
                let parsed = Epoch::parse(&epoch).ok_or_else(|| {
                    BrokerError::Unavailable(format!("bad epoch {epoch:?} in Redis"))
                })?;
                Ok((parsed, seq, closed))
            })
            .collect()
    }

    /// After a reconnect: resubscribe every synced channel, then deliver what was published
    /// meanwhile, or reset the channels whose history Redis lost.
    async fn resume(
        &mut self,
        hub: &Hub,
        sink: &mut PubSubSink,
        connection: &mut redis::aio::MultiplexedConnection,
        channels: &[Arc<Channel>],
    ) -> Result<(), BrokerError> {
        let channels: Vec<&Arc<Channel>> = channels.iter().collect();
        self.subscribe(sink, &channels).await?;
        let heads = self.heads(hub, connection, &channels).await?;
        for (channel, (epoch, head, closed_at)) in channels.into_iter().zip(heads) {
            let (local_epoch, local_head) = {
                let log = channel.log();
                (log.epoch(), log.head())
            };
            if epoch != local_epoch {
                tracing::info!(channel = channel.name(), "Redis lost the channel's history");
                hub.reset(channel, epoch, head, closed_at);
            } else if head > local_head {
                self.metrics.redis_catchups.inc();
                self.fill(hub, connection, channel, local_head, head)
                    .await?;
            }
        }
        Ok(())
    }

    async fn on_message(
        &self,
        hub: &Hub,
        connection: &mut redis::aio::MultiplexedConnection,
        message: &Msg,
    ) -> Result<(), BrokerError> {
        let Some(name) = self.keys.channel_of(message.get_channel_name()) else {
            return Ok(());
        };
        let Some(channel) = hub.registry().get(name) else {
            return Ok(());
        };
        if !channel.log().is_synced() {
            return Ok(());
        }
        let Some(event) = Message::parse(message.get_payload_bytes()) else {
            tracing::warn!(channel = name, "unreadable event on the Redis feed");
            return Ok(());
        };
        let now_us = unix_micros();
        let published_at = event.published_at(Instant::now(), now_us);
        hub.metrics()
            .publish_latency
            .observe(now_us.saturating_sub(event.published_us) as f64 / 1e6);
        match hub.mirror(&channel, event.position, &event.fields, published_at) {
            Insert::Appended(_) | Insert::Stale => Ok(()),
            Insert::Hole { head } => {
                self.metrics.redis_catchups.inc();
                self.fill(hub, connection, &channel, head, event.position.seq)
                    .await
            }
            Insert::OtherEpoch => {
                tracing::info!(channel = name, "the channel's epoch changed in Redis");
                hub.reset(&channel, event.position.epoch, 0, None);
                self.fill(hub, connection, &channel, 0, event.position.seq)
                    .await
            }
        }
    }

    /// Mirrors events after `after` up to `upto` from the stream. Events the stream no longer
    /// holds are lost to the connected subscribers: the channel is reset past them, so their
    /// streams end and they reconnect to a `gap` event.
    async fn fill(
        &self,
        hub: &Hub,
        connection: &mut redis::aio::MultiplexedConnection,
        channel: &Channel,
        after: u64,
        upto: u64,
    ) -> Result<(), BrokerError> {
        let stream = self.keys.stream(channel.name());
        let entries = within(self.timeout, xrange(connection, &stream, after, upto)).await?;
        let now = Instant::now();
        let now_us = unix_micros();
        for payload in &entries {
            let Some(event) = Message::parse(payload) else {
                continue;
            };
            let published_at = event.published_at(now, now_us);
            if let Insert::Hole { .. } | Insert::OtherEpoch =
                hub.mirror(channel, event.position, &event.fields, published_at)
            {
                hub.reset(channel, event.position.epoch, event.position.seq - 1, None);
                hub.mirror(channel, event.position, &event.fields, published_at);
            }
        }
        Ok(())
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Relaxed);
        self.metrics.redis_up.set(i64::from(up));
    }
}

/// Answers a command while Redis is unreachable.
fn refuse(command: Command) {
    if let Command::Sync { reply, .. } = command {
        let _ = reply.send(Err(BrokerError::Unavailable(
            "not connected to Redis".into(),
        )));
    }
}

/// Payloads of the stream entries after `after` up to `upto`.
async fn xrange(
    connection: &mut impl redis::aio::ConnectionLike,
    stream: &str,
    after: u64,
    upto: u64,
) -> redis::RedisResult<Vec<Vec<u8>>> {
    if upto <= after {
        return Ok(Vec::new());
    }
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg(format!("{}-0", after + 1))
        .arg(format!("{upto}-0"))
        .query_async(connection)
        .await?;
    Ok(entries
        .into_iter()
        .filter_map(|(_, mut fields)| (fields.len() == 2).then(|| fields.swap_remove(1)))
        .collect())
}

/// One event as Redis carries it: `epoch\nseq\npublished_us\nclose\nretry\nname\ndata`.
struct Message {
    position: Position,
    published_us: u64,
    fields: EventFields,
}

impl Message {
    fn parse(payload: &[u8]) -> Option<Message> {
        let mut parts = payload.splitn(7, |&b| b == b'\n');
        let mut text = || std::str::from_utf8(parts.next()?).ok();
        let epoch = Epoch::parse(text()?)?;
        let seq = text()?.parse().ok()?;
        let published_us = text()?.parse().ok()?;
        let close = text()? == "1";
        let retry = match text()? {
            "" => None,
            retry => Some(retry.parse().ok()?),
        };
        let event = match text()? {
            "" => None,
            name => Some(name.to_owned()),
        };
        let data = text()?.to_owned();
        Some(Message {
            position: Position { epoch, seq },
            published_us,
            fields: EventFields {
                event,
                data,
                retry,
                close,
            },
        })
    }

    /// When the event was published, on this node's monotonic clock.
    fn published_at(&self, now: Instant, now_us: u64) -> Instant {
        let age = Duration::from_micros(now_us.saturating_sub(self.published_us));
        now.checked_sub(age).unwrap_or(now)
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().max(1) as u64
}

/// `command`'s answer, or why there is none within `timeout`.
async fn within<T>(
    timeout: Duration,
    command: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, BrokerError> {
    tokio::time::timeout(timeout, command)
        .await
        .map_err(|_| BrokerError::Timeout(timeout))?
        .map_err(unavailable)
}

fn unavailable(err: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip_of_the_script_format() {
        let payload = b"00000A\n42\n1700000000000000\n1\n500\nupdate\nline 1\nline 2";
        let message = Message::parse(payload).expect("parses");
        assert_eq!(message.position.seq, 42);
        assert_eq!(message.position.epoch, Epoch::parse("00000A").unwrap());
        assert_eq!(message.fields.event.as_deref(), Some("update"));
        assert_eq!(message.fields.data, "line 1\nline 2");
        assert_eq!(message.fields.retry, Some(500));
        assert!(message.fields.close);
        let plain = Message::parse(b"00000A\n1\n5\n0\n\n\n").expect("parses");
        assert_eq!(plain.fields.event, None);
        assert_eq!(plain.fields.data, "");
        assert!(Message::parse(b"00000A\n1\n5\n0\n\n").is_none());
        assert!(Message::parse(b"bad\n1\n5\n0\n\n\nx").is_none());
    }

    #[test]
    fn topics_map_back_to_channels() {
        let keys = Keys {
            prefix: "hub".into(),
        };
        assert_eq!(keys.topic("chat/a:b"), "hub:{chat/a:b}");
        assert_eq!(keys.channel_of("hub:{chat/a:b}"), Some("chat/a:b"));
        assert_eq!(keys.channel_of("other:{x}"), None);
        assert_eq!(keys.meta("x"), "hub:{x}:m");
        assert_eq!(keys.stream("x"), "hub:{x}:s");
    }
}
