//! One channel: its log (epoch, seq, history, terminal state) and the subscribers to wake.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::history::{History, Limits};
use super::subscription::Waiter;
use crate::sse::{Epoch, Event, EventFields, Position};

/// A named stream of events. Events enter its log in seq order (assigned here by the memory
/// broker, or mirrored from Redis); subscribers read the log from their own position, so replay
/// and live delivery are one sequence with no duplicate and no gap.
pub struct Channel {
    name: Arc<str>,
    log: RwLock<Log>,
    subscribers: RwLock<Subscribers>,
}

#[derive(Default)]
struct Subscribers {
    by_id: HashMap<u64, Registration>,
    /// Since when nobody subscribes (for the Redis unsubscribe linger).
    idle_since: Option<Instant>,
}

struct Registration {
    waiter: Arc<Waiter>,
    /// Index of this channel among the subscription's channels.
    index: usize,
}

/// When a channel without subscribers may be dropped.
#[derive(Debug, Clone, Copy)]
pub enum Retention {
    /// The log is the only copy: keep it while it has history, and a closed channel for
    /// `closed_linger` after its terminal event.
    Owner { closed_linger: Duration },
    /// The log mirrors Redis: drop it `linger` after the last subscriber left.
    Mirror { linger: Duration },
}

/// The ordered events of a channel.
pub struct Log {
    epoch: Epoch,
    /// Seq of the newest event (0: none yet).
    head: u64,
    history: History,
    /// Seq of the terminal event and when it was published, once one was.
    closed_at: Option<(u64, Instant)>,
    /// A mirror's epoch and head are known (read from Redis); an owner's always are.
    synced: bool,
    /// Set when the registry dropped this channel: look the name up again.
    removed: bool,
}

/// The channel took a terminal event and accepts no more.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("channel is closed")]
pub struct ChannelClosed;

/// What became of an event offered to a mirrored log.
#[derive(Debug)]
pub enum Insert {
    Appended(Arc<Event>),
    /// Already in the log (seq at or below head).
    Stale,
    /// Events between the head and this one are missing: fill them first.
    Hole {
        head: u64,
    },
    /// The event belongs to another epoch: the history was lost; reset first.
    OtherEpoch,
}

impl Channel {
    /// A channel whose log this process owns (memory broker), or a mirror awaiting its sync.
    pub fn new(name: &str, synced: bool) -> Channel {
        Channel {
            name: Arc::from(name),
            log: RwLock::new(Log {
                epoch: Epoch::random(),
                head: 0,
                history: History::default(),
                closed_at: None,
                synced,
                removed: false,
            }),
            subscribers: RwLock::new(Subscribers {
                by_id: HashMap::new(),
                idle_since: Some(Instant::now()),
            }),
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
        subscribers.by_id.insert(
            waiter.id(),
            Registration {
                waiter: waiter.clone(),
                index,
            },
        );
        subscribers.idle_since = None;
        true
    }

    pub fn unregister(&self, waiter_id: u64) {
        let mut subscribers = self.subscribers.write();
        subscribers.by_id.remove(&waiter_id);
        if subscribers.by_id.is_empty() {
            subscribers.idle_since = Some(Instant::now());
        }
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.read().by_id.len()
    }

    /// Calls `f` with each subscriber's waiter and the index of this channel in its subscription.
    pub fn for_each_subscriber(&self, mut f: impl FnMut(&Arc<Waiter>, usize)) {
        for registration in self.subscribers.read().by_id.values() {
            f(&registration.waiter, registration.index);
        }
    }

    /// Marks the channel removed when `retention` lets it go.
    pub fn retire_if_idle(&self, now: Instant, retention: Retention) -> bool {
        let subscribers = self.subscribers.read();
        let mut log = self.log.write();
        if !subscribers.by_id.is_empty() || log.removed {
            return false;
        }
        let idle = match retention {
            Retention::Owner { closed_linger } => {
                log.history.is_empty()
                    && log
                        .closed_at
                        .is_none_or(|(_, at)| now.duration_since(at) >= closed_linger)
            }
            Retention::Mirror { linger } => subscribers
                .idle_since
                .is_some_and(|since| now.duration_since(since) >= linger),
        };
        if idle {
            log.removed = true;
        }
        idle
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

    pub fn is_synced(&self) -> bool {
        self.synced
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
        let position = Position {
            epoch: self.epoch,
            seq: self.head + 1,
        };
        self.push(position, fields, now, limits)
    }

    fn push(
        &mut self,
        position: Position,
        fields: &EventFields,
        published_at: Instant,
        limits: Limits,
    ) -> Arc<Event> {
        self.head = position.seq;
        let event = Arc::new(Event::encode(position, fields, published_at));
        if fields.close {
            self.closed_at = Some((self.head, published_at));
        }
        self.history.push(event.clone(), limits);
        event
    }

    /// A mirror learns where its channel stands: everything up to `head` is served from Redis.
    pub fn sync(&mut self, epoch: Epoch, head: u64, closed_at: Option<u64>) {
        self.epoch = epoch;
        self.head = head;
        self.history = History::default();
        let now = Instant::now();
        self.closed_at = closed_at.map(|seq| (seq, now));
        self.synced = true;
    }

    /// Offers a mirrored event at `position`; it is appended only when it is the next one.
    pub fn insert(
        &mut self,
        position: Position,
        fields: &EventFields,
        published_at: Instant,
        limits: Limits,
    ) -> Insert {
        if position.epoch != self.epoch {
            Insert::OtherEpoch
        } else if position.seq <= self.head {
            Insert::Stale
        } else if position.seq > self.head + 1 {
            Insert::Hole { head: self.head }
        } else {
            Insert::Appended(self.push(position, fields, published_at, limits))
        }
    }
}
