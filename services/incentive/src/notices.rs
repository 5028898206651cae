//! Incentive notices, between processes:
//!
//! - newly recorded awards, from the processors to every process serving WatchAwards;
//! - "an employer's links changed", from the incentive service to every processor's link
//!   cache, so a new or deactivated link counts from the next activity rather than from the
//!   next cache refresh.
//!
//! Implementations:
//! - [`MemoryNotices`]: in-process (embedded mode).
//! - [`RedisNotices`]: Redis pub/sub on channels `<prefix>incentive:awards` and
//!   `<prefix>incentive:links`; one subscriber connection per process, fanned out locally.
//!
//! Pub/sub is fire-and-forget: a watcher that is not connected when an award is recorded
//! finds it with ListAwards, and a processor that misses a link change sees it when its cache
//! entry expires (`lookup_cache_secs`).

use anyhow::Context;
use async_trait::async_trait;
use ewpm_kit::CancellationToken;
use fred::{
    clients::SubscriberClient,
    prelude::{Client, EventInterface, PubsubInterface},
};
use tokio::sync::broadcast;

use crate::domain::Award;

/// Notices a slow receiver may fall behind by before it skips some (it is told how many).
const FAN_OUT: usize = 1024;

/// What "every employer's links changed" is announced as (a catalog incentive changed).
pub const ALL_EMPLOYERS: &str = "*";

/// Publishes and delivers incentive notices.
#[async_trait]
pub trait IncentiveNotices: Send + Sync + 'static {
    /// Announces `awards` to every watcher, in any process.
    async fn publish(&self, awards: &[Award]) -> anyhow::Result<()>;

    /// Every award announced from now on (filter by user yourself).
    fn subscribe(&self) -> broadcast::Receiver<Award>;

    /// Announces that `employer_id`'s links changed ([`ALL_EMPLOYERS`]: everybody's).
    async fn links_changed(&self, employer_id: &str) -> anyhow::Result<()>;

    /// Every link change announced from now on (employer ids).
    fn subscribe_links(&self) -> broadcast::Receiver<String>;
}

/// In-process notices.
#[derive(Debug, Clone)]
pub struct MemoryNotices {
    awards: broadcast::Sender<Award>,
    links: broadcast::Sender<String>,
}

impl MemoryNotices {
    /// No receivers yet.
    pub fn new() -> Self {
        Self { awards: broadcast::channel(FAN_OUT).0, links: broadcast::channel(FAN_OUT).0 }
    }
}

impl Default for MemoryNotices {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl IncentiveNotices for MemoryNotices {
    async fn publish(&self, awards: &[Award]) -> anyhow::Result<()> {
        for a in awards {
            // No receiver is not an error: nobody watches.
            drop(self.awards.send(a.clone()));
        }
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Award> {
        self.awards.subscribe()
    }

    async fn links_changed(&self, employer_id: &str) -> anyhow::Result<()> {
        drop(self.links.send(employer_id.to_string()));
        Ok(())
    }

    fn subscribe_links(&self) -> broadcast::Receiver<String> {
        self.links.subscribe()
    }
}

/// Notices over Redis pub/sub.
pub struct RedisNotices {
    publisher: Client,
    _subscriber: SubscriberClient,
    awards_channel: String,
    links_channel: String,
    local: MemoryNotices,
    stop: CancellationToken,
}

impl RedisNotices {
    /// Connects a publisher and a subscriber (re-subscribed after reconnects) to `url`.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let (publisher, subscriber) = ewpm_kit::redis::pubsub(url).await?;
        // Re-subscribes after a reconnect.
        let _resubscriber = subscriber.manage_subscriptions();
        let awards_channel = format!("{prefix}incentive:awards");
        let links_channel = format!("{prefix}incentive:links");
        let local = MemoryNotices::new();
        let stop = CancellationToken::new();
        tokio::spawn(deliver(
            subscriber.clone(),
            local.clone(),
            awards_channel.clone(),
            stop.clone(),
        ));
        for channel in [&awards_channel, &links_channel] {
            subscriber
                .subscribe(channel.clone())
                .await
                .context("subscribe to incentive notices")?;
        }
        Ok(Self { publisher, _subscriber: subscriber, awards_channel, links_channel, local, stop })
    }
}

impl Drop for RedisNotices {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Hands every notice received to the local receivers.
async fn deliver(
    subscriber: SubscriberClient,
    local: MemoryNotices,
    awards_channel: String,
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
            Ok(m) if m.channel == awards_channel => {
                match m.value.as_bytes().map(serde_json::from_slice::<Award>) {
                    Some(Ok(award)) => drop(local.awards.send(award)),
                    _ => tracing::warn!(channel = %m.channel, "ignoring a malformed award notice"),
                }
            }
            Ok(m) => match m.value.as_str() {
                Some(employer) => drop(local.links.send(employer.to_string())),
                None => tracing::warn!(channel = %m.channel, "ignoring a malformed link notice"),
            },
            // Only worth a warning when somebody was watching; a processor that missed link
            // changes is told everything changed.
            Err(RecvError::Lagged(n)) => {
                drop(local.links.send(ALL_EMPLOYERS.to_string()));
                if local.awards.receiver_count() > 0 {
                    tracing::warn!(skipped = n, "incentive notices lagged; watchers missed some");
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[async_trait]
impl IncentiveNotices for RedisNotices {
    async fn publish(&self, awards: &[Award]) -> anyhow::Result<()> {
        for a in awards {
            let json = serde_json::to_string(a).context("encode award notice")?;
            let _: i64 = self
                .publisher
                .publish(self.awards_channel.as_str(), json)
                .await
                .context("publish award notice")?;
        }
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Award> {
        self.local.subscribe()
    }

    async fn links_changed(&self, employer_id: &str) -> anyhow::Result<()> {
        let _: i64 = self
            .publisher
            .publish(self.links_channel.as_str(), employer_id)
            .await
            .context("publish link notice")?;
        Ok(())
    }

    fn subscribe_links(&self) -> broadcast::Receiver<String> {
        self.local.subscribe_links()
    }
}
