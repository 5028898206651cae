//! WatchMatch rooms: one task per watched match (in this process) reads the match's counters
//! when a change notice arrives (and once a second, as minutes turn final) and hands the
//! snapshot to every watcher through a latest-wins channel, so a slow watcher skips
//! snapshots instead of queueing them and a match's counters are read once per change however
//! many watch it. A room ends with its last watcher.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ewpm_kit::{CancellationToken, clock::SharedClock, notices::Notices};
use tokio::sync::watch;

use crate::{
    domain::{Snapshot, micros, snapshot},
    rebuild::Rebuilder,
};

/// The latest snapshot of a match (`None` until the first read).
pub type Latest = watch::Receiver<Option<Arc<Snapshot>>>;

/// Reads within a burst of notices are at least this far apart.
const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// Snapshots are re-read this often without notices (minutes turn final).
const TICK: Duration = Duration::from_secs(1);

/// The rooms of this process.
pub struct Hub {
    rebuilder: Arc<Rebuilder>,
    notices: Arc<dyn Notices>,
    clock: SharedClock,
    lateness: Duration,
    shutdown: CancellationToken,
    rooms: Mutex<HashMap<String, watch::Sender<Option<Arc<Snapshot>>>>>,
}

impl Hub {
    /// A hub reading through `rebuilder`, woken by `notices`.
    pub fn new(
        rebuilder: Arc<Rebuilder>,
        notices: Arc<dyn Notices>,
        clock: SharedClock,
        lateness: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self { rebuilder, notices, clock, lateness, shutdown, rooms: Mutex::default() })
    }

    /// Rooms open now.
    pub fn rooms(&self) -> usize {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The snapshots of `match_id` from now on.
    pub fn subscribe(self: &Arc<Self>, match_id: &str) -> Latest {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = rooms.get(match_id) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        rooms.insert(match_id.to_string(), tx.clone());
        tokio::spawn(self.clone().room(match_id.to_string(), tx));
        rx
    }

    async fn room(self: Arc<Self>, match_id: String, tx: watch::Sender<Option<Arc<Snapshot>>>) {
        let mut subscription = match self.notices.subscribe(&match_id).await {
            Ok(s) => Some(s),
            Err(err) => {
                tracing::warn!(
                    match_id,
                    error = format!("{err:#}"),
                    "match notices unavailable; polling"
                );
                None
            }
        };
        let mut last: Option<Snapshot> = None;
        'room: loop {
            loop {
                match self.rebuilder.counts(&match_id).await {
                    Ok(counts) => {
                        let s =
                            snapshot(&match_id, &counts, micros(self.clock.now()), self.lateness);
                        // The finality line moves every read; only a change of what it decides counts.
                        let same = last.as_ref().is_some_and(|l| {
                            Snapshot { final_before_us: s.final_before_us, ..l.clone() } == s
                        });
                        if !same {
                            tx.send_replace(Some(Arc::new(s.clone())));
                            last = Some(s);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(
                            match_id,
                            error = format!("{err:#}"),
                            "reading match counters failed"
                        )
                    }
                }
                let pause = tokio::time::sleep(MIN_INTERVAL);
                tokio::select! {
                    () = pause => {}
                    () = tx.closed() => break,
                    () = self.shutdown.cancelled() => break,
                }
                let notice = async {
                    match subscription.as_mut() {
                        Some(s) => {
                            if !s.changed().await {
                                std::future::pending::<()>().await;
                            }
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    () = notice => {}
                    () = tokio::time::sleep(TICK) => {}
                    () = tx.closed() => break,
                    () = self.shutdown.cancelled() => break,
                }
            }
            // The last watcher left (or the server stops): close the room, unless a watcher
            // joined through this room's channel meanwhile.
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            if tx.receiver_count() > 0 && !self.shutdown.is_cancelled() {
                drop(rooms);
                continue 'room;
            }
            if rooms.get(&match_id).is_some_and(|t| t.same_channel(&tx)) {
                rooms.remove(&match_id);
            }
            break;
        }
    }
}
