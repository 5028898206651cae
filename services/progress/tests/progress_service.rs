//! The progress service over real gRPC, with the real challenge service beside it, the real
//! batch writer, on SQLite + the in-process bus and on PostgreSQL + Redis Streams: one suite,
//! two backends.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use ewpm_kit::{
    CancellationToken,
    auth::{Role, ServiceToken},
    batch::BatchRule,
    bus::{Bus, MemoryBus, Message as BusMessage, Once, RedisBus},
    clock::{FixedClock, SharedClock},
    consumer::{Consumer, ConsumerConfig, Handler},
    timestamp::{self, to_proto},
};
use ewpm_progress::{
    PROGRESS_TOPIC, SCORE_DELTAS_TOPIC, WRITER_GROUP,
    activity::{Activity, ActivityKind},
    app,
    store::{ProgressStore, Summary},
    writer::Writer,
};
use ewpm_proto::{
    activity::v1 as apb,
    challenge::v1::{self as cpb, challenge_service_client::ChallengeServiceClient},
    leaderboard::v1::ScoreDelta,
    progress::v1::{
        self as pb, ACTIVITY_TOPIC, ActivityBatch, ActivityRecorded,
        progress_service_client::ProgressServiceClient,
    },
};
use ewpm_testkit::{
    Spawned, TestDb, bearer, key_prefix, keys, reason, request as req, servers, spawn_grpc,
    violations,
};
use prost::Message;
use tonic::{Code, Request, Status, transport::Channel};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Embedded,
    Mesh,
}

struct Harness {
    progress: ProgressServiceClient<Channel>,
    challenges: ChallengeServiceClient<Channel>,
    bus: Arc<dyn Bus>,
    store: ProgressStore,
    /// Every activity read from the `activity` topic so far (group `test-activity`).
    seen: std::sync::Mutex<Vec<Activity>>,
    writer_stop: CancellationToken,
    writer: Option<tokio::task::JoinHandle<()>>,
    /// The Redis key prefix (mesh).
    prefix: String,
    challenge_server: Spawned,
    _progress_server: Spawned,
    db: TestDb,
}

/// The activity an `ActivityRecorded` from the bus describes.
fn activity_of(e: ActivityRecorded) -> Activity {
    Activity {
        id: e.activity_id.parse().unwrap(),
        kind: ActivityKind::from_proto(e.kind).unwrap(),
        user_id: e.user_id,
        employer_id: (!e.employer_id.is_empty()).then_some(e.employer_id),
        value: e.value,
        occurred_at: timestamp::from_proto(&e.occurred_at.unwrap()).unwrap(),
    }
}

/// The activities of a message of the `activity` topic: an `ActivityBatch`, never empty.
fn activities_of(payload: &[u8]) -> Vec<Activity> {
    let batch = ActivityBatch::decode(payload).unwrap();
    assert!(!batch.activities.is_empty(), "a writer published an empty batch");
    batch.activities.into_iter().map(activity_of).collect()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap()
}

async fn harness(backend: Backend) -> Harness {
    harness_with(backend, ewpm_progress::settings::ProgressSettings::default()).await
}

async fn harness_with(
    backend: Backend,
    settings: ewpm_progress::settings::ProgressSettings,
) -> Harness {
    let prefix = key_prefix();
    let (db, bus): (TestDb, Arc<dyn Bus>) = match backend {
        Backend::Embedded => (
            TestDb::sqlite(&[&ewpm_progress::MODULE, &ewpm_challenge::MODULE]).await.unwrap(),
            MemoryBus::new(),
        ),
        Backend::Mesh => (
            TestDb::postgres(&[&ewpm_progress::MODULE, &ewpm_challenge::MODULE]).await.unwrap(),
            Arc::new(RedisBus::connect(&servers().redis_url, &prefix).await.unwrap()),
        ),
    };
    let clock: SharedClock = FixedClock::new(now());
    let conn = db.db.clone();
    let c = clock.clone();
    let challenge_server = spawn_grpc(|mount, grpc| {
        mount.add(ewpm_challenge::app::build(conn, c, grpc));
    })
    .await
    .unwrap();
    let service = {
        let (conn, bus, clock) = (db.db.clone(), bus.clone(), clock.clone());
        let uri = challenge_server.uri();
        let token = Arc::new(ServiceToken::new(keys(), "progress"));
        move |mount: &mut ewpm_kit::server::Mount, grpc: &ewpm_kit::settings::GrpcSettings| {
            mount.add(app::build(conn, bus, &uri, token, clock, &settings, grpc).unwrap());
        }
    };
    let progress_server = spawn_grpc(service).await.unwrap();
    let store = ProgressStore::new(db.db.clone());
    let writer_stop = CancellationToken::new();
    let writer = Consumer::new(
        bus.clone(),
        Writer::new(bus.clone(), store.clone()),
        ConsumerConfig {
            topic: PROGRESS_TOPIC,
            group: WRITER_GROUP,
            consumer: "test-writer".into(),
            rule: BatchRule { size: 50, max_wait: Duration::from_millis(100) },
            reclaim_idle: Duration::from_secs(30),
            take: 0,
        },
    );
    bus.ensure_group(SCORE_DELTAS_TOPIC, "test-deltas").await.unwrap();
    bus.ensure_group(ACTIVITY_TOPIC, "test-activity").await.unwrap();
    let handle = tokio::spawn(writer.run(writer_stop.clone()));
    Harness {
        progress: ProgressServiceClient::connect(progress_server.uri()).await.unwrap(),
        challenges: ChallengeServiceClient::connect(challenge_server.uri()).await.unwrap(),
        bus,
        store,
        seen: std::sync::Mutex::default(),
        writer_stop,
        writer: Some(handle),
        prefix,
        challenge_server,
        _progress_server: progress_server,
        db,
    }
}

