//! The shape of an aggregate: `decide` holds the business rules and may
//! reject; `apply` only changes state and never fails.

use schema::Rejection;
use schema::envelope::Message;

pub trait Aggregate: Default + Send + Sync + 'static {
    /// Aggregate type name, as in subjects and stream ids.
    const TYPE: &'static str;
    /// What `decide` gets: the contract's command, plus whatever the handler
    /// looked up for it (a payment provider's answer, say), so that `decide`
    /// itself stays pure.
    type Command: Send + Sync;
    /// Stored events; loaded with [`Message::decode`], which upcasts.
    type Event: Message + Send + Sync;

    /// Folds one event into the state.
    fn apply(&mut self, event: &Self::Event);

    /// The events a command causes, or why it is rejected.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Rejection>;

    /// Whether `command` normally starts its stream (placing an order,
    /// adding a product). The store then appends without reading the
    /// stream first; if the stream was not empty after all, the append's
    /// unique key catches it and the store reads and decides again.
    fn starts_stream(_command: &Self::Command) -> bool {
        false
    }
}
