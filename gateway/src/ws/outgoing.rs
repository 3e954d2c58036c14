//! The sending half of a connection: a task owns the socket's sink and
//! writes what the connection queues, each message within the send
//! timeout. The queue is bounded, so a client that stops reading fills it
//! and is disconnected (close 1013, "try again later") instead of holding
//! the connection's loop — and with it shutdown and token expiry — or
//! growing memory. The connection never waits on the queue itself: it
//! tries, and holds a message that finds no room while it waits for room
//! (and for everything else) in its loop.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use futures::stream::SplitSink;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Outgoing {
    queue: mpsc::Sender<Message>,
    writer: JoinHandle<()>,
    stalled: CancellationToken,
    send_timeout: Duration,
}

impl Outgoing {
    pub fn start(sink: SplitSink<WebSocket, Message>, capacity: usize, send_timeout: Duration) -> Self {
        let (queue, mut queued) = mpsc::channel::<Message>(capacity.max(1));
        let stalled = CancellationToken::new();
        let writer_stalled = stalled.clone();
        let writer = tokio::spawn(async move {
            let mut sink = sink;
            while let Some(message) = queued.recv().await {
                let closing = matches!(message, Message::Close(_));
                match tokio::time::timeout(send_timeout, sink.send(message)).await {
                    Ok(Ok(())) if !closing => {}
                    Ok(Ok(())) => return,
                    Ok(Err(_)) => return writer_stalled.cancel(),
                    Err(_) => {
                        writer_stalled.cancel();
                        // Behind what the client never took: it sees this only if it reads again soon.
                        let close = Message::Close(Some(CloseFrame { code: 1013, reason: "client too slow".into() }));
                        let _ = tokio::time::timeout(send_timeout, sink.send(close)).await;
                        return;
                    }
                }
            }
        });
        Self { queue, writer, stalled, send_timeout }
    }

    /// Queues a message if there is room; gives it back when there is none.
    pub fn try_send(&self, message: Message) -> Result<(), Full> {
        match self.queue.try_send(message) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(message)) => Err(Full(Some(message))),
            // The writer has given up: the loop hears it from `stalled`.
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Full(None)),
        }
    }

    /// Resolves once there is room for one message (cancel-safe); `None`
    /// when the writer has given up.
    pub async fn room(&self) -> Option<mpsc::Permit<'_, Message>> {
        self.queue.reserve().await.ok()
    }

    /// How long a message may wait for room before the client counts as too slow.
    pub fn send_timeout(&self) -> Duration {
        self.send_timeout
    }

    /// Resolves once the writer gave up on the client.
    pub async fn stalled(&self) {
        self.stalled.cancelled().await
    }

    /// Sends the close frame after what is queued and lets the writer finish
    /// within the send timeout; with no room left (the client is not
    /// reading) the writer is stopped at once.
    pub async fn close(self, frame: Option<(u16, String)>) {
        let queued = match frame {
            Some((code, reason)) => {
                let close = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
                self.queue.try_send(close).is_ok()
            }
            None => true,
        };
        drop(self.queue);
        let mut writer = self.writer;
        if !queued || tokio::time::timeout(self.send_timeout, &mut writer).await.is_err() {
            writer.abort();
        }
    }
}

/// No room in the queue: the message, to hold until there is (`None` when
/// the writer has given up).
pub struct Full(pub Option<Message>);
