//! Where a command may come from. The write side takes a command only on
//! the subject its envelope names, so NATS subject permissions mean what
//! they say; the order saga's own commands ([`INTERNAL_COMMANDS`]) only on
//! `<ns>.cmd.internal.…`, which the gateway's NATS user cannot publish to,
//! and only in the saga's name; and no client command in the saga's name.
//!
//! [`INTERNAL_COMMANDS`]: schema::subjects::INTERNAL_COMMANDS

use schema::subjects::{SAGA_ACTOR_PREFIX, is_internal_command};
use schema::{CommandEnvelope, Namespace};

/// Whether a command may be handled as it arrived: on the subject its
/// envelope names (so subject permissions mean what they say), the saga's
/// commands only on the internal subjects (which the gateway's NATS user
/// cannot publish to) and only in the saga's name, and no client command in
/// the saga's name.
pub fn check_origin(ns: &Namespace, subject: &str, command: &CommandEnvelope) -> Result<(), String> {
    let internal = is_internal_command(&command.aggregate_type, &command.type_name);
    let expected = ns.subject_for_command(&command.aggregate_type, &command.type_name);
    if subject != expected {
        return Err(if internal && subject == ns.command_subject(&command.aggregate_type, &command.type_name) {
            format!(
                "{} is the order saga's command; it is not taken on the public subject {subject}",
                command.type_name
            )
        } else {
            format!(
                "subject {subject} does not match the envelope's {} {} (expected {expected})",
                command.aggregate_type, command.type_name
            )
        });
    }
    let saga_actor = command.metadata.actor.starts_with(SAGA_ACTOR_PREFIX);
    if internal && !saga_actor {
        return Err(format!(
            "{} must be issued by the order saga, not `{}`",
            command.type_name, command.metadata.actor
        ));
    }
    if !internal && saga_actor {
        return Err(format!("a client command cannot claim the saga's actor `{}`", command.metadata.actor));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::Metadata;
    use uuid::Uuid;

    fn command(aggregate: &str, type_name: &str, actor: &str) -> CommandEnvelope {
        let id = Uuid::now_v7();
        CommandEnvelope {
            id,
            type_name: type_name.into(),
            schema_version: 1,
            aggregate_type: aggregate.into(),
            aggregate_id: "x".into(),
            metadata: Metadata::origin(id, actor),
            timestamp: chrono::Utc::now(),
            payload: serde_json::json!({}),
        }
    }

    #[test]
    fn a_command_is_taken_only_on_its_own_subject_and_the_sagas_only_from_the_saga() {
        let ns = Namespace::new("t").expect("valid");
        let place = command("order", "PlaceOrder", "customer:c1");
        assert!(check_origin(&ns, "t.cmd.order.PlaceOrder", &place).is_ok());
        assert!(check_origin(&ns, "t.cmd.order.CancelOrder", &place).is_err());
        assert!(check_origin(&ns, "t.cmd.internal.order.PlaceOrder", &place).is_err());
        assert!(check_origin(&ns, "u.cmd.order.PlaceOrder", &place).is_err());

        let confirm = command("order", "ConfirmOrder", "saga:order-fulfillment");
        assert!(check_origin(&ns, "t.cmd.internal.order.ConfirmOrder", &confirm).is_ok());
        let refused = check_origin(&ns, "t.cmd.order.ConfirmOrder", &confirm).expect_err("public subject");
        assert!(refused.contains("is the order saga's command"), "{refused}");

        let impostor = command("order", "ConfirmOrder", "admin:ops");
        assert!(check_origin(&ns, "t.cmd.internal.order.ConfirmOrder", &impostor).is_err());
        let saga_named = command("order", "PlaceOrder", "saga:order-fulfillment");
        assert!(check_origin(&ns, "t.cmd.order.PlaceOrder", &saga_named).is_err());
    }
}
