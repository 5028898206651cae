//! [`MemoryScores`]: the embedded mode's score store, boards in memory behind one lock (so
//! dedupe and increment are one step), in the same order and with the same dedupe window as
//! Redis.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;

use super::{
    Applied, Around, Cut, Dedupe, Delta, Entry, OwnedEntry, ScoreStore, Shape, fact_time_ms,
    void_event, void_member,
};
use crate::ranking::{RankStyle, Record};

/// Board order key: score then subscore as they sort (bigger first), then member
/// descending.
type OrderKey = (Reverse<OrderedScore>, Reverse<OrderedScore>, Reverse<String>);

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
    records: HashMap<String, Record>,
    order: BTreeSet<OrderKey>,
    seen: Seen,
    voids: HashSet<String>,
    /// The board ranked, kept until the next change: reads between two changes (every
    /// watcher placing itself after one) share one pass over the board.
    view: Option<(Shape, Arc<View>)>,
}

/// A board ranked once: its entries in order, and each member's position.
#[derive(Debug)]
struct View {
    entries: Vec<Entry>,
    positions: HashMap<String, usize>,
}

impl MemoryBoard {
    /// A delta: counted unless stale, its id is remembered, or it is void.
    fn apply(&mut self, d: &Delta, cut: Cut) -> Applied {
        self.seen.forget_before(cut.forget_before);
        let time = fact_time_ms(&d.event_id);
        if cut.is_stale(time) {
            return Applied::Stale;
        }
        if !self.seen.insert(&d.event_id, time) {
            return Applied::Duplicate;
        }
        if self.is_void(&d.member, &d.event_id) {
            return Applied::Voided;
        }
        let fact = Record { score: d.delta, sub: d.subscore, version: d.version.clone() };
        self.update(d.shape, &d.member, &fact);
        Applied::Applied
    }

    /// An owner's entry: counted unless its id is remembered or it is void; remembered
    /// unless stale.
    fn load(&mut self, shape: Shape, e: &OwnedEntry, cut: Cut) {
        if self.seen.contains(&e.event_id) {
            return;
        }
        let time = fact_time_ms(&e.event_id);
        if !cut.is_stale(time) {
            self.seen.insert(&e.event_id, time);
        }
        if !self.is_void(&e.member, &e.event_id) {
            let fact = Record { score: e.value, sub: e.subscore, version: e.version.clone() };
            self.update(shape, &e.member, &fact);
        }
    }

    fn is_void(&self, member: &str, event_id: &str) -> bool {
        !self.voids.is_empty()
            && (self.voids.contains(&void_member(member))
                || self.voids.contains(&void_event(event_id)))
    }

    fn key(shape: Shape, member: &str, r: &Record) -> OrderKey {
        (
            Reverse(OrderedScore(shape.key_score(r.score))),
            Reverse(OrderedScore(shape.key_sub(r.sub))),
            Reverse(member.to_string()),
        )
    }

    fn update(&mut self, shape: Shape, member: &str, fact: &Record) {
        let old = self.records.get(member);
        let Some(new) = shape.combine(old, fact) else { return };
        self.view = None;
        if let Some(old) = old {
            self.order.remove(&Self::key(shape, member, old));
        }
        self.order.insert(Self::key(shape, member, &new));
        self.records.insert(member.to_string(), new);
    }

    /// Every entry in board order with its rank; linear in the board (fine for embedded
    /// boards).
    fn ranked(&self, shape: Shape) -> impl Iterator<Item = Entry> + '_ {
        let mut previous: Option<(f64, f64, u64)> = None;
        self.order.iter().enumerate().map(move |(i, (Reverse(z), Reverse(b), Reverse(member)))| {
            let position = i as u64;
            let rank = match previous {
                Some((pz, pb, rank)) if pz == z.0 && pb == b.0 => rank,
                Some((_, _, rank)) if shape.style == RankStyle::Dense => rank + 1,
                _ => position + 1,
            };
            previous = Some((z.0, b.0, rank));
            let r = &self.records[member];
            Entry {
                rank,
                member: member.clone(),
                score: r.score,
                subscore: if shape.sub.is_some() { r.sub } else { 0.0 },
                position,
            }
        })
    }

    /// The board ranked in `shape`, from the last read if nothing changed since.
    fn view(&mut self, shape: Shape) -> Arc<View> {
        if let Some((s, view)) = &self.view
            && *s == shape
        {
            return view.clone();
        }
        let entries: Vec<Entry> = self.ranked(shape).collect();
        let positions = entries.iter().enumerate().map(|(i, e)| (e.member.clone(), i)).collect();
        let view = Arc::new(View { entries, positions });
        self.view = Some((shape, view.clone()));
        view
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

    /// `board`'s ranked view in `shape` and its members, when the board is ready.
    fn view(&self, board: &str, shape: Shape) -> Option<(Arc<View>, u64)> {
        self.with(|boards| {
            let live = boards.get_mut(board)?.live.as_mut()?;
            Some((live.view(shape), live.records.len() as u64))
        })
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
                    target.apply(d, cut)
                })
                .collect()
        }))
    }

    async fn begin_rebuild(
        &self,
        board: &str,
        token: &str,
        lease: Duration,
        voids: &[String],
    ) -> anyhow::Result<bool> {
        Ok(self.with(|boards| {
            let state = boards.entry(board.to_string()).or_default();
            if state.live.is_some() || state.building() {
                return false;
            }
            state.building = Some((token.to_string(), Instant::now() + lease));
            state.next =
                MemoryBoard { voids: voids.iter().cloned().collect(), ..MemoryBoard::default() };
            true
        }))
    }

    async fn load(
        &self,
        board: &str,
        shape: Shape,
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
                state.next.load(shape, e, cut);
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

    async fn page(
        &self,
        board: &str,
        shape: Shape,
        offset: u64,
        limit: u64,
    ) -> anyhow::Result<Option<(Vec<Entry>, u64)>> {
        let (offset, limit) = (to_usize(offset), to_usize(limit));
        Ok(self
            .view(board, shape)
            .map(|(view, n)| (view.entries.iter().skip(offset).take(limit).cloned().collect(), n)))
    }

    async fn around(
        &self,
        board: &str,
        shape: Shape,
        member: &str,
        n: u64,
    ) -> anyhow::Result<Option<Around>> {
        let n = to_usize(n);
        Ok(self.view(board, shape).and_then(|(view, _)| {
            let position = *view.positions.get(member)?;
            let start = position.saturating_sub(n);
            let end = position.saturating_add(n).saturating_add(1).min(view.entries.len());
            let window = view.entries[start..end].to_vec();
            Some(Around { me: view.entries[position].clone(), window })
        }))
    }

    async fn ranks(
        &self,
        board: &str,
        shape: Shape,
        members: &[String],
    ) -> anyhow::Result<Option<(Vec<Entry>, u64)>> {
        Ok(self.view(board, shape).map(|(view, n)| {
            let mut at: Vec<usize> =
                members.iter().filter_map(|m| view.positions.get(m).copied()).collect();
            at.sort_unstable();
            at.dedup();
            (at.into_iter().map(|i| view.entries[i].clone()).collect(), n)
        }))
    }

    async fn len(&self, board: &str) -> anyhow::Result<u64> {
        Ok(self.with_live(board, |b| b.records.len() as u64).unwrap_or(0))
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

    async fn delete(&self, board: &str) -> anyhow::Result<()> {
        self.with(|boards| boards.remove(board));
        Ok(())
    }

    async fn remembered(&self, board: &str) -> anyhow::Result<u64> {
        Ok(self.with_live(board, |b| b.seen.ids.len() as u64).unwrap_or(0))
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
