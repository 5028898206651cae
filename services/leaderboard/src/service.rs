//! The reads behind the RPCs. Every read first finds the board's definition and checks the
//! caller may see it ([`Access`]), then picks the period (the current one by default), then
//! reads it: an open period from the score store ([`Reader`], rebuilding a missing board
//! from its owner), a closed one from its archive in SQL. What the caller sees passes
//! through [`Privacy`] (pseudonyms, the employer's minimum). Watches also take a
//! [`StreamSlot`] for their lifetime.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use ewpm_kit::{
    auth::Caller,
    error::FieldViolation,
    streams::{StreamSlot, StreamSlots},
};
use futures::{StreamExt, stream::BoxStream};

use crate::{
    access::{Access, Audience},
    definition::{Definition, Target},
    domain::Board,
    error::LeaderboardError,
    period::{ALL, Period},
    privacy::{Privacy, Shown},
    ranking::top_percent,
    reader::Reader,
    scores::{Around, Entry},
    store::{PeriodRow, StandingRow},
    watch::{Snapshot, WatchHub},
};

/// One page of a board, as the caller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The entries, best first.
    pub entries: Vec<Shown>,
    /// Position of the next page, if there is one.
    pub next_offset: Option<u64>,
    /// Position of the page before, if there is one.
    pub prev_offset: Option<u64>,
    /// Members on the board.
    pub total_members: u64,
    /// The caller's own place, when on the board.
    pub me: Option<MyPlace>,
    /// The period read.
    pub period: String,
    /// Whether the board is below its employer's minimum (nothing shown).
    pub withheld: bool,
}

/// The caller's own place beside a page.
#[derive(Debug, Clone, PartialEq)]
pub struct MyPlace {
    /// The entry.
    pub entry: Entry,
    /// `ceil(100 * rank / members)`.
    pub top_percent: u32,
    /// The 1-based page of the request's size the entry is on.
    pub page: u64,
    /// The position that page starts at.
    pub page_offset: u64,
}

/// A member's place and neighbourhood.
#[derive(Debug, Clone, PartialEq)]
pub struct Rank {
    /// The member.
    pub me: Shown,
    /// The window around it.
    pub window: Vec<Shown>,
    /// Members on the board.
    pub total_members: u64,
    /// `ceil(100 * rank / members)`.
    pub top_percent: u32,
    /// The 1-based page the member is on.
    pub page: u64,
    /// The period read.
    pub period: String,
}

/// The places of several members.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranks {
    /// Those on the board, best first.
    pub entries: Vec<Shown>,
    /// Members on the board.
    pub total_members: u64,
    /// The period read.
    pub period: String,
}

/// What a watcher asked for beyond the top N.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Personal {
    /// Send the caller's own place.
    pub with_me: bool,
    /// Entries above and below the caller.
    pub neighbours: u32,
    /// Tell the caller when passed.
    pub notify_passed: bool,
    /// Tell the caller when within this many points of the entry above (0: off).
    pub notify_within: f64,
}

impl Personal {
    fn wanted(&self) -> bool {
        self.with_me || self.notify_passed || self.notify_within > 0.0
    }
}

/// A change of the watcher's place worth telling.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// Someone passed the watcher.
    Passed {
        /// Rank before.
        old_rank: u64,
        /// Rank now.
        new_rank: u64,
        /// Who is directly above now (as shown to the watcher).
        other: String,
    },
    /// The watcher came within reach of the entry above.
    WithinReach {
        /// Rank before.
        old_rank: u64,
        /// Rank now.
        new_rank: u64,
        /// The entry above (as shown).
        other: String,
        /// Points between them.
        gap: f64,
    },
}

/// One snapshot as one watcher sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The shared snapshot's board, time and period.
    pub board: String,
    /// The top N.
    pub entries: Vec<Shown>,
    /// Members on the board.
    pub total_members: u64,
    /// When it was read.
    pub taken_at: chrono::DateTime<chrono::Utc>,
    /// The period shown.
    pub period: String,
    /// The watcher's entry.
    pub me: Option<Shown>,
    /// The watcher's window.
    pub window: Vec<Shown>,
    /// Changes since the last view.
    pub notices: Vec<Notice>,
    /// Below the employer's minimum.
    pub withheld: bool,
}

