//! The embedded mode's counters: in process, lost with it (and rebuilt from SQL on demand).
//! At most [`MAX_MATCHES`] matches are held; past that, the least recently changed are
//! dropped (they rebuild when read again).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;

use super::{APPLIED_RETENTION, Applied, Counters};
use crate::domain::Counts;

/// Matches held at most.
pub const MAX_MATCHES: usize = 10_000;

#[derive(Default)]
struct Match {
    counts: Option<Counts>,
    applied: HashMap<String, i64>,
    lease: Option<(String, Instant)>,
    touched: Option<Instant>,
}

impl Match {
    fn leased(&self) -> Option<&str> {
        self.lease.as_ref().filter(|(_, until)| *until > Instant::now()).map(|(t, _)| t.as_str())
    }
}

/// In-process counters.
#[derive(Default)]
pub struct MemoryCounters {
    matches: Mutex<HashMap<String, Match>>,
    retention: Option<Duration>,
}

impl MemoryCounters {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps per-minute counts for `retention` of event time.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Match>) -> T) -> T {
        f(&mut self.matches.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn evict(matches: &mut HashMap<String, Match>) {
    if matches.len() <= MAX_MATCHES {
        return;
    }
    let mut by_age: Vec<(Option<Instant>, String)> = matches
        .iter()
        .filter(|(_, m)| m.leased().is_none())
        .map(|(k, m)| (m.touched, k.clone()))
        .collect();
    by_age.sort();
    for (_, k) in by_age.into_iter().take(matches.len() - MAX_MATCHES) {
        matches.remove(&k);
    }
}

#[async_trait]
impl Counters for MemoryCounters {
    async fn apply(
        &self,
        match_id: &str,
        ingest_id: &str,
        delta: &Counts,
        now_ms: i64,
    ) -> anyhow::Result<Applied> {
        Ok(self.with(|matches| {
            let Some(m) = matches.get_mut(match_id) else { return Applied::Missing };
            if m.leased().is_some() {
                return Applied::Busy;
            }
            let Some(counts) = m.counts.as_mut() else { return Applied::Missing };
            let cutoff = now_ms - APPLIED_RETENTION.as_millis() as i64;
            m.applied.retain(|_, at| *at >= cutoff);
            if m.applied.contains_key(ingest_id) {
                return Applied::Already;
            }
            m.applied.insert(ingest_id.to_string(), now_ms);
            counts.add(delta);
            if let Some(r) = self.retention {
                counts.prune(r);
            }
            m.touched = Some(Instant::now());
            Applied::Applied
        }))
    }

    async fn read(&self, match_id: &str) -> anyhow::Result<Option<Counts>> {
        Ok(self.with(|matches| matches.get(match_id).and_then(|m| m.counts.clone())))
    }

    async fn begin_rebuild(
        &self,
        match_id: &str,
        token: &str,
        lease: Duration,
    ) -> anyhow::Result<bool> {
        Ok(self.with(|matches| {
            let m = matches.entry(match_id.to_string()).or_default();
            if m.leased().is_some() {
                return false;
            }
            m.lease = Some((token.to_string(), Instant::now() + lease));
            true
        }))
    }

    async fn finish_rebuild(
        &self,
        match_id: &str,
        token: &str,
        counts: &Counts,
        ingest_ids: &[String],
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        Ok(self.with(|matches| {
            let Some(m) = matches.get_mut(match_id) else { return false };
            if m.leased() != Some(token) {
                return false;
            }
            let mut counts = counts.clone();
            if let Some(r) = self.retention {
                counts.prune(r);
            }
            m.counts = Some(counts);
            m.applied = ingest_ids.iter().map(|id| (id.clone(), now_ms)).collect();
            m.lease = None;
            m.touched = Some(Instant::now());
            evict(matches);
            true
        }))
    }

    async fn abort_rebuild(&self, match_id: &str, token: &str) -> anyhow::Result<()> {
        self.with(|matches| {
            if let Some(m) = matches.get_mut(match_id)
                && m.leased() == Some(token)
            {
                m.lease = None;
            }
        });
        Ok(())
    }

    async fn forget(&self, match_id: &str) -> anyhow::Result<()> {
        self.with(|matches| matches.remove(match_id));
        Ok(())
    }
}
