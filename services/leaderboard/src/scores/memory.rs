//! [`MemoryScores`]: the embedded mode's score store, boards in memory behind one lock (so
//! dedupe and increment are one step), in the same order and with the same dedupe window as
//! Redis.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;

use super::{Applied, Around, Cut, Dedupe, Delta, Entry, OwnedEntry, ScoreStore, fact_time_ms};

/// Board order key: score descending, then member descending.
type OrderKey = (Reverse<OrderedScore>, Reverse<String>);

/// A total order on finite scores.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrderedScore(f64);

impl Eq for OrderedScore {}

impl PartialOrd for OrderedScore {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedScore {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Remembered event ids with their fact times (`None`: no time, kept for good).
#[derive(Debug, Default)]
struct Seen {
    ids: HashMap<String, Option<i64>>,
    by_time: BTreeSet<(i64, String)>,
}

impl Seen {
    fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    /// Remembers `id`; `false` if it already was.
    fn insert(&mut self, id: &str, time: Option<i64>) -> bool {
        if self.ids.contains_key(id) {
            return false;
        }
        self.ids.insert(id.to_string(), time);
        if let Some(t) = time {
            self.by_time.insert((t, id.to_string()));
        }
        true
    }

    /// Drops ids whose time is before `before`.
    fn forget_before(&mut self, before: i64) {
        while let Some((t, _)) = self.by_time.first()
            && *t < before
        {
            if let Some((_, id)) = self.by_time.pop_first() {
                self.ids.remove(&id);
            }
        }
    }
}

#[derive(Debug, Default)]
struct MemoryBoard {
    scores: HashMap<String, f64>,
    order: BTreeSet<OrderKey>,
    seen: Seen,
}

impl MemoryBoard {
    /// A delta: counted unless stale or its id is remembered.
    fn apply(&mut self, member: &str, delta: f64, event_id: &str, cut: Cut) -> Applied {
        self.seen.forget_before(cut.forget_before);
        let time = fact_time_ms(event_id);
        if cut.is_stale(time) {
            return Applied::Stale;
        }
        if !self.seen.insert(event_id, time) {
            return Applied::Duplicate;
        }
        self.add(member, delta);
        Applied::Applied
    }

    /// An owner's entry: counted unless its id is remembered; remembered unless stale.
    fn load(&mut self, member: &str, value: f64, event_id: &str, cut: Cut) {
        if self.seen.contains(event_id) {
            return;
        }
        let time = fact_time_ms(event_id);
        if !cut.is_stale(time) {
            self.seen.insert(event_id, time);
        }
        self.add(member, value);
    }

    fn add(&mut self, member: &str, delta: f64) {
        let old = self.scores.get(member).copied();
        if let Some(old) = old {
            self.order.remove(&(Reverse(OrderedScore(old)), Reverse(member.to_string())));
        }
        let new = old.unwrap_or(0.0) + delta;
        self.scores.insert(member.to_string(), new);
        self.order.insert((Reverse(OrderedScore(new)), Reverse(member.to_string())));
    }

    /// One plus the members strictly above `score` (they come first in the order). Linear
    /// in the rank: fine for embedded boards.
    fn rank_of(&self, score: f64) -> u64 {
        self.order.iter().take_while(|(Reverse(s), _)| s.0 > score).count() as u64 + 1
    }

    fn entries_from(&self, offset: usize, limit: usize) -> Vec<Entry> {
        let mut out = Vec::with_capacity(limit.min(self.order.len()));
        let mut rank = 0;
        let mut previous: Option<f64> = None;
        for (i, (Reverse(score), Reverse(member))) in self.order.iter().enumerate() {
            if previous != Some(score.0) {
                rank = i as u64 + 1;
                previous = Some(score.0);
            }
            if i >= offset.saturating_add(limit) {
                break;
            }
            if i >= offset {
                out.push(Entry { rank, member: member.clone(), score: score.0 });
            }
        }
        out
    }
}

/// One board's state in memory: `live` is `Some` exactly when the board is ready.
#[derive(Debug, Default)]
struct MemoryState {
    live: Option<MemoryBoard>,
    /// The rebuild lease: token and expiry.
    building: Option<(String, Instant)>,
    next: MemoryBoard,
}

impl MemoryState {
    fn lease_held_by(&self, token: &str) -> bool {
        matches!(&self.building, Some((t, expires)) if t == token && *expires > Instant::now())
    }

    fn building(&self) -> bool {
        matches!(&self.building, Some((_, expires)) if *expires > Instant::now())
    }
}

/// The embedded score store: every board under one mutex, mirroring the Redis store.
#[derive(Default)]
pub struct MemoryScores {
    boards: Mutex<HashMap<String, MemoryState>>,
    dedupe: Dedupe,
}

impl MemoryScores {
    /// An empty store with the default dedupe window.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same store remembering applied ids for `dedupe`'s window.
    pub fn with_dedupe(self, dedupe: Dedupe) -> Self {
        Self { dedupe, ..self }
    }

