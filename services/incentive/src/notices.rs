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
//!   `<prefix>incentive:links` ([`AWARDS_CHANNEL`], [`LINKS_CHANNEL`]); one subscriber
//!   connection per process, fanned out locally. The payloads are protobuf messages
//!   (`ewpm.incentive.v1.AwardRecorded`, `ewpm.incentive.v1.EmployerLinksChanged`, in
//!   `proto/ewpm/incentive/v1/events.proto`).
//!
//! Pub/sub is fire-and-forget: a watcher that is not connected when an award is recorded
//! finds it with ListAwards, and a processor that misses a link change sees it when its cache
//! entry expires (`lookup_cache_secs`).

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use ewpm_kit::{CancellationToken, timestamp};
use ewpm_proto::incentive::v1::{
    AWARDS_CHANNEL, Award as ProtoAward, AwardRecorded, EmployerLinksChanged, LINKS_CHANNEL,
};
use fred::{
    clients::SubscriberClient,
    prelude::{Client, EventInterface, PubsubInterface},
};
use prost::Message;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::{domain::Award, grpc::award_to_proto};

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
        let awards_channel = format!("{prefix}{AWARDS_CHANNEL}");
        let links_channel = format!("{prefix}{LINKS_CHANNEL}");
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
            Ok(m) if m.channel == awards_channel => match m.value.as_bytes().map(decode_award) {
                Some(Ok(award)) => drop(local.awards.send(award)),
                _ => tracing::warn!(channel = %m.channel, "ignoring a malformed award notice"),
            },
            Ok(m) => {
                drop(local.links.send(decode_links_changed(m.value.as_bytes().unwrap_or_default())))
            }
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
            let _: i64 = self
                .publisher
                .publish(self.awards_channel.as_str(), encode_award(a))
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
            .publish(self.links_channel.as_str(), encode_links_changed(employer_id))
            .await
            .context("publish link notice")?;
        Ok(())
    }

    fn subscribe_links(&self) -> broadcast::Receiver<String> {
        self.local.subscribe_links()
    }
}

/// The pub/sub payload of an award notice (an `AwardRecorded`).
pub fn encode_award(award: &Award) -> Vec<u8> {
    AwardRecorded { award: Some(award_to_proto(award)) }.encode_to_vec()
}

/// The award of a notice: an `AwardRecorded`, or the previous release's JSON (sent by a
/// process not yet upgraded during a rolling upgrade; notices are transient, so the fallback
/// can go in the next release).
pub fn decode_award(payload: &[u8]) -> anyhow::Result<Award> {
    let proto = AwardRecorded::decode(payload)
        .context("not a protobuf AwardRecorded")
        .and_then(|AwardRecorded { award }| award_from_proto(award.context("no award")?));
    match proto {
        Ok(award) => Ok(award),
        Err(err) => {
            serde_json::from_slice(payload).map_err(|_| err.context("nor a JSON award notice"))
        }
    }
}

/// The pub/sub payload of a link notice (an `EmployerLinksChanged`).
pub fn encode_links_changed(employer_id: &str) -> Vec<u8> {
    EmployerLinksChanged { employer_id: employer_id.to_string() }.encode_to_vec()
}

/// The employer of a link notice; [`ALL_EMPLOYERS`] for one that does not decode (such as the
/// previous release's bare employer id during a rolling upgrade): dropping every cached link
/// is always safe, only slower until the caches refill.
pub fn decode_links_changed(payload: &[u8]) -> String {
    match EmployerLinksChanged::decode(payload) {
        Ok(EmployerLinksChanged { employer_id }) if !employer_id.is_empty() => employer_id,
        _ => ALL_EMPLOYERS.to_string(),
    }
}

fn award_from_proto(award: ProtoAward) -> anyhow::Result<Award> {
    let ProtoAward {
        id,
        user_id,
        employer_id,
        employer_incentive_id,
        program_id,
        incentive_slug,
        reward,
        award_day,
        period_key,
        activity_id,
        award_time,
    } = award;
    let uuid = |field: &str, raw: &str| {
        Uuid::parse_str(raw).with_context(|| format!("{field} {raw:?} is not a UUID"))
    };
    Ok(Award {
        id: uuid("id", &id)?,
        user_id,
        employer_id,
        employer_incentive_id: uuid("employer_incentive_id", &employer_incentive_id)?,
        program_id,
        incentive_slug,
        reward,
        award_day: award_day.parse().with_context(|| format!("award_day {award_day:?}"))?,
        period_key,
        activity_id: uuid("activity_id", &activity_id)?,
        awarded_at: award_time
            .as_ref()
            .and_then(timestamp::from_proto)
            .ok_or_else(|| anyhow!("award_time missing or invalid"))?,
    })
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    fn award() -> Award {
        Award {
            id: Uuid::now_v7(),
            user_id: "alice".into(),
            employer_id: "acme".into(),
            employer_incentive_id: Uuid::now_v7(),
            program_id: "wellbeing".into(),
            incentive_slug: "user-birth".into(),
            reward: "a day off".into(),
            award_day: "2026-11-22".parse().unwrap(),
            period_key: "once".into(),
            activity_id: Uuid::now_v7(),
            awarded_at: DateTime::parse_from_rfc3339("2026-11-22T10:00:00.5Z").unwrap().to_utc(),
        }
    }

    #[test]
    fn an_award_notice_round_trips_through_protobuf() {
        let award = award();
        let payload = encode_award(&award);
        assert_eq!(
            AwardRecorded::decode(payload.as_slice()).unwrap(),
            AwardRecorded { award: Some(award_to_proto(&award)) }
        );
        assert_eq!(decode_award(&payload).unwrap(), award);
    }

    #[test]
    fn an_award_notice_sent_as_json_by_the_previous_release_still_decodes() {
        let award = award();
        assert_eq!(decode_award(&serde_json::to_vec(&award).unwrap()).unwrap(), award);
        assert!(decode_award(b"not an award").is_err());
        assert!(decode_award(&AwardRecorded { award: None }.encode_to_vec()).is_err());
    }

    #[test]
    fn a_link_notice_round_trips_and_one_that_does_not_decode_means_every_employer() {
        assert_eq!(decode_links_changed(&encode_links_changed("acme")), "acme");
        assert_eq!(decode_links_changed(&encode_links_changed(ALL_EMPLOYERS)), ALL_EMPLOYERS);
        assert_eq!(decode_links_changed(b"acme"), ALL_EMPLOYERS);
        assert_eq!(decode_links_changed(b""), ALL_EMPLOYERS);
    }
}
