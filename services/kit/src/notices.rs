//! Change notices: "X changed", from whoever changed it to every process that watches X
//! (the leaderboard applier's "board changed", the quiz service's "session changed").
//!
//! A notice carries no data (watchers re-read what changed), so a lost or merged notice costs
//! freshness, never correctness; watchers also refresh periodically for that reason.
//!
//! - [`MemoryNotices`]: in-process, for the embedded mode.
//! - [`RedisNotices`]: Redis pub/sub on channel `<prefix><namespace><key>` (e.g.
//!   `lb:changed:challenge:…`, `quiz:changed:…`). One
//!   subscriber connection per process; a key's channel is subscribed while at least one
//!   local [`Subscription`] to it exists and unsubscribed when the last one is dropped;
//!   subscriptions are restored after a reconnect (and every local subscriber is nudged,
//!   since notices may have been missed meanwhile).

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use crate::CancellationToken;
use anyhow::Context;
use async_trait::async_trait;
use fred::{
    clients::SubscriberClient,
    prelude::{Client, ClientLike, EventInterface, PubsubInterface},
    types::Value,
};
use tokio::sync::{mpsc, oneshot, watch};

/// Publishes and delivers change notices per key (a board, a session).
#[async_trait]
pub trait Notices: Send + Sync + 'static {
    /// Tells every watcher of `keys` (in any process) that they changed.
    async fn publish(&self, keys: &[String]) -> anyhow::Result<()>;

    /// Notices of `key` from now on, until the subscription is dropped.
    async fn subscribe(&self, key: &str) -> anyhow::Result<Subscription>;

    /// Upstream subscriptions to `key`'s notices: on Redis, the server's count over every
    /// process (`PUBSUB NUMSUB`); in memory, live [`Subscription`]s. For tests and
    /// diagnostics.
    async fn subscribers(&self, key: &str) -> anyhow::Result<u64>;
}

/// A subscription to one key's notices. Notices that arrive while nobody waits are merged
/// into one.
pub struct Subscription {
    rx: watch::Receiver<u64>,
    _guard: Guard,
}

impl Subscription {
    /// Waits for the next notice; `false` when no more can come (the notices backend is
    /// gone).
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

/// Local fan-out: per key, a counter bumped by each notice and the number of
/// subscriptions.
#[derive(Default)]
struct Local {
    boards: Mutex<HashMap<String, (watch::Sender<u64>, usize)>>,
    /// Told when a board loses its last subscription (Redis unsubscribes then).
    on_last: Option<mpsc::UnboundedSender<Reconcile>>,
}

impl Local {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (watch::Sender<u64>, usize)>> {
        self.boards.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(self: &Arc<Self>, board: &str) -> Subscription {
        let mut boards = self.lock();
        let (tx, count) =
            boards.entry(board.to_string()).or_insert_with(|| (watch::channel(0).0, 0));
        *count += 1;
        Subscription {
            rx: tx.subscribe(),
            _guard: Guard { local: self.clone(), board: board.to_string() },
        }
    }

    fn bump(&self, board: &str) {
        if let Some((tx, _)) = self.lock().get(board) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn bump_all(&self) {
        for (tx, _) in self.lock().values() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn count(&self, board: &str) -> usize {
        self.lock().get(board).map_or(0, |(_, n)| *n)
    }

    fn boards(&self) -> BTreeSet<String> {
        self.lock().keys().cloned().collect()
    }
}

struct Guard {
    local: Arc<Local>,
    board: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let last = {
            let mut boards = self.local.lock();
            match boards.get_mut(&self.board) {
                Some((_, count)) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    boards.remove(&self.board);
                    true
                }
                None => false,
            }
        };
        if last && let Some(tx) = &self.local.on_last {
            // The manager may be gone at process end: nothing left to unsubscribe then.
            drop(tx.send(Reconcile(None)));
        }
    }
}

/// Notices within one process (embedded mode).
#[derive(Default)]
pub struct MemoryNotices {
    local: Arc<Local>,
}

impl MemoryNotices {
    /// No subscriptions yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Notices for MemoryNotices {
    async fn publish(&self, boards: &[String]) -> anyhow::Result<()> {
        for board in boards {
            self.local.bump(board);
        }
        Ok(())
    }

    async fn subscribe(&self, board: &str) -> anyhow::Result<Subscription> {
        Ok(self.local.add(board))
    }

