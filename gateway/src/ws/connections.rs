//! Open WebSocket connections counted per key (a client's IP address, a
//! token's subject), so one caller cannot hold an unbounded number.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Counts per key; cheap to clone.
#[derive(Clone, Default)]
pub struct ConnectionCounts {
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl ConnectionCounts {
    /// A slot for one more connection under `key`, or `None` when `max` are
    /// open (0: no limit). The slot is given back when dropped.
    pub fn try_acquire(&self, key: String, max: usize) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(key.clone()).or_default();
        if max > 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot { counts: self.clone(), key })
    }

    #[cfg(test)]
    fn open(&self, key: &str) -> usize {
        self.open.lock().map(|open| open.get(key).copied().unwrap_or(0)).unwrap_or(0)
    }
}

/// One counted connection; dropping it frees the slot.
pub struct ConnectionSlot {
    counts: ConnectionCounts,
    key: String,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_key_and_given_back() {
        let counts = ConnectionCounts::default();
        let first = counts.try_acquire("ip:1".into(), 2);
        let second = counts.try_acquire("ip:1".into(), 2);
        assert!(first.is_some() && second.is_some());
        assert!(counts.try_acquire("ip:1".into(), 2).is_none(), "the third is refused");
        assert!(counts.try_acquire("ip:2".into(), 2).is_some(), "another key has its own");
        drop(first);
        assert_eq!(counts.open("ip:1"), 1);
        assert!(counts.try_acquire("ip:1".into(), 2).is_some(), "a freed slot is taken again");
        drop(second);
        let unlimited: Vec<_> = (0..10).filter_map(|_| counts.try_acquire("ip:3".into(), 0)).collect();
        assert_eq!(unlimited.len(), 10, "0: no limit");
    }
}
