//! The projector: reads a feed page by page from its checkpoint and applies each page to the
//! parcel states, moving the checkpoint in the same transaction.
//!
//! - Sources: this service's own feed, or any external Scan Event API
//!   (`GET <url>?FromEventId=N&Limit=M`), read tolerantly (see [`crate::feed`]).
//! - Faults: network errors, 5xx and 429 are retried with capped exponential backoff and
//!   jitter; a malformed event goes to `scan_dead_letters` and the page goes on.
//! - One applier per source: a lease (a PostgreSQL advisory lock held by a dedicated
//!   connection; in-process on SQLite) keeps standbys idle, and the checkpoint
//!   compare-and-set in [`ScanStore::apply_page`] makes a double apply impossible even if two
//!   processes ever both believe they lead.
//! - Shutdown: an in-flight fetch is abandoned; an in-flight apply commits or rolls back
//!   whole, so the checkpoint never passes an unapplied event.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use ewpm_kit::{
    CancellationToken,
    clock::SharedClock,
    retry::{backoff, sleep_or_shutdown},
};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection};

use crate::{
    feed::{self, Item},
    store::{ApplyError, DeadLetter, PageApply, ScanStore},
};

/// Where the projector reads.
#[derive(Debug, Clone)]
pub enum Source {
    /// This service's own `scan_events` feed.
    Own(ScanStore),
    /// An external Scan Event API.
    Http(HttpFeed),
}

/// An external feed in the exercise's format.
#[derive(Debug, Clone)]
pub struct HttpFeed {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl HttpFeed {
    /// A feed at `url` (e.g. `http://host/v1/scans/scanevents`), sending `token` as a bearer
    /// token when given.
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        ewpm_kit::install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("build HTTP client")?;
        Ok(Self { client, url: url.to_string(), token })
    }

    async fn fetch(&self, from: i64, limit: u32) -> Result<Vec<Item>, String> {
        let mut request = self
            .client
            .get(&self.url)
            .query(&[("FromEventId", from.to_string()), ("Limit", limit.to_string())]);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(format!("source answered {status}"));
        }
        let body = response.bytes().await.map_err(|e| format!("reading the body failed: {e}"))?;
        feed::parse_page(&body)
    }
}

impl Source {
    /// `own`, or the external URL: the checkpoint's key.
    pub fn name(&self) -> String {
        match self {
            Source::Own(_) => "own".to_string(),
            Source::Http(feed) => feed.url.clone(),
        }
    }

    async fn fetch(&self, from: i64, limit: u32) -> Result<Vec<Item>, String> {
        match self {
            Source::Own(store) => store
                .events_from(from, limit)
                .await
                .map(|events| events.into_iter().map(Item::Event).collect())
                .map_err(|e| format!("{e:#}")),
            Source::Http(feed) => feed.fetch(from, limit).await,
        }
    }

    /// The source's newest event id, where it can be known without reading it all.
    async fn head(&self) -> Option<i64> {
        match self {
            Source::Own(store) => store.head().await.ok(),
            Source::Http(_) => None,
        }
    }
}

/// Who may apply pages of a source.
pub enum Lease {
    /// Always held: SQLite has one writer process.
    Local,
    /// A PostgreSQL session-level advisory lock on a connection of its own; it is released
    /// when the process dies, so a standby takes over.
    Postgres {
        /// The database URL.
        url: String,
        /// Advisory lock key (a hash of the source name).
        key: i64,
        /// The connection holding the lock, once connected.
        conn: Option<DatabaseConnection>,
        /// Whether the last check found the lock held.
        held: bool,
        /// When the lock was last checked.
        checked: Option<Instant>,
    },
}

impl Lease {
    /// The lease fitting `db` for `source`.
    pub fn for_source(db: &DatabaseConnection, url: &str, source: &str) -> Self {
        match db.get_database_backend() {
            DatabaseBackend::Postgres => Lease::Postgres {
                url: url.to_string(),
                key: fnv(source),
                conn: None,
                held: false,
                checked: None,
            },
            _ => Lease::Local,
        }
    }

