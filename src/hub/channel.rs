//! One channel: its log (epoch, seq, history, terminal state) and the subscribers to wake.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::history::{History, Limits};
use super::subscription::Waiter;
use crate::sse::{Epoch, Event, EventFields, Position};

/// A named stream of events. Publishers append to its log; subscribers read the log from their
/// own position, so replay and live delivery are one sequence with no duplicate and no gap.
pub struct Channel {
    name: Arc<str>,
    log: RwLock<Log>,
    subscribers: RwLock<HashMap<u64, Registration>>,
}

struct Registration {
    waiter: Arc<Waiter>,
    /// Index of this channel among the subscription's channels.
    index: usize,
}

/// The ordered events of a channel.
pub struct Log {
    epoch: Epoch,
    /// Seq of the newest event (0: none yet).
    head: u64,
    history: History,
    /// Seq of the terminal event and when it was published, once one was.
    closed_at: Option<(u64, Instant)>,
    /// Set when the registry dropped this channel: look the name up again.
    removed: bool,
}

/// The channel took a terminal event and accepts no more.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("channel is closed")]
pub struct ChannelClosed;

impl Channel {
    pub fn new(name: &str) -> Channel {
        Channel {
            name: Arc::from(name),
            log: RwLock::new(Log {
                epoch: Epoch::random(),
                head: 0,
                history: History::default(),
                closed_at: None,
                removed: false,
            }),
            subscribers: RwLock::new(HashMap::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }

    pub fn log(&self) -> RwLockReadGuard<'_, Log> {
        self.log.read()
    }

    pub fn log_mut(&self) -> RwLockWriteGuard<'_, Log> {
        self.log.write()
    }

    /// Adds `waiter` to the subscribers woken on publish; `false` if the channel was removed.
    pub fn register(&self, waiter: &Arc<Waiter>, index: usize) -> bool {
        let mut subscribers = self.subscribers.write();
        if self.log.read().removed {
            return false;
        }
        subscribers.insert(
            waiter.id(),
            Registration {
                waiter: waiter.clone(),
                index,
            },
        );
        true
    }

    pub fn unregister(&self, waiter_id: u64) {
        self.subscribers.write().remove(&waiter_id);
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.read().len()
    }

    /// Calls `f` with each subscriber's waiter and the index of this channel in its subscription.
    pub fn for_each_subscriber(&self, mut f: impl FnMut(&Arc<Waiter>, usize)) {
        for registration in self.subscribers.read().values() {
            f(&registration.waiter, registration.index);
        }
    }

    /// Marks the channel removed when nobody listens and nothing is retained. A closed channel
    /// is kept until `closed_linger` after its terminal event, so late reconnects still get
    /// `204` (and publishers `409`) after its history expired.
    pub fn retire_if_idle(&self, now: Instant, closed_linger: Duration) -> bool {
        let subscribers = self.subscribers.read();
        let mut log = self.log.write();
        let lingering = log
            .closed_at
            .is_some_and(|(_, at)| now.duration_since(at) < closed_linger);
        if !subscribers.is_empty() || !log.history.is_empty() || log.removed || lingering {
            return false;
        }
        log.removed = true;
        true
    }

    /// Drops events older than `ttl`; `true` if the channel is left without history.
    pub fn expire(&self, now: Instant, ttl: Duration) -> bool {
        let oldest = self.log.read().history.oldest_published_at();
        match oldest {
            None => true,
            Some(at) if now.duration_since(at) >= ttl => {
                let mut log = self.log.write();
                log.history.expire(now, ttl);
                log.history.is_empty()
            }
            Some(_) => false,
        }
    }
}

impl Log {
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Seq of the terminal event, once one was published.
    pub fn closed_at(&self) -> Option<u64> {
        self.closed_at.map(|(seq, _)| seq)
    }

    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// The position after the newest event.
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.head,
        }
    }

    /// Seq of the oldest event still readable: the first retained one, or the next to come.
    pub fn first_available(&self) -> u64 {
        self.history.first_seq().unwrap_or(self.head + 1)
    }

    /// Refuses a new event once the channel is closed.
    pub fn check_open(&self) -> Result<(), ChannelClosed> {
        match self.closed_at {
            Some(_) => Err(ChannelClosed),
            None => Ok(()),
        }
    }

    /// Assigns the next seq to `fields`, encodes the event once and retains it.
    pub fn append(&mut self, fields: &EventFields, now: Instant, limits: Limits) -> Arc<Event> {
        self.head += 1;
        let position = Position {
            epoch: self.epoch,
            seq: self.head,
        };
        let event = Arc::new(Event::encode(position, fields, now));
        if fields.close {
            self.closed_at = Some((self.head, now));
        }
        self.history.push(event.clone(), limits);
        event
    }
}