/// A watcher's views.
pub type ViewStream = BoxStream<'static, View>;

/// Pages read recently, served again while younger than `max_age`.
#[derive(Debug)]
pub struct PageCache {
    max_age: Duration,
    pages: Mutex<HashMap<PageKey, (Instant, LivePage)>>,
}

/// (store key, offset, size).
type PageKey = (String, u64, u32);

/// A live page as the score store read it: entries and members.
type LivePage = (Vec<Entry>, u64);

/// Cached pages beyond which expired ones are swept.
const CACHE_SWEEP_ABOVE: usize = 10_000;

impl PageCache {
    /// A cache of pages younger than `max_age` (zero: nothing is cached).
    pub fn new(max_age: Duration) -> Self {
        Self { max_age, pages: Mutex::default() }
    }

    /// The page at (`key`, `offset`, `size`) if one read at most `max_age` before `now`.
    pub fn get(
        &self,
        key: &str,
        offset: u64,
        size: u32,
        now: Instant,
    ) -> Option<(Vec<Entry>, u64)> {
        let pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        let (at, page) = pages.get(&(key.to_string(), offset, size))?;
        (now.saturating_duration_since(*at) <= self.max_age).then(|| page.clone())
    }

    /// Remembers `page` as read at `now`.
    pub fn put(&self, key: &str, offset: u64, size: u32, page: &LivePage, now: Instant) {
        if self.max_age.is_zero() {
            return;
        }
        let mut pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        if pages.len() > CACHE_SWEEP_ABOVE {
            let max_age = self.max_age;
            pages.retain(|_, (at, _)| now.saturating_duration_since(*at) <= max_age);
        }
        pages.insert((key.to_string(), offset, size), (now, page.clone()));
    }
}

/// Where a period is read from.
#[derive(Debug, Clone)]
enum Source {
    /// The score store.
    Live,
    /// The archive of a closed period.
    Archive(PeriodRow),
}

/// A board opened for one read: its definition, who may read it, the period and where it is.
struct Opened {
    def: Arc<Definition>,
    audience: Audience,
    target: Target,
    source: Source,
}

/// Leaderboard reads.
#[derive(Clone)]
pub struct Leaderboards {
    reader: Reader,
    hub: WatchHub,
    cache: Arc<PageCache>,
    access: Access,
    streams: Arc<StreamSlots>,
    privacy: Privacy,
    /// How long after its end a period still takes facts (then it is closed).
    grace: chrono::Duration,
}

