//! The incentive visitor: registered with the progress service's activity visitors, it turns
//! activity that some employer incentive rewards into incentive events on the bus (topic
//! `incentive-events`), one per activity and link.
//!
//! An employer's active links are learned from the incentive service over gRPC (with the
//! progress service's own token) and cached for `lookup_cache_secs`, so a busy employer costs
//! one call per cache period, not one per activity. The incentive service announces link
//! changes ([`crate::notices`]); the cached links of that employer are then forgotten, so a
//! new link counts from the next activity (a missed announcement: from the next refresh). While the incentive service cannot be
//! reached the last known links are used; an employer never looked up fails the writer's
//! batch, which is retried. A link created a moment ago counts from
//! the next refresh; the processor re-checks every event against the link as it is then.
//!
//! Events are published with the activity's id, so a batch the writer shows again (after a
//! crash) publishes the same events again, and the processor counts a day once.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use ewpm_kit::{auth::ServiceToken, bus::Bus, cache::TtlCache, timestamp};
use ewpm_progress::visitor::{Activity, ActivityKind, ActivityVisitor};
use ewpm_proto::incentive::v1::{self as pb, incentive_service_client::IncentiveServiceClient};
use tokio::sync::broadcast;
use tonic::{Request, transport::Channel};
use uuid::Uuid;

use crate::{
    INCENTIVE_TOPIC,
    domain::{ActiveWindow, IncentiveEvent},
    notices::ALL_EMPLOYERS,
};

/// How long one look-up may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the visitor needs of a link.
#[derive(Debug, Clone, PartialEq)]
pub struct VisitorLink {
    /// The employer incentive.
    pub id: Uuid,
    /// Kinds that trigger it.
    pub kinds: Vec<ActivityKind>,
    /// When activity counts.
    pub window: ActiveWindow,
}

/// Where the visitor learns an employer's links.
#[async_trait]
pub trait LinkSource: Send + Sync + 'static {
    /// The active links of `employer_id`.
    async fn links(&self, employer_id: &str) -> anyhow::Result<Vec<VisitorLink>>;
}

/// Links from the incentive service over gRPC.
pub struct GrpcLinks {
    client: IncentiveServiceClient<Channel>,
    token: Arc<ServiceToken>,
}

impl GrpcLinks {
    /// The incentive service at `uri` (connected lazily), called with `token`.
    pub fn new(uri: &str, token: Arc<ServiceToken>) -> anyhow::Result<Self> {
        let channel = ewpm_kit::client::channel(uri).context("incentive service")?;
        Ok(Self { client: IncentiveServiceClient::new(channel), token })
    }
}

#[async_trait]
impl LinkSource for GrpcLinks {
    async fn links(&self, employer_id: &str) -> anyhow::Result<Vec<VisitorLink>> {
        let mut links = Vec::new();
        let mut page_token = String::new();
        loop {
            let mut request =
                self.token.authorize(Request::new(pb::ListEmployerIncentivesRequest {
                    employer_id: employer_id.to_string(),
                    page_size: 100,
                    page_token,
                    include_inactive: false,
                }));
            request.set_timeout(LOOKUP_TIMEOUT);
            let page = self
                .client
                .clone()
                .list_employer_incentives(request)
                .await
                .with_context(|| format!("list incentives of employer {employer_id}"))?
                .into_inner();
            links.extend(page.employer_incentives.into_iter().filter_map(visitor_link));
            if page.next_page_token.is_empty() {
                return Ok(links);
            }
            page_token = page.next_page_token;
        }
    }
}

/// The parts of an active link the visitor needs; `None` for an inactive or malformed one.
fn visitor_link(l: pb::EmployerIncentive) -> Option<VisitorLink> {
    let incentive = l.incentive?;
    if !l.active || !incentive.active {
        return None;
    }
    let starts_at = timestamp::from_proto(l.start_time.as_ref()?)?;
    let ends_at = l.end_time.as_ref().and_then(timestamp::from_proto);
    Some(VisitorLink {
        id: l.id.parse().ok()?,
        kinds: incentive.trigger_kinds.into_iter().filter_map(ActivityKind::from_proto).collect(),
        window: ActiveWindow { starts_at, ends_at },
    })
}

