//! Who shows on boards as whom, and when a board is shown at all.
//!
//! - A member may hide their name: to every other caller (admins excepted) their entries show
//!   a pseudonym, `anon-` and 10 characters of a keyed digest of their id under the token
//!   secret ([`TokenKeys::digest`]): stable (the same on every board, so a board still reads
//!   as a race between people), and not computable from a known id. The member sees their own
//!   id. Asked about by id (GetRank, GetRanks), a hidden member is not on the board for others.
//! - An employer may set a minimum number of members: its boards with fewer are shown to no
//!   one but admins (`withheld`).
//! - Both are read on every board read, so they are cached for [`CACHE_TTL`] (a change here is
//!   seen by this process at once, by others within the TTL), bounded in size.
//! - When the database is out, reads go on with the last known answers; a member never seen
//!   before shows as a pseudonym and an employer never seen before withholds its boards
//!   (privacy fails closed; the outage is logged).

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use ewpm_kit::{
    auth::{Caller, TokenKeys},
    cache::TtlCache,
};

use crate::{scores::Entry, store::LeaderboardStore};

/// How long a member's choice and an employer's minimum are cached.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Cached members (and employers) at most.
const CAPACITY: usize = 100_000;

/// An entry as one caller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    /// The entry, its member replaced by a pseudonym when hidden from this caller.
    pub entry: Entry,
    /// Whether `entry.member` is a pseudonym.
    pub pseudonymous: bool,
}

/// Privacy choices and the employer minimum, cached.
#[derive(Clone)]
pub struct Privacy {
    store: LeaderboardStore,
    keys: TokenKeys,
    hidden: Arc<TtlCache<String, bool>>,
    minimums: Arc<TtlCache<String, u32>>,
    /// Cache misses are looked up one batch at a time (see `hidden_among`).
    lookup: Arc<tokio::sync::Mutex<()>>,
}

impl Privacy {
    /// Choices kept in `store`; pseudonyms keyed by `keys`.
    pub fn new(store: LeaderboardStore, keys: TokenKeys) -> Self {
        Self {
            store,
            keys,
            hidden: Arc::new(TtlCache::with_capacity(CACHE_TTL, CAPACITY)),
            minimums: Arc::new(TtlCache::with_capacity(CACHE_TTL, CAPACITY)),
            lookup: Arc::default(),
        }
    }

    /// `member`'s pseudonym.
    pub fn pseudonym(&self, member: &str) -> String {
        let digest = self.keys.digest(&format!("ewpm-pseudonym:{member}"));
        format!("anon-{}", &digest[..digest.len().min(10)])
    }

    /// Whether `member` hides their name.
    pub async fn is_hidden(&self, member: &str) -> anyhow::Result<bool> {
        Ok(self.hidden_among(&[member.to_string()]).await?.contains(member))
    }

    /// Which of `members` hide their name (one query for those not cached).
    pub async fn hidden_among(&self, members: &[String]) -> anyhow::Result<HashSet<String>> {
        let mut out = HashSet::new();
        let mut ask = Vec::new();
        for m in members {
            match self.hidden.get(m) {
                Some(true) => {
                    out.insert(m.clone());
                }
                Some(false) => {}
                None => ask.push(m.clone()),
            }
        }
        if !ask.is_empty() {
            // One look-up at a time: when many reads miss at once (a thousand watchers
            // opening, a cold cache), the first asks and the rest find its answers cached.
            let _turn = self.lookup.lock().await;
            ask.retain(|m| match self.hidden.get(m) {
                Some(h) => {
                    if h {
                        out.insert(m.clone());
                    }
                    false
                }
                None => true,
            });
            ask.sort();
            ask.dedup();
            if ask.is_empty() {
                return Ok(out);
            }
            match self.store.hidden_among(&ask).await {
                Ok(hidden) => {
                    for m in ask {
                        let h = hidden.contains(&m);
                        self.hidden.put(m.clone(), h);
                        if h {
                            out.insert(m);
                        }
                    }
                }
                Err(err) if ewpm_kit::error::is_outage(&err) => {
                    tracing::warn!(
                        error = format!("{err:#}"),
                        "privacy choices unavailable; last known answers, unknown members hidden"
                    );
                    out.extend(ask.into_iter().filter(|m| self.hidden.get_stale(m) != Some(false)));
                }
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }

    /// Records `member`'s choice.
    pub async fn set_hidden(
        &self,
        member: &str,
        hide: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.store.set_hidden(member, hide, now).await?;
        self.hidden.put(member.to_string(), hide);
        Ok(())
    }

    /// The fewest members `employer`'s boards need to be shown (0: always shown).
    pub async fn min_members(&self, employer: &str) -> anyhow::Result<u32> {
        let key = employer.to_string();
        if let Some(n) = self.minimums.get(&key) {
            return Ok(n);
        }
        let _turn = self.lookup.lock().await;
        if let Some(n) = self.minimums.get(&key) {
            return Ok(n);
        }
        match self.store.min_members(employer).await {
            Ok(n) => {
                self.minimums.put(key, n);
                Ok(n)
            }
            Err(err) if ewpm_kit::error::is_outage(&err) => {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "employer minimum unavailable; last known, else withheld"
                );
                Ok(self.minimums.get_stale(&key).unwrap_or(u32::MAX))
            }
            Err(err) => Err(err),
        }
    }

    /// Records `employer`'s minimum.
    pub async fn set_min_members(
        &self,
        employer: &str,
        n: u32,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.store.set_min_members(employer, n, now).await?;
        self.minimums.put(employer.to_string(), n);
        Ok(())
    }

    /// `entries` as `caller` may see them: hidden members other than the caller become
    /// pseudonyms (admins see ids).
    pub async fn show(&self, caller: &Caller, entries: Vec<Entry>) -> anyhow::Result<Vec<Shown>> {
        if caller.is_admin() || entries.is_empty() {
            return Ok(entries
                .into_iter()
                .map(|entry| Shown { entry, pseudonymous: false })
                .collect());
        }
        let members: Vec<String> = entries
            .iter()
            .filter(|e| e.member != caller.user_id)
            .map(|e| e.member.clone())
            .collect();
        let hidden = self.hidden_among(&members).await?;
        Ok(self.show_known(caller, entries, &hidden))
    }

    /// [`Privacy::show`] with the hidden members already known (a watch snapshot's, looked
    /// up once for every watcher).
    pub fn show_known(
        &self,
        caller: &Caller,
        entries: Vec<Entry>,
        hidden: &HashSet<String>,
    ) -> Vec<Shown> {
        let admin = caller.is_admin();
        entries
            .into_iter()
            .map(|mut entry| {
                let pseudonymous =
                    !admin && entry.member != caller.user_id && hidden.contains(&entry.member);
                if pseudonymous {
                    entry.member = self.pseudonym(&entry.member);
                }
                Shown { entry, pseudonymous }
            })
            .collect()
    }
}
