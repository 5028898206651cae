//! The incentive processor: recorded activity → the employer incentives it triggers → each
//! link's rule → its stacked actions → awards, exactly once.
//!
//! A [`ewpm_kit::consumer::Handler`]: any number of processors (tasks and processes) consume
//! the `activity` topic (published by the progress batch writers, one `ActivityBatch` message
//! per written batch; see [`crate::activity::decode_message`]) as one group,
//! `incentive-processor`. For a batch of messages, each activity's employer's active links are
//! read from this service's own tables (cached; an announced link change empties the cache)
//! and every (activity, link) it counts towards becomes an [`IncentiveEvent`]
//! ([`crate::activity::events_of`]); activity of users without an employer stops there, with
//! no SQL. Then one transaction per [`MAX_EVENTS_PER_TRANSACTION`] events at most:
//!
//! 1. the streaks the batch touches are locked (created empty when new) in sorted key order,
//!    so processors working on the same users wait for each other instead of racing, and
//!    cannot deadlock;
//! 2. each event's day (the employer's calendar) is recorded in its streak
//!    ([`crate::streak`]); recording a day twice changes nothing, so a redelivered event is
//!    harmless;
//! 3. for every firing the link's actions run in order; the award's unique key (link, user,
//!    period) makes a second award for the same period impossible whatever races;
//! 4. commit, then the notifications.
//!
//! Events for links that are unknown, inactive, outside their active window, or whose kind
//! no longer triggers the incentive are dropped (counted in
//! `ewpm_incentive_events_skipped_total`).
//!
//! A redelivered message (a batch the writer published again, or one this group received and
//! did not acknowledge) brings the same activities with the same ids, so the same events:
//! each of them records a day already recorded or meets an award already in the ledger, and
//! counts nothing twice, whichever activities of the batch had been applied.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use ewpm_kit::{cache::TtlCache, clock::SharedClock, consumer::Handler};
use sea_orm::TransactionTrait;
use uuid::Uuid;

use crate::{
    actions::{Fired, run_stacks},
    activity::{Activity, decode_message, events_of},
    domain::{EmployerIncentive, IncentiveEvent, Rule, day_number, day_of_number},
    notices::IncentiveNotices,
    store::{IncentiveStore, StreakKey},
    streak::{Recorded, Streak},
};

/// Employer incentives by id and each employer's active ones, cached.
pub struct Links {
    store: IncentiveStore,
    cache: Arc<TtlCache<Uuid, Option<Arc<EmployerIncentive>>>>,
    by_employer: Arc<TtlCache<String, Arc<Vec<Arc<EmployerIncentive>>>>>,
}

/// Links read per page when loading an employer's active links.
const EMPLOYER_PAGE: u64 = 500;

/// Incentive events one transaction applies at most. A consumer batch is `batch_size`
/// messages, each a writer's whole batch of activities, so its events are applied in
/// transactions of this size (short enough not to hold the embedded database's one writer
/// lock for long); the messages are acknowledged after the last.
pub const MAX_EVENTS_PER_TRANSACTION: usize = 2000;

