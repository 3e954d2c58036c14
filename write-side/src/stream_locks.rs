//! One in-process queue per event stream. A hot aggregate (a product every
//! order reserves) would otherwise have its concurrent commands collide on
//! the (stream, version) constraint and retry each other into the ground;
//! queued, they conflict only with other processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Clone, Default)]
pub struct StreamLocks {
    /// Weak entries: a lock lives while someone holds or awaits it.
    locks: Arc<Mutex<HashMap<String, Weak<AsyncMutex<()>>>>>,
}

impl StreamLocks {
    pub async fn lock(&self, stream: String) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if locks.len() > 1024 {
                locks.retain(|_, lock| lock.strong_count() > 0);
            }
            match locks.get(&stream).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(AsyncMutex::new(()));
                    locks.insert(stream, Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_stream_is_one_queue_and_others_are_free() {
        let locks = StreamLocks::default();
        let held = locks.lock("a".into()).await;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), locks.lock("a".into())).await.is_err(),
            "a second holder of the same stream waits"
        );
        let _other = locks.lock("b".into()).await;
        drop(held);
        let _again = locks.lock("a".into()).await;
    }
}
