//! The watch hub: live top-N snapshots of boards, shared by every watcher in the process.
//!
//! Per board per process there is ONE notice subscription and ONE snapshot task, however
//! many watchers (1,000 watchers of a board cost one Redis subscription and one read per
//! interval). The task marks the board dirty on each notice, on a watcher wanting more
//! entries than it reads, and every [`WatchConfig::refresh`] (in case a notice was lost);
//! it reads the top `max(top_n)` at most once per [`WatchConfig::interval`] and publishes
//! the snapshot into a `tokio::sync::watch` channel, so a slow watcher skips to the latest
//! snapshot instead of building a backlog.
//!
//! Each watcher reads its own first snapshot at once, then yields a task snapshot whenever
//! *its* top N (entries and member count) differs from what it sent last. Every read takes
//! a ticket from one per-board counter; a watcher only takes task snapshots whose read began
//! after its own latest, so it never steps back to an older state.
//!
//! When the last watcher of a board leaves, the board's task and subscription stop. When the
//! shutdown token is cancelled every watch stream ends (cleanly, as a finished stream).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use ewpm_kit::CancellationToken;
use futures::{StreamExt, stream::BoxStream};
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use anyhow::Context as _;

use crate::{
    domain::Board, error::LeaderboardError, notices::Notices, privacy::Privacy, reader::Reader,
    scores::Entry,
};

/// A board's best entries at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The board.
    pub board: String,
    /// The period read (the board's current one when it was read).
    pub period: String,
    /// The top entries, best first.
    pub entries: Vec<Entry>,
    /// Members on the board.
    pub total_members: u64,
    /// When it was read.
    pub taken_at: DateTime<Utc>,
    /// Which of the entries' members hide their name (looked up once per read, for every
    /// watcher).
    pub hidden: Arc<HashSet<String>>,
}

/// A watcher's snapshots: the first at once, then one per change of its top N.
pub type WatchStream = BoxStream<'static, Snapshot>;

/// Timing of snapshots.
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// Shortest gap between two reads of one board (coalescing notices).
    pub interval: Duration,
    /// Gap between reads without any notice, in case one was lost.
    pub refresh: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self { interval: Duration::from_millis(100), refresh: Duration::from_secs(5) }
    }
}

/// Shares one subscription and one snapshot task per board among all its watchers.
#[derive(Clone)]
pub struct WatchHub {
    inner: Arc<Inner>,
}

struct Inner {
    reader: Reader,
    privacy: Privacy,
    notices: Arc<dyn Notices>,
    config: WatchConfig,
    shutdown: CancellationToken,
    boards: Mutex<HashMap<String, Arc<BoardHub>>>,
}

/// Whether a board's task is subscribed to its notices yet.
#[derive(Debug, Clone, PartialEq)]
enum Upstream {
    Pending,
    Subscribed,
    Failed(String),
}

/// A snapshot the board task read, with its read ticket and how many entries it asked for.
#[derive(Debug, Clone)]
struct Tagged {
    ticket: u64,
    limit: u64,
    snapshot: Arc<Snapshot>,
}

struct BoardHub {
    board: Board,
    /// Read tickets: taken when a read begins.
    reads: AtomicU64,
    /// The watchers' top N values: top N → how many watchers want it.
    wants: Mutex<BTreeMap<u32, usize>>,
    /// A watcher wants more entries than the task reads.
    grew: Notify,
    upstream: watch::Sender<Upstream>,
    snapshots: watch::Sender<Option<Tagged>>,
    /// Stops the task (last watcher gone, or shutdown).
    stop: CancellationToken,
}

impl BoardHub {
    fn limit(&self) -> u32 {
        self.wants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
    }
}