fn admin() -> String {
    bearer("admin-1", Role::Admin, None)
}
fn alice() -> String {
    bearer("alice", Role::Employee, Some("acme"))
}
fn bob_of_globex() -> String {
    bearer("bob", Role::Employee, Some("globex"))
}

impl Harness {
    /// A challenge from 1 March to 31 March 2026 (the clock stands at 10 March).
    async fn challenge(&mut self, employer: &str) -> String {
        let created = self
            .challenges
            .create_challenge(req(
                cpb::CreateChallengeRequest {
                    name: "steps".into(),
                    description: String::new(),
                    start_time: Some(to_proto(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap())),
                    end_time: Some(to_proto(Utc.with_ymd_and_hms(2026, 3, 31, 0, 0, 0).unwrap())),
                    goal: Some(cpb::Goal { target: 1000.0, unit: "steps".into() }),
                    employer_id: employer.into(),
                    idempotency_key: String::new(),
                    late_grace_seconds: 0,
                },
                &admin(),
            ))
            .await
            .unwrap();
        created.into_inner().challenge.unwrap().id
    }

    async fn submit(
        &mut self,
        challenge_id: &str,
        value: f64,
        key: &str,
        auth: &str,
    ) -> Result<pb::SubmitProgressResponse, Status> {
        self.progress
            .submit_progress(req(
                pb::SubmitProgressRequest {
                    challenge_id: challenge_id.into(),
                    value,
                    occurred_at: None,
                    idempotency_key: key.into(),
                },
                auth,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Waits until SQL holds `n` entries.
    async fn written(&self, n: i64) -> Summary {
        for _ in 0..200 {
            let s = self.store.summary().await.unwrap();
            if s.entries >= n {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("SQL did not reach {n} entries: {:?}", self.store.summary().await.unwrap());
    }

    /// Every score delta published so far (as far as one read of up to 10,000 shows).
    async fn deltas(&self) -> Vec<ScoreDelta> {
        let got = self
            .bus
            .receive(SCORE_DELTAS_TOPIC, "test-deltas", "t", 10_000, Duration::from_millis(200))
            .await
            .unwrap();
        got.iter().map(|m| ScoreDelta::decode(m.payload.as_slice()).unwrap()).collect()
    }

    async fn stop_writer(&mut self) {
        self.writer_stop.cancel();
        if let Some(h) = self.writer.take() {
            h.await.unwrap();
        }
    }

    /// Starts a writer that splits a batch after `split_after` failures, taking up to 50
    /// queued items in one batch (the previous writer must be stopped).
    fn start_writer(&mut self, split_after: u32) {
        self.start_writer_with(split_after, None);
    }

    /// [`Harness::start_writer`], publishing on `out` (default: the harness's bus).
    fn start_writer_with(&mut self, split_after: u32, out: Option<Arc<dyn Bus>>) {
        let out = out.unwrap_or_else(|| self.bus.clone());
        let writer = Consumer::new(
            self.bus.clone(),
            Writer::new(out, self.store.clone()).split_after_failures(split_after),
            ConsumerConfig {
                topic: PROGRESS_TOPIC,
                group: WRITER_GROUP,
                consumer: "test-writer-2".into(),
                rule: BatchRule { size: 50, max_wait: Duration::from_millis(100) },
                // A read of the stopped writer still blocked in Redis may have taken an entry:
                // take it over soon.
                reclaim_idle: Duration::from_millis(300),
                take: 0,
            },
        );
        self.writer_stop = CancellationToken::new();
        self.writer = Some(tokio::spawn(writer.run(self.writer_stop.clone())));
    }

    /// Stops the challenge service (as if it, or its database, were down).
    async fn stop_challenge_service(&mut self) {
        self.challenge_server.shutdown.cancel();
        (&mut self.challenge_server.handle).await.unwrap().unwrap();
    }

    /// A challenge from 1 February to `end` with `grace` seconds of late grace.
    async fn ended_challenge(&mut self, end: DateTime<Utc>, grace: i32) -> String {
        let created = self
            .challenges
            .create_challenge(req(
                cpb::CreateChallengeRequest {
                    name: "february".into(),
                    description: String::new(),
                    start_time: Some(to_proto(Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap())),
                    end_time: Some(to_proto(end)),
                    goal: Some(cpb::Goal { target: 10.0, unit: "km".into() }),
                    employer_id: String::new(),
                    idempotency_key: String::new(),
                    late_grace_seconds: grace,
                },
                &admin(),
            ))
            .await
            .unwrap();
        created.into_inner().challenge.unwrap().id
    }

    async fn submit_at(
        &mut self,
        challenge_id: &str,
        value: f64,
        at: DateTime<Utc>,
    ) -> Result<pb::SubmitProgressResponse, Status> {
        self.progress
            .submit_progress(req(
                pb::SubmitProgressRequest {
                    challenge_id: challenge_id.into(),
                    value,
                    occurred_at: Some(to_proto(at)),
                    idempotency_key: String::new(),
                },
                &alice(),
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Every dead letter, one page of `page_size` at a time.
    async fn dead_letters(&mut self, page_size: i32) -> Vec<pb::DeadLetter> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .progress
                .list_dead_letters(req(
                    pb::ListDeadLettersRequest { page_size, page_token: page_token.clone() },
                    &admin(),
                ))
                .await
                .unwrap()
                .into_inner();
            all.extend(page.dead_letters);
            if page.next_page_token.is_empty() {
                return all;
            }
            page_token = page.next_page_token;
        }
    }
}

/// The `RetryInfo` delay of a status.
fn retry_delay(status: &Status) -> Option<Duration> {
    use tonic_types::StatusExt;
    status.get_error_details().retry_info().and_then(|r| r.retry_delay)
}

async fn an_accepted_entry_reaches_sql_and_emits_its_score_delta(mut h: Harness) {
    let challenge = h.challenge("").await;
    let accepted = h.submit(&challenge, 120.0, "", &alice()).await.unwrap();
    assert_eq!(
        (accepted.challenge_id.as_str(), accepted.user_id.as_str(), accepted.value),
        (challenge.as_str(), "alice", 120.0)
    );
    assert_eq!(accepted.occurred_at, Some(to_proto(now())));
    let summary = h.written(1).await;
    assert_eq!(summary, Summary { entries: 1, total: Some(120.0) });
    let deltas = h.deltas().await;
    assert_eq!(
        deltas
            .iter()
            .map(|d| (d.board.clone(), d.member.clone(), d.delta, d.event_id.clone()))
            .collect::<Vec<_>>(),
        vec![(format!("challenge:{challenge}"), "alice".into(), 120.0, accepted.entry_id.clone())]
    );
    // It was published once on the activity topic, as challenge progress.
    let seen = h.seen_all().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0],
        Activity {
            id: accepted.entry_id.parse().unwrap(),
            kind: ActivityKind::ChallengeProgress,
            user_id: "alice".into(),
            employer_id: Some("acme".into()),
            value: Some(120.0),
            occurred_at: now(),
        }
    );
}

async fn bad_submissions_get_clear_errors_and_queue_nothing(mut h: Harness) {
    let open = h.challenge("").await;
    let acme_only = h.challenge("acme").await;
    let err = h.submit("not-a-uuid", -1.0, &"k".repeat(200), &alice()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["challenge_id", "value", "idempotency_key"]);
    let err = h.submit(&open, 2e6, "", &alice()).await.unwrap_err();
    assert_eq!(violations(&err), ["value"]);
    let err = h.submit(&uuid::Uuid::now_v7().to_string(), 1.0, "", &alice()).await.unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::NotFound, "CHALLENGE_NOT_FOUND".into()));
    // Another employer's challenge does not exist for bob.
    let err = h.submit(&acme_only, 1.0, "", &bob_of_globex()).await.unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::NotFound, "CHALLENGE_NOT_FOUND".into()));
    // Outside the window, and in the future.
    for (at, code, why) in [
        (
            Utc.with_ymd_and_hms(2026, 2, 28, 23, 0, 0).unwrap(),
            Code::FailedPrecondition,
            "CHALLENGE_NOT_ACTIVE",
        ),
        (
            Utc.with_ymd_and_hms(2026, 3, 10, 13, 0, 0).unwrap(),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
    ] {
        let err = h
            .progress
            .submit_progress(req(
                pb::SubmitProgressRequest {
                    challenge_id: open.clone(),
                    value: 1.0,
                    occurred_at: Some(to_proto(at)),
                    idempotency_key: String::new(),
                },
                &alice(),
            ))
            .await
            .unwrap_err();
        assert_eq!((err.code(), reason(&err).as_str()), (code, why), "{at}");
    }
    let err = h
        .progress
        .submit_progress(Request::new(pb::SubmitProgressRequest {
            challenge_id: open.clone(),
            value: 1.0,
            occurred_at: None,
            idempotency_key: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Nothing reached the queue, SQL or the activity topic.
    h.stop_writer().await;
    assert_eq!(h.store.summary().await.unwrap(), Summary { entries: 0, total: None });
    assert_eq!(h.deltas().await, vec![]);
    assert!(h.seen_all().await.is_empty());
}

async fn fifty_concurrent_retries_with_one_key_make_one_entry(mut h: Harness) {
    let challenge = h.challenge("").await;
    let tries = (0..50).map(|_| {
        let mut client = h.progress.clone();
        let challenge = challenge.clone();
        tokio::spawn(async move {
            client
                .submit_progress(req(
                    pb::SubmitProgressRequest {
                        challenge_id: challenge,
                        value: 7.0,
                        occurred_at: None,
                        idempotency_key: "same-key".into(),
                    },
                    &alice(),
                ))
                .await
                .map(|r| r.into_inner().entry_id)
        })
    });
    let ids: std::collections::HashSet<String> =
        futures::future::join_all(tries).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert_eq!(ids.len(), 1, "every retry answers the first entry id");
    // The same key with another body is refused; another user may use the same key.
    let err = h.submit(&challenge, 8.0, "same-key", &alice()).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::InvalidArgument, "IDEMPOTENCY_KEY_REUSED".into())
    );
    let bobs =
        h.submit(&challenge, 7.0, "same-key", &bearer("bob", Role::Employee, None)).await.unwrap();
    assert!(!ids.contains(&bobs.entry_id));
    assert_eq!(h.written(2).await, Summary { entries: 2, total: Some(14.0) });
    h.stop_writer().await;
    assert_eq!(h.store.summary().await.unwrap(), Summary { entries: 2, total: Some(14.0) });
    assert_eq!(h.seen_all().await.len(), 2, "each accepted entry is published once");
}

async fn a_redelivered_entry_is_written_once_and_its_delta_repeats_the_event_id(mut h: Harness) {
    let challenge = h.challenge("").await;
    let accepted = h.submit(&challenge, 5.0, "", &alice()).await.unwrap();
    h.written(1).await;
    // Simulate a writer that died after its commit: the same entry arrives again, once as
    // this release queues it and once as the previous release did (JSON).
    let entry = ewpm_progress::domain::Entry {
        id: accepted.entry_id.parse().unwrap(),
        challenge_id: challenge.parse().unwrap(),
        user_id: "alice".into(),
        employer_id: Some("acme".into()),
        value: 5.0,
        occurred_at: now(),
        accepted_at: now(),
    };
    h.bus
        .publish(
            ewpm_progress::PROGRESS_TOPIC,
            &[
                ewpm_progress::queue::encode(&ewpm_progress::domain::Queued::Progress(
                    entry.clone(),
                )),
                serde_json::to_vec(&entry).unwrap(),
            ],
        )
        .await
        .unwrap();
    // And a message that is no entry at all must not block the queue.
    h.bus.publish(ewpm_progress::PROGRESS_TOPIC, &[b"garbage".to_vec()]).await.unwrap();
    let second = h.submit(&challenge, 6.0, "", &alice()).await.unwrap();
    h.written(2).await;
    h.stop_writer().await;
    assert_eq!(h.store.summary().await.unwrap(), Summary { entries: 2, total: Some(11.0) });
    let events: Vec<String> = h.deltas().await.into_iter().map(|d| d.event_id).collect();
    assert_eq!(
        events,
        vec![
            accepted.entry_id.clone(),
            accepted.entry_id.clone(),
            accepted.entry_id,
            second.entry_id
        ]
    );
    assert_eq!(
        h.bus.pending(ewpm_progress::PROGRESS_TOPIC, ewpm_progress::WRITER_GROUP).await.unwrap(),
        0
    );
}

impl Harness {
    async fn log(
        &mut self,
        kind: apb::ActivityKind,
        value: Option<f64>,
        note: &str,
        key: &str,
        auth: &str,
    ) -> Result<pb::LogActivityResponse, Status> {
        self.progress
            .log_activity(req(
                pb::LogActivityRequest {
                    kind: kind as i32,
                    value,
                    note: note.into(),
                    occurred_at: None,
                    idempotency_key: key.into(),
                },
                auth,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Every activity published on the `activity` topic so far (one read of up to 10,000
    /// more).
    async fn seen_all(&self) -> Vec<Activity> {
        let got = self
            .bus
            .receive(ACTIVITY_TOPIC, "test-activity", "t", 10_000, Duration::from_millis(200))
            .await
            .unwrap();
        let mut seen = self.seen.lock().unwrap();
        seen.extend(got.iter().flat_map(|m| activities_of(&m.payload)));
        seen.clone()
    }

    /// Waits until `n` activities were published on the `activity` topic.
    async fn seen(&self, n: usize) -> Vec<Activity> {
        for _ in 0..50 {
            let seen = self.seen_all().await;
            if seen.len() >= n {
                return seen;
            }
        }
        panic!("fewer than {n} activities were published");
    }
}

async fn a_logged_activity_reaches_the_activity_log_and_the_activity_topic(mut h: Harness) {
    let logged = h.log(apb::ActivityKind::Mood, Some(4.0), "rested", "", &alice()).await.unwrap();
    assert_eq!(
        (logged.kind, logged.user_id.as_str(), logged.value, logged.note.as_str()),
        (apb::ActivityKind::Mood as i32, "alice", Some(4.0), "rested")
    );
    assert_eq!(logged.occurred_at, Some(to_proto(now())));
    let seen = h.seen(1).await;
    assert_eq!(
        seen,
        vec![Activity {
            id: logged.activity_id.parse().unwrap(),
            kind: ActivityKind::Mood,
            user_id: "alice".into(),
            employer_id: Some("acme".into()),
            value: Some(4.0),
            occurred_at: now(),
        }]
    );
    let rows = h.store.activities_of("alice", 10).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.id.to_string(), r.kind.clone(), r.value, r.note.clone()))
            .collect::<Vec<_>>(),
        vec![(logged.activity_id, "mood".to_string(), Some(4.0), "rested".to_string())]
    );
    // Logged activity moves no leaderboard.
    assert_eq!(h.deltas().await, Vec::<ScoreDelta>::new());
}

async fn a_written_batch_is_published_as_one_message_of_its_activities_in_order(mut h: Harness) {
    let challenge = h.challenge("").await;
    // Queued while no writer runs, so that one writer batch takes them all. (A stopped
    // writer's read may still be blocked in Redis for up to a second, and would take an
    // entry that the next writer only reclaims later, in a batch of its own: let it expire.)
    h.stop_writer().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut ids = Vec::new();
    for value in [1.0, 2.0] {
        ids.push(h.submit(&challenge, value, "", &alice()).await.unwrap().entry_id);
    }
    ids.push(
        h.log(apb::ActivityKind::Mood, Some(3.0), "", "", &alice()).await.unwrap().activity_id,
    );
    ids.push(h.submit(&challenge, 4.0, "", &alice()).await.unwrap().entry_id);
    h.start_writer(3);
    h.written(3).await;
    let mut messages = Vec::new();
    for _ in 0..50 {
        messages.extend(
            h.bus
                .receive(ACTIVITY_TOPIC, "test-activity", "t", 100, Duration::from_millis(100))
                .await
                .unwrap(),
        );
        if !messages.is_empty() {
            break;
        }
    }
    h.stop_writer().await;
    // Nothing else follows.
    messages.extend(
        h.bus.receive(ACTIVITY_TOPIC, "test-activity", "t", 100, Duration::ZERO).await.unwrap(),
    );
    assert_eq!(messages.len(), 1, "one message for the written batch");
    let activities = activities_of(&messages[0].payload);
    assert_eq!(activities.iter().map(|a| a.id.to_string()).collect::<Vec<_>>(), ids);
    assert_eq!(
        activities.iter().map(|a| (a.kind, a.value)).collect::<Vec<_>>(),
        vec![
            (ActivityKind::ChallengeProgress, Some(1.0)),
            (ActivityKind::ChallengeProgress, Some(2.0)),
            (ActivityKind::Mood, Some(3.0)),
            (ActivityKind::ChallengeProgress, Some(4.0)),
        ]
    );
}

async fn bad_activity_logs_get_field_errors_and_retries_get_the_first_answer(mut h: Harness) {
    let err = h
        .log(apb::ActivityKind::Unspecified, Some(-1.0), "a\u{7}b", &"k".repeat(129), &alice())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["kind", "value", "note", "idempotency_key"]);
    let err =
        h.log(apb::ActivityKind::ChallengeProgress, None, "", "", &alice()).await.unwrap_err();
    assert_eq!(violations(&err), ["kind"]);
    let first = h.log(apb::ActivityKind::Birth, None, "", "birth-1", &alice()).await.unwrap();
    let again = h.log(apb::ActivityKind::Birth, None, "", "birth-1", &alice()).await.unwrap();
    assert_eq!(again, first);
    let err = h.log(apb::ActivityKind::Mood, None, "", "birth-1", &alice()).await.unwrap_err();
    assert_eq!(reason(&err), "IDEMPOTENCY_KEY_REUSED");
    // Only the one birth was queued: it is published once, and nothing else.
    let seen = h.seen(1).await;
    h.stop_writer().await;
    let seen_after = h.seen_all().await;
    assert_eq!(seen_after, seen);
    assert_eq!(
        seen.iter().map(|a| (a.id.to_string(), a.kind)).collect::<Vec<_>>(),
        vec![(first.activity_id, ActivityKind::Birth)]
    );
}

async fn challenge_totals_are_for_admins_and_sum_each_user(mut h: Harness) {
    let challenge = h.challenge("").await;
    for (user, value) in [("alice", 3.0), ("bob", 10.0), ("alice", 4.0)] {
        h.submit(&challenge, value, "", &bearer(user, Role::Employee, None)).await.unwrap();
    }
    h.written(3).await;
    let err = h
        .progress
        .get_challenge_totals(req(
            pb::GetChallengeTotalsRequest {
                challenge_id: challenge.clone(),
                include_entries: false,
            },
            &alice(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    for include_entries in [false, true] {
        let mut stream = h
            .progress
            .get_challenge_totals(req(
                pb::GetChallengeTotalsRequest { challenge_id: challenge.clone(), include_entries },
                &admin(),
            ))
            .await
            .unwrap()
            .into_inner();
        let mut totals = Vec::new();
        while let Some(chunk) = stream.message().await.unwrap() {
            totals.extend(chunk.totals);
        }
        let summary: Vec<_> = totals
            .iter()
            .map(|t| (t.user_id.as_str(), t.total, t.entry_count, t.entries.len()))
            .collect();
        let n = |k: usize| if include_entries { k } else { 0 };
        assert_eq!(summary, vec![("alice", 7.0, 2, n(2)), ("bob", 10.0, 1, n(1))]);
    }
}

async fn a_full_queue_pushes_back_and_queues_nothing(backend: Backend) {
    let settings =
        ewpm_progress::settings::ProgressSettings { max_backlog: 3, ..Default::default() };
    let mut h = harness_with(backend, settings).await;
    let challenge = h.challenge("").await;
    // No writer: whatever is accepted stays queued.
    h.stop_writer().await;
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..200 {
        match h.submit(&challenge, 1.0, "", &alice()).await {
            Ok(_) => accepted += 1,
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("the service pushed back");
    assert_eq!(
        (refused.code(), reason(&refused), retry_delay(&refused)),
        (Code::ResourceExhausted, "PROGRESS_QUEUE_FULL".into(), Some(Duration::from_secs(1)))
    );
    assert!(accepted > 3, "{accepted} entries were accepted before the backlog was seen");
    // The refused entry was not queued.
    let backlog = h.bus.backlog(ewpm_progress::PROGRESS_TOPIC, ewpm_progress::WRITER_GROUP);
    assert_eq!(backlog.await.unwrap(), accepted);
}

async fn the_last_known_window_is_served_while_the_challenge_service_is_down(backend: Backend) {
    // Cached for no time at all: every submission asks the challenge service.
    let settings = ewpm_progress::settings::ProgressSettings {
        challenge_cache_secs: 0,
        challenge_stale_secs: 600,
        ..Default::default()
    };
    let mut h = harness_with(backend, settings).await;
    let challenge = h.challenge("").await;
    let never_seen = h.challenge("").await;
    h.submit(&challenge, 1.0, "", &alice()).await.unwrap();
    h.stop_challenge_service().await;
    // The window seen before is served stale: intake goes on.
    for _ in 0..5 {
        h.submit(&challenge, 2.0, "", &alice()).await.unwrap();
    }
    // A challenge never seen has nothing to fall back on: retry later.
    let err = h.submit(&never_seen, 1.0, "", &alice()).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err), retry_delay(&err)),
        (Code::Unavailable, "DEPENDENCY_UNAVAILABLE".into(), Some(Duration::from_secs(1)))
    );
    assert_eq!(h.written(6).await, Summary { entries: 6, total: Some(11.0) });
}

async fn the_last_known_window_is_served_while_the_challenge_database_fails(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let settings = ewpm_progress::settings::ProgressSettings {
        challenge_cache_secs: 0,
        challenge_stale_secs: 600,
        ..Default::default()
    };
    let mut h = harness_with(backend, settings).await;
    let challenge = h.challenge("").await;
    h.submit(&challenge, 1.0, "", &alice()).await.unwrap();
    // The challenge service is up but its table is gone: it answers INTERNAL.
    h.db.db.execute_unprepared("ALTER TABLE challenges RENAME TO challenges_away").await.unwrap();
    let err = h
        .challenges
        .get_challenge(req(cpb::GetChallengeRequest { id: challenge.clone() }, &admin()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    h.submit(&challenge, 2.0, "", &alice()).await.unwrap();
    h.db.db.execute_unprepared("ALTER TABLE challenges_away RENAME TO challenges").await.unwrap();
    h.submit(&challenge, 4.0, "", &alice()).await.unwrap();
    assert_eq!(h.written(3).await, Summary { entries: 3, total: Some(7.0) });
}

async fn without_staleness_a_down_challenge_service_answers_unavailable(backend: Backend) {
    let settings = ewpm_progress::settings::ProgressSettings {
        challenge_cache_secs: 0,
        challenge_stale_secs: 0,
        ..Default::default()
    };
    let mut h = harness_with(backend, settings).await;
    let challenge = h.challenge("").await;
    h.submit(&challenge, 1.0, "", &alice()).await.unwrap();
    h.stop_challenge_service().await;
    let err = h.submit(&challenge, 2.0, "", &alice()).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err), retry_delay(&err)),
        (Code::Unavailable, "DEPENDENCY_UNAVAILABLE".into(), Some(Duration::from_secs(1)))
    );
    assert_eq!(h.written(1).await, Summary { entries: 1, total: Some(1.0) });
    h.stop_writer().await;
    assert_eq!(h.store.summary().await.unwrap(), Summary { entries: 1, total: Some(1.0) });
}

/// Makes the database refuse every progress entry of user `mallory` (a trigger), so a batch
/// holding one can never be written whole.
async fn refuse_mallory(db: &TestDb) {
    use sea_orm::{ConnectionTrait, DbBackend};
    let statements: &[&str] = match db.db.get_database_backend() {
        DbBackend::Sqlite => &["CREATE TRIGGER refuse_mallory BEFORE INSERT ON progress_entries \
             WHEN NEW.user_id = 'mallory' \
             BEGIN SELECT RAISE(ABORT, 'mallory may not be written'); END"],
        _ => &[
            "CREATE FUNCTION refuse_mallory() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.user_id = 'mallory' THEN \
             RAISE EXCEPTION 'mallory may not be written'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse_mallory BEFORE INSERT ON progress_entries \
             FOR EACH ROW EXECUTE FUNCTION refuse_mallory()",
        ],
    };
    for statement in statements {
        db.db.execute_unprepared(statement).await.unwrap();
    }
}

async fn an_entry_that_can_never_be_written_is_set_aside_and_the_rest_of_its_batch_is_written(
    mut h: Harness,
) {
    let challenge = h.challenge("").await;
    refuse_mallory(&h.db).await;
    // Everything below is queued first, so one writer batch holds it (nearly) all.
    h.stop_writer().await;
    let mut good = Vec::new();
    let mut poisoned = None;
    for (user, value) in
        [("alice", 1.0), ("bob", 2.0), ("mallory", 5.0), ("carol", 3.0), ("dave", 4.0)]
    {
        let accepted =
            h.submit(&challenge, value, "", &bearer(user, Role::Employee, None)).await.unwrap();
        if user == "mallory" {
            poisoned = Some(accepted);
        } else {
            good.push(accepted.entry_id);
        }
    }
    let poisoned = poisoned.unwrap();
    h.bus.publish(PROGRESS_TOPIC, &[b"not an entry".to_vec()]).await.unwrap();
    h.start_writer(2);
    assert_eq!(h.written(4).await, Summary { entries: 4, total: Some(10.0) });
    let mut letters = Vec::new();
    for _ in 0..200 {
        letters = h.dead_letters(1).await;
        if letters.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    h.stop_writer().await;
    let mallory = ewpm_progress::domain::Queued::Progress(ewpm_progress::domain::Entry {
        id: poisoned.entry_id.parse().unwrap(),
        challenge_id: challenge.parse().unwrap(),
        user_id: "mallory".into(),
        employer_id: None,
        value: 5.0,
        occurred_at: now(),
        accepted_at: now(),
    });
    // Listed one per page, by id: the entry (accepted first), then the undecodable payload.
    assert_eq!(
        letters.iter().map(|l| l.payload.clone()).collect::<Vec<_>>(),
        vec![ewpm_progress::queue::encode(&mallory), b"not an entry".to_vec()]
    );
    assert_eq!(letters[0].id, poisoned.entry_id);
    assert!(letters[0].error.contains("mallory may not be written"), "{}", letters[0].error);
    assert!(letters[1].error.contains("does not decode"), "{}", letters[1].error);
    assert!(letters.iter().all(|l| l.fail_time.is_some()));
    // Only what was written moves boards and is published as activity; nothing stays pending.
    good.sort();
    let mut events: Vec<String> = h.deltas().await.into_iter().map(|d| d.event_id).collect();
    events.sort();
    assert_eq!(events, good);
    let mut seen: Vec<String> = h.seen_all().await.iter().map(|a| a.id.to_string()).collect();
    seen.sort();
    assert_eq!(seen, good);
    assert_eq!(h.store.summary().await.unwrap(), Summary { entries: 4, total: Some(10.0) });
    assert_eq!(h.bus.pending(PROGRESS_TOPIC, WRITER_GROUP).await.unwrap(), 0);
    // Admins only.
    let err = h
        .progress
        .list_dead_letters(req(pb::ListDeadLettersRequest::default(), &alice()))
        .await
        .unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::PermissionDenied, "PERMISSION_DENIED".into()));
}

/// The read loops of a partitioned topic share one writer: a batch failing on one partition
/// is split after its own failures, however often other partitions' batches succeed between
/// its attempts.
async fn a_failing_batch_is_split_however_often_other_batches_succeed_meanwhile(mut h: Harness) {
    let challenge: uuid::Uuid = h.challenge("").await.parse().unwrap();
    refuse_mallory(&h.db).await;
    let entry = |user: &str, value: f64| {
        ewpm_progress::domain::Queued::Progress(ewpm_progress::domain::Entry {
            id: uuid::Uuid::now_v7(),
            challenge_id: challenge,
            user_id: user.into(),
            employer_id: None,
            value,
            occurred_at: now(),
            accepted_at: now(),
        })
    };
    let writer = Writer::new(h.bus.clone(), h.store.clone()).split_after_failures(3);
    let poisoned = [entry("mallory", 5.0), entry("alice", 1.0)];
    for attempt in 1..=3 {
        // Another partition's batch, written between this batch's attempts.
        writer.handle(&[entry(&format!("user-{attempt}"), 2.0)]).await.unwrap();
        let result = writer.handle(&poisoned).await;
        if attempt < 3 {
            let err = result.unwrap_err();
            assert!(format!("{err:#}").contains("mallory may not be written"), "{err:#}");
        } else {
            result.unwrap();
        }
    }
    let letters = h.dead_letters(10).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(letters[0].error.contains("mallory may not be written"), "{}", letters[0].error);
    // Alice's entry and the three others are written; mallory's is set aside.
    assert_eq!(h.store.summary().await.unwrap(), Summary { entries: 4, total: Some(7.0) });
}

/// The harness's real bus, with its first publishes on the `activity` topic failing (as a
/// bus outage after the SQL commit would).
struct FlakyActivity(Arc<dyn Bus>, std::sync::atomic::AtomicU32);

#[async_trait::async_trait]
impl Bus for FlakyActivity {
    async fn publish(&self, topic: &str, payloads: &[Vec<u8>]) -> anyhow::Result<Vec<String>> {
        use std::sync::atomic::Ordering;
        let fail = topic == ACTIVITY_TOPIC
            && self
                .1
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        anyhow::ensure!(!fail, "the bus is unavailable");
        self.0.publish(topic, payloads).await
    }
    async fn publish_once(
        &self,
        topic: &str,
        key: &str,
        record: &[u8],
        payload: &[u8],
        ttl: Duration,
    ) -> anyhow::Result<Once> {
        self.0.publish_once(topic, key, record, payload, ttl).await
    }
    async fn ensure_group(&self, topic: &str, group: &str) -> anyhow::Result<()> {
        self.0.ensure_group(topic, group).await
    }
    async fn receive(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<BusMessage>> {
        self.0.receive(topic, group, consumer, max, block).await
    }
    async fn reclaim(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> anyhow::Result<Vec<BusMessage>> {
        self.0.reclaim(topic, group, consumer, min_idle, max).await
    }
    async fn ack(&self, topic: &str, group: &str, ids: &[String]) -> anyhow::Result<()> {
        self.0.ack(topic, group, ids).await
    }
    async fn pending(&self, topic: &str, group: &str) -> anyhow::Result<u64> {
        self.0.pending(topic, group).await
    }
    async fn backlog(&self, topic: &str, group: &str) -> anyhow::Result<u64> {
        self.0.backlog(topic, group).await
    }
}

async fn an_outage_after_the_write_is_retried_and_nothing_is_set_aside(mut h: Harness) {
    let challenge = h.challenge("").await;
    h.stop_writer().await;
    let mut ids = Vec::new();
    for value in [1.0, 2.0] {
        ids.push(h.submit(&challenge, value, "", &alice()).await.unwrap().entry_id);
    }
    // Splitting after the first failure: still nothing is split, since SQL is not what fails.
    let flaky = FlakyActivity(h.bus.clone(), std::sync::atomic::AtomicU32::new(3));
    h.start_writer_with(1, Some(Arc::new(flaky)));
    let mut seen: Vec<String> = h.seen(2).await.iter().map(|a| a.id.to_string()).collect();
    h.stop_writer().await;
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    assert_eq!(h.dead_letters(100).await, Vec::<pb::DeadLetter>::new());
    assert_eq!(h.store.summary().await.unwrap(), Summary { entries: 2, total: Some(3.0) });
}

async fn a_batch_larger_than_one_statement_may_bind_is_written_in_chunks(h: Harness) {
    use ewpm_progress::domain::{Entry, LoggedActivity};
    let challenge = uuid::Uuid::now_v7();
    // 6,000 entries × 8 values and 4,000 activities × 9: far past SQLite's 32,766.
    let entries: Vec<Entry> = (0..6000)
        .map(|i| Entry {
            id: uuid::Uuid::now_v7(),
            challenge_id: challenge,
            user_id: format!("u{}", i % 100),
            employer_id: None,
            value: 1.0,
            occurred_at: now(),
            accepted_at: now(),
        })
        .collect();
    let activities: Vec<LoggedActivity> = (0..4000)
        .map(|_| LoggedActivity {
            id: uuid::Uuid::now_v7(),
            kind: ActivityKind::Steps,
            user_id: "walker".into(),
            employer_id: None,
            value: Some(1.0),
            note: String::new(),
            occurred_at: now(),
            accepted_at: now(),
        })
        .collect();
    let (entries, activities): (Vec<&Entry>, Vec<&LoggedActivity>) =
        (entries.iter().collect(), activities.iter().collect());
    assert_eq!(h.store.write_batch(&entries, &activities).await.unwrap(), 10_000);
    assert_eq!(h.store.summary().await.unwrap(), Summary { entries: 6000, total: Some(6000.0) });
    assert_eq!(h.store.activities_of("walker", 5000).await.unwrap().len(), 4000);
    // Written again (a redelivered batch): nothing new.
    assert_eq!(h.store.write_batch(&entries, &activities).await.unwrap(), 0);
}

async fn an_ended_challenge_takes_late_entries_only_within_its_grace(mut h: Harness) {
    let end = Utc.with_ymd_and_hms(2026, 3, 5, 0, 0, 0).unwrap();
    let within = Utc.with_ymd_and_hms(2026, 3, 4, 12, 0, 0).unwrap();
    // The clock stands at 10 March, 12:00.
    let final_board = h.ended_challenge(end, 0).await;
    let grace_over = h.ended_challenge(end, 5 * 86_400).await;
    let in_grace = h.ended_challenge(end, 6 * 86_400).await;
    for challenge in [&final_board, &grace_over] {
        let err = h.submit_at(challenge, 1.0, within).await.unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::FailedPrecondition, "CHALLENGE_ENDED".into())
        );
    }
    let late = h.submit_at(&in_grace, 2.0, within).await.unwrap();
    assert_eq!((late.value, late.occurred_at), (2.0, Some(to_proto(within))));
    // Within the grace, an entry must still have happened within the window.
    let err = h.submit_at(&in_grace, 1.0, now()).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::FailedPrecondition, "CHALLENGE_NOT_ACTIVE".into())
    );
    assert_eq!(h.written(1).await, Summary { entries: 1, total: Some(2.0) });
    h.stop_writer().await;
    assert_eq!(h.store.summary().await.unwrap(), Summary { entries: 1, total: Some(2.0) });
}

