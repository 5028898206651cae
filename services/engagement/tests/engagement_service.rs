//! The engagement service over gRPC with its persister, on SQLite with the embedded stores
//! and on PostgreSQL with Redis (bus, counters, admission, notices): the seed note's event end
//! to end, dedupe and conflicts (in the fast store and in SQL), validation, roles, the type
//! cap, clock skew, rebuilds and replay, late events as corrections, paging, rate and backlog
//! limits, and exactly-once counting across redelivery.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use ewpm_engagement::{
    admission::{Admission, MemoryAdmission, RedisAdmission},
    counters::{Counters, MemoryCounters, RedisCounters},
    domain::{self, Event, micros},
    grpc::EngagementGrpc,
    persister::{GROUP, Persister},
    rebuild::Rebuilder,
    service::Engagement,
    settings::EngagementSettings,
    store::EventStore,
    watch::Hub,
};
use ewpm_kit::{
    CancellationToken,
    auth::Role,
    batch::BatchRule,
    bus::{Bus, MemoryBus, RedisBus},
    clock::{FixedClock, SharedClock},
    consumer::{Consumer, ConsumerConfig, Handler},
    notices::{MemoryNotices, Notices, RedisNotices},
    streams::StreamSlots,
    timestamp,
};
use ewpm_proto::engagement::v1::{
    self as pb, MATCH_EVENTS_TOPIC, engagement_service_client::EngagementServiceClient,
    engagement_service_server::EngagementServiceServer,
};
use ewpm_testkit::{Spawned, TestDb, bearer, key_prefix, reason, servers, spawn_grpc, violations};
use prost_types::{Struct, value::Kind};
use tonic::{Code, Request, transport::Channel};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

struct Stores {
    counters: Arc<dyn Counters>,
    notices: Arc<dyn Notices>,
    bus: Arc<dyn Bus>,
}

struct Svc {
    backend: Backend,
    db: TestDb,
    store: EventStore,
    stores: Stores,
    rebuilder: Arc<Rebuilder>,
    clock: Arc<FixedClock>,
    settings: EngagementSettings,
    client: EngagementServiceClient<Channel>,
    _servers: Vec<Spawned>,
    stop: CancellationToken,
}

fn t0() -> DateTime<Utc> {
    // 40 s into a minute.
    DateTime::from_timestamp(1_900_000_000, 0).unwrap()
}

async fn admission(backend: Backend) -> Arc<dyn Admission> {
    match backend {
        Backend::Sqlite => Arc::new(MemoryAdmission::new()),
        Backend::Postgres => Arc::new(RedisAdmission::new(
            ewpm_kit::redis::connect(&servers().redis_url).await.unwrap(),
            &key_prefix(),
        )),
    }
}

