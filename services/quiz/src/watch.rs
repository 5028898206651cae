//! WatchSession: one room per watched session per process, fanning session events out to
//! every local stream.
//!
//! - A room re-reads its session when a notice says it changed (`quiz:changed:<session>`,
//!   sent by every host action and join, and by the closer), and at least once a second, and
//!   broadcasts what changed: the session, questions revealed (as [`pb::PlayQuestion`], which
//!   has no answer fields) and closed (with their results), the participant count, the final
//!   standings.
//! - A room also watches its board `quiz:<session>` on the leaderboard service (one upstream
//!   stream per room, with the service's own token) and relays its snapshots ("Leaderboard
//!   Updating").
//! - A new stream first gets the room's current state, then the broadcast, with no gap: both
//!   are taken under the room's lock. A stream that falls behind is sent the current state
//!   again.
//! - Presence: while a participant's stream is open, the participant counts as connected
//!   (`present_until`, refreshed by [`Hub::run_presence`]); the closer closes a question once
//!   every connected participant answered it.
//! - Fair timing: when a revealed question is handed to a participant's stream, the moment
//!   is recorded (`quiz_deliveries`, batched) and their answer's speed counts from then (up
//!   to the session's delivery grace).
//!
//! A room ends when its last stream does; streams end at shutdown.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use ewpm_kit::{
    CancellationToken,
    auth::{Caller, ServiceToken},
    clock::SharedClock,
    notices::Notices,
    retry::sleep_or_shutdown,
    streams::StreamSlots,
};
use ewpm_proto::{
    leaderboard::v1::{
        WatchLeaderboardRequest, leaderboard_service_client::LeaderboardServiceClient,
    },
    quiz::v1::{self as pb, watch_session_response::Event},
};
use futures::StreamExt;
use tokio::sync::{Notify, broadcast, mpsc};
use tonic::{Status, transport::Channel};

use crate::{
    error::QuizError,
    grpc::{finished, play_question, revealed_question, session_to_proto},
    service::Quizzes,
    store::State,
};

/// Events a room holds for slow streams before they are sent the state again.
const ROOM_BUFFER: usize = 256;
/// Longest a room goes without re-reading its session.
const REFRESH: Duration = Duration::from_secs(1);
/// Leaderboard entries a room asks for (streams take their own `top` of them).
const ROOM_TOP: i32 = 100;

/// The leaderboard service, as rooms call it.
#[derive(Clone)]
pub struct Leaderboard {
    client: LeaderboardServiceClient<Channel>,
    token: Arc<ServiceToken>,
}

impl Leaderboard {
    /// Calls the leaderboard service at `uri` (connected lazily) with `token`.
    pub fn new(uri: &str, token: Arc<ServiceToken>) -> anyhow::Result<Self> {
        let channel = ewpm_kit::client::channel(uri)?;
        Ok(Self { client: LeaderboardServiceClient::new(channel), token })
    }
}

type Msg = Arc<pb::WatchSessionResponse>;

/// What a room last saw.
#[derive(Default)]
struct Seen {
    state: Option<(State, i32)>,
    questions: Vec<(i32, bool)>,
    participants: Option<i64>,
    /// What a new stream is sent first.
    initial: Vec<Msg>,
    leaderboard: Option<Msg>,
}

struct Room {
    session_id: String,
    tx: broadcast::Sender<Msg>,
    seen: Mutex<Seen>,
    stop: CancellationToken,
}

impl Room {
    /// Broadcasts `msgs` (called with the room's lock held, so a new stream's initial state
    /// and its broadcast meet without a gap). No receiver is not an error.
    fn send(&self, msgs: Vec<Msg>) {
        for m in msgs {
            let _ = self.tx.send(m);
        }
    }
}