/// The activity visitor of the incentive service.
pub struct IncentiveVisitor {
    source: Arc<dyn LinkSource>,
    cache: Arc<TtlCache<String, Arc<Vec<VisitorLink>>>>,
    bus: Arc<dyn Bus>,
}

impl IncentiveVisitor {
    /// Publishes on `bus`, learning links from `source`, cached for `ttl`.
    pub fn new(source: Arc<dyn LinkSource>, bus: Arc<dyn Bus>, ttl: Duration) -> Self {
        Self { source, cache: Arc::new(TtlCache::new(ttl)), bus }
    }

    /// Forgets an employer's cached links as soon as `changes` says they changed
    /// ([`ALL_EMPLOYERS`]: everybody's), until the visitor is dropped or `changes` closes.
    pub fn follow(&self, mut changes: broadcast::Receiver<String>) {
        let cache = Arc::downgrade(&self.cache);
        tokio::spawn(async move {
            use broadcast::error::RecvError;
            loop {
                let changed = changes.recv().await;
                let Some(cache) = cache.upgrade() else { return };
                match changed {
                    Ok(employer) if employer == ALL_EMPLOYERS => cache.clear(),
                    Ok(employer) => cache.remove(&employer),
                    Err(RecvError::Lagged(_)) => cache.clear(),
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    async fn links(&self, employer_id: &str) -> anyhow::Result<Arc<Vec<VisitorLink>>> {
        if let Some(links) = self.cache.get(&employer_id.to_string()) {
            return Ok(links);
        }
        match self.source.links(employer_id).await {
            Ok(links) => {
                let links = Arc::new(links);
                self.cache.put(employer_id.to_string(), links.clone());
                Ok(links)
            }
            // The incentive service is down: links a little out of date beat stalling every
            // progress writer; with nothing to fall back on the batch is retried.
            Err(err) => match self.cache.get_stale(&employer_id.to_string()) {
                Some(links) => {
                    tracing::warn!(
                        employer = employer_id,
                        error = format!("{err:#}"),
                        "incentive look-up failed; using the last known links"
                    );
                    Ok(links)
                }
                None => Err(err),
            },
        }
    }

    /// The incentive events of `activities`.
    pub async fn events(&self, activities: &[Activity]) -> anyhow::Result<Vec<IncentiveEvent>> {
        let mut by_employer: BTreeMap<&str, Vec<&Activity>> = BTreeMap::new();
        for a in activities {
            // Incentives are an employer's: activity of a user without one earns none.
            if let Some(e) = a.employer_id.as_deref() {
                by_employer.entry(e).or_default().push(a);
            }
        }
        let mut events = Vec::new();
        for (employer, activities) in by_employer {
            let links = self.links(employer).await?;
            for a in activities {
                for link in links.iter() {
                    if link.kinds.contains(&a.kind) && link.window.contains(a.occurred_at) {
                        events.push(IncentiveEvent {
                            activity_id: a.id,
                            employer_incentive_id: link.id,
                            user_id: a.user_id.clone(),
                            employer_id: employer.to_string(),
                            kind: a.kind,
                            occurred_at: a.occurred_at,
                        });
                    }
                }
            }
        }
        Ok(events)
    }
}

#[async_trait]
impl ActivityVisitor for IncentiveVisitor {
    fn name(&self) -> &'static str {
        "incentive"
    }

    async fn visit(&self, activities: &[Activity]) -> anyhow::Result<()> {
        let events = self.events(activities).await?;
        if events.is_empty() {
            return Ok(());
        }
        let payloads = events
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<Vec<_>, _>>()
            .context("encode incentive events")?;
        self.bus.publish(INCENTIVE_TOPIC, &payloads).await.context("publish incentive events")?;
        metrics::counter!("ewpm_incentive_events_published_total").increment(events.len() as u64);
        Ok(())
    }
}