impl WatchHub {
    /// A hub reading boards' current periods through `reader`, woken by `notices`; every
    /// stream ends when `shutdown` is cancelled.
    pub fn new(
        reader: Reader,
        privacy: Privacy,
        notices: Arc<dyn Notices>,
        config: WatchConfig,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                reader,
                privacy,
                notices,
                config,
                shutdown,
                boards: Mutex::default(),
            }),
        }
    }

    /// Boards with a snapshot task in this process (one per watched board).
    pub fn watched_boards(&self) -> usize {
        self.inner.lock().len()
    }

    /// Watches the top `top_n` of `board`'s current period. With `every`, each new read is
    /// yielded even when the top N did not change (for watchers of their own place).
    pub async fn watch(
        &self,
        board: Board,
        top_n: u32,
        every: bool,
    ) -> Result<WatchStream, LeaderboardError> {
        self.inner.reader.current(&board).await?;
        let (hub, guard) = self.inner.register(&board, top_n);
        let mut upstream = hub.upstream.subscribe();
        let state = tokio::select! {
            () = self.inner.shutdown.cancelled() => return Ok(futures::stream::empty().boxed()),
            s = upstream.wait_for(|s| *s != Upstream::Pending) => s.map(|s| s.clone()),
        };
        match state {
            Ok(Upstream::Subscribed) => {}
            Ok(Upstream::Failed(why)) => {
                return Err(anyhow::anyhow!(why).context("subscribe to board notices").into());
            }
            // The task ended before subscribing: only at shutdown.
            Ok(Upstream::Pending) | Err(_) => return Ok(futures::stream::empty().boxed()),
        }
        // Subscribed before reading: a change after this read is noticed.
        let snapshots = hub.snapshots.subscribe();
        let ticket = hub.reads.fetch_add(1, Ordering::SeqCst) + 1;
        let first = read(&self.inner.reader, &self.inner.privacy, &board, u64::from(top_n)).await?;
        let watcher = Watcher {
            every,
            last_ticket: ticket,
            last_sent: (first.entries.clone(), first.total_members),
            first: Some(first),
            top_n: u64::from(top_n),
            snapshots,
            shutdown: Box::pin(self.inner.shutdown.clone().cancelled_owned()),
            _guard: guard,
        };
        Ok(futures::stream::unfold(watcher, Watcher::next).boxed())
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<BoardHub>>> {
        self.boards.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a watcher of `top_n` to `board`'s hub, starting the hub if it is the first.
    fn register(self: &Arc<Self>, board: &Board, top_n: u32) -> (Arc<BoardHub>, Guard) {
        let mut boards = self.lock();
        let hub = boards
            .entry(board.to_string())
            .or_insert_with(|| {
                let hub = Arc::new(BoardHub {
                    board: board.clone(),
                    reads: AtomicU64::new(0),
                    wants: Mutex::default(),
                    grew: Notify::new(),
                    upstream: watch::channel(Upstream::Pending).0,
                    snapshots: watch::channel(None).0,
                    stop: self.shutdown.child_token(),
                });
                tokio::spawn(run(self.clone(), hub.clone()));
                hub
            })
            .clone();
        let grew = {
            let mut wants = hub.wants.lock().unwrap_or_else(|p| p.into_inner());
            let grew = wants.keys().next_back().is_none_or(|max| *max < top_n);
            *wants.entry(top_n).or_default() += 1;
            grew
        };
        if grew {
            hub.grew.notify_one();
        }
        drop(boards);
        (hub.clone(), Guard { inner: self.clone(), hub, top_n })
    }
}

/// One watcher's registration; dropping it (the stream ends or the client leaves) removes
/// the watcher, and stops the board's task with the last one.
struct Guard {
    inner: Arc<Inner>,
    hub: Arc<BoardHub>,
    top_n: u32,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut boards = self.inner.lock();
        let mut wants = self.hub.wants.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = wants.get_mut(&self.top_n) {
            *n -= 1;
            if *n == 0 {
                wants.remove(&self.top_n);
            }
        }
        if wants.is_empty() {
            let key = self.hub.board.as_str();
            if boards.get(key).is_some_and(|h| Arc::ptr_eq(h, &self.hub)) {
                boards.remove(key);
            }
            self.hub.stop.cancel();
        }
    }
}

async fn read(
    reader: &Reader,
    privacy: &Privacy,
    board: &Board,
    limit: u64,
) -> Result<Snapshot, LeaderboardError> {
    let target = reader.current(board).await?;
    let (entries, total_members) = reader.page(&target, 0, limit).await?;
    let members: Vec<String> = entries.iter().map(|e| e.member.clone()).collect();
    let hidden = privacy.hidden_among(&members).await.context("read privacy")?;
    Ok(Snapshot {
        board: board.to_string(),
        period: target.period.id,
        entries,
        total_members,
        taken_at: Utc::now(),
        hidden: Arc::new(hidden),
    })
}

