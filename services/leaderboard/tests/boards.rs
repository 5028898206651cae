//! Boards as a product, through the gRPC service on both backends (SQLite + memory scores;
//! PostgreSQL + Redis): definitions and who may make them, SubmitScore (operators, retries,
//! conflicts, permissions), pages both ways with the caller's place, team ranks, periods
//! closed and archived (equal to SQL, also while scores keep arriving), voids recounted and
//! seen by watchers, privacy, the employer minimum, rank-change notices and the fact relay.

mod common;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use common::PATIENCE;
use ewpm_kit::{
    CancellationToken,
    auth::Role,
    bus::{Bus, MemoryBus},
    clock::FixedClock,
    settings::Settings,
    timestamp::to_proto,
};
use ewpm_leaderboard::{
    app,
    background::Background,
    notices::{self, MemoryNotices, Notices},
    rebuild::Owners,
    scores::{MemoryScores, RedisScores, ScoreStore},
    settings::LeaderboardSettings,
    store::{Inserted, LeaderboardStore, NewFact},
};
use ewpm_proto::leaderboard::v1::{
    self as pb, leaderboard_service_client::LeaderboardServiceClient,
};
use ewpm_testkit::{TestDb, bearer, key_prefix, reason, request, servers, spawn_grpc, violations};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, Statement};
use tonic::{Code, Streaming, transport::Channel};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Embedded,
    Mesh,
}

struct Harness {
    client: LeaderboardServiceClient<Channel>,
    clock: Arc<FixedClock>,
    background: Background,
    store: LeaderboardStore,
    db: TestDb,
    shutdown: CancellationToken,
    _server: ewpm_testkit::Spawned,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Monday 2026-11-30 10:00 UTC.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap()
}

async fn harness(backend: Backend) -> Harness {
    let db = match backend {
        Backend::Embedded => TestDb::sqlite(&[&ewpm_leaderboard::MODULE]).await.unwrap(),
        Backend::Mesh => TestDb::postgres(&[&ewpm_leaderboard::MODULE]).await.unwrap(),
    };
    let (scores, notices): (Arc<dyn ScoreStore>, Arc<dyn Notices>) = match backend {
        Backend::Embedded => (Arc::new(MemoryScores::new()), Arc::new(MemoryNotices::new())),
        Backend::Mesh => {
            let (url, prefix) = (servers().redis_url.clone(), key_prefix());
            (
                Arc::new(RedisScores::connect(&url, &prefix).await.unwrap()),
                Arc::new(notices::redis(&url, &prefix).await.unwrap()),
            )
        }
    };
    let bus: Arc<dyn Bus> = MemoryBus::new();
    let clock = FixedClock::new(t0());
    let store = LeaderboardStore::new(db.db.clone());
    let parts = app::Parts {
        scores,
        bus,
        notices,
        owners: Owners::new(),
        store: store.clone(),
        keys: ewpm_testkit::keys(),
        clock: clock.clone(),
    };
    let settings = LeaderboardSettings {
        watch_interval_ms: 10,
        read_cache_ms: 0,
        audience_cache_secs: 0,
        ..LeaderboardSettings::default()
    };
    let shutdown = CancellationToken::new();
    let built = app::build(parts, &settings, &Settings::default().grpc, shutdown.clone());
    let background = built.background;
    let service = built.service;
    let server = spawn_grpc(|mount, _| {
        mount.add(service);
    })
    .await
    .unwrap();
    let client = LeaderboardServiceClient::connect(server.uri()).await.unwrap();
    Harness { client, clock, background, store, db, shutdown, _server: server }
}

fn admin() -> String {
    bearer("root", Role::Admin, None)
}

fn boss() -> String {
    bearer("boss", Role::EmployerAdmin, Some("acme"))
}

fn member(sub: &str) -> String {
    bearer(sub, Role::Employee, Some("acme"))
}

/// A definition with the given shape; members submit their own scores.
fn def(
    operator: pb::ScoreOperator,
    order: pb::SortOrder,
    sub: pb::SortOrder,
    style: pb::RankStyle,
    reset: pb::ResetKind,
) -> pb::BoardDefinition {
    pb::BoardDefinition {
        title: "Test board".into(),
        operator: operator as i32,
        order: order as i32,
        subscore_order: sub as i32,
        rank_style: style as i32,
        reset: Some(pb::Reset { kind: reset as i32, cron: String::new(), time_zone: "UTC".into() }),
        members_submit: true,
        ..Default::default()
    }
}

