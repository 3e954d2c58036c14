//! Saga saves, committed in groups: an actor takes every save queued (up to
//! a cap) and writes them in one statement and one commit, each still
//! checked against the version it was read at. Hundreds of sagas stepping
//! at once then cost a few commits, not one each.

use std::collections::HashSet;

use chrono::Utc;
use schema::sql;
use sqlx::{AnyPool, AssertSqlSafe};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::SagaError;

/// Saves per statement, at most.
const MAX_BATCH: usize = 256;

/// One saga's new state, to store if its row is still at `version`.
pub(super) struct Save {
    pub saga_id: String,
    pub version: i64,
    pub state: String,
    pub active: bool,
    /// When a sweeper may take it up; `None` keeps the row's (a saga
    /// stepping on, whose lease has not run out: the row then changes no
    /// indexed column, and PostgreSQL can update it in place).
    pub next_attempt_at: Option<i64>,
}

/// A save and whom to tell whether it was stored (false: someone changed
/// the saga meanwhile).
struct Queued {
    save: Save,
    reply: oneshot::Sender<Result<bool, SagaError>>,
}

#[derive(Clone)]
pub(super) struct SagaWriter {
    sender: mpsc::Sender<Queued>,
}

impl SagaWriter {
    pub fn start(pool: AnyPool) -> Self {
        let (sender, receiver) = mpsc::channel(4096);
        tokio::spawn(run(pool, receiver));
        Self { sender }
    }

    pub async fn save(&self, save: Save) -> Result<bool, SagaError> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Queued { save, reply }).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

fn closed() -> SagaError {
    SagaError::Contract("the saga writer has stopped".into())
}

async fn run(pool: AnyPool, mut receiver: mpsc::Receiver<Queued>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(save) => batch.push(save),
                Err(_) => break,
            }
        }
        match sql::retry("save sagas", || write(&pool, &batch)).await {
            Ok(stored) => {
                for queued in batch {
                    let _ = queued.reply.send(Ok(stored.contains(&queued.save.saga_id)));
                }
            }
            Err(error) => {
                warn!(%error, sagas = batch.len(), "could not save sagas; they will be resumed");
                for queued in batch {
                    let _ = queued.reply.send(Err(SagaError::Contract(format!("saving the saga failed: {error}"))));
                }
            }
        }
    }
}

/// The batch in one transaction; returns the ids whose version matched.
async fn write(pool: &AnyPool, batch: &[Queued]) -> Result<HashSet<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let saves: Vec<&Save> = batch.iter().map(|queued| &queued.save).collect();
    let stored = write_saves(&mut tx, &saves).await?;
    tx.commit().await?;
    Ok(stored)
}

/// `UPDATE … FROM` statements for `saves` (each within
/// [`sql::BYTES_PER_STATEMENT`]), on `conn`: the writer's own transaction,
/// or a saga step's (see [`super::ride`]). Returns the ids whose version
/// matched.
pub(super) async fn write_saves(
    conn: &mut sqlx::AnyConnection,
    saves: &[&Save],
) -> Result<HashSet<String>, sqlx::Error> {
    let mut stored = HashSet::new();
    for chunk in sql::chunks_by_size(saves, |save| save.state.len() + save.saga_id.len() + 40) {
        stored.extend(update(conn, chunk).await?);
    }
    Ok(stored)
}

async fn update(conn: &mut sqlx::AnyConnection, batch: &[&Save]) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<String> = (0..batch.len())
        .map(|n| {
            let p = n * 5;
            format!(
                "SELECT CAST(${} AS TEXT) AS saga_id, CAST(${} AS BIGINT) AS version, CAST(${} AS TEXT) AS state, \
                 CAST(${} AS BIGINT) AS active, CAST(${} AS BIGINT) AS next_attempt_at",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5
            )
        })
        .collect();
    let sql = format!(
        "UPDATE sagas SET state = v.state, version = sagas.version + 1, active = v.active, \
         next_attempt_at = CASE WHEN v.next_attempt_at < 0 THEN sagas.next_attempt_at ELSE v.next_attempt_at END, updated_at = ${} \
         FROM ({}) AS v WHERE sagas.saga_id = v.saga_id AND sagas.version = v.version RETURNING sagas.saga_id",
        batch.len() * 5 + 1,
        rows.join(" UNION ALL ")
    );
    let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql));
    for save in batch {
        query = query
            .bind(save.saga_id.as_str())
            .bind(save.version)
            .bind(save.state.as_str())
            .bind(i64::from(save.active))
            .bind(save.next_attempt_at.unwrap_or(-1));
    }
    query = query.bind(Utc::now().timestamp_micros());
    query.fetch_all(&mut *conn).await
}
