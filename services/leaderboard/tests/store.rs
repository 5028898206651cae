//! The leaderboard's SQL store on SQLite and on PostgreSQL (each test runs on both, each on a
//! fresh database migrated by the module): boards, facts once per event id, closing periods
//! exactly once and exactly (also while facts keep coming), voids, the outbox, standings
//! reads, due periods, privacy and employer settings.

use std::{
    collections::{BTreeSet, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, TimeDelta, Utc};
use ewpm_kit::module::Module;
use ewpm_leaderboard::store::{
    BoardRow, FactRow, Inserted, LeaderboardStore, NewFact, PeriodRow, StandingRow, VoidTarget,
};
use ewpm_testkit::TestDb;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

async fn open(backend: Backend) -> (TestDb, LeaderboardStore) {
    let modules: &[&'static dyn Module] = &[&ewpm_leaderboard::MODULE];
    let db = match backend {
        Backend::Sqlite => TestDb::sqlite(modules).await,
        Backend::Postgres => TestDb::postgres(modules).await,
    }
    .expect("a migrated test database");
    let store = LeaderboardStore::new(db.db.clone());
    (db, store)
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-30T09:00:00.123456Z").unwrap().with_timezone(&Utc)
}

fn board_row(board: &str) -> BoardRow {
    BoardRow {
        board: board.to_string(),
        title: "Steps".to_string(),
        operator: "sum".to_string(),
        sort_order: "desc".to_string(),
        subscore_order: Some("asc".to_string()),
        rank_style: "competition".to_string(),
        reset_kind: "daily".to_string(),
        reset_cron: String::new(),
        time_zone: "Europe/Paris".to_string(),
        employer_id: Some("acme".to_string()),
        members_submit: true,
        created_by: "admin-1".to_string(),
        created_at: t0(),
    }
}

async fn with_board(store: &LeaderboardStore, board: &str) {
    assert!(store.create_board(&board_row(board)).await.unwrap().1);
}

/// Day `d` of December 2026 as a daily period: id, start, end.
fn day(d: u32) -> (String, DateTime<Utc>, DateTime<Utc>) {
    let start = DateTime::parse_from_rfc3339(&format!("2026-12-{d:02}T00:00:00Z"))
        .unwrap()
        .with_timezone(&Utc);
    (format!("2026-12-{d:02}"), start, start + TimeDelta::days(1))
}

fn fact(board: &str, d: u32, member: &str, event_id: &str, score: f64) -> NewFact {
    let (period, start, end) = day(d);
    NewFact {
        board: board.to_string(),
        period,
        period_start: Some(start),
        period_end: Some(end),
        member: member.to_string(),
        event_id: event_id.to_string(),
        score,
        subscore: score / 10.0,
        occurred_at: start + TimeDelta::microseconds(3_600_000_001),
    }
}

async fn created(store: &LeaderboardStore, f: &NewFact) -> FactRow {
    match store.insert_fact(f).await.unwrap() {
        Inserted::Created(row) => row,
        other => panic!("{} was not created: {other:?}", f.event_id),
    }
}

async fn close(
    store: &LeaderboardStore,
    board: &str,
    d: u32,
    rank: &(dyn Fn(Vec<FactRow>) -> Vec<StandingRow> + Send + Sync),
) -> bool {
    let (period, start, end) = day(d);
    store.close_period(board, &period, Some(start), Some(end), end, rank).await.unwrap()
}

/// Sum per member, highest first, ties by member id descending, competition ranks.
fn sum_ranks(facts: Vec<FactRow>) -> Vec<StandingRow> {
    let mut totals: Vec<(String, f64, f64)> = Vec::new();
    for f in facts {
        match totals.iter_mut().find(|(m, _, _)| *m == f.member) {
            Some(t) => {
                t.1 += f.score;
                t.2 += f.subscore;
            }
            None => totals.push((f.member, f.score, f.subscore)),
        }
    }
    totals.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let mut out: Vec<StandingRow> = Vec::new();
    for (i, (member, score, subscore)) in totals.into_iter().enumerate() {
        let rank = match out.last() {
            Some(prev) if prev.score == score => prev.rank,
            _ => i as u64 + 1,
        };
        out.push(StandingRow { position: i as u64, rank, member, score, subscore });
    }
    out
}

/// `rank` that also records what it was given.
fn recording(seen: Arc<Mutex<Vec<Vec<FactRow>>>>) -> impl Fn(Vec<FactRow>) -> Vec<StandingRow> {
    move |facts: Vec<FactRow>| {
        seen.lock().unwrap().push(facts.clone());
        sum_ranks(facts)
    }
}

fn event_ids(facts: &[FactRow]) -> Vec<String> {
    facts.iter().map(|f| f.event_id.clone()).collect()
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
    };
}

on_both!(
    a_board_is_defined_once_and_read_back,
    a_fact_is_stored_once_per_event_id,
    facts_of_a_closed_period_are_refused_but_retries_find_their_fact,
    facts_need_a_defined_board,
    closing_archives_exactly_what_rank_makes_of_the_periods_facts,
    closing_twice_closes_once,
    concurrent_closes_close_once,
    facts_racing_a_close_are_archived_or_refused,
    voids_leave_facts_out_of_reads_and_closes,
    facts_page_by_fact_id,
    unapplied_facts_wait_until_marked,
    closed_standings_page_and_find_members_and_ranks,
    standings_with_gaps_in_positions_are_refused,
    due_periods_are_open_periods_that_have_ended,
    closed_periods_list_newest_first,
    privacy_and_employer_settings_round_trip,
);

async fn a_board_is_defined_once_and_read_back(backend: Backend) {
    let (_db, store) = open(backend).await;
    let row = board_row("board:steps");
    let expected = BoardRow {
        created_at: DateTime::from_timestamp_micros(t0().timestamp_micros()).unwrap(),
        ..row.clone()
    };
    assert_eq!(store.create_board(&row).await.unwrap(), (expected.clone(), true));
    let again = BoardRow { title: "Other".into(), members_submit: false, ..row.clone() };
    assert_eq!(store.create_board(&again).await.unwrap(), (expected.clone(), false));
    assert_eq!(store.board("board:steps").await.unwrap(), Some(expected));
    assert_eq!(store.board("board:none").await.unwrap(), None);

    let bare = BoardRow {
        subscore_order: None,
        employer_id: None,
        reset_kind: "cron".into(),
        reset_cron: "0 9 * * MON".into(),
        ..board_row("board:bare")
    };
    store.create_board(&bare).await.unwrap();
    assert_eq!(store.board("board:bare").await.unwrap().unwrap().subscore_order, None);
    assert_eq!(store.board("board:bare").await.unwrap().unwrap().employer_id, None);
}

async fn a_fact_is_stored_once_per_event_id(backend: Backend) {
    let (_db, store) = open(backend).await;
    with_board(&store, "board:a").await;
    with_board(&store, "board:b").await;
    let f = fact("board:a", 1, "alice", "ev-1", 5.0);
    let row = created(&store, &f).await;
    assert_eq!(
        row,
        FactRow {
            board: "board:a".into(),
            period: "2026-12-01".into(),
            member: "alice".into(),
            event_id: "ev-1".into(),
            fact_id: row.fact_id.clone(),
            score: 5.0,
            subscore: 0.5,
            occurred_at: f.occurred_at,
            applied: false,
        }
    );
    assert_eq!(uuid::Uuid::parse_str(&row.fact_id).unwrap().get_version_num(), 7);
    // The same event id with another body finds the stored fact; the caller compares.
    let other = NewFact { score: 9.0, member: "bob".into(), ..f.clone() };
    assert_eq!(store.insert_fact(&other).await.unwrap(), Inserted::Existing(row.clone()));
    assert_eq!(store.fact_by_event("board:a", "ev-1").await.unwrap(), Some(row.clone()));
    assert_eq!(store.fact_by_event("board:a", "ev-2").await.unwrap(), None);
    // Event ids are per board.
    let on_b = created(&store, &fact("board:b", 1, "alice", "ev-1", 1.0)).await;
    assert_ne!(on_b.fact_id, row.fact_id);
    created(&store, &fact("board:a", 2, "alice", "ev-2", 1.0)).await;
    created(&store, &fact("board:a", 2, "bob", "ev-3", 1.0)).await;
    assert_eq!(store.open_periods_of("board:a").await.unwrap(), ["2026-12-01", "2026-12-02"]);
    assert_eq!(store.open_periods_of("board:b").await.unwrap(), ["2026-12-01"]);
}

async fn facts_of_a_closed_period_are_refused_but_retries_find_their_fact(backend: Backend) {
    let (_db, store) = open(backend).await;
    with_board(&store, "board:a").await;
    let stored = created(&store, &fact("board:a", 1, "alice", "ev-1", 5.0)).await;
    assert!(close(&store, "board:a", 1, &sum_ranks).await);
    assert_eq!(
        store.insert_fact(&fact("board:a", 1, "bob", "ev-2", 3.0)).await.unwrap(),
        Inserted::PeriodClosed
    );
    assert_eq!(store.fact_by_event("board:a", "ev-2").await.unwrap(), None);
    // A retry of a stored fact gets the answer its first try got.
    assert_eq!(
        store.insert_fact(&fact("board:a", 1, "alice", "ev-1", 5.0)).await.unwrap(),
        Inserted::Existing(stored)
    );
    // Other periods stay open; closing does not reopen anything.
    created(&store, &fact("board:a", 2, "bob", "ev-3", 3.0)).await;
    assert_eq!(store.open_periods_of("board:a").await.unwrap(), ["2026-12-02"]);
}

async fn facts_need_a_defined_board(backend: Backend) {
    let (_db, store) = open(backend).await;
    let err = store.insert_fact(&fact("board:ghost", 1, "alice", "ev-1", 1.0)).await.unwrap_err();
    assert!(format!("{err:#}").contains("no board board:ghost"), "{err:#}");
    let (period, start, end) = day(1);
    let err = store
        .close_period("board:ghost", &period, Some(start), Some(end), end, &sum_ranks)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no board board:ghost"), "{err:#}");
}

async fn closing_archives_exactly_what_rank_makes_of_the_periods_facts(backend: Backend) {
    let (_db, store) = open(backend).await;
    with_board(&store, "board:a").await;
    let mut day1 = Vec::new();
    for (member, event, score) in
        [("alice", "e1", 5.0), ("bob", "e2", 7.0), ("alice", "e3", 4.0), ("carol", "e4", 7.0)]
    {
        day1.push(created(&store, &fact("board:a", 1, member, event, score)).await);
    }
    created(&store, &fact("board:a", 2, "dave", "e5", 100.0)).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    assert!(close(&store, "board:a", 1, &recording(seen.clone())).await);
    // `rank` got the period's facts (only those), by fact id.
    assert_eq!(*seen.lock().unwrap(), vec![day1.clone()]);
    let expected = vec![
        StandingRow { position: 0, rank: 1, member: "alice".into(), score: 9.0, subscore: 0.9 },
        StandingRow { position: 1, rank: 2, member: "carol".into(), score: 7.0, subscore: 0.7 },
        StandingRow { position: 2, rank: 2, member: "bob".into(), score: 7.0, subscore: 0.7 },
    ];
    assert_eq!(sum_ranks(day1), expected);
    assert_eq!(store.standings("board:a", "2026-12-01", 0, 100).await.unwrap(), expected);
    let (_, start, end) = day(1);
    assert_eq!(
        store.period_row("board:a", "2026-12-01").await.unwrap(),
        Some(PeriodRow {
            board: "board:a".into(),
            period: "2026-12-01".into(),
            start: Some(start),
            end: Some(end),
            closed_at: end,
            members: 3,
        })
    );
    assert_eq!(store.period_row("board:a", "2026-12-02").await.unwrap(), None);
    assert_eq!(store.open_periods_of("board:a").await.unwrap(), ["2026-12-02"]);
    // A period without facts closes too, with no standings.
    assert!(close(&store, "board:a", 3, &sum_ranks).await);
    assert_eq!(store.period_row("board:a", "2026-12-03").await.unwrap().unwrap().members, 0);
    assert_eq!(store.standings("board:a", "2026-12-03", 0, 10).await.unwrap(), []);
    // The `all` period of a board that never resets has no bounds.
    with_board(&store, "board:forever").await;
    let forever = NewFact {
        period: "all".into(),
        period_start: None,
        period_end: None,
        ..fact("board:forever", 1, "alice", "e1", 1.0)
    };
    created(&store, &forever).await;
    assert!(store.close_period("board:forever", "all", None, None, end, &sum_ranks).await.unwrap());
    let all = store.period_row("board:forever", "all").await.unwrap().unwrap();
    assert_eq!((all.start, all.end, all.members), (None, None, 1));
}

async fn closing_twice_closes_once(backend: Backend) {
    let (_db, store) = open(backend).await;
    with_board(&store, "board:a").await;
    created(&store, &fact("board:a", 1, "alice", "e1", 5.0)).await;
    let calls = AtomicUsize::new(0);
    let rank = |facts: Vec<FactRow>| {
        calls.fetch_add(1, Ordering::SeqCst);
        sum_ranks(facts)
    };
    assert!(close(&store, "board:a", 1, &rank).await);
    let archived = store.standings("board:a", "2026-12-01", 0, 10).await.unwrap();
    assert!(!close(&store, "board:a", 1, &rank).await);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(store.standings("board:a", "2026-12-01", 0, 10).await.unwrap(), archived);
}

async fn concurrent_closes_close_once(backend: Backend) {
    let (_db, store) = open(backend).await;
    with_board(&store, "board:a").await;
    for i in 0..50 {
        created(&store, &fact("board:a", 1, &format!("m{}", i % 20), &format!("e{i}"), 1.0)).await;
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                let rank = move |facts: Vec<FactRow>| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    sum_ranks(facts)
                };
                close(&store, "board:a", 1, &rank).await
            })
        })
        .collect();
    let mut closed = Vec::new();
    for task in tasks {
        closed.push(task.await.unwrap());
    }
    closed.sort();
    assert_eq!(closed, [false, true]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(store.period_row("board:a", "2026-12-01").await.unwrap().unwrap().members, 20);
    assert_eq!(store.standings("board:a", "2026-12-01", 0, 100).await.unwrap().len(), 20);
}

