//! Brokers order events: they assign each accepted event its channel position. In memory today;
//! Redis (several nodes as one hub) slots in as another variant.

pub mod memory;

use std::sync::Arc;

use crate::hub::channel::Channel;
use crate::hub::registry::Registry;
use crate::hub::{Publication, PublishError, Settings};
use crate::sse::Event;
pub use memory::MemoryBroker;

/// An event the broker accepted, in the channel it went to.
pub type Appended = (Arc<Channel>, Arc<Event>);

/// The broker of this hub.
pub enum Broker {
    Memory(MemoryBroker),
}

impl Broker {
    /// Accepts `batch` whole or not at all; the events are in their channels' logs on return.
    pub async fn publish(
        &self,
        registry: &Registry,
        batch: &[Publication],
        settings: &Settings,
    ) -> Result<Vec<Appended>, PublishError> {
        match self {
            Broker::Memory(memory) => memory.publish(registry, batch, settings),
        }
    }

    /// Whether events can be accepted now.
    pub fn is_ready(&self) -> bool {
        match self {
            Broker::Memory(_) => true,
        }
    }
}
