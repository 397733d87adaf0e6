//! Per-subscriber delivery checks: which sequence numbers arrived, how often and in what order,
//! so lost, duplicated and out-of-order deliveries are counted for every subscriber, not
//! guessed from totals.

use serde::{Deserialize, Serialize};

/// Highest sequence number tracked (4 Mi events per channel, 512 KiB of bits at most); a larger
/// one counts as foreign data.
pub const MAX_SEQ: u64 = 1 << 22;

/// How one delivery relates to the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// First time seen, after every earlier one.
    InOrder,
    /// First time seen, but a higher number came before it.
    OutOfOrder,
    /// Seen before.
    Duplicate,
    /// Not a number this tool tracks.
    Foreign,
}

/// What one subscriber received.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    seen: Vec<u64>,
    highest: Option<u64>,
    lowest: Option<u64>,
    received: u64,
    distinct: u64,
    duplicated: u64,
    out_of_order: u64,
}

impl Tracker {
    /// An empty tracker (allocates nothing until the first delivery).
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Notes the delivery of `seq`.
    pub fn deliver(&mut self, seq: u64) -> Delivery {
        if seq >= MAX_SEQ {
            return Delivery::Foreign;
        }
        self.received += 1;
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicated += 1;
            return Delivery::Duplicate;
        }
        self.seen[word] |= 1 << bit;
        self.distinct += 1;
        self.lowest = Some(self.lowest.map_or(seq, |low| low.min(seq)));
        let in_order = self.highest.is_none_or(|high| seq > high);
        self.highest = Some(self.highest.map_or(seq, |high| high.max(seq)));
        if in_order {
            Delivery::InOrder
        } else {
            self.out_of_order += 1;
            Delivery::OutOfOrder
        }
    }

    /// Whether `seq` arrived.
    pub fn has(&self, seq: u64) -> bool {
        self.seen
            .get((seq / 64) as usize)
            .is_some_and(|word| word & (1 << (seq % 64)) != 0)
    }

    /// Counts for an expected range `from..to` of sequence numbers.
    pub fn counts(&self, from: u64, to: u64) -> Counts {
        let arrived = (from..to.min(MAX_SEQ)).filter(|&seq| self.has(seq)).count() as u64;
        let expected = to.saturating_sub(from);
        Counts {
            expected,
            received: self.received,
            lost: expected - arrived,
            duplicated: self.duplicated,
            out_of_order: self.out_of_order,
            unexpected: self.distinct - arrived,
            ..Counts::default()
        }
    }

    /// Counts for a subscriber that joined and left while events flowed: everything between the
    /// first and the last number it saw was expected.
    pub fn counts_between_first_and_last(&self) -> Counts {
        match (self.lowest, self.highest) {
            (Some(low), Some(high)) => self.counts(low, high + 1),
            _ => self.counts(0, 0),
        }
    }

    /// Distinct numbers received.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }
}

/// Delivery counts, for one subscriber or summed over many.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Deliveries that should have arrived.
    pub expected: u64,
    /// Deliveries that arrived (duplicates included).
    pub received: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Deliveries of an event already received.
    pub duplicated: u64,
    /// Deliveries that came after a later event.
    pub out_of_order: u64,
    /// Tool events outside the expected range (for example an event before the resume point).
    pub unexpected: u64,
    /// Events that carry no tool payload (a `gap`, another publisher's data).
    pub foreign: u64,
    /// `gap` events (the server said it could not resume exactly).
    pub gaps: u64,
    /// Subscribers with any loss, duplicate, disorder, unexpected, or broken stream.
    pub faulty_subscribers: u64,
    /// Subscribers that could not connect or got no event stream.
    pub connect_failed: u64,
    /// Streams that ended or broke before the run did.
    pub broken_streams: u64,
}

impl Counts {
    /// Adds another subscriber's counts.
    pub fn add(&mut self, other: &Counts) {
        self.expected += other.expected;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.unexpected += other.unexpected;
        self.foreign += other.foreign;
        self.gaps += other.gaps;
        self.faulty_subscribers += other.faulty_subscribers;
        self.connect_failed += other.connect_failed;
        self.broken_streams += other.broken_streams;
    }

    /// Nothing lost, duplicated, disordered, unexpected, or broken.
    pub fn exact(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.unexpected == 0
            && self.gaps == 0
            && self.connect_failed == 0
            && self.broken_streams == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_duplicates_and_losses() {
        let mut tracker = Tracker::new();
        assert_eq!(tracker.deliver(0), Delivery::InOrder);
        assert_eq!(tracker.deliver(2), Delivery::InOrder);
        assert_eq!(tracker.deliver(1), Delivery::OutOfOrder);
        assert_eq!(tracker.deliver(2), Delivery::Duplicate);
        assert_eq!(tracker.deliver(70), Delivery::InOrder);
        assert_eq!(tracker.deliver(MAX_SEQ), Delivery::Foreign);
        let counts = tracker.counts(0, 5);
        assert_eq!(counts.expected, 5);
        assert_eq!(counts.received, 5);
        assert_eq!(counts.lost, 2);
        assert_eq!(counts.duplicated, 1);
        assert_eq!(counts.out_of_order, 1);
        assert_eq!(counts.unexpected, 1);
        assert!(!counts.exact());
    }

    #[test]
    fn joined_late_and_left_early() {
        let mut tracker = Tracker::new();
        for seq in [5, 6, 8] {
            tracker.deliver(seq);
        }
        let counts = tracker.counts_between_first_and_last();
        assert_eq!((counts.expected, counts.lost), (4, 1));
        assert!(Tracker::new().counts_between_first_and_last().exact());
    }
}