async fn facts_racing_a_close_are_archived_or_refused(backend: Backend) {
    let (_db, store) = open(backend).await;
    with_board(&store, "board:a").await;
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 60;
    let created_count = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let created_count = created_count.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for i in 0..PER_WRITER {
                    let event = format!("w{w}-{i}");
                    let f = fact("board:a", 1, &format!("m{w}-{}", i % 25), &event, 1.0);
                    let outcome = store.insert_fact(&f).await.unwrap();
                    if matches!(outcome, Inserted::Created(_)) {
                        created_count.fetch_add(1, Ordering::SeqCst);
                    }
                    outcomes.push((event, outcome));
                }
                outcomes
            })
        })
        .collect();
    // Close while the writers are busy.
    while created_count.load(Ordering::SeqCst) < WRITERS * 10 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    assert!(close(&store, "board:a", 1, &recording(seen.clone())).await);
    let mut created_events = BTreeSet::new();
    let mut created_members = HashSet::new();
    let mut refused = 0;
    for writer in writers {
        let mut closed_yet = false;
        for (event, outcome) in writer.await.unwrap() {
            match outcome {
                Inserted::Created(row) => {
                    // Once a writer saw the period closed, it never stores into it again.
                    assert!(!closed_yet, "{event} was stored after the period closed");
                    created_events.insert(event);
                    created_members.insert(row.member);
                }
                Inserted::PeriodClosed => {
                    closed_yet = true;
                    refused += 1;
                }
                Inserted::Existing(row) => panic!("{event} was new: {row:?}"),
            }
        }
    }
    assert_eq!(created_events.len() + refused, WRITERS * PER_WRITER);
    assert!(refused > 0, "the close came after every insert: the race was not run");
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.len(), 1);
    let archived: BTreeSet<String> = event_ids(&seen[0]).into_iter().collect();
    assert_eq!(archived, created_events);
    let period = store.period_row("board:a", "2026-12-01").await.unwrap().unwrap();
    assert_eq!(period.members, created_members.len() as u64);
    assert_eq!(store.open_periods_of("board:a").await.unwrap(), Vec::<String>::new());
}

