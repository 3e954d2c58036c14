//! The sending half of a connection: a task owns the socket's sink and
//! writes what the connection queues, each message within the send
//! timeout. The queue is bounded, so a client that stops reading fills it
//! and is disconnected (close 1013, "try again later") instead of holding
//! the connection's loop — and with it shutdown and token expiry — or
//! growing memory.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use futures::stream::SplitSink;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The client did not take what it was sent within the send timeout.
#[derive(Debug)]
pub struct Stalled;

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

    /// Queues a message, waiting at most the send timeout for room.
    pub async fn send(&self, message: Message) -> Result<(), Stalled> {
        match self.queue.try_send(message) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Stalled),
            Err(mpsc::error::TrySendError::Full(message)) => {
                match tokio::time::timeout(self.send_timeout, self.queue.send(message)).await {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(Stalled),
                }
            }
        }
    }

    /// Resolves once the writer gave up on the client.
    pub async fn stalled(&self) {
        self.stalled.cancelled().await
    }

    /// Sends the close frame after what is queued and ends the writer, all
    /// within about twice the send timeout; a writer still stuck is stopped.
    pub async fn close(self, frame: Option<(u16, String)>) {
        if let Some((code, reason)) = frame {
            let close = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
            let _ = tokio::time::timeout(self.send_timeout, self.queue.send(close)).await;
        }
        drop(self.queue);
        let mut writer = self.writer;
        if tokio::time::timeout(self.send_timeout * 2, &mut writer).await.is_err() {
            writer.abort();
        }
    }
}
