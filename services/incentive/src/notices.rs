//! Award notices: newly recorded awards, from the processors to every process serving
//! WatchAwards.
//!
//! - [`MemoryNotices`]: in-process (embedded mode).
//! - [`RedisNotices`]: Redis pub/sub on channel `<prefix>incentive:awards`; one subscriber
//!   connection per process, fanned out locally. Pub/sub is fire-and-forget: a watcher that
//!   is not connected when an award is recorded finds it with ListAwards.

use anyhow::Context;
use async_trait::async_trait;
use ewpm_kit::CancellationToken;
use fred::{
    clients::SubscriberClient,
    prelude::{Client, EventInterface, PubsubInterface},
};
use tokio::sync::broadcast;

use crate::domain::Award;

/// Awards a slow watcher may fall behind by before it skips some (it is told how many).
const FAN_OUT: usize = 1024;

/// Publishes and delivers award notices.
#[async_trait]
pub trait AwardNotices: Send + Sync + 'static {
    /// Announces `awards` to every watcher, in any process.
    async fn publish(&self, awards: &[Award]) -> anyhow::Result<()>;

    /// Every award announced from now on (filter by user yourself).
    fn subscribe(&self) -> broadcast::Receiver<Award>;
}

/// In-process notices.
#[derive(Debug, Clone)]
pub struct MemoryNotices(broadcast::Sender<Award>);

impl MemoryNotices {
    /// No watchers yet.
    pub fn new() -> Self {
        Self(broadcast::channel(FAN_OUT).0)
    }
}

impl Default for MemoryNotices {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl AwardNotices for MemoryNotices {
    async fn publish(&self, awards: &[Award]) -> anyhow::Result<()> {
        for a in awards {
            // No receiver is not an error: nobody watches.
            drop(self.0.send(a.clone()));
        }
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Award> {
        self.0.subscribe()
    }
}

/// Notices over Redis pub/sub.
pub struct RedisNotices {
    publisher: Client,
    _subscriber: SubscriberClient,
    channel: String,
    local: broadcast::Sender<Award>,
    stop: CancellationToken,
}

impl RedisNotices {
    /// Connects a publisher and a subscriber (re-subscribed after reconnects) to `url`.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let (publisher, subscriber) = ewpm_kit::redis::pubsub(url).await?;
        // Re-subscribes after a reconnect.
        let _resubscriber = subscriber.manage_subscriptions();
        let channel = format!("{prefix}incentive:awards");
        let local = broadcast::channel(FAN_OUT).0;
        let stop = CancellationToken::new();
        tokio::spawn(deliver(subscriber.clone(), local.clone(), stop.clone()));
        subscriber.subscribe(channel.clone()).await.context("subscribe to award notices")?;
        Ok(Self { publisher, _subscriber: subscriber, channel, local, stop })
    }
}

impl Drop for RedisNotices {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Hands every award notice received to the local watchers.
async fn deliver(
    subscriber: SubscriberClient,
    local: broadcast::Sender<Award>,
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
            Ok(m) => match m.value.as_bytes().map(serde_json::from_slice::<Award>) {
                Some(Ok(award)) => drop(local.send(award)),
                _ => tracing::warn!(channel = %m.channel, "ignoring a malformed award notice"),
            },
            // Only worth a warning when somebody was watching.
            Err(RecvError::Lagged(n)) if local.receiver_count() > 0 => {
                tracing::warn!(skipped = n, "award notices lagged; watchers missed some")
            }
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

#[async_trait]
impl AwardNotices for RedisNotices {
    async fn publish(&self, awards: &[Award]) -> anyhow::Result<()> {
        for a in awards {
            let json = serde_json::to_string(a).context("encode award notice")?;
            let _: i64 = self
                .publisher
                .publish(self.channel.as_str(), json)
                .await
                .context("publish award notice")?;
        }
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Award> {
        self.local.subscribe()
    }
}