    /// Whether this process holds the lease now, trying to take it if not. A held lease is
    /// re-checked every few seconds (a dropped connection loses it).
    pub async fn hold(&mut self) -> bool {
        match self {
            Lease::Local => true,
            Lease::Postgres { url, key, conn, held, checked } => {
                if *held && checked.is_some_and(|c| c.elapsed() < Duration::from_secs(5)) {
                    return true;
                }
                if conn.is_none() {
                    let mut options = ConnectOptions::new(url.clone());
                    options
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(Duration::from_secs(365 * 24 * 3600))
                        .max_lifetime(Duration::from_secs(365 * 24 * 3600))
                        .sqlx_logging(false);
                    match Database::connect(options).await {
                        Ok(c) => *conn = Some(c),
                        Err(err) => {
                            tracing::warn!(%err, "lease connection failed");
                            *held = false;
                            return false;
                        }
                    }
                }
                let Some(c) = conn.as_ref() else { return false };
                // Re-entrant for the holding session; false while another session holds it.
                let sql = format!("SELECT pg_try_advisory_lock({key}) AS held");
                let result = c
                    .query_one_raw(sea_orm::Statement::from_string(DatabaseBackend::Postgres, sql))
                    .await;
                let now_held = match result {
                    Ok(Some(row)) => row.try_get::<bool>("", "held").unwrap_or(false),
                    Ok(None) => false,
                    Err(err) => {
                        tracing::warn!(%err, "lease check failed; reconnecting");
                        *conn = None;
                        false
                    }
                };
                if now_held != *held {
                    tracing::info!(held = now_held, "projector lease changed");
                }
                *held = now_held;
                *checked = Some(Instant::now());
                now_held
            }
        }
    }
}

/// FNV-1a: a stable 64-bit hash (the advisory lock key of a source).
fn fnv(s: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// What the projector last did, for GetProjectorStatus, health and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusView {
    /// Source name.
    pub source: String,
    /// Checkpoint.
    pub checkpoint: i64,
    /// Newest known source event id.
    pub head: i64,
    /// Last successful apply or caught-up answer.
    pub last_success: Option<DateTime<Utc>>,
    /// Whether this process holds the lease.
    pub leader: bool,
    /// Since when it holds the lease (staleness is measured from here or the last success).
    pub leader_since: Option<DateTime<Utc>>,
    /// When `head` was last learned from the source (never: `None`, head means nothing).
    pub head_seen: Option<DateTime<Utc>>,
    /// Since when steps fail, and the last failure, while they do.
    pub failing: Option<(DateTime<Utc>, String)>,
}

/// What a projector is doing, as [`StatusView::state`] tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectorState {
    /// Another process holds the lease.
    Standby,
    /// Leading, the source not read yet.
    NotPolled,
    /// Steps fail; head and lag are as last seen.
    Failing,
    /// Behind the source.
    CatchingUp,
    /// Applied all the source had when last asked.
    CaughtUp,
}

impl StatusView {
    /// Where the projector stands: a lag of 0 means caught up only in `CaughtUp`.
    pub fn state(&self) -> ProjectorState {
        if !self.leader {
            ProjectorState::Standby
        } else if self.failing.is_some() {
            ProjectorState::Failing
        } else if self.head_seen.is_none() {
            ProjectorState::NotPolled
        } else if self.head > self.checkpoint {
            ProjectorState::CatchingUp
        } else {
            ProjectorState::CaughtUp
        }
    }
}

/// Shared status handle.
#[derive(Debug, Clone, Default)]
pub struct Status(Arc<Mutex<StatusView>>);

impl Status {
    /// A snapshot.
    pub fn get(&self) -> StatusView {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut StatusView)) {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard);
        let s = &*guard;
        let labels = [("source", s.source.clone())];
        metrics::gauge!("scan_projector_checkpoint", &labels).set(s.checkpoint as f64);
        metrics::gauge!("scan_projector_lag_events", &labels)
            .set((s.head - s.checkpoint).max(0) as f64);
        metrics::gauge!("scan_projector_leader", &labels).set(if s.leader { 1.0 } else { 0.0 });
        metrics::gauge!("scan_projector_failing", &labels).set(if s.failing.is_some() {
            1.0
        } else {
            0.0
        });
        if let Some(t) = s.last_success {
            metrics::gauge!("scan_projector_last_success_timestamp_seconds", &labels)
                .set(t.timestamp() as f64);
        }
    }
}

