//! `conveyor dlq`: the operator's view of the dead-letter stream `<ns>_DLQ`
//! (schema::dead_letters): list what is kept, show one dead letter, redrive
//! one to where it came from once its cause is fixed, or purge them all.
//!
//! A dead letter's id is its sequence in the stream. A redrive publishes the
//! original body and headers to the original subject (without the headers
//! the dead letter added, and with a `Nats-Msg-Id` of its own, so the
//! original id's dedupe window does not swallow it), waits for the stream's
//! acknowledgement, then deletes the dead letter. Redriving is safe for
//! commands (their outcome, keyed by command id, makes them exactly-once)
//! and for events (projectors check every event against the store and skip
//! what they applied).

use anyhow::Context as _;
use async_nats::jetstream::{self, stream::Stream};
use async_nats::{HeaderMap, header::NATS_MESSAGE_ID};
use schema::Namespace;
use schema::dead_letters::{ADDED_HEADERS, DELIVERED, ORIGINAL_MSG_ID, ORIGINAL_SUBJECT, REASON, SOURCE};

/// One kept dead letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its id: the sequence in `<ns>_DLQ`.
    pub id: u64,
    pub source: String,
    pub reason: String,
    pub original_subject: String,
    pub delivered: String,
    pub kept_at: String,
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
}

impl DeadLetter {
    fn from_message(message: async_nats::jetstream::message::StreamMessage) -> Self {
        let header = |name: &str| message.headers.get(name).map(|value| value.to_string()).unwrap_or_default();
        let mut headers: Vec<(String, String)> = message
            .headers
            .iter()
            .flat_map(|(name, values)| {
                let name: &str = name.as_ref();
                values.iter().map(move |value| (name.to_string(), value.to_string()))
            })
            .collect();
        headers.sort();
        Self {
            id: message.sequence,
            source: header(SOURCE),
            reason: header(REASON),
            original_subject: header(ORIGINAL_SUBJECT),
            delivered: header(DELIVERED),
            kept_at: message.time.to_string(),
            headers,
            body: message.payload,
        }
    }

    /// The body as text, or its length when it is not UTF-8.
    pub fn body_text(&self) -> String {
        match std::str::from_utf8(&self.body) {
            Ok(text) => text.to_string(),
            Err(_) => format!("<{} bytes, not UTF-8>", self.body.len()),
        }
    }
}

async fn stream(js: &jetstream::Context, ns: &Namespace) -> anyhow::Result<Stream> {
    js.get_stream(ns.resource("DLQ")).await.with_context(|| format!("no dead-letter stream {}", ns.resource("DLQ")))
}

/// The oldest `limit` dead letters kept.
pub async fn list(js: &jetstream::Context, ns: &Namespace, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
    let stream = stream(js, ns).await?;
    let state = stream.get_info().await.context("cannot read the dead-letter stream")?.state;
    let mut found = Vec::new();
    if state.messages == 0 {
        return Ok(found);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        if found.len() >= limit {
            break;
        }
        // Deleted (redriven) sequences leave gaps.
        if let Ok(message) = stream.get_raw_message(sequence).await {
            found.push(DeadLetter::from_message(message));
        }
    }
    Ok(found)
}

/// One dead letter by id.
pub async fn show(js: &jetstream::Context, ns: &Namespace, id: u64) -> anyhow::Result<DeadLetter> {
    let message = stream(js, ns).await?.get_raw_message(id).await.with_context(|| format!("no dead letter {id}"))?;
    Ok(DeadLetter::from_message(message))
}

/// Publishes dead letter `id` to its original subject again and, once the
/// stream there took it, deletes it. Returns the subject.
pub async fn redrive(js: &jetstream::Context, ns: &Namespace, id: u64) -> anyhow::Result<String> {
    let stream = stream(js, ns).await?;
    let letter =
        DeadLetter::from_message(stream.get_raw_message(id).await.with_context(|| format!("no dead letter {id}"))?);
    if letter.original_subject.is_empty() {
        anyhow::bail!("dead letter {id} has no {ORIGINAL_SUBJECT} header");
    }
    // Only into this namespace: a dead letter cannot be aimed elsewhere.
    if !letter.original_subject.starts_with(&format!("{ns}.")) {
        anyhow::bail!("dead letter {id} came from {}, outside namespace {ns}", letter.original_subject);
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &letter.headers {
        let added = ADDED_HEADERS.iter().any(|added| added.eq_ignore_ascii_case(name));
        let id_header =
            name.eq_ignore_ascii_case(NATS_MESSAGE_ID.as_ref()) || name.eq_ignore_ascii_case(ORIGINAL_MSG_ID);
        if !added && !id_header {
            headers.append(name.as_str(), value.as_str());
        }
    }
    headers.insert(NATS_MESSAGE_ID, format!("redrive:{}:{id}", ns.resource("DLQ")).as_str());
    js.publish_with_headers(letter.original_subject.clone(), headers, letter.body.clone())
        .await
        .context("cannot publish the redriven message")?
        .await
        .context("the redriven message was not stored")?;
    stream.delete_message(id).await.with_context(|| format!("redriven, but dead letter {id} was not deleted"))?;
    Ok(letter.original_subject)
}

/// Deletes every dead letter; returns how many.
pub async fn purge(js: &jetstream::Context, ns: &Namespace) -> anyhow::Result<u64> {
    let purged = stream(js, ns).await?.purge().await.context("cannot purge the dead-letter stream")?;
    Ok(purged.purged)
}

/// Runs `conveyor dlq …`, printing for an operator.
pub async fn run(common: &crate::config::Common, args: &crate::config::DlqArgs) -> anyhow::Result<()> {
    use crate::config::DlqCommand;
    let ns = Namespace::new(&common.namespace)?;
    let server = args.command.server();
    let client = schema::nats::connect(&server.nats, "conveyor-dlq", &server.nats_auth.auth()?)
        .await
        .with_context(|| format!("cannot reach NATS at {}", crate::server::redact(&server.nats)))?;
    let js = jetstream::new(client);
    match &args.command {
        DlqCommand::List { limit, .. } => {
            let letters = list(&js, &ns, *limit).await?;
            if letters.is_empty() {
                println!("no dead letters in {}", ns.resource("DLQ"));
            }
            for letter in letters {
                println!(
                    "{}\t{}\t{}\t{}\tdelivered {}\t{}",
                    letter.id,
                    letter.kept_at,
                    letter.source,
                    letter.original_subject,
                    if letter.delivered.is_empty() { "?" } else { &letter.delivered },
                    letter.reason
                );
            }
        }
        DlqCommand::Show { id, .. } => {
            let letter = show(&js, &ns, *id).await?;
            println!("id: {}\nkept at: {}", letter.id, letter.kept_at);
            for (name, value) in &letter.headers {
                println!("{name}: {value}");
            }
            println!("\n{}", letter.body_text());
        }
        DlqCommand::Redrive { id, .. } => {
            let subject = redrive(&js, &ns, *id).await?;
            println!("redrove dead letter {id} to {subject}");
        }
        DlqCommand::Purge { .. } => {
            let purged = purge(&js, &ns).await?;
            println!("purged {purged} dead letters from {}", ns.resource("DLQ"));
        }
    }
    Ok(())
}