impl Links {
    /// Reads links from `store`, caching each for `ttl`; any announced link change empties
    /// the cache (it is keyed by link, the announcement names an employer).
    pub fn new(
        store: IncentiveStore,
        ttl: Duration,
        mut changes: tokio::sync::broadcast::Receiver<String>,
    ) -> Self {
        let cache = Arc::new(TtlCache::new(ttl));
        let by_employer = Arc::new(TtlCache::new(ttl));
        let (weak, weak_employers) = (Arc::downgrade(&cache), Arc::downgrade(&by_employer));
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let changed = changes.recv().await;
                let (Some(cache), Some(by_employer)) = (weak.upgrade(), weak_employers.upgrade())
                else {
                    return;
                };
                match changed {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        cache.clear();
                        by_employer.clear();
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Self { store, cache, by_employer }
    }

    /// The active links of `employer_id`, from this service's own tables (cached).
    pub async fn of_employer(
        &self,
        employer_id: &str,
    ) -> anyhow::Result<Arc<Vec<Arc<EmployerIncentive>>>> {
        if let Some(links) = self.by_employer.get(&employer_id.to_string()) {
            return Ok(links);
        }
        let mut links = Vec::new();
        let mut before = None;
        loop {
            let page = self
                .store
                .list_employer_incentives(employer_id, before, EMPLOYER_PAGE, false)
                .await?;
            let full = page.len() as u64 == EMPLOYER_PAGE;
            before = page.last().map(|l| l.id);
            links.extend(page.into_iter().map(Arc::new));
            if !full {
                break;
            }
        }
        let links = Arc::new(links);
        self.by_employer.put(employer_id.to_string(), links.clone());
        Ok(links)
    }

    /// The links of `ids` (unknown ids are absent).
    pub async fn get(&self, ids: &[Uuid]) -> anyhow::Result<HashMap<Uuid, Arc<EmployerIncentive>>> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for id in ids {
            match self.cache.get(id) {
                Some(Some(link)) => {
                    found.insert(*id, link);
                }
                Some(None) => {}
                None => missing.push(*id),
            }
        }
        if !missing.is_empty() {
            let loaded = self.store.employer_incentives(&missing).await?;
            let mut loaded: HashMap<Uuid, Arc<EmployerIncentive>> =
                loaded.into_iter().map(|l| (l.id, Arc::new(l))).collect();
            for id in missing {
                let link = loaded.remove(&id);
                self.cache.put(id, link.clone());
                if let Some(link) = link {
                    found.insert(id, link);
                }
            }
        }
        Ok(found)
    }
}

/// What a processor does with a due batch of incentive events.
pub struct Processor {
    store: IncentiveStore,
    links: Arc<Links>,
    notices: Arc<dyn IncentiveNotices>,
    clock: SharedClock,
    backfill_days: u32,
}

impl Processor {
    /// A processor over `store` reading links through `links` (one cache for every processor
    /// of a process), announcing awards on `notices`.
    pub fn new(
        store: IncentiveStore,
        links: Arc<Links>,
        notices: Arc<dyn IncentiveNotices>,
        clock: SharedClock,
        backfill_days: u32,
    ) -> Self {
        Self { store, links, notices, clock, backfill_days }
    }

