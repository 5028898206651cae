//! Group commit for device uploads: concurrent IngestScanEvents calls are gathered into one
//! transaction by a single writer task, so ids stay strictly increasing in commit order and
//! the database sees few, large inserts.

use std::panic::AssertUnwindSafe;

use ewpm_kit::clock::SharedClock;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::{domain::Scan, store::ScanStore};

/// Most scans one transaction takes from the queue.
const MAX_GROUP: usize = 20_000;

struct Job {
    scans: Vec<Scan>,
    reply: oneshot::Sender<Result<Vec<i64>, String>>,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct Ingestor {
    tx: mpsc::Sender<Job>,
}

impl Ingestor {
    /// Starts the writer task. It ends when every handle is dropped.
    pub fn spawn(store: ScanStore, clock: SharedClock) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                let mut total = jobs[0].scans.len();
                while total < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(job) => {
                            total += job.scans.len();
                            jobs.push(job);
                        }
                        Err(_) => break,
                    }
                }
                let lens: Vec<usize> = jobs.iter().map(|j| j.scans.len()).collect();
                let all: Vec<Scan> =
                    jobs.iter_mut().flat_map(|j| std::mem::take(&mut j.scans)).collect();
                metrics::histogram!("scan_ingest_group_size").record(all.len() as f64);
                // A panic here must not kill the writer (every later upload would fail).
                let appended = AssertUnwindSafe(store.append(&all, clock.now()))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("ingest panicked")));
                match appended {
                    Ok(ids) => {
                        let mut offset = 0;
                        for (job, len) in jobs.into_iter().zip(lens) {
                            drop(job.reply.send(Ok(ids[offset..offset + len].to_vec())));
                            offset += len;
                        }
                    }
                    Err(err) => {
                        let message = format!("{err:#}");
                        tracing::error!(error = %message, scans = all.len(), "ingest failed");
                        for job in jobs {
                            drop(job.reply.send(Err(message.clone())));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Stores `scans` and returns their event ids, in order.
    pub async fn ingest(&self, scans: Vec<Scan>) -> anyhow::Result<Vec<i64>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { scans, reply })
            .await
            .map_err(|_| anyhow::anyhow!("ingest writer stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("ingest writer stopped"))?
            .map_err(anyhow::Error::msg)
    }
}