    /// Boards with any state (ready, building, or once begun): what reads and rebuilds
    /// leave behind, for tests that check nothing was created.
    pub fn boards(&self) -> usize {
        self.with(|boards| boards.len())
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, MemoryState>) -> T) -> T {
        f(&mut self.boards.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn with_live<T>(&self, board: &str, f: impl FnOnce(&MemoryBoard) -> T) -> Option<T> {
        self.with(|boards| boards.get(board).and_then(|s| s.live.as_ref()).map(f))
    }
}

#[async_trait]
impl ScoreStore for MemoryScores {
    async fn apply_many(&self, deltas: &[Delta]) -> anyhow::Result<Vec<Applied>> {
        let cut = self.dedupe.cut();
        Ok(self.with(|boards| {
            deltas
                .iter()
                .map(|d| {
                    let Some(state) = boards.get_mut(&d.board) else { return Applied::Missing };
                    let building = state.building();
                    let target = match &mut state.live {
                        Some(live) => live,
                        None if building => &mut state.next,
                        None => return Applied::Missing,
                    };
                    target.apply(&d.member, d.delta, &d.event_id, cut)
                })
                .collect()
        }))
    }

    async fn begin_rebuild(
        &self,
        board: &str,
        token: &str,
        lease: Duration,
    ) -> anyhow::Result<bool> {
        Ok(self.with(|boards| {
            let state = boards.entry(board.to_string()).or_default();
            if state.live.is_some() || state.building() {
                return false;
            }
            state.building = Some((token.to_string(), Instant::now() + lease));
            state.next = MemoryBoard::default();
            true
        }))
    }

    async fn load(
        &self,
        board: &str,
        token: &str,
        entries: &[OwnedEntry],
        lease: Duration,
    ) -> anyhow::Result<bool> {
        let cut = self.dedupe.cut();
        Ok(self.with(|boards| {
            let Some(state) = boards.get_mut(board).filter(|s| s.lease_held_by(token)) else {
                return false;
            };
            state.building = Some((token.to_string(), Instant::now() + lease));
            for e in entries {
                state.next.load(&e.member, e.value, &e.event_id, cut);
            }
            true
        }))
    }

    async fn finish_rebuild(&self, board: &str, token: &str) -> anyhow::Result<bool> {
        Ok(self.with(|boards| {
            let Some(state) = boards.get_mut(board).filter(|s| s.lease_held_by(token)) else {
                return false;
            };
            state.live = Some(std::mem::take(&mut state.next));
            state.building = None;
            true
        }))
    }

    async fn abort_rebuild(&self, board: &str, token: &str) -> anyhow::Result<()> {
        self.with(|boards| {
            if let Some(state) = boards.get_mut(board).filter(|s| s.lease_held_by(token)) {
                state.building = None;
                state.next = MemoryBoard::default();
            }
        });
        Ok(())
    }

    async fn top(&self, board: &str, offset: u64, limit: u64) -> anyhow::Result<Vec<Entry>> {
        let (offset, limit) = (to_usize(offset), to_usize(limit));
        Ok(self.with_live(board, |b| b.entries_from(offset, limit)).unwrap_or_default())
    }

    async fn around(&self, board: &str, member: &str, n: u64) -> anyhow::Result<Option<Around>> {
        let n = to_usize(n);
        Ok(self
            .with_live(board, |b| {
                let score = b.scores.get(member).copied()?;
                let key = (Reverse(OrderedScore(score)), Reverse(member.to_string()));
                let position = b.order.range(..&key).count();
                let start = position.saturating_sub(n);
                let window = b.entries_from(start, (position - start + 1).saturating_add(n));
                let me = Entry { rank: b.rank_of(score), member: member.to_string(), score };
                Some(Around { me, window })
            })
            .flatten())
    }

    async fn len(&self, board: &str) -> anyhow::Result<u64> {
        Ok(self.with_live(board, |b| b.scores.len() as u64).unwrap_or(0))
    }

    async fn exists(&self, board: &str) -> anyhow::Result<bool> {
        Ok(self.with_live(board, |_| ()).is_some())
    }

    async fn forget(&self, board: &str) -> anyhow::Result<()> {
        self.with(|boards| {
            if let Some(state) = boards.get_mut(board) {
                state.live = None;
            }
        });
        Ok(())
    }

    async fn remembered(&self, board: &str) -> anyhow::Result<u64> {
        Ok(self.with_live(board, |b| b.seen.ids.len() as u64).unwrap_or(0))
    }

    async fn page(
        &self,
        board: &str,
        offset: u64,
        limit: u64,
    ) -> anyhow::Result<Option<(Vec<Entry>, u64)>> {
        let (offset, limit) = (to_usize(offset), to_usize(limit));
        Ok(self.with_live(board, |b| (b.entries_from(offset, limit), b.scores.len() as u64)))
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