async fn voids_leave_facts_out_of_reads_and_closes(backend: Backend) {
    let (_db, store) = open(backend).await;
    with_board(&store, "board:a").await;
    with_board(&store, "board:b").await;
    for (member, event) in [("alice", "e1"), ("bob", "e2"), ("alice", "e3"), ("bob", "e4")] {
        created(&store, &fact("board:a", 1, member, event, 1.0)).await;
    }
    created(&store, &fact("board:b", 1, "alice", "e1", 1.0)).await;
    let at = t0();
    let alice = VoidTarget::Member("alice".into());
    // A fact is voided by the id the score store counts it by: its fact id.
    let e2_fact = store.fact_by_event("board:a", "e2").await.unwrap().unwrap().fact_id;
    let e2 = VoidTarget::Event(e2_fact);
    assert!(store.void("board:a", &alice, "cheated", "admin-1", at).await.unwrap());
    assert!(!store.void("board:a", &alice, "again", "admin-2", at).await.unwrap());
    assert!(
        store
            .void("board:a", &e2, "duplicate", "admin-1", at + TimeDelta::seconds(1))
            .await
            .unwrap()
    );
    assert_eq!(store.voids("board:a").await.unwrap(), [alice, e2]);
    assert_eq!(store.voids("board:b").await.unwrap(), []);
    assert_eq!(event_ids(&store.facts("board:a", "2026-12-01", None, 10).await.unwrap()), ["e4"]);
    // Voids are per board.
    assert_eq!(event_ids(&store.facts("board:b", "2026-12-01", None, 10).await.unwrap()), ["e1"]);
    // Voided facts are still found by their event id.
    assert!(store.fact_by_event("board:a", "e2").await.unwrap().is_some());
    let seen = Arc::new(Mutex::new(Vec::new()));
    assert!(close(&store, "board:a", 1, &recording(seen.clone())).await);
    assert_eq!(event_ids(&seen.lock().unwrap()[0]), ["e4"]);
    assert_eq!(store.period_row("board:a", "2026-12-01").await.unwrap().unwrap().members, 1);
}

