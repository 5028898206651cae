//! Group commit of answers: concurrent SubmitAnswer calls hand their answers to a few writer
//! tasks, which store whatever has queued meanwhile in one transaction of three statements
//! ([`QuizStore::answers`]) and answer each caller. One transaction per answer spent most of
//! its time on the transaction (and, on SQLite, on waiting for the single write lock).

use std::sync::Arc;

use anyhow::Context;
use sea_orm::DbBackend;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::store::{NewAnswer, QuizStore};

/// Most answers in one transaction.
const MAX_BATCH: usize = 256;
/// Answers that may wait for a writer before callers wait to queue.
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<Option<f64>, String>>;
type Job = (NewAnswer, String, Reply);

/// The writers' queue.
#[derive(Clone)]
pub struct AnswerWriter {
    tx: mpsc::Sender<Job>,
}

impl AnswerWriter {
    /// Starts the writers over `store`: one on SQLite (it has one write lock), four on
    /// PostgreSQL. They stop when the last handle is dropped.
    pub fn spawn(store: QuizStore) -> Self {
        let writers = if store.db().get_database_backend() == DbBackend::Postgres { 4 } else { 1 };
        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..writers {
            let (store, rx) = (store.clone(), rx.clone());
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                loop {
                    // Whatever queued while the previous batch was written.
                    let got = rx.lock().await.recv_many(&mut batch, MAX_BATCH).await;
                    if got == 0 {
                        return;
                    }
                    let (items, replies): (Vec<_>, Vec<_>) =
                        batch.drain(..).map(|(a, board, reply)| ((a, board), reply)).unzip();
                    metrics::histogram!("ewpm_quiz_answer_batch").record(items.len() as f64);
                    match store.answers(&items).await {
                        Ok(scores) => {
                            for (reply, score) in replies.into_iter().zip(scores) {
                                let _ = reply.send(Ok(score));
                            }
                        }
                        Err(err) => {
                            let err = format!("{err:#}");
                            for reply in replies {
                                let _ = reply.send(Err(err.clone()));
                            }
                        }
                    }
                }
            });
        }
        Self { tx }
    }

    /// Stores `answer` (on `board`) with its batch: the participant's score after it, or
    /// `None` when they answered that question before.
    pub async fn write(&self, answer: NewAnswer, board: String) -> anyhow::Result<Option<f64>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send((answer, board, reply)).await.ok().context("answer writers stopped")?;
        rx.await.context("answer writer stopped")?.map_err(anyhow::Error::msg)
    }
}