struct Inner {
    quizzes: Quizzes,
    notices: Arc<dyn Notices>,
    clock: SharedClock,
    leaderboard: Option<Leaderboard>,
    slots: Arc<StreamSlots>,
    streams: CancellationToken,
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    /// Open streams per participant of this process.
    presence: Mutex<HashMap<String, usize>>,
    /// Participants whose first stream opened (true) or last closed (false) since the last
    /// write; written in batches by [`Hub::run_presence`].
    marks: Mutex<HashMap<String, bool>>,
    marked: Notify,
    /// Held while a room is made (see [`Hub::room`]).
    making: tokio::sync::Mutex<()>,
    deliveries: mpsc::Sender<Delivery>,
    delivered: Mutex<Option<mpsc::Receiver<Delivery>>>,
    presence_ttl: Duration,
}

/// A revealed question handed to a participant's stream: (participant, question, when).
type Delivery = (String, String, DateTime<Utc>);

/// The rooms of this process.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn msg(event: Event) -> Msg {
    Arc::new(pb::WatchSessionResponse { event: Some(event) })
}

impl Hub {
    /// A hub reading through `quizzes`, woken by `notices`, capped by `slots`; streams end
    /// when `streams` is cancelled. Run [`Hub::run_deliveries`] and [`Hub::run_presence`]
    /// beside it.
    pub fn new(
        quizzes: Quizzes,
        notices: Arc<dyn Notices>,
        clock: SharedClock,
        leaderboard: Option<Leaderboard>,
        slots: Arc<StreamSlots>,
        streams: CancellationToken,
        presence_ttl: Duration,
    ) -> Self {
        let (deliveries, rx) = mpsc::channel(65_536);
        Self {
            inner: Arc::new(Inner {
                quizzes,
                notices,
                clock,
                leaderboard,
                slots,
                streams,
                rooms: Mutex::default(),
                presence: Mutex::default(),
                marks: Mutex::default(),
                marked: Notify::new(),
                making: tokio::sync::Mutex::new(()),
                deliveries,
                delivered: Mutex::new(Some(rx)),
                presence_ttl,
            }),
        }
    }