async fn facts_page_by_fact_id(backend: Backend) {
    let (_db, store) = open(backend).await;
    with_board(&store, "board:a").await;
    let mut rows = Vec::new();
    for i in 0..5 {
        rows.push(created(&store, &fact("board:a", 1, "alice", &format!("e{i}"), 1.0)).await);
    }
    created(&store, &fact("board:a", 2, "alice", "other-day", 1.0)).await;
    let first = store.facts("board:a", "2026-12-01", None, 2).await.unwrap();
    assert_eq!(first, rows[0..2]);
    let second = store.facts("board:a", "2026-12-01", Some(&first[1].fact_id), 2).await.unwrap();
    assert_eq!(second, rows[2..4]);
    let last = store.facts("board:a", "2026-12-01", Some(&second[1].fact_id), 2).await.unwrap();
    assert_eq!(last, rows[4..5]);
    assert_eq!(store.facts("board:a", "2026-12-01", Some(&rows[4].fact_id), 2).await.unwrap(), []);
}

async fn unapplied_facts_wait_until_marked(backend: Backend) {
    let (_db, store) = open(backend).await;
    with_board(&store, "board:a").await;
    with_board(&store, "board:b").await;
    let a1 = created(&store, &fact("board:a", 1, "alice", "e1", 1.0)).await;
    let b1 = created(&store, &fact("board:b", 1, "alice", "e1", 1.0)).await;
    let a2 = created(&store, &fact("board:a", 2, "bob", "e2", 1.0)).await;
    assert_eq!(store.unapplied(10).await.unwrap(), [a1.clone(), b1.clone(), a2.clone()]);
    assert_eq!(store.unapplied(1).await.unwrap(), std::slice::from_ref(&a1));
    store.mark_applied(&[a1.fact_id.clone(), a2.fact_id.clone(), "unknown".into()]).await.unwrap();
    store.mark_applied(&[]).await.unwrap();
    assert_eq!(store.unapplied(10).await.unwrap(), std::slice::from_ref(&b1));
    let applied = FactRow { applied: true, ..a1.clone() };
    assert_eq!(store.fact_by_event("board:a", "e1").await.unwrap(), Some(applied));
    // Lists longer than one statement's chunk.
    let mut ids: Vec<String> = (0..2500).map(|i| format!("nothing-{i}")).collect();
    ids.push(b1.fact_id.clone());
    store.mark_applied(&ids).await.unwrap();
    assert_eq!(store.unapplied(10).await.unwrap(), []);
}