async fn non_normal_numbers_are_field_violations_and_queue_nothing(mut h: Harness) {
    let challenge = h.challenge("").await;
    for value in [5e-324, -5e-324, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err = h.submit(&challenge, value, "", &alice()).await.unwrap_err();
        assert_eq!(
            (err.code(), violations(&err)),
            (Code::InvalidArgument, vec!["value".to_string()]),
            "{value}"
        );
    }
    for value in [5e-324, f64::NAN, f64::INFINITY] {
        let err = h.log(apb::ActivityKind::Steps, Some(value), "", "", &alice()).await.unwrap_err();
        assert_eq!(
            (err.code(), violations(&err)),
            (Code::InvalidArgument, vec!["value".to_string()]),
            "{value}"
        );
    }
    h.stop_writer().await;
    assert_eq!(h.store.summary().await.unwrap(), Summary { entries: 0, total: None });
    assert!(h.seen_all().await.is_empty());
}

/// Redis refusing the queue's writes (its stream key holds a string): SubmitProgress and
/// LogActivity answer UNAVAILABLE with RetryInfo, queue nothing, and succeed once it is back.
async fn a_queue_failure_answers_unavailable_with_retry_info() {
    use fred::prelude::{ClientLike, Config, KeysInterface};
    let mut h = harness(Backend::Mesh).await;
    let challenge = h.challenge("").await;
    h.stop_writer().await;
    let redis = fred::types::Builder::from_config(Config::from_url(&servers().redis_url).unwrap())
        .build()
        .unwrap();
    redis.init().await.unwrap();
    let key = format!("{}bus:{{{PROGRESS_TOPIC}}}", h.prefix);
    let () = redis.del(&key).await.unwrap();
    let () = redis.set(&key, "not a stream", None, None, false).await.unwrap();
    let unavailable =
        (Code::Unavailable, "QUEUE_UNAVAILABLE".to_string(), Some(Duration::from_secs(1)));
    for key in ["", "retry-1"] {
        let err = h.submit(&challenge, 1.0, key, &alice()).await.unwrap_err();
        assert_eq!((err.code(), reason(&err), retry_delay(&err)), unavailable, "{key:?}");
    }
    let err = h.log(apb::ActivityKind::Mood, Some(3.0), "", "", &alice()).await.unwrap_err();
    assert_eq!((err.code(), reason(&err), retry_delay(&err)), unavailable);
    // Back: the retry under the same key is queued now (nothing was remembered for it).
    let () = redis.del(&key).await.unwrap();
    h.bus.ensure_group(PROGRESS_TOPIC, WRITER_GROUP).await.unwrap();
    h.submit(&challenge, 1.0, "retry-1", &alice()).await.unwrap();
    assert_eq!(h.bus.backlog(PROGRESS_TOPIC, WRITER_GROUP).await.unwrap(), 1);
}

