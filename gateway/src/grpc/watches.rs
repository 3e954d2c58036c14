//! `WatchOrder` streams per connection, held to the WebSocket's rule: a
//! connection runs at most `--ws-max-subscriptions` live streams at once
//! (RESOURCE_EXHAUSTED with `TOO_MANY_SUBSCRIPTIONS` beyond). A connection
//! is its peer's socket address: one TCP connection, however many HTTP/2
//! streams it carries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The live `WatchOrder` streams of each connection.
#[derive(Clone)]
pub struct Watches {
    open: Arc<Mutex<HashMap<Option<SocketAddr>, usize>>>,
    per_connection: usize,
}

/// One stream's place; given back when the stream is dropped.
pub struct Watch {
    watches: Watches,
    connection: Option<SocketAddr>,
}

impl Watches {
    pub fn new(per_connection: usize) -> Self {
        Self { open: Arc::default(), per_connection: per_connection.max(1) }
    }

    /// A place for one more stream on `connection`, if it has one free.
    pub fn open(&self, connection: Option<SocketAddr>) -> Result<Watch, usize> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(connection).or_default();
        if *count >= self.per_connection {
            return Err(self.per_connection);
        }
        *count += 1;
        Ok(Watch { watches: self.clone(), connection })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut open = self.watches.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.connection) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.connection);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_gets_its_places_back_and_others_have_their_own() {
        let watches = Watches::new(2);
        let one: SocketAddr = "127.0.0.1:1".parse().expect("address");
        let two: SocketAddr = "127.0.0.1:2".parse().expect("address");
        let first = watches.open(Some(one)).expect("a place");
        let _second = watches.open(Some(one)).expect("a place");
        assert_eq!(watches.open(Some(one)).err(), Some(2), "the third is refused");
        let _other = watches.open(Some(two)).expect("another connection has its own places");
        drop(first);
        let _again = watches.open(Some(one)).expect("a place given back");
        assert_eq!(watches.open.lock().expect("lock").len(), 2);
    }
}