async fn closed_standings_page_and_find_members_and_ranks(backend: Backend) {
    let (_db, store) = open(backend).await;
    with_board(&store, "board:a").await;
    // 1,500 members; scores fall by one every three members: ranks 1,1,1,4,4,4,7,…
    let rows: Vec<StandingRow> = (0..1500u64)
        .map(|i| StandingRow {
            position: i,
            rank: i / 3 * 3 + 1,
            member: format!("m{i:04}"),
            score: 10_000.0 - (i / 3) as f64,
            subscore: 0.25,
        })
        .collect();
    let given = rows.clone();
    assert!(close(&store, "board:a", 1, &move |_| given.clone()).await);
    let p = "2026-12-01";
    assert_eq!(store.standings("board:a", p, 0, 1000).await.unwrap(), rows[..1000]);
    assert_eq!(store.standings("board:a", p, 1000, 1000).await.unwrap(), rows[1000..]);
    assert_eq!(store.standings("board:a", p, 10, 3).await.unwrap(), rows[10..13]);
    assert_eq!(store.standings("board:a", p, 1500, 10).await.unwrap(), []);
    assert_eq!(store.standings("board:a", "2026-12-02", 0, 10).await.unwrap(), []);
    assert_eq!(store.standing_of("board:a", p, "m0042").await.unwrap(), Some(rows[42].clone()));
    assert_eq!(store.standing_of("board:a", p, "nobody").await.unwrap(), None);
    // Over two chunks, unknown members skipped, out of order in, by position out.
    let mut asked: Vec<String> = (0..2500).rev().map(|i| format!("m{i:04}")).collect();
    asked.push("nobody".into());
    assert_eq!(store.standings_of("board:a", p, &asked).await.unwrap(), rows);
    assert_eq!(store.standings_of("board:a", p, &[]).await.unwrap(), []);
    assert_eq!(store.first_position_at_rank("board:a", p, 1).await.unwrap(), Some(0));
    assert_eq!(store.first_position_at_rank("board:a", p, 4).await.unwrap(), Some(3));
    assert_eq!(store.first_position_at_rank("board:a", p, 5).await.unwrap(), Some(6));
    assert_eq!(store.first_position_at_rank("board:a", p, 1498).await.unwrap(), Some(1497));
    assert_eq!(store.first_position_at_rank("board:a", p, 1499).await.unwrap(), None);
    assert_eq!(store.period_row("board:a", p).await.unwrap().unwrap().members, 1500);
}

