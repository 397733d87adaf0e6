//! The channels alive in this hub, by name, bounded by `max-channels`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use prometheus::IntGauge;

use super::channel::{Channel, Retention};

/// Name → channel map. A channel is created by its first publisher or subscriber and removed
/// when it has neither subscribers nor history.
pub struct Registry {
    channels: RwLock<HashMap<Arc<str>, Arc<Channel>>>,
    max_channels: usize,
    retention: Retention,
    gauge: IntGauge,
}

/// `max-channels` is reached.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the hub holds its maximum number of channels")]
pub struct RegistryFull;

impl Registry {
    pub fn new(max_channels: usize, retention: Retention, gauge: IntGauge) -> Registry {
        Registry {
            channels: RwLock::new(HashMap::new()),
            max_channels,
            retention,
            gauge,
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels.read().get(name).cloned()
    }

    /// The channel named `name`, created (with a new epoch) if absent.
    pub fn get_or_create(&self, name: &str) -> Result<Arc<Channel>, RegistryFull> {
        if let Some(channel) = self.get(name) {
            return Ok(channel);
        }
        let mut channels = self.channels.write();
        if let Some(channel) = channels.get(name) {
            return Ok(channel.clone());
        }
        if channels.len() >= self.max_channels {
            return Err(RegistryFull);
        }
        let owner = matches!(self.retention, Retention::Owner { .. });
        let channel = Arc::new(Channel::new(name, owner));
        channels.insert(channel.name_arc(), channel.clone());
        self.gauge.set(channels.len() as i64);
        Ok(channel)
    }

    /// Removes `channel` if it is still the registered one and its [`Retention`] lets it go.
    /// Holders of the `Arc` see it marked removed and look the name up again.
    pub fn remove_if_idle(&self, channel: &Arc<Channel>) -> bool {
        let mut channels = self.channels.write();
        let registered = channels
            .get(channel.name())
            .is_some_and(|c| Arc::ptr_eq(c, channel));
        if !registered || !channel.retire_if_idle(Instant::now(), self.retention) {
            return false;
        }
        channels.remove(channel.name());
        self.gauge.set(channels.len() as i64);
        true
    }

    /// Every channel, for housekeeping and shutdown.
    pub fn snapshot(&self) -> Vec<Arc<Channel>> {
        self.channels.read().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.channels.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