fn sum_board() -> pb::BoardDefinition {
    def(
        pb::ScoreOperator::Sum,
        pb::SortOrder::Descending,
        pb::SortOrder::Unspecified,
        pb::RankStyle::Competition,
        pb::ResetKind::Never,
    )
}

impl Harness {
    async fn create(&mut self, id: &str, d: pb::BoardDefinition) -> pb::BoardDefinition {
        self.client
            .create_board(request(
                pb::CreateBoardRequest { board_id: id.into(), definition: Some(d) },
                &boss(),
            ))
            .await
            .unwrap()
            .into_inner()
            .board
            .unwrap()
    }

    async fn submit_as(
        &mut self,
        token: &str,
        board: &str,
        who: &str,
        score: f64,
        event: &str,
    ) -> Result<pb::SubmitScoreResponse, tonic::Status> {
        let r = pb::SubmitScoreRequest {
            board: board.into(),
            member: who.into(),
            score,
            event_id: event.into(),
            ..Default::default()
        };
        self.client.submit_score(request(r, token)).await.map(|r| r.into_inner())
    }

    async fn submit(
        &mut self,
        board: &str,
        who: &str,
        score: f64,
        event: &str,
    ) -> pb::SubmitScoreResponse {
        self.submit_as(&boss(), board, who, score, event).await.unwrap()
    }

    async fn page(
        &mut self,
        token: &str,
        r: pb::GetLeaderboardRequest,
    ) -> pb::GetLeaderboardResponse {
        self.client.get_leaderboard(request(r, token)).await.unwrap().into_inner()
    }

    async fn all(&mut self, board: &str, period: &str) -> Vec<(String, f64, i64)> {
        let r = pb::GetLeaderboardRequest {
            board: board.into(),
            page_size: 100,
            period: period.into(),
            ..Default::default()
        };
        let page = self.page(&admin(), r).await;
        page.entries.into_iter().map(|e| (e.member, e.score, e.rank)).collect()
    }

    /// Per-member sums of the period's non-void facts, computed by SQL itself.
    async fn sql_sums(&self, board: &str, period: &str) -> BTreeMap<String, f64> {
        let backend = self.db.db.get_database_backend();
        let sql = "SELECT f.member, SUM(f.score) FROM lb_facts f \
             WHERE f.board = $1 AND f.period = $2 \
             AND NOT EXISTS (SELECT 1 FROM lb_voids v WHERE v.board = f.board \
               AND (v.target = 'm:' || f.member OR v.target = 'e:' || f.fact_id)) \
             GROUP BY f.member";
        let sql = if matches!(backend, sea_orm::DatabaseBackend::Sqlite) {
            sql.replace("$1", "?").replace("$2", "?")
        } else {
            sql.to_string()
        };
        let rows = self
            .db
            .db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [board.into(), period.into()],
            ))
            .await
            .unwrap();
        rows.into_iter()
            .map(|r| {
                (r.try_get_by_index::<String>(0).unwrap(), r.try_get_by_index::<f64>(1).unwrap())
            })
            .collect()
    }
}

async fn next(s: &mut Streaming<pb::WatchLeaderboardResponse>) -> pb::WatchLeaderboardResponse {
    tokio::time::timeout(PATIENCE, s.next()).await.expect("a snapshot in time").unwrap().unwrap()
}