macro_rules! suite {
    ($backend:ident, $which:expr) => {
        mod $backend {
            use super::*;
            suite!(@tests $which;
                an_accepted_entry_reaches_sql_and_emits_its_score_delta,
                bad_submissions_get_clear_errors_and_queue_nothing,
                fifty_concurrent_retries_with_one_key_make_one_entry,
                a_redelivered_entry_is_written_once_and_its_delta_repeats_the_event_id,
                challenge_totals_are_for_admins_and_sum_each_user,
                a_logged_activity_reaches_the_activity_log_and_the_activity_topic,
                a_written_batch_is_published_as_one_message_of_its_activities_in_order,
                bad_activity_logs_get_field_errors_and_retries_get_the_first_answer,
                an_entry_that_can_never_be_written_is_set_aside_and_the_rest_of_its_batch_is_written,
                a_failing_batch_is_split_however_often_other_batches_succeed_meanwhile,
                a_batch_larger_than_one_statement_may_bind_is_written_in_chunks,
                an_outage_after_the_write_is_retried_and_nothing_is_set_aside,
                an_ended_challenge_takes_late_entries_only_within_its_grace,
                non_normal_numbers_are_field_violations_and_queue_nothing,
            );
        }
    };
    (@tests $which:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                super::$name(harness($which).await).await;
            }
        )+
        #[tokio::test]
        async fn a_full_queue_pushes_back_and_queues_nothing() {
            super::a_full_queue_pushes_back_and_queues_nothing($which).await;
        }
        #[tokio::test]
        async fn the_last_known_window_is_served_while_the_challenge_service_is_down() {
            super::the_last_known_window_is_served_while_the_challenge_service_is_down($which)
                .await;
        }
        #[tokio::test]
        async fn the_last_known_window_is_served_while_the_challenge_database_fails() {
            super::the_last_known_window_is_served_while_the_challenge_database_fails($which)
                .await;
        }
        #[tokio::test]
        async fn without_staleness_a_down_challenge_service_answers_unavailable() {
            super::without_staleness_a_down_challenge_service_answers_unavailable($which).await;
        }
    };
}

suite!(embedded, Backend::Embedded);
suite!(mesh, Backend::Mesh);

#[tokio::test]
async fn mesh_a_queue_failure_answers_unavailable_with_retry_info() {
    a_queue_failure_answers_unavailable_with_retry_info().await;
}