async fn standings_with_gaps_in_positions_are_refused(backend: Backend) {
    let (_db, store) = open(backend).await;
    with_board(&store, "board:a").await;
    created(&store, &fact("board:a", 1, "alice", "e1", 1.0)).await;
    let gap = |_: Vec<FactRow>| {
        vec![StandingRow {
            position: 1,
            rank: 1,
            member: "alice".into(),
            score: 1.0,
            subscore: 0.0,
        }]
    };
    let (period, start, end) = day(1);
    let err = store
        .close_period("board:a", &period, Some(start), Some(end), end, &gap)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("position 1"), "{err:#}");
    // Nothing was archived; the period is still open and closes normally.
    assert_eq!(store.period_row("board:a", &period).await.unwrap(), None);
    assert_eq!(store.open_periods_of("board:a").await.unwrap(), std::slice::from_ref(&period));
    assert!(close(&store, "board:a", 1, &sum_ranks).await);
}

async fn due_periods_are_open_periods_that_have_ended(backend: Backend) {
    let (_db, store) = open(backend).await;
    with_board(&store, "board:a").await;
    with_board(&store, "board:b").await;
    for (board, d) in [("board:a", 3), ("board:a", 1), ("board:b", 1), ("board:b", 2)] {
        created(&store, &fact(board, d, "alice", &format!("e{d}"), 1.0)).await;
        created(&store, &fact(board, d, "bob", &format!("f{d}"), 1.0)).await;
    }
    let forever = NewFact {
        period: "all".into(),
        period_start: None,
        period_end: None,
        ..fact("board:a", 1, "alice", "forever", 1.0)
    };
    created(&store, &forever).await;
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter().map(|(b, p)| (b.to_string(), p.to_string())).collect()
    };
    let (_, _, end1) = day(1);
    let (_, _, end2) = day(2);
    assert_eq!(store.due_periods(end1 - TimeDelta::microseconds(1), 10).await.unwrap(), []);
    assert_eq!(
        store.due_periods(end1, 10).await.unwrap(),
        pairs(&[("board:a", "2026-12-01"), ("board:b", "2026-12-01")])
    );
    assert_eq!(
        store.due_periods(end2, 10).await.unwrap(),
        pairs(&[("board:a", "2026-12-01"), ("board:b", "2026-12-01"), ("board:b", "2026-12-02")])
    );
    assert_eq!(store.due_periods(end2, 1).await.unwrap(), pairs(&[("board:a", "2026-12-01")]));
    assert!(close(&store, "board:a", 1, &sum_ranks).await);
    assert_eq!(
        store.due_periods(end2 + TimeDelta::days(365), 10).await.unwrap(),
        pairs(&[("board:b", "2026-12-01"), ("board:b", "2026-12-02"), ("board:a", "2026-12-03")])
    );
}