async fn definitions_are_checked_owned_and_idempotent(b: Backend) {
    let mut h = harness(b).await;
    // Every bad field at once.
    let bad = pb::BoardDefinition {
        title: "x\u{7}".into(),
        operator: 9,
        order: 7,
        reset: Some(pb::Reset {
            kind: pb::ResetKind::Cron as i32,
            cron: "61 * * * *".into(),
            time_zone: "Mars/Olympus".into(),
        }),
        employer_id: "no spaces".into(),
        ..Default::default()
    };
    let err = h
        .client
        .create_board(request(
            pb::CreateBoardRequest { board_id: "Bad Id".into(), definition: Some(bad) },
            &admin(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violations(&err);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "board_id",
            "definition.employer_id",
            "definition.operator",
            "definition.order",
            "definition.reset.cron",
            "definition.reset.time_zone",
            "definition.title",
        ]
    );
    // Employees may not define boards; employer admins only their own employer's.
    let req = |d: pb::BoardDefinition| pb::CreateBoardRequest {
        board_id: "steps".into(),
        definition: Some(d),
    };
    let err = h.client.create_board(request(req(sum_board()), &member("ann"))).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let other = pb::BoardDefinition { employer_id: "globex".into(), ..sum_board() };
    let err = h.client.create_board(request(req(other), &boss())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // An employer admin's board is their employer's; the same request again is the same board.
    let made = h.create("steps", sum_board()).await;
    assert_eq!(
        (made.board.as_str(), made.employer_id.as_str(), made.owner.as_str()),
        ("board:steps", "acme", "leaderboard")
    );
    assert_eq!((made.current_period.as_str(), made.next_reset_time), ("all", None));
    assert_eq!(h.create("steps", sum_board()).await, made);
    let again = pb::CreateBoardRequest { board_id: "steps".into(), definition: Some(sum_board()) };
    let again = h.client.create_board(request(again, &boss())).await.unwrap().into_inner();
    assert!(!again.created);
    let changed = pb::BoardDefinition { title: "Other".into(), ..sum_board() };
    let err = h.client.create_board(request(req(changed), &boss())).await.unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::AlreadyExists, "BOARD_EXISTS".into()));
    // Another employer's people do not see it; built-in owners' boards read as theirs.
    let err = h
        .client
        .get_board(request(
            pb::GetBoardRequest { board: "board:steps".into() },
            &bearer("x", Role::Employee, Some("globex")),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let weekly = def(
        pb::ScoreOperator::Best,
        pb::SortOrder::Ascending,
        pb::SortOrder::Descending,
        pb::RankStyle::Dense,
        pb::ResetKind::Weekly,
    );
    let w = h
        .create(
            "golf",
            pb::BoardDefinition {
                reset: Some(pb::Reset {
                    kind: pb::ResetKind::Weekly as i32,
                    cron: String::new(),
                    time_zone: "Europe/Paris".into(),
                }),
                ..weekly
            },
        )
        .await;
    assert_eq!(w.current_period, "2026-W49");
    // Monday 2026-12-07 00:00 in Paris is 2026-12-06 23:00 UTC.
    assert_eq!(
        w.next_reset_time,
        Some(to_proto(Utc.with_ymd_and_hms(2026, 12, 6, 23, 0, 0).unwrap()))
    );
}

async fn operators_orders_and_ranks_come_from_the_definition(b: Backend) {
    let mut h = harness(b).await;
    // Golf: best (lowest) round, ties broken by the higher subscore, dense ranks.
    h.create(
        "golf",
        def(
            pb::ScoreOperator::Best,
            pb::SortOrder::Ascending,
            pb::SortOrder::Descending,
            pb::RankStyle::Dense,
            pb::ResetKind::Never,
        ),
    )
    .await;
    for (who, score, sub, ev) in [
        ("ann", 72.0, 1.0, "a1"),
        ("ann", 70.0, 2.0, "a2"),
        ("ann", 75.0, 9.0, "a3"),
        ("bob", 70.0, 2.0, "b1"),
        ("cy", 70.0, 5.0, "c1"),
        ("dee", 68.0, 0.0, "d1"),
    ] {
        let r = pb::SubmitScoreRequest {
            board: "board:golf".into(),
            member: who.into(),
            score,
            subscore: sub,
            event_id: ev.into(),
            ..Default::default()
        };
        h.client.submit_score(request(r, &boss())).await.unwrap();
    }
    let page = h
        .page(
            &admin(),
            pb::GetLeaderboardRequest {
                board: "board:golf".into(),
                page_size: 10,
                ..Default::default()
            },
        )
        .await;
    let got: Vec<(i64, &str, f64, f64)> =
        page.entries.iter().map(|e| (e.rank, e.member.as_str(), e.score, e.subscore)).collect();
    assert_eq!(
        got,
        vec![
            (1, "dee", 68.0, 0.0),
            (2, "cy", 70.0, 5.0),
            (3, "bob", 70.0, 2.0),
            (3, "ann", 70.0, 2.0)
        ]
    );
    // Set: the latest by occurred_at, whatever order they arrive in.
    h.create(
        "weight",
        def(
            pb::ScoreOperator::Set,
            pb::SortOrder::Descending,
            pb::SortOrder::Unspecified,
            pb::RankStyle::Competition,
            pb::ResetKind::Never,
        ),
    )
    .await;
    for (score, minutes, ev) in [(80.0, 3, "w3"), (90.0, 1, "w1"), (85.0, 2, "w2")] {
        let r = pb::SubmitScoreRequest {
            board: "board:weight".into(),
            score,
            event_id: ev.into(),
            occurred_at: Some(to_proto(t0() - chrono::Duration::minutes(10 - minutes))),
            ..Default::default()
        };
        h.client.submit_score(request(r, &member("ann"))).await.unwrap();
    }
    assert_eq!(h.all("board:weight", "").await, vec![("ann".into(), 80.0, 1)]);
}

async fn submit_score_is_idempotent_checked_and_permissioned(b: Backend) {
    let mut h = harness(b).await;
    h.create("steps", sum_board()).await;
    let first = h.submit("board:steps", "ann", 10.0, "e1").await;
    assert!(first.created);
    assert_eq!(first.period, "all");
    let entry = first.entry.unwrap();
    assert_eq!((entry.rank, entry.member.as_str(), entry.score), (1, "ann", 10.0));
    // A retry answers the stored fact; another body under the same id is a conflict.
    assert!(!h.submit("board:steps", "ann", 10.0, "e1").await.created);
    let err = h.submit_as(&boss(), "board:steps", "ann", 11.0, "e1").await.unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::AlreadyExists, "EVENT_ID_CONFLICT".into()));
    assert_eq!(h.all("board:steps", "").await, vec![("ann".into(), 10.0, 1)]);
    // Members submit for themselves only; another employer's admin sees no board.
    h.submit_as(&member("bob"), "board:steps", "", 4.0, "e2").await.unwrap();
    let err = h.submit_as(&member("bob"), "board:steps", "ann", 4.0, "e3").await.unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::PermissionDenied, "SUBMIT_NOT_ALLOWED".into()));
    let stranger = bearer("boss2", Role::EmployerAdmin, Some("globex"));
    let err = h.submit_as(&stranger, "board:steps", "ann", 4.0, "e4").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Bad fields, all at once; nothing stored.
    let r = pb::SubmitScoreRequest {
        board: "board:steps".into(),
        member: "a\u{0}".into(),
        score: f64::NAN,
        subscore: 2e12,
        event_id: String::new(),
        occurred_at: Some(prost_types::Timestamp { seconds: -5, nanos: 0 }),
    };
    let err = h.client.submit_score(request(r, &boss())).await.unwrap_err();
    assert_eq!(violations(&err), vec!["member", "score", "subscore", "event_id", "occurred_at"]);
    let ahead = pb::SubmitScoreRequest {
        board: "board:steps".into(),
        score: 1.0,
        event_id: "future".into(),
        occurred_at: Some(to_proto(t0() + chrono::Duration::minutes(6))),
        ..Default::default()
    };
    let err = h.client.submit_score(request(ahead, &boss())).await.unwrap_err();
    assert_eq!(violations(&err), vec!["occurred_at"]);
    // Challenge boards take progress, not submitted scores (and unknown ones are not found).
    let err = h.submit_as(&admin(), "board:nope", "ann", 1.0, "x").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        h.all("board:steps", "").await,
        vec![("ann".into(), 10.0, 1), ("bob".into(), 4.0, 2)]
    );
}