impl Leaderboards {
    /// Reads through `reader` allowed by `access`, watched through `hub` within `streams`;
    /// live pages are served from memory for up to `read_cache` after they were read.
    pub fn new(
        reader: Reader,
        hub: WatchHub,
        read_cache: Duration,
        access: Access,
        streams: Arc<StreamSlots>,
        privacy: Privacy,
        grace: Duration,
    ) -> Self {
        Self {
            reader,
            hub,
            cache: Arc::new(PageCache::new(read_cache)),
            access,
            streams,
            privacy,
            grace: chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::days(36_500)),
        }
    }

    /// The reader.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// The access check.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Privacy choices.
    pub fn privacy(&self) -> &Privacy {
        &self.privacy
    }

    /// Whether `period` takes no more facts at `now` (its end plus the grace time has
    /// passed): it is closed, or about to be. A period that never ends never settles.
    pub fn settled(&self, period: &Period, now: chrono::DateTime<chrono::Utc>) -> bool {
        period.end.and_then(|end| end.checked_add_signed(self.grace)).is_some_and(|t| t <= now)
    }

    /// Periods that ended before this, at `now`, are due to be closed.
    pub fn close_cutoff(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> chrono::DateTime<chrono::Utc> {
        now.checked_sub_signed(self.grace).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
    }

    /// `board`'s definition, if the caller may see the board.
    pub async fn definition(
        &self,
        caller: &Caller,
        board: &Board,
    ) -> Result<Arc<Definition>, LeaderboardError> {
        let def = self.reader.definition(board).await?;
        self.access.check(caller, board).await?;
        Ok(def)
    }

    /// Opens `board`'s `period` ("" for the current one) for `caller`.
    async fn open(
        &self,
        caller: &Caller,
        board: &Board,
        period: &str,
    ) -> Result<Opened, LeaderboardError> {
        let def = self.reader.definition(board).await?;
        let audience = self.access.check(caller, board).await?;
        let now = self.reader.now();
        let period = match period {
            "" => def.current(now),
            id => def.schedule.period(id).ok_or_else(|| {
                LeaderboardError::from(FieldViolation::new(
                    "period",
                    format!(
                        "is not a period of this board (the current one is {})",
                        def.current(now).id
                    ),
                ))
            })?,
        };
        let target = Target::new(&def, period);
        // A period can only be closed once its grace time has passed.
        let source = if def.is_own() && self.settled(&target.period, now) {
            let row = self
                .reader
                .definitions()
                .store()
                .period_row(board.as_str(), &target.period.id)
                .await
                .context("read the period")?;
            row.map_or(Source::Live, Source::Archive)
        } else {
            Source::Live
        };
        Ok(Opened { def, audience, target, source })
    }

    /// Whether `caller` may not see a board of `audience` with `total` members.
    async fn withheld(
        &self,
        caller: &Caller,
        audience: &Audience,
        total: u64,
    ) -> Result<bool, LeaderboardError> {
        let Audience::Employer(employer) = audience else { return Ok(false) };
        if caller.is_admin() {
            return Ok(false);
        }
        let min =
            self.privacy.min_members(employer).await.context("read the employer's minimum")?;
        Ok(total < u64::from(min))
    }

    async fn page_of(
        &self,
        o: &Opened,
        offset: u64,
        size: u32,
    ) -> Result<(Vec<Entry>, u64), LeaderboardError> {
        match &o.source {
            Source::Archive(row) => {
                let rows = self
                    .reader
                    .definitions()
                    .store()
                    .standings(o.def.board.as_str(), &row.period, offset, size)
                    .await
                    .context("read archived standings")?;
                Ok((rows.into_iter().map(archived).collect(), row.members))
            }
            Source::Live => {
                let key = o.target.key();
                if let Some(page) = self.cache.get(&key, offset, size, Instant::now()) {
                    return Ok(page);
                }
                let page = self.reader.page(&o.target, offset, u64::from(size)).await?;
                self.cache.put(&key, offset, size, &page, Instant::now());
                Ok(page)
            }
        }
    }

    async fn around_of(
        &self,
        o: &Opened,
        member: &str,
        n: u64,
    ) -> Result<Option<(Around, u64)>, LeaderboardError> {
        match &o.source {
            Source::Archive(row) => {
                let store = self.reader.definitions().store();
                let board = o.def.board.as_str();
                let Some(me) =
                    store.standing_of(board, &row.period, member).await.context("read standing")?
                else {
                    return Ok(None);
                };
                let start = me.position.saturating_sub(n);
                let len = (me.position - start + 1).saturating_add(n);
                let window = store
                    .standings(board, &row.period, start, u32::try_from(len).unwrap_or(u32::MAX))
                    .await
                    .context("read archived standings")?;
                let around =
                    Around { me: archived(me), window: window.into_iter().map(archived).collect() };
                Ok(Some((around, row.members)))
            }
            Source::Live => {
                let Some(around) = self.reader.around(&o.target, member, n).await? else {
                    return Ok(None);
                };
                let total =
                    self.reader.scores().len(&o.target.key()).await.context("count members")?;
                Ok(Some((around, total)))
            }
        }
    }

    /// A page of `size` entries from `offset` (or from the `start`-th entry), with the
    /// caller's own place.
    pub async fn page(
        &self,
        caller: &Caller,
        board: &Board,
        period: &str,
        offset: Option<u64>,
        start: u64,
        size: u32,
    ) -> Result<Page, LeaderboardError> {
        let o = self.open(caller, board, period).await?;
        let offset = offset.unwrap_or(start.saturating_sub(1));
        let (entries, total_members) = self.page_of(&o, offset, size).await?;
        let period = o.target.period.id.clone();
        if self.withheld(caller, &o.audience, total_members).await? {
            return Ok(Page {
                entries: Vec::new(),
                next_offset: None,
                prev_offset: None,
                total_members,
                me: None,
                period,
                withheld: true,
            });
        }
        let end = offset.saturating_add(entries.len() as u64);
        let next_offset = (!entries.is_empty() && end < total_members).then_some(end);
        let prev_offset = (offset > 0).then(|| offset.saturating_sub(u64::from(size)));
        let me = match (entries.iter().find(|e| e.member == caller.user_id), &o.source) {
            (Some(e), _) => Some(e.clone()),
            // The page read found the board ready: one read of the caller's place.
            (None, Source::Live) => self
                .reader
                .scores()
                .around(&o.target.key(), o.target.shape, &caller.user_id, 0)
                .await
                .context("read the caller's place")?
                .map(|a| a.me),
            (None, Source::Archive(_)) => {
                self.around_of(&o, &caller.user_id, 0).await?.map(|(a, _)| a.me)
            }
        };
        let me = me.map(|entry| place(entry, total_members, size));
        let entries = self.privacy.show(caller, entries).await.context("apply privacy")?;
        Ok(Page { entries, next_offset, prev_offset, total_members, me, period, withheld: false })
    }

    /// `member`'s place and up to `neighbours` entries on each side.
    pub async fn rank(
        &self,
        caller: &Caller,
        board: &Board,
        period: &str,
        member: &str,
        neighbours: u32,
        size: u32,
    ) -> Result<Rank, LeaderboardError> {
        let o = self.open(caller, board, period).await?;
        let not_on_board = || LeaderboardError::MemberNotOnBoard {
            board: board.to_string(),
            member: member.to_string(),
        };
        if member != caller.user_id
            && !caller.is_admin()
            && self.privacy.is_hidden(member).await.context("read privacy")?
        {
            return Err(not_on_board());
        }
        let (around, total_members) =
            self.around_of(&o, member, u64::from(neighbours)).await?.ok_or_else(not_on_board)?;
        if self.withheld(caller, &o.audience, total_members).await? {
            return Err(LeaderboardError::Withheld { board: board.to_string() });
        }
        let me = around.me.clone();
        let shown = self.privacy.show(caller, around.window).await.context("apply privacy")?;
        let me_shown = shown
            .iter()
            .find(|s| s.entry.position == me.position)
            .cloned()
            .unwrap_or(Shown { entry: me.clone(), pseudonymous: false });
        Ok(Rank {
            top_percent: top_percent(me.rank, total_members),
            page: me.position / u64::from(size.max(1)) + 1,
            me: me_shown,
            window: shown,
            total_members,
            period: o.target.period.id,
        })
    }

    /// The places of `members` (those on the board and visible to the caller).
    pub async fn ranks(
        &self,
        caller: &Caller,
        board: &Board,
        period: &str,
        members: &[String],
    ) -> Result<Ranks, LeaderboardError> {
        let o = self.open(caller, board, period).await?;
        let mut wanted = members.to_vec();
        if !caller.is_admin() {
            let hidden = self.privacy.hidden_among(members).await.context("read privacy")?;
            wanted.retain(|m| *m == caller.user_id || !hidden.contains(m));
        }
        let (entries, total_members) = match &o.source {
            Source::Archive(row) => {
                let rows = self
                    .reader
                    .definitions()
                    .store()
                    .standings_of(board.as_str(), &row.period, &wanted)
                    .await
                    .context("read archived standings")?;
                (rows.into_iter().map(archived).collect(), row.members)
            }
            Source::Live => self.reader.ranks(&o.target, &wanted).await?,
        };
        if self.withheld(caller, &o.audience, total_members).await? {
            return Err(LeaderboardError::Withheld { board: board.to_string() });
        }
        let entries = self.privacy.show(caller, entries).await.context("apply privacy")?;
        Ok(Ranks { entries, total_members, period: o.target.period.id })
    }

    /// The periods of `board`, newest first: the current one first (on the first page),
    /// then closed ones starting before `before` (a page token).
    pub async fn periods(
        &self,
        caller: &Caller,
        board: &Board,
        before: Option<chrono::DateTime<chrono::Utc>>,
        size: u32,
    ) -> Result<
        (Vec<(Period, Option<PeriodRow>)>, Option<chrono::DateTime<chrono::Utc>>),
        LeaderboardError,
    > {
        let def = self.definition(caller, board).await?;
        let current = def.current(self.reader.now());
        if current.id == ALL || !def.is_own() {
            return Ok((if before.is_none() { vec![(current, None)] } else { Vec::new() }, None));
        }
        let mut out = Vec::new();
        let before = match before {
            Some(t) => t,
            None => {
                out.push((current.clone(), None));
                current.start.unwrap_or_else(|| self.reader.now())
            }
        };
        let want = size.saturating_sub(out.len() as u32).max(1);
        let rows = self
            .reader
            .definitions()
            .store()
            .closed_periods(board.as_str(), Some(before), want + 1)
            .await
            .context("list closed periods")?;
        let more = rows.len() > want as usize;
        for row in rows.into_iter().take(want as usize) {
            let period = Period { id: row.period.clone(), start: row.start, end: row.end };
            out.push((period, Some(row)));
        }
        let next = if more { out.last().and_then(|(p, _)| p.start) } else { None };
        Ok((out, next))
    }

    /// Live views of the top `top_n` (and the caller's own place, as asked), holding one of
    /// the caller's stream slots until the stream is dropped.
    pub async fn watch(
        &self,
        caller: &Caller,
        board: Board,
        top_n: u32,
        personal: Personal,
    ) -> Result<ViewStream, LeaderboardError> {
        let def = self.reader.definition(&board).await?;
        let audience = self.access.check(caller, &board).await?;
        let slot: StreamSlot = self
            .streams
            .acquire(&caller.user_id)
            .map_err(|full| LeaderboardError::TooManyStreams { scope: full.scope })?;
        let snapshots = self.hub.watch(board, top_n, personal.wanted()).await?;
        let state = Watching {
            this: self.clone(),
            caller: caller.clone(),
            def,
            audience,
            personal,
            snapshots,
            last: None,
            last_me: None,
            _slot: slot,
        };
        Ok(futures::stream::unfold(state, |mut w| async move {
            loop {
                let snapshot = w.snapshots.next().await?;
                match w.view(snapshot).await {
                    Ok(Some(view)) => return Some((view, w)),
                    Ok(None) => {}
                    Err(err) => {
                        tracing::warn!(
                            error = format!("{:#}", anyhow::Error::new(err)),
                            "personal watch view"
                        );
                    }
                }
            }
        })
        .boxed())
    }
}

