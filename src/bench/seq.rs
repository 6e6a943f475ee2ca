//! Per-subscriber delivery accounting: duplicates, reordering and loss by the publisher's
//! sequence number, and gaps/regressions by the server's per-room `seq`.

/// Publisher sequence numbers at or above this are not ours (bounds the bitset).
pub const MAX_PUB_SEQ: u64 = 1 << 26;

/// Tracks which publisher sequence numbers one subscriber received.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// Bit `p` set = publisher message `p` was received.
    seen: Vec<u64>,
    /// Highest `p` received so far; a new `p` below it arrived out of order.
    highest: Option<u64>,
    /// Distinct messages received.
    pub unique: u64,
    /// Messages received again.
    pub duplicated: u64,
    /// First receipts of a `p` lower than one already received.
    pub out_of_order: u64,
    /// Messages whose `p` is out of range (not from this run's publisher).
    pub foreign: u64,
}

impl SeqTracker {
    /// Records a receipt of publisher message `p`; true if it is the first receipt.
    pub fn observe(&mut self, p: u64) -> bool {
        if p >= MAX_PUB_SEQ {
            self.foreign += 1;
            return false;
        }
        let (word, bit) = ((p / 64) as usize, 1u64 << (p % 64));
        if word >= self.seen.len() {
            self.seen.resize((word + 1).next_power_of_two(), 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicated += 1;
            return false;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        match self.highest {
            Some(h) if p < h => self.out_of_order += 1,
            _ => self.highest = Some(p),
        }
        true
    }

    /// Messages in `accepted` this subscriber never received.
    pub fn missing_from(&self, accepted: &SeqTracker) -> u64 {
        accepted
            .seen
            .iter()
            .enumerate()
            .map(|(i, a)| u64::from((a & !self.seen.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }

    /// Messages of the `published` ones this subscriber never received.
    #[cfg(test)]
    pub fn lost(&self, published: u64) -> u64 {
        let n = published.min(MAX_PUB_SEQ);
        let (full, rest) = ((n / 64) as usize, n % 64);
        let mut got: u64 = self
            .seen
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        if let Some(w) = self.seen.get(full).filter(|_| rest != 0) {
            got += u64::from((w & ((1u64 << rest) - 1)).count_ones());
        }
        published.saturating_sub(got)
    }
}

/// Tracks the server's per-room `seq` as one subscriber sees it: it should increase by one.
#[derive(Debug, Default, Clone)]
pub struct ServerSeqTracker {
    /// Last `seq` seen.
    last: Option<u64>,
    /// Sequence numbers skipped (sum of gap sizes).
    pub gaps: u64,
    /// Deliveries whose `seq` was not above the last one (duplicates or reordering).
    pub regressions: u64,
}

impl ServerSeqTracker {
    /// Records a delivery with server `seq`.
    pub fn observe(&mut self, seq: u64) {
        if let Some(l) = self.last {
            if seq <= l {
                self.regressions += 1;
                return;
            }
            self.gaps += seq - l - 1;
        }
        self.last = Some(seq);
    }
}

/// The sum of all subscribers' accounting.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SeqTotals {
    /// Distinct deliveries.
    pub unique: u64,
    /// Never-received (publisher seq) deliveries.
    pub lost: u64,
    /// Repeated deliveries.
    pub duplicated: u64,
    /// Out of order by publisher seq.
    pub out_of_order: u64,
    /// Out of order or repeated by server seq.
    pub server_seq_regressions: u64,
    /// Server seq numbers skipped.
    pub server_seq_gaps: u64,
    /// Deliveries not from this run.
    pub foreign: u64,
}

impl SeqTotals {
    /// Adds one subscriber; `accepted` = the publishes the server acked.
    pub fn add(&mut self, t: &SeqTracker, s: &ServerSeqTracker, accepted: &SeqTracker) {
        self.unique += t.unique;
        self.lost += t.missing_from(accepted);
        self.duplicated += t.duplicated;
        self.out_of_order += t.out_of_order;
        self.foreign += t.foreign;
        self.server_seq_regressions += s.regressions;
        self.server_seq_gaps += s.gaps;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_no_loss() {
        let mut t = SeqTracker::default();
        (0..1000).for_each(|p| assert!(t.observe(p)));
        assert_eq!(
            (t.unique, t.duplicated, t.out_of_order, t.lost(1000)),
            (1000, 0, 0, 0)
        );
    }

    #[test]
    fn dup_reorder_loss() {
        let mut t = SeqTracker::default();
        for p in [0, 1, 3, 2, 2, 5, 200, 4] {
            let _ = t.observe(p);
        }
        assert_eq!(t.unique, 7);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.out_of_order, 2, "2 after 3, 4 after 200");
        assert_eq!(t.lost(7), 1, "6 missing");
        assert_eq!(t.lost(201), 201 - 7);
        let mut acked = SeqTracker::default();
        for p in [0, 6, 7, 200, 300] {
            acked.observe(p);
        }
        assert_eq!(t.missing_from(&acked), 3, "6, 7 and 300");
        assert!(!t.observe(MAX_PUB_SEQ));
        assert_eq!(t.foreign, 1);
    }

    #[test]
    fn server_seq() {
        let mut s = ServerSeqTracker::default();
        for q in [10, 11, 13, 13, 12, 14] {
            s.observe(q);
        }
        assert_eq!((s.gaps, s.regressions), (1, 2));
        let mut tot = SeqTotals::default();
        let mut t = SeqTracker::default();
        assert!(t.observe(0));
        let mut acked = SeqTracker::default();
        assert!(acked.observe(0) && acked.observe(1));
        tot.add(&t, &s, &acked);
        tot.add(&t, &s, &acked);
        assert_eq!(
            (tot.unique, tot.lost, tot.server_seq_regressions),
            (2, 2, 4)
        );
    }
}