    /// Writes recorded deliveries in batches until `shutdown`.
    pub async fn run_deliveries(self, shutdown: CancellationToken) {
        let Some(mut rx) = lock(&self.inner.delivered).take() else { return };
        let store = self.inner.quizzes.store().clone();
        let mut batch = Vec::new();
        loop {
            let got = tokio::select! {
                () = shutdown.cancelled() => return,
                n = rx.recv_many(&mut batch, 1000) => n,
            };
            if got == 0 {
                return;
            }
            if let Err(err) = store.record_deliveries(&batch).await {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "deliveries not recorded; those answers count from the reveal"
                );
            }
            batch.clear();
        }
    }

    /// Rooms open now (for tests and metrics).
    pub fn rooms(&self) -> usize {
        lock(&self.inner.rooms).len()
    }

    /// Starts a stream of `session_id`'s events for `caller` (a host or a participant).
    pub async fn watch(
        &self,
        caller: &Caller,
        session_id: &str,
        top: usize,
    ) -> Result<mpsc::Receiver<Result<pb::WatchSessionResponse, Status>>, QuizError> {
        let quizzes = &self.inner.quizzes;
        let (session, host) = quizzes.visible(caller, session_id).await?;
        let participant = quizzes.store().participant(&session.id, &caller.user_id).await?;
        if !host && participant.is_none() {
            return Err(QuizError::NotParticipant(session.id));
        }
        let slot = self
            .inner
            .slots
            .acquire(&caller.user_id)
            .map_err(|full| QuizError::TooManyStreams(full.scope))?;
        let room = self.room(&session.id).await?;
        let (initial, mut events) = {
            let seen = lock(&room.seen);
            let mut initial = seen.initial.clone();
            initial.extend(seen.leaderboard.clone());
            (initial, room.tx.subscribe())
        };
        let participant_id = participant.map(|p| p.id);
        if let Some(id) = &participant_id {
            self.present(id, true);
        }
        let (tx, rx) = mpsc::channel(64);
        let hub = self.clone();
        let streams = self.inner.streams.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let send = |m: &Msg| hub.outgoing(m, top, participant_id.as_deref());
            let mut open = true;
            for m in &initial {
                if tx.send(Ok(send(m))).await.is_err() {
                    open = false;
                    break;
                }
            }
            if open {
                // The initial state may already be the end.
                open = !initial.iter().any(|m| matches!(m.event, Some(Event::Finished(_))));
            }
            if open {
                loop {
                    let next = tokio::select! {
                        () = streams.cancelled() => break,
                        () = tx.closed() => break,
                        next = events.recv() => next,
                    };
                    let m = match next {
                        Ok(m) => m,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            // Behind: send the state as it is now, then carry on.
                            let again = lock(&room.seen).initial.clone();
                            let mut failed = false;
                            for m in &again {
                                failed |= tx.send(Ok(send(m))).await.is_err();
                            }
                            if failed {
                                break;
                            }
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    };
                    let done = matches!(m.event, Some(Event::Finished(_)));
                    if tx.send(Ok(send(&m))).await.is_err() || done {
                        break;
                    }
                }
            }
            drop(events);
            if let Some(id) = &participant_id {
                hub.present(id, false);
            }
            if room.tx.receiver_count() == 0 {
                room.stop.cancel();
            }
        });
        Ok(rx)
    }

    /// What one stream is sent of `m`: its own `top` of a leaderboard; a revealed question
    /// handed to a participant is recorded as delivered to them.
    fn outgoing(&self, m: &Msg, top: usize, participant: Option<&str>) -> pb::WatchSessionResponse {
        match &m.event {
            Some(Event::Leaderboard(board)) if board.entries.len() > top => {
                let mut board = board.clone();
                board.entries.truncate(top);
                pb::WatchSessionResponse { event: Some(Event::Leaderboard(board)) }
            }
            Some(Event::QuestionRevealed(q)) => {
                if let Some(p) = participant {
                    let _ = self.inner.deliveries.try_send((
                        p.to_string(),
                        q.id.clone(),
                        self.inner.clock.now(),
                    ));
                }
                (**m).clone()
            }
            _ => (**m).clone(),
        }
    }

    /// Counts a participant's stream in (`joined`) or out; their first stream in and their
    /// last out are marked for [`Hub::run_presence`] to write (in batches, off the stream's
    /// path: ten thousand participants opening the room at once make a few writes, not ten
    /// thousand).
    fn present(&self, participant_id: &str, joined: bool) {
        let first_or_last = {
            let mut p = lock(&self.inner.presence);
            let n = p.entry(participant_id.to_string()).or_insert(0);
            if joined {
                *n += 1;
                *n == 1
            } else {
                *n = n.saturating_sub(1);
                let last = *n == 0;
                if last {
                    p.remove(participant_id);
                }
                last
            }
        };
        if first_or_last {
            lock(&self.inner.marks).insert(participant_id.to_string(), joined);
            self.inner.marked.notify_one();
        }
    }

    fn present_until(&self) -> i64 {
        let ttl = i64::try_from(self.inner.presence_ttl.as_millis()).unwrap_or(i64::MAX / 2);
        self.inner.clock.now().timestamp_millis().saturating_add(ttl)
    }

    /// Writes presence changes as they come (in batches) and keeps the presence of this
    /// process's connected participants fresh, until `shutdown`.
    pub async fn run_presence(self, shutdown: CancellationToken) {
        let every = self.inner.presence_ttl / 3;
        let mut refresh = tokio::time::interval(every);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let all = tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.inner.marked.notified() => false,
                _ = refresh.tick() => true,
            };
            let marks = std::mem::take(&mut *lock(&self.inner.marks));
            let (came, went): (Vec<_>, Vec<_>) =
                marks.into_iter().partition(|(_, present)| *present);
            let came: Vec<String> = if all {
                lock(&self.inner.presence).keys().cloned().collect()
            } else {
                came.into_iter().map(|(id, _)| id).collect()
            };
            let went: Vec<String> = went.into_iter().map(|(id, _)| id).collect();
            let store = self.inner.quizzes.store();
            let until = self.present_until();
            for (ids, until) in [(came, Some(until)), (went, None)] {
                if !ids.is_empty()
                    && let Err(err) = store.set_presence(&ids, until).await
                {
                    tracing::warn!(error = format!("{err:#}"), "presence not written");
                }
            }
        }
    }

    async fn room(&self, session_id: &str) -> Result<Arc<Room>, QuizError> {
        let existing =
            || lock(&self.inner.rooms).get(session_id).filter(|r| !r.stop.is_cancelled()).cloned();
        if let Some(room) = existing() {
            return Ok(room);
        }
        // One room is made at a time: when a whole audience opens a new room at once, one
        // call reads the session and the others wait for it rather than each reading it.
        let _making = self.inner.making.lock().await;
        if let Some(room) = existing() {
            return Ok(room);
        }
        let room = Arc::new(Room {
            session_id: session_id.to_string(),
            tx: broadcast::channel(ROOM_BUFFER).0,
            seen: Mutex::default(),
            stop: self.inner.streams.child_token(),
        });
        // Subscribe before the first read, so no change between them is missed.
        let subscription = self.inner.notices.subscribe(session_id).await;
        refresh(&self.inner, &room).await?;
        let room = {
            let mut rooms = lock(&self.inner.rooms);
            match rooms.get(session_id).filter(|r| !r.stop.is_cancelled()) {
                Some(existing) => return Ok(existing.clone()),
                None => {
                    rooms.insert(session_id.to_string(), room.clone());
                    room
                }
            }
        };
        metrics::gauge!("ewpm_quiz_rooms").set(self.rooms() as f64);
        let inner = self.inner.clone();
        let r = room.clone();
        tokio::spawn(async move {
            let mut subscription = match subscription {
                Ok(s) => Some(s),
                Err(err) => {
                    tracing::warn!(
                        error = format!("{err:#}"),
                        "session notices unavailable; refreshing every second"
                    );
                    None
                }
            };
            loop {
                let woke = async {
                    match subscription.as_mut() {
                        Some(s) => {
                            if !s.changed().await {
                                std::future::pending::<()>().await;
                            }
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    () = r.stop.cancelled() => break,
                    () = woke => {},
                    () = tokio::time::sleep(REFRESH) => {},
                }
                if let Err(err) = refresh(&inner, &r).await {
                    tracing::warn!(session_id = %r.session_id, error = format!("{err}"), "session refresh failed");
                }
            }
            let mut rooms = lock(&inner.rooms);
            if rooms.get(&r.session_id).is_some_and(|x| Arc::ptr_eq(x, &r)) {
                rooms.remove(&r.session_id);
            }
            metrics::gauge!("ewpm_quiz_rooms").set(rooms.len() as f64);
        });
        if let Some(lb) = self.inner.leaderboard.clone() {
            tokio::spawn(watch_board(lb, room.clone()));
        }
        Ok(room)
    }
}

/// Re-reads the room's session and broadcasts what changed since the last read.
async fn refresh(inner: &Inner, room: &Room) -> Result<(), QuizError> {
    let quizzes = &inner.quizzes;
    let session = quizzes
        .store()
        .session(&room.session_id)
        .await?
        .ok_or_else(|| QuizError::SessionNotFound(room.session_id.clone()))?;
    let participants = quizzes.store().participant_count(&session.id).await?;
    let state = (session.state, session.revealed_count);
    let now = inner.clock.now();
    let over = session.state == State::Finished;
    let questions: Vec<(i32, bool)> = quizzes
        .store()
        .revealed(&session.id)
        .await?
        .iter()
        .map(|r| (r.position, r.is_closed(now) || over))
        .collect();
    {
        // Nothing changed (the once-a-second refresh, mostly): no results to read.
        let seen = lock(&room.seen);
        if seen.state == Some(state)
            && seen.questions == questions
            && seen.participants == Some(participants)
        {
            return Ok(());
        }
    }
    let shown = quizzes.shown(&session, false).await?;
    let questions: Vec<(i32, bool)> =
        shown.iter().map(|s| (s.revealed.position, s.closed)).collect();
    let finished_now = session.state == State::Finished;
    let standings = if finished_now && lock(&room.seen).state.map(|s| s.0) != Some(State::Finished)
    {
        Some(quizzes.standings(&session).await?)
    } else {
        None
    };
    let session_msg = msg(Event::Session(session_to_proto(&session, participants)));
    let mut seen = lock(&room.seen);
    let mut out = Vec::new();
    if seen.state != Some(state) {
        out.push(session_msg.clone());
    }
    for s in &shown {
        let before = seen.questions.iter().find(|(p, _)| *p == s.revealed.position).map(|x| x.1);
        if before.is_none() && !s.closed {
            out.push(msg(Event::QuestionRevealed(play_question(s))));
        }
        if s.closed && before != Some(true) {
            if before.is_none() {
                out.push(msg(Event::QuestionRevealed(play_question(s))));
            }
            out.push(msg(Event::QuestionClosed(revealed_question(s))));
        }
    }
    if seen.participants != Some(participants) {
        out.push(msg(Event::ParticipantCount(i32::try_from(participants).unwrap_or(i32::MAX))));
    }
    let mut initial = vec![
        session_msg.clone(),
        msg(Event::ParticipantCount(i32::try_from(participants).unwrap_or(i32::MAX))),
    ];
    for s in &shown {
        initial.push(if s.closed {
            msg(Event::QuestionClosed(revealed_question(s)))
        } else {
            msg(Event::QuestionRevealed(play_question(s)))
        });
    }
    if let Some(standings) = standings {
        let done =
            msg(Event::Finished(finished(session_to_proto(&session, participants), &standings)));
        out.push(done.clone());
        initial.push(done);
    } else if finished_now
        && let Some(done) =
            seen.initial.iter().find(|m| matches!(m.event, Some(Event::Finished(_))))
    {
        initial.push(done.clone());
    }
    seen.state = Some(state);
    seen.questions = questions;
    seen.participants = Some(participants);
    seen.initial = initial;
    room.send(out);
    drop(seen);
    Ok(())
}

/// Relays the board's snapshots into the room until it closes, reconnecting after errors.
async fn watch_board(lb: Leaderboard, room: Arc<Room>) {
    let board = ewpm_proto::quiz::v1::board(&room.session_id);
    loop {
        let request = lb.token.authorize(tonic::Request::new(WatchLeaderboardRequest {
            board: board.clone(),
            top_n: ROOM_TOP,
            ..Default::default()
        }));
        let mut client = lb.client.clone();
        let stream = tokio::select! {
            () = room.stop.cancelled() => return,
            r = client.watch_leaderboard(request) => r,
        };
        match stream {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    let next = tokio::select! {
                        () = room.stop.cancelled() => return,
                        next = stream.next() => next,
                    };
                    let Some(Ok(snapshot)) = next else { break };
                    let top = pb::LeaderboardTop {
                        entries: snapshot
                            .entries
                            .into_iter()
                            .map(|e| pb::leaderboard_top::Entry {
                                rank: i32::try_from(e.rank).unwrap_or(i32::MAX),
                                user_id: e.member,
                                score: e.score,
                            })
                            .collect(),
                        member_count: snapshot.total_members,
                    };
                    let m = msg(Event::Leaderboard(top));
                    lock(&room.seen).leaderboard = Some(m.clone());
                    let _ = room.tx.send(m);
                }
            }
            Err(status) => {
                tracing::debug!(%board, error = %status, "leaderboard watch failed; retrying");
            }
        }
        if sleep_or_shutdown(Duration::from_secs(1), &room.stop).await {
            return;
        }
    }
}
