//! Brokers order events: they assign each accepted event its channel position. In memory, the
//! channels themselves do; with Redis, a script does, so several nodes act as one hub.

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use crate::hub::channel::Channel;
use crate::hub::Settings;
use crate::sse::Event;
pub use memory::MemoryBroker;
pub use redis::{Feed, RedisBroker};

/// An event the memory broker accepted, in the channel it went to.
pub type Appended = (Arc<Channel>, Arc<Event>);

/// Why the broker could not act; the request had no effect (or, after a timeout, an unknown one).
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("invalid Redis settings: {0}")]
    Config(String),
}

/// The broker of this hub.
pub enum Broker {
    Memory(MemoryBroker),
    Redis(Box<RedisBroker>),
}

impl Broker {
    /// Makes `channel` ready to serve: a Redis mirror subscribes and learns its head.
    pub async fn sync(&self, channel: &Arc<Channel>) -> Result<(), BrokerError> {
        match self {
            Broker::Memory(_) => Ok(()),
            Broker::Redis(redis) => redis.sync(channel).await,
        }
    }

    /// Events of `channel` after `after` up to `upto` that its local log does not hold.
    pub async fn backlog(
        &self,
        channel: &Channel,
        after: u64,
        upto: u64,
        settings: &Settings,
    ) -> Result<Vec<Arc<Event>>, BrokerError> {
        match self {
            // The memory broker's logs are the whole history.
            Broker::Memory(_) => Ok(Vec::new()),
            Broker::Redis(redis) => redis.backlog(channel, after, upto, settings).await,
        }
    }

    /// `channel` left the registry.
    pub fn release(&self, channel: &str) {
        if let Broker::Redis(redis) = self {
            redis.release(channel);
        }
    }

    /// Whether events can be accepted now.
    pub fn is_ready(&self) -> bool {
        match self {
            Broker::Memory(_) => true,
            Broker::Redis(redis) => redis.is_ready(),
        }
    }
}