async fn start(backend: Backend, tweak: impl FnOnce(&mut EngagementSettings)) -> Svc {
    let modules: &[&'static dyn ewpm_kit::module::Module] = &[&ewpm_engagement::MODULE];
    let db = match backend {
        Backend::Sqlite => TestDb::sqlite(modules).await.unwrap(),
        Backend::Postgres => TestDb::postgres(modules).await.unwrap(),
    };
    let stores = match backend {
        Backend::Sqlite => Stores {
            counters: Arc::new(MemoryCounters::new()),
            notices: Arc::new(MemoryNotices::new()),
            bus: MemoryBus::new(),
        },
        Backend::Postgres => {
            let url = &servers().redis_url;
            let prefix = key_prefix();
            let client = ewpm_kit::redis::connect(url).await.unwrap();
            Stores {
                counters: Arc::new(RedisCounters::new(client, &prefix)),
                notices: Arc::new(
                    RedisNotices::connect(url, &prefix, ewpm_engagement::NOTICES_NAMESPACE)
                        .await
                        .unwrap(),
                ),
                bus: Arc::new(RedisBus::connect(url, &prefix).await.unwrap()),
            }
        }
    };
    let mut settings = EngagementSettings::default();
    tweak(&mut settings);
    let store = EventStore::new(db.db.clone());
    let clock = FixedClock::new(t0());
    let shared: SharedClock = clock.clone();
    let rebuilder = Rebuilder::new(store.clone(), stores.counters.clone(), shared.clone());
    let stop = CancellationToken::new();
    if settings.persister_enabled {
        let consumer = Consumer::new(
            stores.bus.clone(),
            Persister {
                store: store.clone(),
                rebuilder: rebuilder.clone(),
                notices: stores.notices.clone(),
                clock: shared.clone(),
            },
            ConsumerConfig {
                topic: MATCH_EVENTS_TOPIC,
                group: GROUP,
                consumer: "p0".into(),
                rule: BatchRule { size: 16, max_wait: Duration::from_millis(5) },
                reclaim_idle: Duration::from_secs(30),
                take: 0,
            },
        );
        tokio::spawn(consumer.run(stop.clone()));
    }
    let mut svc = Svc {
        backend,
        db,
        store,
        stores,
        rebuilder,
        clock,
        settings,
        client: EngagementServiceClient::new(
            Channel::from_static("http://127.0.0.1:1").connect_lazy(),
        ),
        _servers: Vec::new(),
        stop,
    };
    svc.client = svc.server(admission(backend).await).await;
    svc
}

impl Svc {
    /// Another server on the same stores with its own admission store (as after a restart of
    /// the embedded mode, or once Redis forgot the ids).
    async fn server(&mut self, admission: Arc<dyn Admission>) -> EngagementServiceClient<Channel> {
        let shared: SharedClock = self.clock.clone();
        let engagement = Engagement::new(
            self.store.clone(),
            self.stores.bus.clone(),
            admission,
            self.rebuilder.clone(),
            shared.clone(),
            self.settings.clone(),
        );
        let hub = Hub::new(
            self.rebuilder.clone(),
            self.stores.notices.clone(),
            shared,
            Duration::from_secs(self.settings.lateness_secs),
            self.stop.clone(),
        );
        let slots = StreamSlots::with_caps("engagement", 16, 1000);
        let server = spawn_grpc(|mount, _| {
            mount.add_admitting_ingest(EngagementServiceServer::new(EngagementGrpc::new(
                engagement, hub, slots,
            )));
        })
        .await
        .unwrap();
        let channel = Channel::from_shared(server.uri()).unwrap().connect().await.unwrap();
        self._servers.push(server);
        EngagementServiceClient::new(channel)
    }

    async fn ingest(
        &mut self,
        events: Vec<pb::EventInput>,
    ) -> Result<pb::IngestEventsResponse, tonic::Status> {
        self.ingest_as(events, None, false, &feed()).await
    }

    async fn ingest_as(
        &mut self,
        events: Vec<pb::EventInput>,
        sent_at: Option<DateTime<Utc>>,
        backfill: bool,
        token: &str,
    ) -> Result<pb::IngestEventsResponse, tonic::Status> {
        self.client
            .ingest_events(req(
                pb::IngestEventsRequest {
                    events,
                    sent_at: sent_at.map(timestamp::to_proto),
                    backfill,
                },
                token,
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn metrics(&mut self, match_id: &str) -> pb::MatchMetrics {
        self.client
            .get_match_metrics(req(
                pb::GetMatchMetricsRequest { match_id: match_id.into() },
                &fan(),
            ))
            .await
            .unwrap()
            .into_inner()
            .metrics
            .unwrap()
    }

    /// The metrics once `total` events are counted.
    async fn metrics_at(&mut self, match_id: &str, total: i64) -> pb::MatchMetrics {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let m = self.metrics(match_id).await;
            if m.total_events == total {
                return m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}: match {match_id} has {} events counted, not {total}",
                self.backend,
                m.total_events
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The metrics recomputed from SQL, as a reader would see them.
    async fn recomputed(&self, match_id: &str) -> pb::MatchMetrics {
        let (counts, _) = self.store.aggregate(match_id, 0).await.unwrap();
        ewpm_engagement::grpc::metrics(&domain::snapshot(
            match_id,
            &counts,
            micros(t0()),
            Duration::from_secs(self.settings.lateness_secs),
        ))
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn feed() -> String {
    bearer("feed-1", Role::Ingest, None)
}

fn fan() -> String {
    bearer("fan-1", Role::Employee, Some("acme"))
}

fn admin() -> String {
    bearer("admin-1", Role::Admin, None)
}

fn req<T>(message: T, token: &str) -> Request<T> {
    ewpm_testkit::request(message, token)
}

fn ev(match_id: &str, event_type: &str) -> pb::EventInput {
    pb::EventInput {
        match_id: match_id.into(),
        event_type: event_type.into(),
        ..Default::default()
    }
}

fn at(event: pb::EventInput, when: DateTime<Utc>) -> pb::EventInput {
    pb::EventInput { occurred_at: Some(timestamp::to_proto(when)), ..event }
}

fn id(event: pb::EventInput, client_id: &str) -> pb::EventInput {
    pb::EventInput { event_id: client_id.into(), ..event }
}

fn json_struct(v: serde_json::Value) -> Struct {
    match ewpm_kit::json::to_value(v).kind {
        Some(Kind::StructValue(s)) => s,
        other => panic!("not an object: {other:?}"),
    }
}

fn outcomes(r: &pb::IngestEventsResponse) -> Vec<(pb::EventOutcome, String, String)> {
    r.results.iter().map(|x| (x.outcome(), x.reason.clone(), x.field.clone())).collect()
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
    };
}

on_both!(
    the_notes_event_is_accepted_stored_and_counted,
    a_retry_is_one_event_and_a_conflicting_reuse_is_rejected,
    a_retry_the_dedupe_store_forgot_is_found_in_sql,
    bad_events_are_rejected_naming_every_field_and_nothing_is_stored,
    only_ingest_clients_send_and_ingest_tokens_read_nothing,
    a_match_takes_at_most_its_cap_of_event_types,
    a_device_clock_is_corrected_and_its_own_time_kept,
    lost_counters_are_rebuilt_equal_and_replay_recomputes,
    a_late_event_reaches_watchers_as_a_correction,
    events_page_in_event_time_order,
    a_source_over_its_event_rate_is_told_when_to_retry,
    ingest_pushes_back_while_the_persisters_lag,
    a_redelivered_message_counts_once_and_a_resent_event_never_twice,
);

async fn the_notes_event_is_accepted_stored_and_counted(backend: Backend) {
    let mut s = start(backend, |_| {}).await;
    let note = pb::EventInput {
        team_id: "al-hilal".into(),
        player_id: "player_456".into(),
        metadata: Some(json_struct(serde_json::json!({"minute": 34, "score": "2-1"}))),
        ..ev("match_123", "goal")
    };
    let r = s.ingest(vec![note]).await.unwrap();
    assert_eq!(outcomes(&r), [(pb::EventOutcome::Accepted, String::new(), String::new())]);
    assert_eq!((r.accepted, r.duplicates, r.rejected), (1, 0, 0));
    let event_id = r.results[0].event_id.clone();
    assert_eq!(uuid::Uuid::parse_str(&event_id).unwrap().get_version_num(), 7);

    let m = s.metrics_at("match_123", 1).await;
    assert_eq!(m, s.recomputed("match_123").await);
    assert_eq!(m.events_by_type, [("goal".to_string(), 1)].into());
    assert_eq!(m.bucketing(), pb::Bucketing::MatchClock);
    assert_eq!(
        m.peak_engagement_periods,
        [pb::PeakPeriod {
            timestamp: Some(timestamp::to_proto(t0())),
            event_count: 1,
            match_minute: Some(34)
        }]
    );
    let stored = s
        .client
        .get_match_event(req(
            pb::GetMatchEventRequest { match_id: "match_123".into(), event_id: event_id.clone() },
            &fan(),
        ))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert_eq!(
        (stored.team_id.as_str(), stored.player_id.as_str(), stored.source.as_str()),
        ("al-hilal", "player_456", "feed-1")
    );
    assert_eq!(
        stored.metadata,
        Some(json_struct(serde_json::json!({"minute": 34, "score": "2-1"})))
    );
    assert_eq!(stored.occurred_at, Some(timestamp::to_proto(t0())));
}

async fn a_retry_is_one_event_and_a_conflicting_reuse_is_rejected(backend: Backend) {
    let mut s = start(backend, |_| {}).await;
    let first = s.ingest(vec![id(ev("m1", "goal"), "e-1")]).await.unwrap();
    let again = s.ingest(vec![id(ev("m1", "goal"), "e-1")]).await.unwrap();
    let other = s.ingest(vec![id(ev("m1", "card"), "e-1")]).await.unwrap();
    assert_eq!(first.results[0].outcome(), pb::EventOutcome::Accepted);
    assert_eq!(
        (again.results[0].outcome(), &again.results[0].event_id),
        (pb::EventOutcome::Duplicate, &first.results[0].event_id)
    );
    assert_eq!(
        outcomes(&other),
        [(pb::EventOutcome::Rejected, "EVENT_ID_CONFLICT".into(), "events[0].event_id".into())]
    );
    // Within one call: the second of two equal events is a duplicate, of two others a conflict.
    let both = s
        .ingest(vec![
            id(ev("m1", "cheer"), "e-2"),
            id(ev("m1", "cheer"), "e-2"),
            id(ev("m1", "shot"), "e-2"),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcomes(&both),
        [
            (pb::EventOutcome::Accepted, String::new(), String::new()),
            (pb::EventOutcome::Duplicate, String::new(), String::new()),
            (pb::EventOutcome::Rejected, "EVENT_ID_CONFLICT".into(), "events[2].event_id".into()),
        ]
    );
    // Another source's id of the same name is its own event.
    let theirs = s
        .ingest_as(
            vec![id(ev("m1", "goal"), "e-1")],
            None,
            false,
            &bearer("feed-2", Role::Ingest, None),
        )
        .await
        .unwrap();
    assert_eq!(theirs.results[0].outcome(), pb::EventOutcome::Accepted);
    let m = s.metrics_at("m1", 3).await;
    assert_eq!(m.events_by_type, [("goal".to_string(), 2), ("cheer".to_string(), 1)].into());
    assert_eq!(s.store.count("m1").await.unwrap(), 3);
}

async fn a_retry_the_dedupe_store_forgot_is_found_in_sql(backend: Backend) {
    let mut s = start(backend, |_| {}).await;
    s.ingest(vec![id(ev("m1", "goal"), "e-1")]).await.unwrap();
    s.metrics_at("m1", 1).await;
    let mut fresh = s.server(admission(backend).await).await;
    let retry = |e: pb::EventInput| {
        req(pb::IngestEventsRequest { events: vec![e], ..Default::default() }, &feed())
    };
    let again = fresh.ingest_events(retry(id(ev("m1", "goal"), "e-1"))).await.unwrap().into_inner();
    let other = fresh.ingest_events(retry(id(ev("m1", "card"), "e-1"))).await.unwrap().into_inner();
    assert_eq!(outcomes(&again), [(pb::EventOutcome::Duplicate, String::new(), String::new())]);
    assert_eq!(
        outcomes(&other),
        [(pb::EventOutcome::Rejected, "EVENT_ID_CONFLICT".into(), "events[0].event_id".into())]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.store.count("m1").await.unwrap(), 1);
    assert_eq!(s.metrics("m1").await.total_events, 1);
}

async fn bad_events_are_rejected_naming_every_field_and_nothing_is_stored(backend: Backend) {
    let mut s = start(backend, |_| {}).await;
    let err = s
        .ingest(vec![
            ev("m1", "goal"),
            ev("", "Goal!"),
            pb::EventInput {
                team_id: "x".repeat(65),
                metadata: Some(json_struct(serde_json::json!({"minute": "34"}))),
                ..at(ev("m1", "goal"), t0() + TimeDelta::hours(1))
            },
            id(ev("m 2", "goal"), "bad id!"),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&err),
        [
            "events[1].match_id",
            "events[1].event_type",
            "events[2].team_id",
            "events[2].metadata.minute",
            "events[2].occurred_at",
            "events[3].event_id",
            "events[3].match_id",
        ]
    );
    let none = s.ingest(vec![]).await.unwrap_err();
    assert_eq!(violations(&none), ["events"]);
    let nan = pb::EventInput {
        metadata: Some(Struct {
            fields: [(
                "x".to_string(),
                prost_types::Value { kind: Some(Kind::NumberValue(f64::NAN)) },
            )]
            .into(),
        }),
        ..ev("m1", "goal")
    };
    assert_eq!(violations(&s.ingest(vec![nan]).await.unwrap_err()), ["events[0].metadata"]);
    let too_many = s.ingest(vec![ev("m1", "goal"); 1001]).await.unwrap_err();
    assert_eq!(violations(&too_many), ["events"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.store.count("m1").await.unwrap(), 0);
}

async fn only_ingest_clients_send_and_ingest_tokens_read_nothing(backend: Backend) {
    let mut s = start(backend, |_| {}).await;
    let err = s.ingest_as(vec![ev("m1", "goal")], None, false, &fan()).await.unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::PermissionDenied, "NOT_AN_INGEST_CLIENT".into()));
    let by_admin = s.ingest_as(vec![ev("m1", "goal")], None, false, &admin()).await.unwrap();
    assert_eq!(by_admin.accepted, 1);
    let read = s
        .client
        .get_match_metrics(req(pb::GetMatchMetricsRequest { match_id: "m1".into() }, &feed()))
        .await
        .unwrap_err();
    assert_eq!((read.code(), reason(&read)), (Code::PermissionDenied, "INGEST_TOKEN".into()));
    let replay = s
        .client
        .replay_match(req(pb::ReplayMatchRequest { match_id: "m1".into() }, &fan()))
        .await
        .unwrap_err();
    assert_eq!(replay.code(), Code::PermissionDenied);
    let anonymous = s
        .client
        .get_match_metrics(Request::new(pb::GetMatchMetricsRequest { match_id: "m1".into() }))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

async fn a_match_takes_at_most_its_cap_of_event_types(backend: Backend) {
    let mut s = start(backend, |c| c.max_event_types = 2).await;
    let r = s
        .ingest(vec![ev("m1", "goal"), ev("m1", "card"), ev("m1", "cheer"), ev("m2", "cheer")])
        .await
        .unwrap();
    assert_eq!(
        outcomes(&r),
        [
            (pb::EventOutcome::Accepted, String::new(), String::new()),
            (pb::EventOutcome::Accepted, String::new(), String::new()),
            (
                pb::EventOutcome::Rejected,
                "TOO_MANY_EVENT_TYPES".into(),
                "events[2].event_type".into()
            ),
            (pb::EventOutcome::Accepted, String::new(), String::new()),
        ]
    );
    s.metrics_at("m1", 2).await;
    // A server that never saw the match learns its types from the counters.
    let mut fresh = s.server(admission(backend).await).await;
    let r = fresh
        .ingest_events(req(
            pb::IngestEventsRequest {
                events: vec![ev("m1", "shot"), ev("m1", "goal")],
                ..Default::default()
            },
            &feed(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.results.iter().map(|x| x.outcome()).collect::<Vec<_>>(),
        [pb::EventOutcome::Rejected, pb::EventOutcome::Accepted]
    );
}

async fn a_device_clock_is_corrected_and_its_own_time_kept(backend: Backend) {
    let mut s = start(backend, |_| {}).await;
    // The device runs 10 minutes fast.
    let sent = t0() + TimeDelta::minutes(10);
    let r = s
        .ingest_as(
            vec![at(ev("m1", "goal"), sent - TimeDelta::minutes(1))],
            Some(sent),
            false,
            &feed(),
        )
        .await
        .unwrap();
    assert_eq!(r.clock_offset_ms, -600_000);
    s.metrics_at("m1", 1).await;
    let e = s
        .client
        .get_match_event(req(
            pb::GetMatchEventRequest {
                match_id: "m1".into(),
                event_id: r.results[0].event_id.clone(),
            },
            &fan(),
        ))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert_eq!(
        (e.occurred_at, e.client_occurred_at),
        (
            Some(timestamp::to_proto(t0() - TimeDelta::minutes(1))),
            Some(timestamp::to_proto(sent - TimeDelta::minutes(1)))
        )
    );
}

async fn lost_counters_are_rebuilt_equal_and_replay_recomputes(backend: Backend) {
    let mut s = start(backend, |_| {}).await;
    for minute in 0..3 {
        let when = t0() - TimeDelta::minutes(minute);
        let events = vec![
            at(ev("m1", "goal"), when),
            at(ev("m1", "cheer"), when),
            at(ev("m1", "cheer"), when),
        ];
        s.ingest(events).await.unwrap();
    }
    let before = s.metrics_at("m1", 9).await;
    assert_eq!(before, s.recomputed("m1").await);
    s.stores.counters.forget("m1").await.unwrap();
    assert_eq!(s.metrics("m1").await, before);
    // Increments of a match whose counters are gone are not lost: it is rebuilt.
    s.stores.counters.forget("m1").await.unwrap();
    s.ingest(vec![ev("m1", "goal")]).await.unwrap();
    let after = s.metrics_at("m1", 10).await;
    assert_eq!(after, s.recomputed("m1").await);
    let replay = s
        .client
        .replay_match(req(pb::ReplayMatchRequest { match_id: "m1".into() }, &admin()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((replay.events_replayed, replay.metrics), (10, Some(after)));
    // A match nobody sent events for reads as empty, and leaves nothing behind.
    assert_eq!(s.metrics("nobody").await.total_events, 0);
    assert_eq!(s.stores.counters.read("nobody").await.unwrap(), None);
}

async fn a_late_event_reaches_watchers_as_a_correction(backend: Backend) {
    let mut s = start(backend, |_| {}).await;
    let old = t0() - TimeDelta::minutes(5);
    s.ingest_as(vec![at(ev("m1", "goal"), old)], None, true, &feed()).await.unwrap();
    s.metrics_at("m1", 1).await;
    let mut watch = s
        .client
        .watch_match(req(pb::WatchMatchRequest { match_id: "m1".into() }, &fan()))
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    let minute = |m: &pb::MatchMetrics| {
        m.minutes.iter().map(|x| (x.count, x.r#final, x.late_events)).collect::<Vec<_>>()
    };
    assert_eq!(minute(first.metrics.as_ref().unwrap()), [(1, true, 0)]);
    assert!(first.corrections.is_empty());
    s.ingest(vec![at(ev("m1", "goal"), old)]).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let m = next.metrics.unwrap();
    assert_eq!((minute(&m), m.late_events), (vec![(2, true, 1)], 1));
    let start = old.timestamp() / 60 * 60;
    assert_eq!(
        next.corrections,
        [pb::Correction {
            minute: Some(timestamp::to_proto(DateTime::from_timestamp(start, 0).unwrap())),
            previous_count: 1,
            count: 2
        }]
    );
}

async fn events_page_in_event_time_order(backend: Backend) {
    let mut s = start(backend, |_| {}).await;
    let events: Vec<pb::EventInput> = (0..5)
        .map(|i| {
            at(
                ev("m1", if i % 2 == 0 { "goal" } else { "card" }),
                t0() - TimeDelta::seconds(50 - i),
            )
        })
        .rev()
        .collect();
    s.ingest(events).await.unwrap();
    s.metrics_at("m1", 5).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = s
            .client
            .list_match_events(req(
                pb::ListMatchEventsRequest {
                    match_id: "m1".into(),
                    page_size: 2,
                    page_token: token.clone(),
                    event_type: String::new(),
                },
                &fan(),
            ))
            .await
            .unwrap()
            .into_inner();
        seen.extend(
            page.events
                .iter()
                .map(|e| timestamp::from_proto(e.occurred_at.as_ref().unwrap()).unwrap()),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, (0..5).map(|i| t0() - TimeDelta::seconds(50 - i)).collect::<Vec<_>>());
    let goals = s
        .client
        .list_match_events(req(
            pb::ListMatchEventsRequest {
                match_id: "m1".into(),
                event_type: "goal".into(),
                ..Default::default()
            },
            &fan(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(goals.events.len(), 3);
    let bad = s
        .client
        .list_match_events(req(
            pb::ListMatchEventsRequest {
                match_id: "m1".into(),
                page_token: "garbage".into(),
                ..Default::default()
            },
            &fan(),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&bad), ["page_token"]);
    let missing = s
        .client
        .get_match_event(req(
            pb::GetMatchEventRequest {
                match_id: "m1".into(),
                event_id: uuid::Uuid::now_v7().to_string(),
            },
            &fan(),
        ))
        .await
        .unwrap_err();
    assert_eq!((missing.code(), reason(&missing)), (Code::NotFound, "EVENT_NOT_FOUND".into()));
}

async fn a_source_over_its_event_rate_is_told_when_to_retry(backend: Backend) {
    let mut s = start(backend, |c| {
        c.source_rate_per_sec = 10;
        c.source_burst = 10;
    })
    .await;
    s.ingest(vec![ev("m1", "goal"); 8]).await.unwrap();
    let err = s.ingest(vec![ev("m1", "goal"); 8]).await.unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::ResourceExhausted, "RATE_LIMITED".into()));
    assert!(ewpm_kit::error::retry_delay(&err).is_some());
    // Another source has its own rate.
    let other = s
        .ingest_as(vec![ev("m1", "goal"); 8], None, false, &bearer("feed-2", Role::Ingest, None))
        .await
        .unwrap();
    assert_eq!(other.accepted, 8);
}

async fn ingest_pushes_back_while_the_persisters_lag(backend: Backend) {
    let mut s = start(backend, |c| {
        c.persister_enabled = false;
        c.max_backlog = 1;
    })
    .await;
    s.stores.bus.ensure_group(MATCH_EVENTS_TOPIC, GROUP).await.unwrap();
    s.ingest(vec![ev("m1", "goal")]).await.unwrap();
    s.ingest(vec![ev("m1", "goal")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = s.ingest(vec![ev("m1", "goal")]).await.unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::ResourceExhausted, "QUEUE_FULL".into()));
}

async fn a_redelivered_message_counts_once_and_a_resent_event_never_twice(backend: Backend) {
    let s = start(backend, |c| c.persister_enabled = false).await;
    let shared: SharedClock = s.clock.clone();
    let persister = Persister {
        store: s.store.clone(),
        rebuilder: s.rebuilder.clone(),
        notices: s.stores.notices.clone(),
        clock: shared,
    };
    let limits = domain::Limits {
        max_batch: 10,
        max_future: Duration::from_secs(300),
        max_age: Duration::from_secs(3600),
        skew_tolerance: Duration::from_secs(1),
        lateness: Duration::from_secs(60),
    };
    let batch = |ingest: uuid::Uuid| -> Vec<Event> {
        let inputs = ["goal", "cheer"]
            .iter()
            .enumerate()
            .map(|(i, t)| domain::Input {
                event_id: format!("e-{i}"),
                match_id: "m1".into(),
                event_type: t.to_string(),
                ..Default::default()
            })
            .collect();
        domain::parse_batch(inputs, None, false, "feed-1", ingest, t0(), &limits).unwrap().events
    };
    // Counters exist (built) before the first write.
    s.ingest_and_persist_seed(&persister).await;
    let first = uuid::Uuid::now_v7();
    persister.handle(&[batch(first)]).await.unwrap();
    // The same message again (a crash before its acknowledgement).
    persister.handle(&[batch(first)]).await.unwrap();
    // The same events re-sent by another call (a retry after the dedupe store forgot them).
    persister.handle(&[batch(uuid::Uuid::now_v7())]).await.unwrap();
    let counts = s.rebuilder.counts("m1").await.unwrap();
    assert_eq!((counts.total, s.store.count("m1").await.unwrap()), (3, 3));
    let (sql, _) = s.store.aggregate("m1", 0).await.unwrap();
    assert_eq!(counts, sql);
}

impl Svc {
    /// One event written and counted, so the match's counters exist.
    async fn ingest_and_persist_seed(&self, persister: &Persister) {
        let limits = domain::Limits {
            max_batch: 10,
            max_future: Duration::from_secs(300),
            max_age: Duration::from_secs(3600),
            skew_tolerance: Duration::from_secs(1),
            lateness: Duration::from_secs(60),
        };
        let seed = domain::parse_batch(
            vec![domain::Input {
                match_id: "m1".into(),
                event_type: "kickoff".into(),
                ..Default::default()
            }],
            None,
            false,
            "feed-1",
            uuid::Uuid::now_v7(),
            t0(),
            &limits,
        )
        .unwrap()
        .events;
        persister.handle(&[seed]).await.unwrap();
        // The first write finds no counters and rebuilds them in the background.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while s_read(&self.stores.counters).await.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "counters of m1 were not rebuilt");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = &self.db;
    }
}

async fn s_read(counters: &Arc<dyn Counters>) -> Option<i64> {
    counters.read("m1").await.unwrap().map(|c| c.total)
}