async fn closed_periods_list_newest_first(backend: Backend) {
    let (_db, store) = open(backend).await;
    with_board(&store, "board:a").await;
    with_board(&store, "board:b").await;
    for d in [2, 1, 4, 3] {
        created(&store, &fact("board:a", d, "alice", &format!("e{d}"), 1.0)).await;
        assert!(close(&store, "board:a", d, &sum_ranks).await);
    }
    assert!(close(&store, "board:b", 9, &sum_ranks).await);
    let ids = |rows: Vec<PeriodRow>| rows.into_iter().map(|r| r.period).collect::<Vec<_>>();
    assert_eq!(
        ids(store.closed_periods("board:a", None, 10).await.unwrap()),
        ["2026-12-04", "2026-12-03", "2026-12-02", "2026-12-01"]
    );
    assert_eq!(
        ids(store.closed_periods("board:a", None, 2).await.unwrap()),
        ["2026-12-04", "2026-12-03"]
    );
    let (_, start3, _) = day(3);
    assert_eq!(
        ids(store.closed_periods("board:a", Some(start3), 10).await.unwrap()),
        ["2026-12-02", "2026-12-01"]
    );
    let (_, start1, _) = day(1);
    assert_eq!(
        ids(store.closed_periods("board:a", Some(start1), 10).await.unwrap()),
        Vec::<String>::new()
    );
    let (p, s, e) = day(4);
    assert_eq!(
        store.closed_periods("board:a", None, 1).await.unwrap(),
        [PeriodRow {
            board: "board:a".into(),
            period: p,
            start: Some(s),
            end: Some(e),
            closed_at: e,
            members: 1
        }]
    );
}

async fn privacy_and_employer_settings_round_trip(backend: Backend) {
    let (_db, store) = open(backend).await;
    let at = t0();
    assert!(!store.hidden("alice").await.unwrap());
    store.set_hidden("alice", true, at).await.unwrap();
    store.set_hidden("bob", true, at).await.unwrap();
    store.set_hidden("carol", false, at).await.unwrap();
    assert!(store.hidden("alice").await.unwrap());
    assert!(!store.hidden("carol").await.unwrap());
    store.set_hidden("bob", false, at + TimeDelta::seconds(1)).await.unwrap();
    assert!(!store.hidden("bob").await.unwrap());
    let mut asked: Vec<String> = (0..2500).map(|i| format!("x{i}")).collect();
    asked.extend(["alice", "bob", "carol", "dave"].map(String::from));
    assert_eq!(store.hidden_among(&asked).await.unwrap(), HashSet::from(["alice".to_string()]));
    assert_eq!(store.hidden_among(&[]).await.unwrap(), HashSet::new());

    assert_eq!(store.min_members("acme").await.unwrap(), 0);
    store.set_min_members("acme", 5, at).await.unwrap();
    store.set_min_members("globex", 10_000, at).await.unwrap();
    assert_eq!(store.min_members("acme").await.unwrap(), 5);
    store.set_min_members("acme", 0, at + TimeDelta::seconds(1)).await.unwrap();
    assert_eq!(store.min_members("acme").await.unwrap(), 0);
    assert_eq!(store.min_members("globex").await.unwrap(), 10_000);
}