    async fn subscribers(&self, board: &str) -> anyhow::Result<u64> {
        Ok(self.local.count(board) as u64)
    }
}

/// A request to bring the server-side subscriptions in line with the local ones; the reply,
/// if asked for, says whether that worked.
struct Reconcile(Option<oneshot::Sender<anyhow::Result<()>>>);

/// Notices over Redis pub/sub (mesh mode).
pub struct RedisNotices {
    publisher: Client,
    local: Arc<Local>,
    reconcile: mpsc::UnboundedSender<Reconcile>,
    prefix: String,
    stop: CancellationToken,
}

impl RedisNotices {
    /// Connects a publisher and a subscriber connection to `url`; channel names are
    /// `<prefix><namespace><key>` (`prefix` is empty in production, per test in tests;
    /// `namespace` names the kind of notice, e.g. `lb:changed:`).
    pub async fn connect(url: &str, prefix: &str, namespace: &str) -> anyhow::Result<Self> {
        let (publisher, subscriber) = crate::redis::pubsub(url).await?;

        let (tx, rx) = mpsc::unbounded_channel();
        let local = Arc::new(Local { boards: Mutex::default(), on_last: Some(tx.clone()) });
        let stop = CancellationToken::new();
        let channel_prefix = format!("{prefix}{namespace}");
        tokio::spawn(deliver(
            subscriber.clone(),
            local.clone(),
            channel_prefix.clone(),
            stop.clone(),
        ));
        tokio::spawn(manage(subscriber, local.clone(), channel_prefix.clone(), rx, stop.clone()));
        Ok(Self { publisher, local, reconcile: tx, prefix: channel_prefix, stop })
    }

    fn channel(&self, board: &str) -> String {
        format!("{}{board}", self.prefix)
    }
}

impl Drop for RedisNotices {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[async_trait]
impl Notices for RedisNotices {
    async fn publish(&self, boards: &[String]) -> anyhow::Result<()> {
        let sends =
            boards.iter().map(|b| self.publisher.publish::<i64, _, _>(self.channel(b), "1"));
        futures::future::try_join_all(sends).await.context("PUBLISH")?;
        Ok(())
    }

    async fn subscribe(&self, board: &str) -> anyhow::Result<Subscription> {
        let subscription = self.local.add(board);
        let (tx, rx) = oneshot::channel();
        self.reconcile.send(Reconcile(Some(tx))).ok().context("notices manager stopped")?;
        // Returns once the server delivers this board's notices to us, so nothing published
        // after `subscribe` returns is missed.
        rx.await.context("notices manager stopped")??;
        Ok(subscription)
    }

    async fn subscribers(&self, board: &str) -> anyhow::Result<u64> {
        let reply: Vec<Value> =
            self.publisher.pubsub_numsub(self.channel(board)).await.context("PUBSUB NUMSUB")?;
        Ok(reply.get(1).and_then(Value::as_u64).unwrap_or(0))
    }
}

/// Routes published messages to the local subscribers of their board.
async fn deliver(
    subscriber: SubscriberClient,
    local: Arc<Local>,
    channel_prefix: String,
    stop: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut messages = subscriber.message_rx();
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return,
            m = messages.recv() => m,
        };
        match message {
            Ok(m) => {
                if let Some(board) = m.channel.strip_prefix(channel_prefix.as_str()) {
                    local.bump(board);
                }
            }
            // Some notices were dropped: tell everyone rather than guess.
            Err(RecvError::Lagged(_)) => local.bump_all(),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Owns the subscriber connection's channel set: subscribes and unsubscribes so that it
/// matches the boards with local subscriptions (one task, so requests cannot reorder), and
/// restores it after a reconnect.
async fn manage(
    subscriber: SubscriberClient,
    local: Arc<Local>,
    channel_prefix: String,
    mut requests: mpsc::UnboundedReceiver<Reconcile>,
    stop: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut reconnects = subscriber.reconnect_rx();
    let mut reconnects_open = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            request = requests.recv() => {
                let Some(Reconcile(reply)) = request else { break };
                let result = reconcile(&subscriber, &local, &channel_prefix).await;
                if let Err(err) = &result {
                    tracing::warn!(error = format!("{err:#}"), "update notice subscriptions");
                }
                if let Some(reply) = reply {
                    drop(reply.send(result));
                }
            }
            reconnected = reconnects.recv(), if reconnects_open => {
                if let Err(RecvError::Closed) = reconnected {
                    reconnects_open = false;
                    continue;
                }
                if let Err(err) = subscriber.resubscribe_all().await {
                    tracing::warn!(error = %err, "restore notice subscriptions after reconnect");
                }
                local.bump_all();
            }
        }
    }
    drop(subscriber.quit().await);
}

async fn reconcile(
    subscriber: &SubscriberClient,
    local: &Local,
    channel_prefix: &str,
) -> anyhow::Result<()> {
    let wanted: BTreeSet<String> =
        local.boards().into_iter().map(|b| format!("{channel_prefix}{b}")).collect();
    let have: BTreeSet<String> =
        subscriber.tracked_channels().into_iter().map(|c| c.to_string()).collect();
    let add: Vec<String> = wanted.difference(&have).cloned().collect();
    let remove: Vec<String> = have.difference(&wanted).cloned().collect();
    if !add.is_empty() {
        subscriber.subscribe(add).await.context("SUBSCRIBE")?;
    }
    if !remove.is_empty() {
        subscriber.unsubscribe(remove).await.context("UNSUBSCRIBE")?;
    }
    Ok(())
}
