//! The reads behind the RPCs: every read first checks that the board exists and the caller
//! may see it ([`Access`]), then makes the board ready (rebuilding a missing board from its
//! owner), then reads the score store. Watches also take a [`StreamSlot`] for their lifetime.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use ewpm_kit::{
    auth::Caller,
    streams::{StreamSlot, StreamSlots},
};
use futures::StreamExt;

use crate::{
    access::Access,
    domain::Board,
    error::LeaderboardError,
    rebuild::Rebuilder,
    scores::{Around, Entry, ScoreStore},
    watch::{WatchHub, WatchStream},
};

/// One page of a board.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The entries, best first.
    pub entries: Vec<Entry>,
    /// Position of the next page, if there is one.
    pub next_offset: Option<u64>,
    /// Members on the board.
    pub total_members: u64,
}

/// A member's place and neighbourhood.
#[derive(Debug, Clone, PartialEq)]
pub struct Rank {
    /// The member and its window.
    pub around: Around,
    /// Members on the board.
    pub total_members: u64,
}

/// Pages read recently, served again while younger than `max_age`.
#[derive(Debug)]
pub struct PageCache {
    max_age: Duration,
    pages: Mutex<HashMap<PageKey, (Instant, Page)>>,
}

/// (board, offset, size).
type PageKey = (String, u64, u32);

/// Cached pages beyond which expired ones are swept.
const CACHE_SWEEP_ABOVE: usize = 10_000;

impl PageCache {
    /// A cache of pages younger than `max_age` (zero: nothing is cached).
    pub fn new(max_age: Duration) -> Self {
        Self { max_age, pages: Mutex::default() }
    }

    /// The page at (`board`, `offset`, `size`) if one read at most `max_age` before `now`.
    pub fn get(&self, board: &str, offset: u64, size: u32, now: Instant) -> Option<Page> {
        let pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        let (at, page) = pages.get(&(board.to_string(), offset, size))?;
        (now.saturating_duration_since(*at) <= self.max_age).then(|| page.clone())
    }

    /// Remembers `page` as read at `now`.
    pub fn put(&self, board: &str, offset: u64, size: u32, page: &Page, now: Instant) {
        if self.max_age.is_zero() {
            return;
        }
        let mut pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        if pages.len() > CACHE_SWEEP_ABOVE {
            let max_age = self.max_age;
            pages.retain(|_, (at, _)| now.saturating_duration_since(*at) <= max_age);
        }
        pages.insert((board.to_string(), offset, size), (now, page.clone()));
    }
}

/// Leaderboard reads.
#[derive(Clone)]
pub struct Leaderboards {
    scores: Arc<dyn ScoreStore>,
    rebuilder: Rebuilder,
    hub: WatchHub,
    cache: Arc<PageCache>,
    access: Access,
    streams: Arc<StreamSlots>,
}

impl Leaderboards {
    /// Reads of `scores` allowed by `access`, made ready by `rebuilder`, watched through
    /// `hub` within `streams`; pages are served from memory for up to `read_cache` after
    /// they were read.
    pub fn new(
        scores: Arc<dyn ScoreStore>,
        rebuilder: Rebuilder,
        hub: WatchHub,
        read_cache: Duration,
        access: Access,
        streams: Arc<StreamSlots>,
    ) -> Self {
        Self {
            scores,
            rebuilder,
            hub,
            cache: Arc::new(PageCache::new(read_cache)),
            access,
            streams,
        }
    }

    /// `size` entries from position `offset`.
    pub async fn page(
        &self,
        caller: &Caller,
        board: &Board,
        offset: u64,
        size: u32,
    ) -> Result<Page, LeaderboardError> {
        self.access.check(caller, board).await?;
        if let Some(page) = self.cache.get(board.as_str(), offset, size, Instant::now()) {
            return Ok(page);
        }
        let read = || self.scores.page(board.as_str(), offset, u64::from(size));
        let (entries, total_members) = match read().await.context("read page")? {
            Some(page) => page,
            None => {
                self.rebuilder.ensure_ready(board).await?;
                // Ready now; a board lost again at once reads as empty until the next read.
                read().await.context("read page")?.unwrap_or_default()
            }
        };
        let end = offset.saturating_add(entries.len() as u64);
        let next_offset = (!entries.is_empty() && end < total_members).then_some(end);
        let page = Page { entries, next_offset, total_members };
        self.cache.put(board.as_str(), offset, size, &page, Instant::now());
        Ok(page)
    }

    /// `member`'s rank and up to `neighbours` entries on each side.
    pub async fn rank(
        &self,
        caller: &Caller,
        board: &Board,
        member: &str,
        neighbours: u32,
    ) -> Result<Rank, LeaderboardError> {
        self.access.check(caller, board).await?;
        self.rebuilder.ensure_ready(board).await?;
        let around = self
            .scores
            .around(board.as_str(), member, u64::from(neighbours))
            .await
            .context("read rank")?
            .ok_or_else(|| LeaderboardError::MemberNotOnBoard {
                board: board.to_string(),
                member: member.to_string(),
            })?;
        let total_members = self.scores.len(board.as_str()).await.context("count members")?;
        Ok(Rank { around, total_members })
    }

    /// Live snapshots of the top `top_n`, holding one of the caller's stream slots until the
    /// stream is dropped.
    pub async fn watch(
        &self,
        caller: &Caller,
        board: Board,
        top_n: u32,
    ) -> Result<WatchStream, LeaderboardError> {
        self.access.check(caller, &board).await?;
        let slot: StreamSlot = self
            .streams
            .acquire(&caller.user_id)
            .map_err(|full| LeaderboardError::TooManyStreams { scope: full.scope })?;
        let snapshots = self.hub.watch(board, top_n).await?;
        Ok(snapshots
            .map(move |s| {
                let _held = &slot;
                s
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(total_members: u64) -> Page {
        Page { entries: Vec::new(), next_offset: None, total_members }
    }

    #[test]
    fn a_cached_page_is_served_until_it_is_older_than_the_max_age() {
        let cache = PageCache::new(Duration::from_millis(100));
        let t0 = Instant::now();
        assert_eq!(cache.get("b", 0, 10, t0), None);
        cache.put("b", 0, 10, &page(3), t0);
        assert_eq!(cache.get("b", 0, 10, t0 + Duration::from_millis(100)), Some(page(3)));
        assert_eq!(cache.get("b", 0, 10, t0 + Duration::from_millis(101)), None);
        // Another page of the same board is another entry.
        assert_eq!(cache.get("b", 10, 10, t0), None);
        assert_eq!(cache.get("b", 0, 5, t0), None);
    }

    #[test]
    fn a_zero_max_age_caches_nothing() {
        let cache = PageCache::new(Duration::ZERO);
        let t0 = Instant::now();
        cache.put("b", 0, 10, &page(3), t0);
        assert_eq!(cache.get("b", 0, 10, t0), None);
    }
}