/// Projector tuning.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Events asked for per page.
    pub page_size: u32,
    /// Wait after "caught up" before asking again.
    pub poll_interval: Duration,
    /// First retry delay after a failure.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// This process's name in the checkpoint's `owner` column.
    pub owner: String,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            page_size: 1000,
            poll_interval: Duration::from_millis(500),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(30),
            owner: default_owner(),
        }
    }
}

/// `<hostname>:<pid>`.
pub fn default_owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_string());
    format!("{host}:{}", std::process::id())
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A page was applied (or lost a race, and will be re-read).
    Applied {
        /// Events in the page.
        events: usize,
    },
    /// The source had nothing new.
    CaughtUp,
    /// Shutdown came during the fetch; nothing was applied.
    Stopped,
}

/// The projector of one source.
pub struct Projector {
    store: ScanStore,
    source: Source,
    source_name: String,
    lease: Lease,
    config: ProjectorConfig,
    status: Status,
    clock: SharedClock,
    /// The checkpoint as of this projector's last read or apply; `None` forces a re-read
    /// (at start, after a failure, after losing a race).
    checkpoint: Option<i64>,
    /// The page after the last applied one, read while that one was applied: (from, page).
    prefetched: Option<(i64, Result<Vec<Item>, String>)>,
}

impl Projector {
    /// A projector applying `source` to `store`.
    pub fn new(
        store: ScanStore,
        source: Source,
        lease: Lease,
        config: ProjectorConfig,
        status: Status,
        clock: SharedClock,
    ) -> Self {
        let source_name = source.name();
        status.update(|s| s.source.clone_from(&source_name));
        Self {
            store,
            source,
            source_name,
            lease,
            config,
            status,
            clock,
            checkpoint: None,
            prefetched: None,
        }
    }