    /// The incentive events of `activities`: each against its employer's active links.
    pub async fn events<'a>(
        &self,
        activities: impl IntoIterator<Item = &'a Activity>,
    ) -> anyhow::Result<Vec<IncentiveEvent>> {
        let mut events = Vec::new();
        let mut links: HashMap<&str, Arc<Vec<Arc<EmployerIncentive>>>> = HashMap::new();
        for a in activities {
            let Some(employer) = a.employer_id.as_deref() else { continue };
            let of_employer = match links.get(employer) {
                Some(l) => l.clone(),
                None => {
                    let l = self.links.of_employer(employer).await?;
                    links.insert(employer, l.clone());
                    l
                }
            };
            events.extend(events_of(a, &of_employer));
        }
        Ok(events)
    }

    /// Applies one batch of incentive events (what [`Handler::handle`] does after
    /// [`Processor::events`]); returns the awards recorded.
    pub async fn process(
        &self,
        events: &[IncentiveEvent],
    ) -> anyhow::Result<Vec<crate::domain::Award>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let mut ids: Vec<Uuid> = events.iter().map(|e| e.employer_incentive_id).collect();
        ids.sort();
        ids.dedup();
        let links = self.links.get(&ids).await?;

        // Each event that counts, with its link and its day on the employer's calendar.
        let mut counted = Vec::with_capacity(events.len());
        for e in events {
            match links.get(&e.employer_incentive_id) {
                Some(link)
                    if link.counts(e.kind, e.occurred_at) && link.employer_id == e.employer_id =>
                {
                    counted.push((e, link.clone(), link.zone.day_of(e.occurred_at)));
                }
                _ => metrics::counter!("ewpm_incentive_events_skipped_total").increment(1),
            }
        }
        let keys: Vec<StreakKey> = counted
            .iter()
            .filter(|(_, link, _)| matches!(link.incentive.rule, Rule::ConsecutiveDays(_)))
            .map(|(e, link, _)| (link.id, e.user_id.clone()))
            .collect();

        let tx = self.store.db().begin().await.context("begin incentive batch")?;
        let mut streaks = IncentiveStore::lock_streaks(&tx, &keys, now).await?;
        let mut changed: HashMap<StreakKey, Streak> = HashMap::new();
        let mut fired = Vec::new();
        for (e, link, day) in &counted {
            let days = match link.incentive.rule {
                Rule::EachOccurrence => vec![day_number(*day)],
                Rule::ConsecutiveDays(target) => {
                    let key = (link.id, e.user_id.clone());
                    let streak = streaks.entry(key.clone()).or_default();
                    match streak.record(day_number(*day), target, self.backfill_days) {
                        Recorded::Counted { fired } => {
                            changed.insert(key, *streak);
                            fired
                        }
                        Recorded::Duplicate => Vec::new(),
                        Recorded::OutsideWindow => {
                            metrics::counter!("ewpm_incentive_days_outside_backfill_total")
                                .increment(1);
                            Vec::new()
                        }
                    }
                }
            };
            fired.extend(days.into_iter().map(|d| Fired {
                link: link.clone(),
                user_id: e.user_id.clone(),
                day: day_of_number(d),
                activity_id: e.activity_id,
                at: now,
            }));
        }
        // One order for every processor, so award inserts cannot deadlock either.
        fired.sort_by(|a, b| (a.link.id, &a.user_id, a.day).cmp(&(b.link.id, &b.user_id, b.day)));
        let mut changed: Vec<(StreakKey, Streak)> = changed.into_iter().collect();
        changed.sort_by(|a, b| a.0.cmp(&b.0));
        IncentiveStore::save_streaks(&tx, &changed, now).await?;
        let outcomes = run_stacks(&fired, &tx).await?;
        let mut awarded = Vec::new();
        let mut notify = Vec::new();
        for o in outcomes {
            awarded.extend(o.award);
            notify.extend(o.notify);
        }
        tx.commit().await.context("commit incentive batch")?;
        metrics::counter!("ewpm_incentive_events_processed_total").increment(events.len() as u64);
        if !notify.is_empty()
            && let Err(err) = self.notices.publish(&notify).await
        {
            tracing::warn!(
                error = format!("{err:#}"),
                awards = notify.len(),
                "award notification failed (the awards are recorded)"
            );
        }
        Ok(awarded)
    }
}

#[async_trait]
impl Handler for Processor {
    /// The activities of one message.
    type Item = Vec<Activity>;

    /// An `ActivityBatch` (or, from writers of the previous release, a lone
    /// `ActivityRecorded`); one that does not parse is logged and acknowledged by the consumer
    /// (it can never count), and so is an invalid event inside a batch, alone.
    fn decode(&self, payload: &[u8]) -> anyhow::Result<Vec<Activity>> {
        let decoded = decode_message(payload)?;
        for err in &decoded.dropped {
            tracing::error!(error = format!("{err:#}"), "dropping an invalid activity of a batch");
        }
        if !decoded.dropped.is_empty() {
            metrics::counter!("ewpm_incentive_activities_dropped_total")
                .increment(decoded.dropped.len() as u64);
        }
        Ok(decoded.activities)
    }

    async fn handle(&self, messages: &[Vec<Activity>]) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let events = self.events(messages.iter().flatten()).await?;
        for chunk in events.chunks(MAX_EVENTS_PER_TRANSACTION) {
            self.process(chunk).await?;
        }
        let activities: usize = messages.iter().map(Vec::len).sum();
        metrics::counter!("ewpm_incentive_activities_total").increment(activities as u64);
        metrics::histogram!("ewpm_incentive_batch_events").record(events.len() as f64);
        metrics::histogram!("ewpm_incentive_batch_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }
}