/// What a watcher last saw: (entries, members, withheld, me, window).
type Seen = (Vec<Shown>, u64, bool, Option<Shown>, Vec<Shown>);

/// One watcher between snapshots.
struct Watching {
    this: Leaderboards,
    caller: Caller,
    def: Arc<Definition>,
    audience: Audience,
    personal: Personal,
    snapshots: BoxStream<'static, Snapshot>,
    last: Option<Seen>,
    /// The watcher's entry at the last view, and whether it was within reach then.
    last_me: Option<(Entry, bool)>,
    _slot: StreamSlot,
}

impl Watching {
    /// The view of `snapshot` for this watcher; `None` when nothing they see changed.
    async fn view(&mut self, snapshot: Snapshot) -> Result<Option<View>, LeaderboardError> {
        let this = &self.this;
        let total = snapshot.total_members;
        let withheld = this.withheld(&self.caller, &self.audience, total).await?;
        let entries = if withheld {
            Vec::new()
        } else {
            this.privacy.show_known(&self.caller, snapshot.entries, &snapshot.hidden)
        };
        let mut notices = Vec::new();
        let (mut me, mut window) = (None, Vec::new());
        if self.personal.wanted() && !withheld {
            let period = self
                .def
                .schedule
                .period(&snapshot.period)
                .unwrap_or_else(|| self.def.current(this.reader.now()));
            let target = Target::new(&self.def, period);
            let n = self.personal.neighbours.max(1);
            let around = this.reader.around(&target, &self.caller.user_id, u64::from(n)).await?;
            match around {
                Some(around) => {
                    let mine = around.me.clone();
                    // The nearest entry above with a better rank, in this window.
                    let above = around
                        .window
                        .iter()
                        .filter(|e| e.position < mine.position && e.rank < mine.rank)
                        .max_by_key(|e| e.position)
                        .cloned();
                    let shown_window = this
                        .privacy
                        .show(&self.caller, around.window)
                        .await
                        .context("apply privacy")?;
                    let name_of = |e: &Entry| {
                        shown_window
                            .iter()
                            .find(|s| s.entry.position == e.position)
                            .map(|s| s.entry.member.clone())
                            .unwrap_or_default()
                    };
                    let within = match (&above, self.personal.notify_within) {
                        (Some(a), reach) if reach > 0.0 => (a.score - mine.score).abs() <= reach,
                        _ => false,
                    };
                    if let Some((old, was_within)) = &self.last_me {
                        if self.personal.notify_passed && mine.rank > old.rank {
                            let directly_above = shown_window
                                .iter()
                                .filter(|s| s.entry.position < mine.position)
                                .max_by_key(|s| s.entry.position)
                                .map(|s| s.entry.member.clone())
                                .unwrap_or_default();
                            notices.push(Notice::Passed {
                                old_rank: old.rank,
                                new_rank: mine.rank,
                                other: directly_above,
                            });
                        }
                        if within
                            && !was_within
                            && let Some(a) = &above
                        {
                            notices.push(Notice::WithinReach {
                                old_rank: old.rank,
                                new_rank: mine.rank,
                                other: name_of(a),
                                gap: (a.score - mine.score).abs(),
                            });
                        }
                    }
                    self.last_me = Some((mine.clone(), within));
                    if self.personal.with_me {
                        let k = u64::from(self.personal.neighbours);
                        window = shown_window
                            .into_iter()
                            .filter(|s| {
                                s.entry.position + k >= mine.position
                                    && s.entry.position <= mine.position + k
                            })
                            .collect();
                        if self.personal.neighbours == 0 {
                            window.clear();
                        }
                        me = Some(Shown { entry: mine, pseudonymous: false });
                    }
                }
                None => self.last_me = None,
            }
        }
        // A plain watcher's snapshots differ in their top N (the hub sends no other), and so
        // do their views: only a personal view can repeat itself.
        if self.personal.wanted() {
            let seen: Seen = (entries.clone(), total, withheld, me.clone(), window.clone());
            if notices.is_empty() && self.last.as_ref() == Some(&seen) {
                return Ok(None);
            }
            self.last = Some(seen);
        }
        Ok(Some(View {
            board: snapshot.board,
            entries,
            total_members: total,
            taken_at: snapshot.taken_at,
            period: snapshot.period,
            me,
            window,
            notices,
            withheld,
        }))
    }
}

fn archived(r: StandingRow) -> Entry {
    Entry {
        rank: r.rank,
        member: r.member,
        score: r.score,
        subscore: r.subscore,
        position: r.position,
    }
}

fn place(entry: Entry, total: u64, size: u32) -> MyPlace {
    let size = u64::from(size.max(1));
    let page = entry.position / size;
    MyPlace {
        top_percent: top_percent(entry.rank, total),
        page: page + 1,
        page_offset: page * size,
        entry,
    }
}
