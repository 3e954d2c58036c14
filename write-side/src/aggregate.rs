//! The shape of an aggregate: `decide` holds the business rules and may
//! reject; `apply` only changes state and never fails.

use schema::envelope::{ContractError, Message};
use schema::{EventEnvelope, Rejection};

pub trait Aggregate: Default + Send + Sync + 'static {
    /// Aggregate type name, as in subjects and stream ids.
    const TYPE: &'static str;
    type Command: Message + Send + Sync;
    type Event: Message + Send + Sync;

    /// Loads a stored event, upcasting old schema versions.
    fn decode_event(event: &EventEnvelope) -> Result<Self::Event, ContractError>;

    /// Folds one event into the state.
    fn apply(&mut self, event: &Self::Event);

    /// The events a command causes, or why it is rejected.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Rejection>;
}