    /// The source's checkpoint key.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Runs until `shutdown`: takes the lease, applies pages, waits when caught up, backs off
    /// after failures.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        tracing::info!(source = %self.source_name, owner = %self.config.owner, "projector started");
        while !shutdown.is_cancelled() {
            let leader = self.lease.hold().await;
            let now = self.clock.now();
            self.status.update(|s| {
                if leader && !s.leader {
                    s.leader_since = Some(now);
                }
                s.leader = leader;
            });
            if !leader {
                sleep_or_shutdown(Duration::from_secs(1), &shutdown).await;
                continue;
            }
            let step = self.step(&shutdown).await;
            if step.is_ok() && failures > 0 {
                self.status.update(|s| s.failing = None);
            }
            match step {
                Ok(Step::Applied { .. }) => failures = 0,
                Ok(Step::CaughtUp) => {
                    failures = 0;
                    sleep_or_shutdown(self.config.poll_interval, &shutdown).await;
                }
                Ok(Step::Stopped) => break,
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let now = self.clock.now();
                    let why = format!("{err:#}");
                    self.status.update(|s| {
                        let since = s.failing.as_ref().map_or(now, |(since, _)| *since);
                        s.failing = Some((since, why));
                    });
                    metrics::counter!("scan_projector_errors_total", "source" => self.source_name.clone()).increment(1);
                    let delay =
                        backoff(failures, self.config.backoff_base, self.config.backoff_cap);
                    tracing::warn!(source = %self.source_name, error = %format!("{err:#}"), retry_in_ms = delay.as_millis() as u64, "projector step failed");
                    sleep_or_shutdown(delay, &shutdown).await;
                }
            }
        }
        tracing::info!(source = %self.source_name, "projector stopped");
    }

    /// Reads and applies one page.
    pub async fn step(&mut self, shutdown: &CancellationToken) -> anyhow::Result<Step> {
        let now = self.clock.now();
        let checkpoint = match self.checkpoint {
            Some(c) => c,
            None => self.store.checkpoint(&self.source_name, now).await?,
        };
        // Until this page is applied, the next step re-reads the checkpoint.
        self.checkpoint = None;
        let fetched = match self.prefetched.take() {
            Some((from, page)) if from == checkpoint + 1 => page,
            _ => tokio::select! {
                r = self.source.fetch(checkpoint + 1, self.config.page_size) => r,
                () = shutdown.cancelled() => return Ok(Step::Stopped),
            },
        };
        let items = fetched.map_err(|e| anyhow::anyhow!("fetch from {}: {e}", self.source_name))?;
        // A feed may repeat what was applied already; it changes nothing.
        let items: Vec<Item> =
            items.into_iter().filter(|i| i.event_id().is_none_or(|id| id > checkpoint)).collect();
        if items.is_empty() {
            self.checkpoint = Some(checkpoint);
            // An empty page is the source's own word that nothing follows the checkpoint.
            let head = self.source.head().await.unwrap_or(checkpoint);
            self.status.update(|s| {
                s.checkpoint = checkpoint;
                s.head = head.max(checkpoint);
                s.last_success = Some(now);
                s.head_seen = Some(now);
            });
            return Ok(Step::CaughtUp);
        }
        let new_checkpoint = items
            .iter()
            .filter_map(Item::event_id)
            .max()
            .context("the page has events but none with an EventId; cannot advance")?;
        let mut events = Vec::with_capacity(items.len());
        let mut dead = Vec::new();
        for item in items {
            match item {
                Item::Event(e) => events.push(e),
                Item::Malformed { event_id, reason, payload } => {
                    tracing::warn!(source = %self.source_name, ?event_id, %reason, "malformed event dead-lettered");
                    dead.push(DeadLetter { event_id, reason, payload });
                }
            }
        }
        events.sort_by_key(|e| e.event_id);
        let started = Instant::now();
        let count = events.len();
        let page = PageApply {
            source: &self.source_name,
            owner: &self.config.owner,
            expected: checkpoint,
            new_checkpoint,
            events: &events,
            dead: &dead,
            now,
        };
        // Read the next page while this one is applied: the two overlap on the database.
        let (applied, next) = tokio::join!(
            self.store.apply_page(page),
            self.source.fetch(new_checkpoint + 1, self.config.page_size)
        );
        self.prefetched = Some((new_checkpoint + 1, next));
        match applied {
            Ok(_) => self.checkpoint = Some(new_checkpoint),
            Err(ApplyError::Fenced { .. }) => {
                tracing::info!(source = %self.source_name, "another projector applied this page; re-reading");
                return Ok(Step::Applied { events: 0 });
            }
            Err(ApplyError::Unexpected(err)) => return Err(err),
        }
        let labels = [("source", self.source_name.clone())];
        metrics::counter!("scan_projector_events_applied_total", &labels).increment(count as u64);
        metrics::counter!("scan_projector_dead_letters_total", &labels)
            .increment(dead.len() as u64);
        metrics::histogram!("scan_projector_page_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        let head = match &self.source {
            Source::Own(_) => self.status.get().head.max(new_checkpoint),
            Source::Http(_) => new_checkpoint,
        };
        self.status.update(|s| {
            s.checkpoint = new_checkpoint;
            s.head = head;
            s.last_success = Some(now);
            s.head_seen = Some(now);
        });
        Ok(Step::Applied { events: count + dead.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_that_never_read_its_source_is_not_polled_not_caught_up() {
        let now = Utc::now();
        let leading = StatusView { leader: true, ..StatusView::default() };
        assert_eq!(leading.state(), ProjectorState::NotPolled);
        let polled = StatusView { head_seen: Some(now), head: 7, checkpoint: 7, ..leading.clone() };
        assert_eq!(polled.state(), ProjectorState::CaughtUp);
        let behind = StatusView { head: 9, ..polled.clone() };
        assert_eq!(behind.state(), ProjectorState::CatchingUp);
        let failing = StatusView { failing: Some((now, "feed: 503".into())), ..polled };
        assert_eq!(failing.state(), ProjectorState::Failing);
    }

    #[tokio::test]
    async fn an_https_source_is_dialled_not_refused_for_its_scheme() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let feed =
            HttpFeed::new(&format!("https://127.0.0.1:{port}/v1/scans/scanevents"), None).unwrap();
        let err = feed.fetch(1, 10).await.unwrap_err();
        assert!(err.starts_with("request failed"), "{err}");
        assert!(!err.to_lowercase().contains("scheme"), "{err}");
    }

    #[test]
    fn lease_keys_are_stable_per_source() {
        assert_eq!(fnv("own"), fnv("own"));
        assert_ne!(fnv("own"), fnv("http://feed/v1/scans/scanevents"));
    }
}
