//! A channel's retained events: a ring bounded by count, bytes and age, indexed by dense seq.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sse::Event;

/// Bounds of one channel's history.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub events: usize,
    pub bytes: usize,
    pub ttl: Duration,
}

/// Retained events of one channel, oldest first, with consecutive seqs.
#[derive(Debug, Default)]
pub struct History {
    events: VecDeque<Arc<Event>>,
    bytes: usize,
}

impl History {
    /// Appends `event` (whose seq follows the newest) and trims to `limits`.
    pub fn push(&mut self, event: Arc<Event>, limits: Limits) {
        debug_assert!(self
            .events
            .back()
            .is_none_or(|last| last.seq + 1 == event.seq));
        self.bytes += event.frame.len();
        self.events.push_back(event);
        while self.events.len() > limits.events
            || (self.bytes > limits.bytes && self.events.len() > 1)
        {
            self.pop_front();
        }
    }

    /// Drops events published before `now - ttl`; returns how many.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let mut dropped = 0;
        while let Some(front) = self.events.front() {
            if now.duration_since(front.published_at) < ttl {
                break;
            }
            self.pop_front();
            dropped += 1;
        }
        dropped
    }

    fn pop_front(&mut self) {
        if let Some(event) = self.events.pop_front() {
            self.bytes -= event.frame.len();
        }
    }

    /// When the oldest retained event was published, if any.
    pub fn oldest_published_at(&self) -> Option<Instant> {
        self.events.front().map(|e| e.published_at)
    }

    /// Seq of the oldest retained event, if any.
    pub fn first_seq(&self) -> Option<u64> {
        self.events.front().map(|e| e.seq)
    }

    /// Retained events with seq greater than `after`, oldest first. The caller checks that
    /// `after + 1` is still retained (or that nothing was trimmed) before trusting the result.
    pub fn after(&self, after: u64) -> impl Iterator<Item = &Arc<Event>> {
        let skip = match self.events.front() {
            Some(first) if after >= first.seq => (after - first.seq + 1) as usize,
            _ => 0,
        };
        self.events.iter().skip(skip)
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::{Epoch, EventFields, Position};

    fn event(seq: u64, data: &str, at: Instant) -> Arc<Event> {
        let fields = EventFields {
            event: None,
            data: data.into(),
            retry: None,
            close: false,
        };
        let position = Position {
            epoch: Epoch::from_raw(3),
            seq,
        };
        Arc::new(Event::encode(position, &fields, at))
    }

    fn limits(events: usize, bytes: usize) -> Limits {
        Limits {
            events,
            bytes,
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn trims_by_count() {
        let now = Instant::now();
        let mut history = History::default();
        for seq in 1..=5 {
            history.push(event(seq, "x", now), limits(3, 1 << 20));
        }
        assert_eq!(history.first_seq(), Some(3));
        let seqs: Vec<u64> = history.after(3).map(|e| e.seq).collect();
        assert_eq!(seqs, vec![4, 5]);
        let seqs: Vec<u64> = history.after(0).map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(history.after(5).count(), 0);
    }

    #[test]
    fn trims_by_bytes_but_keeps_newest() {
        let now = Instant::now();
        let mut history = History::default();
        let big = "y".repeat(100);
        for seq in 1..=4 {
            history.push(event(seq, &big, now), limits(100, 250));
        }
        assert_eq!(history.len(), 2);
        assert!(history.bytes() <= 250);
        history.push(event(5, &"z".repeat(1000), now), limits(100, 250));
        assert_eq!(history.len(), 1);
        assert_eq!(history.first_seq(), Some(5));
    }

    #[test]
    fn expires_by_age() {
        let start = Instant::now();
        let mut history = History::default();
        history.push(event(1, "a", start), limits(10, 1 << 20));
        history.push(
            event(2, "b", start + Duration::from_secs(30)),
            limits(10, 1 << 20),
        );
        assert_eq!(
            history.expire(start + Duration::from_secs(61), Duration::from_secs(60)),
            1
        );
        assert_eq!(history.first_seq(), Some(2));
        assert_eq!(
            history.bytes(),
            history.after(0).map(|e| e.frame.len()).sum::<usize>()
        );
    }
}