async fn pages_go_both_ways_and_carry_the_callers_place(b: Backend) {
    let mut h = harness(b).await;
    h.create("steps", sum_board()).await;
    // m00 … m24 with scores 0 … 24 (m24 is first); "me" = m05, rank 20 of 25.
    for i in 0..25 {
        h.submit("board:steps", &format!("m{i:02}"), f64::from(i), &format!("e{i}")).await;
    }
    let req = |token: &str, start: i64| pb::GetLeaderboardRequest {
        board: "board:steps".into(),
        page_size: 10,
        page_token: token.into(),
        start_rank: start,
        ..Default::default()
    };
    let me = member("m05");
    let first = h.page(&me, req("", 0)).await;
    assert_eq!((first.entries[0].member.as_str(), first.prev_page_token.as_str()), ("m24", ""));
    let mine = first.me.clone().unwrap();
    let entry = mine.entry.unwrap();
    assert_eq!((entry.rank, entry.position, mine.top_percent, mine.page), (20, 19, 80, 2));
    // The token of "my page" reads the page I am on.
    let my_page = h.page(&me, req(&mine.page_token, 0)).await;
    assert!(my_page.entries.iter().any(|e| e.member == "m05"));
    assert_eq!(my_page.entries[0].rank, 11);
    // Forward and back again.
    let second = h.page(&me, req(&first.next_page_token, 0)).await;
    assert_eq!(second.entries[0].rank, 11);
    let back = h.page(&me, req(&second.prev_page_token, 0)).await;
    assert_eq!(back.entries, first.entries);
    // From any rank.
    let at = h.page(&me, req("", 23)).await;
    assert_eq!(at.entries.iter().map(|e| e.rank).collect::<Vec<_>>(), vec![23, 24, 25]);
    assert_eq!((at.next_page_token.as_str(), at.prev_page_token.is_empty()), ("", false));
    // Team view: members on the board, best first; strangers left out.
    let team = h
        .client
        .get_ranks(request(
            pb::GetRanksRequest {
                board: "board:steps".into(),
                members: vec!["m03".into(), "m20".into(), "ghost".into(), "m03".into()],
                period: String::new(),
            },
            &me,
        ))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(&str, i64)> = team.entries.iter().map(|e| (e.member.as_str(), e.rank)).collect();
    assert_eq!((got, team.total_members), (vec![("m20", 5), ("m03", 22)], 25));
    let err = h
        .client
        .get_ranks(request(
            pb::GetRanksRequest { board: "board:steps".into(), ..Default::default() },
            &me,
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["members"]);
    // One member's places on several boards at once, each board answering on its own.
    let places = |member: &str, boards: &[&str]| pb::GetPlacesRequest {
        member: member.into(),
        boards: boards.iter().map(|b| b.to_string()).collect(),
    };
    let got = h
        .client
        .get_places(request(places("", &["board:steps", "board:nope", "board:steps"]), &me))
        .await
        .unwrap()
        .into_inner()
        .places;
    let got: Vec<(&str, pb::PlaceStatus, i64, i64)> = got
        .iter()
        .map(|p| {
            (p.board.as_str(), p.status(), p.entry.as_ref().map_or(0, |e| e.rank), p.total_members)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("board:steps", pb::PlaceStatus::Ranked, 20, 25),
            ("board:nope", pb::PlaceStatus::BoardNotFound, 0, 0),
        ]
    );
    let ghost = h
        .client
        .get_places(request(places("ghost", &["board:steps"]), &me))
        .await
        .unwrap()
        .into_inner()
        .places;
    assert_eq!(ghost[0].status(), pb::PlaceStatus::NotOnBoard);
    let err = h.client.get_places(request(places("", &[]), &me)).await.unwrap_err();
    assert_eq!(violations(&err), vec!["boards"]);
    let err = h
        .client
        .get_places(request(places("", &["board:steps", "not a board"]), &me))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["boards[1]"]);
    // GetRank of oneself, with percentile and page.
    let rank = h
        .client
        .get_rank(request(
            pb::GetRankRequest {
                board: "board:steps".into(),
                neighbours: 1,
                page_size: 5,
                ..Default::default()
            },
            &me,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (rank.entry.unwrap().rank, rank.top_percent, rank.page, rank.window.len()),
        (20, 80, 4, 3)
    );
}

async fn a_closed_period_is_archived_equal_to_sql_and_stays_readable(b: Backend) {
    let mut h = harness(b).await;
    h.create(
        "daily",
        def(
            pb::ScoreOperator::Sum,
            pb::SortOrder::Descending,
            pb::SortOrder::Unspecified,
            pb::RankStyle::Competition,
            pb::ResetKind::Daily,
        ),
    )
    .await;
    let board = "board:daily";
    h.clock.set(Utc.with_ymd_and_hms(2026, 11, 30, 23, 58, 30).unwrap());
    // 2026-11-30: load from three writers while the day ends and the closer runs.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let mut client = h.client.clone();
            tokio::spawn(async move {
                let (mut ok, mut closed) = (Vec::new(), 0);
                for i in 0..60 {
                    let r = pb::SubmitScoreRequest {
                        board: board.into(),
                        member: format!("m{}", (i + w) % 7),
                        score: f64::from(i % 5 + 1),
                        event_id: format!("w{w}-{i}"),
                        occurred_at: Some(to_proto(
                            Utc.with_ymd_and_hms(2026, 11, 30, 23, 59, 0).unwrap(),
                        )),
                        ..Default::default()
                    };
                    match client.submit_score(request(r, &boss())).await {
                        Ok(r) => ok.push(r.into_inner().period),
                        Err(e) => {
                            assert_eq!(reason(&e), "PERIOD_CLOSED");
                            closed += 1;
                        }
                    }
                }
                (ok, closed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The day is over and its grace has passed: the closer archives it mid-load.
    h.clock.set(Utc.with_ymd_and_hms(2026, 12, 1, 0, 1, 1).unwrap());
    let mut closed_now = 0;
    for _ in 0..3 {
        closed_now += h.background.close_round().await.unwrap();
    }
    let mut accepted = 0;
    for w in writers {
        let (ok, _closed) = w.await.unwrap();
        assert!(ok.iter().all(|p| p == "2026-11-30"));
        accepted += ok.len();
    }
    // Closed once, however many rounds; late facts were refused, never lost.
    h.background.close_round().await.unwrap();
    assert_eq!(closed_now, 1);
    let archived = h.all(board, "2026-11-30").await;
    let sums = h.sql_sums(board, "2026-11-30").await;
    let got: BTreeMap<String, f64> = archived.iter().map(|(m, s, _)| (m.clone(), *s)).collect();
    assert_eq!(got, sums, "the archive equals SQL");
    // Every accepted fact is stored in the period (and so in the archive); refused ones are not.
    let backend = h.db.db.get_database_backend();
    let count_sql = if matches!(backend, sea_orm::DatabaseBackend::Sqlite) {
        "SELECT COUNT(*) FROM lb_facts WHERE board = ? AND period = ?"
    } else {
        "SELECT COUNT(*) FROM lb_facts WHERE board = $1 AND period = $2"
    };
    let stored =
        h.db.db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                count_sql,
                [board.into(), "2026-11-30".into()],
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<i64>(0)
            .unwrap();
    assert_eq!(stored as usize, accepted);
    assert!(accepted > 0);
    let err = h.submit_as(&boss(), board, "m1", 1.0, "late").await;
    // A fact with no time lands in the new day; one for the closed day is refused.
    assert_eq!(err.unwrap().period, "2026-12-01");
    let late = pb::SubmitScoreRequest {
        board: board.into(),
        member: "m1".into(),
        score: 1.0,
        event_id: "late-for-yesterday".into(),
        occurred_at: Some(to_proto(Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap())),
        ..Default::default()
    };
    let err = h.client.submit_score(request(late, &boss())).await.unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::FailedPrecondition, "PERIOD_CLOSED".into()));
    // The current period is the new day; the periods list shows both.
    assert_eq!(h.all(board, "").await, vec![("m1".into(), 1.0, 1)]);
    let periods = h
        .client
        .list_periods(request(
            pb::ListPeriodsRequest { board: board.into(), ..Default::default() },
            &member("m1"),
        ))
        .await
        .unwrap()
        .into_inner()
        .periods;
    let got: Vec<(&str, bool)> = periods.iter().map(|p| (p.period.as_str(), p.closed)).collect();
    assert_eq!(got, vec![("2026-12-01", false), ("2026-11-30", true)]);
    assert_eq!(periods[1].members, archived.len() as i64);
    // A made-up period id is a field error; a quiet past day reads as empty.
    let err = h
        .client
        .get_leaderboard(request(
            pb::GetLeaderboardRequest {
                board: board.into(),
                period: "2026-W49".into(),
                ..Default::default()
            },
            &admin(),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["period"]);
    assert!(h.all(board, "2026-11-01").await.is_empty());
}

async fn a_void_recounts_the_board_for_every_watcher_and_stays_equal_to_sql(b: Backend) {
    let mut h = harness(b).await;
    h.create("steps", sum_board()).await;
    let board = "board:steps";
    for (who, score, ev) in
        [("ann", 10.0, "a1"), ("ann", 5.0, "a2"), ("bob", 12.0, "b1"), ("cy", 3.0, "c1")]
    {
        h.submit(board, who, score, ev).await;
    }
    let watch =
        pb::WatchLeaderboardRequest { board: board.into(), top_n: 10, ..Default::default() };
    let mut stream =
        h.client.watch_leaderboard(request(watch, &member("cy"))).await.unwrap().into_inner();
    let first = next(&mut stream).await;
    assert_eq!(first.entries[0].member, "ann");
    // Only admins void; one fact, then a whole member.
    let void = |member: &str, event: &str| pb::VoidEntryRequest {
        board: board.into(),
        member: member.into(),
        event_id: event.into(),
        reason: "revoked device data".into(),
    };
    let err = h.client.void_entry(request(void("", "a1"), &boss())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = h.client.void_entry(request(void("ann", "a1"), &admin())).await.unwrap_err();
    assert_eq!(violations(&err), vec!["member"]);
    let done = h.client.void_entry(request(void("", "a1"), &admin())).await.unwrap().into_inner();
    assert_eq!((done.created, done.periods), (true, vec!["all".to_string()]));
    assert!(
        !h.client.void_entry(request(void("", "a1"), &admin())).await.unwrap().into_inner().created
    );
    let corrected = loop {
        let s = next(&mut stream).await;
        if s.entries[0].member == "bob" {
            break s;
        }
    };
    let got: Vec<(&str, f64)> =
        corrected.entries.iter().map(|e| (e.member.as_str(), e.score)).collect();
    assert_eq!(got, vec![("bob", 12.0), ("ann", 5.0), ("cy", 3.0)]);
    h.client.void_entry(request(void("bob", ""), &admin())).await.unwrap();
    // bob's later scores stay void too.
    h.submit(board, "bob", 100.0, "b2").await;
    let all = h.all(board, "").await;
    assert_eq!(all, vec![("ann".into(), 5.0, 1), ("cy".into(), 3.0, 2)]);
    let sums = h.sql_sums(board, "all").await;
    assert_eq!(all.iter().map(|(m, s, _)| (m.clone(), *s)).collect::<BTreeMap<_, _>>(), sums);
    let err = h.client.void_entry(request(void("", "nope"), &admin())).await.unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::NotFound, "EVENT_NOT_ON_BOARD".into()));
}

async fn hidden_names_and_the_employer_minimum(b: Backend) {
    let mut h = harness(b).await;
    h.create("steps", sum_board()).await;
    let board = "board:steps";
    for (who, score) in [("ann", 10.0), ("bob", 7.0), ("cy", 3.0)] {
        h.submit(board, who, score, &format!("e-{who}")).await;
    }
    let p = h
        .client
        .set_privacy(request(pb::SetPrivacyRequest { hide_name: true }, &member("ann")))
        .await
        .unwrap()
        .into_inner()
        .privacy
        .unwrap();
    assert!(p.hide_name && p.pseudonym.starts_with("anon-"));
    let read = |_: String| pb::GetLeaderboardRequest { board: board.into(), ..Default::default() };
    let others = h.page(&member("bob"), read(member("bob"))).await;
    assert_eq!(
        (others.entries[0].member.as_str(), others.entries[0].pseudonymous),
        (p.pseudonym.as_str(), true)
    );
    let own = h.page(&member("ann"), read(member("ann"))).await;
    assert_eq!((own.entries[0].member.as_str(), own.entries[0].pseudonymous), ("ann", false));
    let admin_view = h.page(&admin(), read(admin())).await;
    assert_eq!(admin_view.entries[0].member, "ann");
    // Asked about by id, a hidden member is not on the board for others.
    let by_id =
        pb::GetRankRequest { board: board.into(), member: "ann".into(), ..Default::default() };
    let err = h.client.get_rank(request(by_id.clone(), &member("bob"))).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(h.client.get_rank(request(by_id, &member("ann"))).await.is_ok());
    // The employer's minimum: 5 members before anyone but admins sees the board.
    let set = pb::SetEmployerSettingsRequest { employer_id: String::new(), min_members: 5 };
    let err =
        h.client.set_employer_settings(request(set.clone(), &member("bob"))).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let s = h
        .client
        .set_employer_settings(request(set, &boss()))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!((s.employer_id.as_str(), s.min_members), ("acme", 5));
    let withheld = h.page(&member("bob"), read(member("bob"))).await;
    assert!(withheld.withheld && withheld.entries.is_empty() && withheld.me.is_none());
    assert_eq!(withheld.total_members, 3);
    assert!(!h.page(&admin(), read(admin())).await.withheld);
    for who in ["dee", "eve"] {
        h.submit(board, who, 1.0, &format!("e-{who}")).await;
    }
    assert_eq!(h.page(&member("bob"), read(member("bob"))).await.entries.len(), 5);
}

async fn rank_change_notices_reach_exactly_the_members_they_concern(b: Backend) {
    let mut h = harness(b).await;
    h.create("steps", sum_board()).await;
    let board = "board:steps";
    for (who, score) in [("ann", 30.0), ("bob", 20.0), ("cy", 10.0)] {
        h.submit(board, who, score, &format!("e-{who}")).await;
    }
    let watch = |n: f64| pb::WatchLeaderboardRequest {
        board: board.into(),
        top_n: 3,
        neighbours: 1,
        with_me: true,
        notify_passed: true,
        notify_within: n,
    };
    let mut streams = BTreeMap::new();
    for who in ["ann", "bob", "cy"] {
        let mut s = h
            .client
            .watch_leaderboard(request(watch(4.0), &member(who)))
            .await
            .unwrap()
            .into_inner();
        let first = next(&mut s).await;
        assert!(first.notices.is_empty(), "no notice on the first view");
        assert_eq!(first.me.unwrap().member, who);
        streams.insert(who, s);
    }
    // cy passes bob (not ann): bob is told he was passed by cy; cy and ann get no notice.
    h.submit(board, "cy", 15.0, "e-cy-2").await;
    let mut seen: BTreeMap<&str, Vec<pb::RankNotice>> = BTreeMap::new();
    for (who, s) in streams.iter_mut() {
        let view = loop {
            let v = next(s).await;
            if v.entries.iter().any(|e| e.member == "cy" && e.score == 25.0) {
                break v;
            }
        };
        seen.insert(who, view.notices);
    }
    assert_eq!(seen["bob"].len(), 1, "{seen:?}");
    let passed = &seen["bob"][0];
    assert_eq!(
        (passed.kind, passed.old_rank, passed.new_rank, passed.other.as_str()),
        (pb::rank_notice::Kind::Passed as i32, 2, 3, "cy")
    );
    // cy (25) is now within 4 of ann (30)? No: 5 points. ann gets nothing either.
    assert!(seen["ann"].is_empty() && seen["cy"].is_empty(), "{seen:?}");
    // bob comes within 4 of cy (21 vs 25): only bob is told.
    h.submit(board, "bob", 1.0, "e-bob-2").await;
    let mut seen: BTreeMap<&str, Vec<pb::RankNotice>> = BTreeMap::new();
    for (who, s) in streams.iter_mut() {
        let view = loop {
            let v = next(s).await;
            if v.entries.iter().any(|e| e.member == "bob" && e.score == 21.0) {
                break v;
            }
        };
        seen.insert(who, view.notices);
    }
    assert!(seen["ann"].is_empty() && seen["cy"].is_empty(), "{seen:?}");
    let reach = &seen["bob"];
    assert_eq!(reach.len(), 1, "{seen:?}");
    assert_eq!(
        (reach[0].kind, reach[0].other.as_str(), reach[0].gap),
        (pb::rank_notice::Kind::WithinReach as i32, "cy", 4.0)
    );
}

async fn facts_whose_apply_failed_are_applied_by_the_relay(b: Backend) {
    let mut h = harness(b).await;
    h.create("steps", sum_board()).await;
    h.submit("board:steps", "ann", 1.0, "e0").await;
    // Stored, never applied: what a crash between the commit and the apply leaves.
    let fact = NewFact {
        board: "board:steps".into(),
        period: "all".into(),
        period_start: None,
        period_end: None,
        member: "bob".into(),
        event_id: "crashed".into(),
        score: 9.0,
        subscore: 0.0,
        occurred_at: t0(),
    };
    assert!(matches!(h.store.insert_fact(&fact).await.unwrap(), Inserted::Created(_)));
    assert_eq!(h.all("board:steps", "").await.len(), 1);
    h.background.relay_round().await.unwrap();
    assert_eq!(
        h.all("board:steps", "").await,
        vec![("bob".into(), 9.0, 1), ("ann".into(), 1.0, 2)]
    );
    assert!(h.store.unapplied(10).await.unwrap().is_empty());
    // Applied twice (a relay racing the inline apply) counts once.
    h.background.relay_round().await.unwrap();
    assert_eq!(
        h.all("board:steps", "").await,
        vec![("bob".into(), 9.0, 1), ("ann".into(), 1.0, 2)]
    );
}

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Embedded).await;
                }
            )+
        }
        mod mesh {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Mesh).await;
                }
            )+
        }
    };
}

both!(
    definitions_are_checked_owned_and_idempotent,
    operators_orders_and_ranks_come_from_the_definition,
    submit_score_is_idempotent_checked_and_permissioned,
    pages_go_both_ways_and_carry_the_callers_place,
    a_closed_period_is_archived_equal_to_sql_and_stays_readable,
    a_void_recounts_the_board_for_every_watcher_and_stays_equal_to_sql,
    hidden_names_and_the_employer_minimum,
    rank_change_notices_reach_exactly_the_members_they_concern,
    facts_whose_apply_failed_are_applied_by_the_relay,
);