/// The board's snapshot task.
async fn run(inner: Arc<Inner>, hub: Arc<BoardHub>) {
    let board = &hub.board;
    let subscription = tokio::select! {
        () = hub.stop.cancelled() => return,
        s = inner.notices.subscribe(board.as_str()) => s,
    };
    let mut notices = match subscription {
        Ok(s) => s,
        Err(err) => {
            tracing::warn!(%board, error = format!("{err:#}"), "subscribe to board notices");
            // Forget this hub so the next watcher tries afresh.
            let mut boards = inner.lock();
            if boards.get(board.as_str()).is_some_and(|h| Arc::ptr_eq(h, &hub)) {
                boards.remove(board.as_str());
            }
            hub.upstream.send_replace(Upstream::Failed(format!("{err:#}")));
            return;
        }
    };
    hub.upstream.send_replace(Upstream::Subscribed);

    let config = inner.config;
    let mut notices_open = true;
    let mut refresh = tokio::time::interval_at(Instant::now() + config.refresh, config.refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    // Earliest time of the next read.
    let mut next_read = Instant::now();
    loop {
        tokio::select! {
            () = hub.stop.cancelled() => return,
            open = notices.changed(), if notices_open => {
                // Without notices the periodic refresh still keeps watchers current.
                notices_open = open;
                dirty = true;
            }
            () = hub.grew.notified() => dirty = true,
            _ = refresh.tick() => dirty = true,
            () = tokio::time::sleep_until(next_read), if dirty => {
                dirty = false;
                next_read = Instant::now() + config.interval;
                let limit = u64::from(hub.limit());
                let ticket = hub.reads.fetch_add(1, Ordering::SeqCst) + 1;
                // A board lost while watched is rebuilt before it is read again; a board
                // that resets moves to its new period.
                let result = read(&inner.reader, &inner.privacy, board, limit).await.map_err(anyhow::Error::new);
                match result {
                    Ok(snapshot) => {
                        hub.snapshots.send_replace(Some(Tagged {
                            ticket,
                            limit,
                            snapshot: Arc::new(snapshot),
                        }));
                    }
                    Err(err) => {
                        tracing::warn!(%board, error = format!("{err:#}"), "read board snapshot");
                        // Retry, but not in a tight loop while the store is down.
                        dirty = true;
                        next_read = Instant::now() + config.interval.max(Duration::from_secs(1));
                    }
                }
            }
        }
    }
}

/// One watcher's stream state.
struct Watcher {
    every: bool,
    first: Option<Snapshot>,
    top_n: u64,
    last_ticket: u64,
    last_sent: (Vec<Entry>, u64),
    snapshots: watch::Receiver<Option<Tagged>>,
    /// Shutdown, made once: a wait made afresh for every snapshot costs every watcher a
    /// registration and a deregistration each time.
    shutdown: std::pin::Pin<Box<ewpm_kit::WaitForCancellationFutureOwned>>,
    _guard: Guard,
}

impl Watcher {
    async fn next(mut self) -> Option<(Snapshot, Self)> {
        if let Some(first) = self.first.take() {
            return Some((first, self));
        }
        loop {
            tokio::select! {
                biased;
                () = &mut self.shutdown => return None,
                changed = self.snapshots.changed() => changed.ok()?,
            }
            let Some(tagged) = self.snapshots.borrow_and_update().clone() else { continue };
            // Read before our latest state, or too short for our top N: the task re-reads.
            let covers =
                tagged.limit >= self.top_n || tagged.snapshot.total_members <= tagged.limit;
            if tagged.ticket <= self.last_ticket || !covers {
                continue;
            }
            self.last_ticket = tagged.ticket;
            let take = usize::try_from(self.top_n).unwrap_or(usize::MAX);
            let top = &tagged.snapshot.entries[..take.min(tagged.snapshot.entries.len())];
            let total = tagged.snapshot.total_members;
            // Compared in place: with thousands of watchers of a board, a copy per watcher
            // per snapshot that is then thrown away is most of a snapshot's cost.
            if !self.every && self.last_sent.1 == total && self.last_sent.0.as_slice() == top {
                continue;
            }
            self.last_sent = (top.to_vec(), total);
            let snapshot = Snapshot {
                board: tagged.snapshot.board.clone(),
                period: tagged.snapshot.period.clone(),
                entries: top.to_vec(),
                total_members: total,
                taken_at: tagged.snapshot.taken_at,
                hidden: tagged.snapshot.hidden.clone(),
            };
            return Some((snapshot, self));
        }
    }
}
