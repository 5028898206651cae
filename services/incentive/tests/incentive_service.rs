//! The incentive service over real gRPC and real processors consuming recorded activity
//! (`ActivityBatch` messages on the bus topic `activity`, as the progress writers publish them,
//! and lone `ActivityRecorded` messages, as writers of the previous release did), on SQLite +
//! the in-process bus and notices and on PostgreSQL + Redis: one suite, two backends.

use ewpm_incentive::settings::IncentiveSettings;
use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use ewpm_incentive::{
    PROCESSOR_GROUP,
    activity::{Activity, ActivityKind, events_of},
    app,
    domain::{Award, IncentiveEvent},
    notices::{IncentiveNotices, MemoryNotices, RedisNotices},
    processor::Links,
    store::IncentiveStore,
};
use ewpm_kit::{
    CancellationToken,
    auth::Role,
    bus::{Bus, MemoryBus, RedisBus},
    clock::{FixedClock, SharedClock},
    settings::Settings,
    timestamp::to_proto,
};
use ewpm_proto::{
    activity::v1::ActivityKind as PbKind,
    incentive::v1::{self as pb, incentive_service_client::IncentiveServiceClient},
    progress::v1::{ACTIVITY_TOPIC, ActivityBatch, ActivityRecorded},
};
use ewpm_testkit::{
    Spawned, TestDb, bearer, key_prefix, reason, request as req, servers, spawn_grpc, violations,
};
use prost::Message as _;
use tokio_stream::StreamExt;
use tonic::{Code, Status, transport::Channel};
use uuid::Uuid;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Embedded,
    Mesh,
}

struct Harness {
    client: IncentiveServiceClient<Channel>,
    /// A link cache like the processors' (hearing the same announcements), to ask which
    /// links an activity counts towards.
    links: Links,
    bus: Arc<dyn Bus>,
    store: IncentiveStore,
    stop: CancellationToken,
    processors: Vec<tokio::task::JoinHandle<()>>,
    _server: Spawned,
    _db: TestDb,
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap()
}

fn settings(processors: usize) -> IncentiveSettings {
    IncentiveSettings {
        processors,
        batch_size: 50,
        flush_interval_ms: 20,
        // Long enough that only an announced link change can refresh a link cache in a test.
        lookup_cache_secs: 60,
        ..IncentiveSettings::default()
    }
}

async fn harness(backend: Backend) -> Harness {
    harness_with(backend, 2).await
}

async fn harness_with(backend: Backend, processors: usize) -> Harness {
    let (db, bus, notices): (TestDb, Arc<dyn Bus>, Arc<dyn IncentiveNotices>) = match backend {
        Backend::Embedded => (
            TestDb::sqlite(&[&ewpm_incentive::MODULE]).await.unwrap(),
            MemoryBus::new(),
            Arc::new(MemoryNotices::new()),
        ),
        Backend::Mesh => {
            let prefix = key_prefix();
            let url = &servers().redis_url;
            (
                TestDb::postgres(&[&ewpm_incentive::MODULE]).await.unwrap(),
                Arc::new(RedisBus::connect(url, &prefix).await.unwrap()),
                Arc::new(RedisNotices::connect(url, &prefix).await.unwrap()),
            )
        }
    };
    let clock: SharedClock = FixedClock::new(now());
    let stop = CancellationToken::new();
    let server = {
        let (conn, clock, notices, stop) =
            (db.db.clone(), clock.clone(), notices.clone(), stop.clone());
        spawn_grpc(move |mount, grpc| {
            mount.add(app::build(conn, clock, notices, grpc, &Settings::default().limits, stop));
        })
        .await
        .unwrap()
    };
    let settings = settings(processors);
    let processors =
        app::processors(db.db.clone(), bus.clone(), notices.clone(), clock, &settings, "test")
            .into_iter()
            .map(|p| tokio::spawn(p.run(stop.clone())))
            .collect();
    let links = Links::new(
        IncentiveStore::new(db.db.clone()),
        Duration::from_secs(settings.lookup_cache_secs),
        notices.subscribe_links(),
    );
    Harness {
        client: IncentiveServiceClient::connect(server.uri()).await.unwrap(),
        links,
        bus,
        store: IncentiveStore::new(db.db.clone()),
        stop,
        processors,
        _server: server,
        _db: db,
    }
}

fn admin() -> String {
    bearer("admin-1", Role::Admin, None)
}
fn acme_admin() -> String {
    bearer("ann", Role::EmployerAdmin, Some("acme"))
}
fn globex_admin() -> String {
    bearer("gus", Role::EmployerAdmin, Some("globex"))
}
fn alice() -> String {
    bearer("alice", Role::Employee, Some("acme"))
}
fn bob() -> String {
    bearer("bob", Role::Employee, Some("acme"))
}

fn streak_rule(days: i32) -> pb::Rule {
    pb::Rule { kind: Some(pb::rule::Kind::ConsecutiveDays(pb::ConsecutiveDays { days })) }
}

fn each_rule() -> pb::Rule {
    pb::Rule { kind: Some(pb::rule::Kind::EachOccurrence(pb::EachOccurrence {})) }
}

/// An activity of `user` (of acme) at `at`.
fn activity(user: &str, kind: ActivityKind, at: DateTime<Utc>) -> Activity {
    Activity {
        id: Uuid::now_v7(),
        kind,
        user_id: user.into(),
        employer_id: Some("acme".into()),
        occurred_at: at,
    }
}

/// `a`'s event, as the progress writer makes it.
fn event(a: &Activity) -> ActivityRecorded {
    ActivityRecorded {
        activity_id: a.id.to_string(),
        user_id: a.user_id.clone(),
        employer_id: a.employer_id.clone().unwrap_or_default(),
        kind: a.kind.to_proto(),
        value: None,
        occurred_at: Some(to_proto(a.occurred_at)),
    }
}

/// `a` alone, as writers of the previous release published it (one message per activity).
fn recorded(a: &Activity) -> Vec<u8> {
    event(a).encode_to_vec()
}

/// `activities` as the progress writer publishes a written batch: one message.
fn batch(activities: &[Activity]) -> Vec<u8> {
    ActivityBatch { activities: activities.iter().map(event).collect() }.encode_to_vec()
}

impl Harness {
    async fn create_incentive(
        &mut self,
        slug: &str,
        rule: pb::Rule,
        kinds: &[PbKind],
        auth: &str,
    ) -> Result<pb::Incentive, Status> {
        let r = self
            .client
            .create_incentive(req(
                pb::CreateIncentiveRequest {
                    slug: slug.into(),
                    description: format!("{slug} for people"),
                    rule: Some(rule),
                    trigger_kinds: kinds.iter().map(|k| *k as i32).collect(),
                },
                auth,
            ))
            .await?;
        Ok(r.into_inner().incentive.unwrap())
    }

    async fn link(
        &mut self,
        employer: &str,
        slug: &str,
        zone: &str,
        auth: &str,
    ) -> Result<pb::EmployerIncentive, Status> {
        let r = self
            .client
            .create_employer_incentive(req(
                pb::CreateEmployerIncentiveRequest {
                    employer_id: employer.into(),
                    program_id: "maternity-2026".into(),
                    incentive_slug: slug.into(),
                    reward: format!("{slug} reward"),
                    time_zone: zone.into(),
                    start_time: Some(to_proto(now() - TimeDelta::days(30))),
                    ..Default::default()
                },
                auth,
            ))
            .await?;
        Ok(r.into_inner().employer_incentive.unwrap())
    }

    /// The two incentives of the note, linked by acme (days counted in Berlin).
    async fn note_incentives(&mut self) -> (pb::EmployerIncentive, pb::EmployerIncentive) {
        self.create_incentive(
            "data-logged-5-sequential-days",
            streak_rule(5),
            &[PbKind::Mood, PbKind::Symptom],
            &admin(),
        )
        .await
        .unwrap();
        self.create_incentive("user-birth", each_rule(), &[PbKind::Birth], &admin()).await.unwrap();
        let five = self
            .link("acme", "data-logged-5-sequential-days", "Europe/Berlin", &acme_admin())
            .await
            .unwrap();
        let birth = self.link("acme", "user-birth", "Europe/Berlin", &acme_admin()).await.unwrap();
        (five, birth)
    }

    async fn awards_of(&mut self, user: &str, auth: &str) -> Result<Vec<pb::Award>, Status> {
        let r = self
            .client
            .list_awards(req(
                pb::ListAwardsRequest { user_id: user.into(), ..Default::default() },
                auth,
            ))
            .await?;
        Ok(r.into_inner().awards)
    }

    /// Publishes `activities` on the `activity` topic as one writer batch and waits until the
    /// processors have acknowledged everything queued.
    async fn process(&self, activities: &[Activity]) {
        self.publish(&[batch(activities)]).await;
        self.drained().await;
    }

    async fn publish(&self, payloads: &[Vec<u8>]) {
        self.bus.publish(ACTIVITY_TOPIC, payloads).await.unwrap();
    }

    /// The incentive events of `activities` against acme's links as the cache knows them.
    async fn events(&self, activities: &[Activity]) -> Vec<IncentiveEvent> {
        let links = self.links.of_employer("acme").await.unwrap();
        activities.iter().flat_map(|a| events_of(a, &links)).collect()
    }

    async fn drained(&self) {
        for _ in 0..400 {
            if self.bus.backlog(ACTIVITY_TOPIC, PROCESSOR_GROUP).await.unwrap() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the processors did not drain the activity topic");
    }

    async fn stop(mut self) -> IncentiveStore {
        self.stop.cancel();
        for p in self.processors.drain(..) {
            p.await.unwrap();
        }
        self.store.clone()
    }
}

/// (user, slug, award day, period key) of each award, sorted.
fn summary(awards: &[Award]) -> Vec<(String, String, String, String)> {
    let mut out: Vec<_> = awards
        .iter()
        .map(|a| {
            (
                a.user_id.clone(),
                a.incentive_slug.clone(),
                a.award_day.to_string(),
                a.period_key.clone(),
            )
        })
        .collect();
    out.sort();
    out
}

fn berlin(day: u32, hour: u32) -> DateTime<Utc> {
    // Berlin is UTC+1 in November.
    Utc.with_ymd_and_hms(2026, 11, day, hour, 30, 0).unwrap() - TimeDelta::hours(1)
}

async fn the_notes_two_events_award_exactly_as_a_user_expects(mut h: Harness) {
    h.note_incentives().await;
    // Alice logs a mood on five consecutive Berlin days at 23:30 local time (22:30 UTC).
    let alice: Vec<Activity> =
        (10..=14).map(|d| activity("alice", ActivityKind::Mood, berlin(d, 23))).collect();
    // Bob logs five times on one day, and a symptom the day after: two days, no award.
    let mut bob: Vec<Activity> =
        (0..5).map(|i| activity("bob", ActivityKind::Mood, berlin(10, 8 + i))).collect();
    bob.push(activity("bob", ActivityKind::Symptom, berlin(11, 9)));
    // Carol reports a birth twice; steps count for nothing.
    let carol = [
        activity("carol", ActivityKind::Birth, berlin(12, 10)),
        activity("carol", ActivityKind::Birth, berlin(13, 10)),
        activity("carol", ActivityKind::Steps, berlin(13, 11)),
    ];
    // Carol's reports arrive one after the other (two processors racing on both could award
    // either day; see a_weekly_incentive_awards_once_per_iso_week).
    for batch in [&alice[..3], &bob[..], &alice[3..], &carol[..1], &carol[1..]] {
        h.process(batch).await;
    }
    let store = h.stop().await;
    assert_eq!(
        summary(&store.all_awards().await.unwrap()),
        vec![
            (
                "alice".into(),
                "data-logged-5-sequential-days".into(),
                "2026-11-14".into(),
                "once".into()
            ),
            ("carol".into(), "user-birth".into(), "2026-11-12".into(), "once".into()),
        ]
    );
}

async fn redelivered_and_duplicated_events_award_nothing_more(mut h: Harness) {
    let (five, _) = h.note_incentives().await;
    let days: Vec<Activity> =
        (10..=14).map(|d| activity("alice", ActivityKind::Mood, berlin(d, 9))).collect();
    h.process(&days).await;
    // A writer that died before its ack publishes the same batch again, twice.
    h.process(&days).await;
    let events = h.events(&days).await;
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|e| e.employer_incentive_id.to_string() == five.id));
    h.process(&days).await;
    let awards = h.stop().await.all_awards().await.unwrap();
    assert_eq!(awards.len(), 1, "{awards:?}");
    assert_eq!(awards[0].award_day.to_string(), "2026-11-14");
}

async fn parallel_processors_award_every_user_exactly_once(backend: Backend) {
    let mut h = harness_with(backend, 4).await;
    h.note_incentives().await;
    // 60 users, each logging five days and a birth, each activity twice, all at once: four
    // processors race over the same streaks, and days reach a streak in any order (five days
    // in any order fire once, on the last of them).
    let mut all = Vec::new();
    for u in 0..60 {
        let user = format!("user-{u:02}");
        for d in 10..=14 {
            all.push(activity(&user, ActivityKind::Mood, berlin(d, 7)));
        }
        all.push(activity(&user, ActivityKind::Birth, berlin(12, 7)));
    }
    // Once in writer batches of 7, once one by one as an older writer published them.
    let mut raw: Vec<Vec<u8>> = all.chunks(7).map(batch).collect();
    raw.extend(all.iter().map(recorded));
    for chunk in raw.chunks(37) {
        h.bus.publish(ACTIVITY_TOPIC, chunk).await.unwrap();
    }
    h.drained().await;
    let store = h.stop().await;
    let awards = summary(&store.all_awards().await.unwrap());
    let mut expected = Vec::new();
    for u in 0..60 {
        let user = format!("user-{u:02}");
        expected.push((
            user.clone(),
            "data-logged-5-sequential-days".into(),
            "2026-11-14".into(),
            "once".into(),
        ));
        expected.push((user, "user-birth".into(), "2026-11-12".into(), "once".into()));
    }
    expected.sort();
    assert_eq!(awards, expected);
}

async fn a_redelivered_batch_counts_each_of_its_activities_once(mut h: Harness) {
    h.note_incentives().await;
    // Three of alice's days in one batch, delivered three times (a writer that died after
    // publishing, twice): three days, not nine, so no 5-day streak yet.
    let first: Vec<Activity> =
        (10..=12).map(|d| activity("alice", ActivityKind::Mood, berlin(d, 9))).collect();
    for _ in 0..3 {
        h.process(&first).await;
    }
    assert_eq!(h.awards_of("alice", &alice()).await.unwrap(), Vec::new());
    // Her next two days and bob's birth in the next batch, delivered twice, one copy in the
    // same message as another copy of the first batch.
    let second = [
        activity("alice", ActivityKind::Mood, berlin(13, 9)),
        activity("alice", ActivityKind::Mood, berlin(14, 9)),
        activity("bob", ActivityKind::Birth, berlin(14, 10)),
    ];
    h.process(&second).await;
    h.publish(&[batch(&first), batch(&second)]).await;
    h.drained().await;
    let awards = h.stop().await.all_awards().await.unwrap();
    assert_eq!(
        summary(&awards),
        vec![
            (
                "alice".into(),
                "data-logged-5-sequential-days".into(),
                "2026-11-14".into(),
                "once".into()
            ),
            ("bob".into(), "user-birth".into(), "2026-11-14".into(), "once".into()),
        ]
    );
    // Each award names the activity that completed it, from inside its batch.
    let by_user = |u: &str| awards.iter().find(|a| a.user_id == u).unwrap().activity_id;
    assert_eq!((by_user("alice"), by_user("bob")), (second[1].id, second[2].id));
}

async fn a_batch_of_more_events_than_one_transaction_takes_counts_every_activity_once(
    mut h: Harness,
) {
    h.note_incentives().await;
    let n = ewpm_incentive::processor::MAX_EVENTS_PER_TRANSACTION + 150;
    let births: Vec<Activity> =
        (0..n).map(|u| activity(&format!("u{u:05}"), ActivityKind::Birth, now())).collect();
    // One message, and the same message again.
    h.process(&births).await;
    h.process(&births).await;
    let awards = h.stop().await.all_awards().await.unwrap();
    let mut users: Vec<&str> = awards.iter().map(|a| a.user_id.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    assert_eq!((awards.len(), users.len()), (n, n));
}

async fn lone_events_of_an_older_writer_and_batches_with_an_invalid_event_still_count(
    mut h: Harness,
) {
    h.note_incentives().await;
    // What a writer of the previous release left queued: one ActivityRecorded per message.
    let carol = activity("carol", ActivityKind::Birth, berlin(12, 10));
    // A batch of this release with one event that can never count (no user): the rest of
    // the batch counts.
    let dave = activity("dave", ActivityKind::Birth, berlin(13, 10));
    let broken = ActivityBatch {
        activities: vec![ActivityRecorded { user_id: String::new(), ..event(&dave) }, event(&dave)],
    }
    .encode_to_vec();
    // And messages that are neither: dropped, without blocking what follows.
    let empty = ActivityBatch::default().encode_to_vec();
    let eve = activity("eve", ActivityKind::Birth, berlin(14, 10));
    h.publish(&[recorded(&carol), broken, b"garbage".to_vec(), empty, batch(&[eve])]).await;
    h.drained().await;
    assert_eq!(
        summary(&h.stop().await.all_awards().await.unwrap()),
        vec![
            ("carol".into(), "user-birth".into(), "2026-11-12".into(), "once".into()),
            ("dave".into(), "user-birth".into(), "2026-11-13".into(), "once".into()),
            ("eve".into(), "user-birth".into(), "2026-11-14".into(), "once".into()),
        ]
    );
}

async fn a_weekly_incentive_awards_once_per_iso_week(mut h: Harness) {
    h.create_incentive("weekly-steps", each_rule(), &[PbKind::Steps], &admin()).await.unwrap();
    let link = h
        .client
        .create_employer_incentive(req(
            pb::CreateEmployerIncentiveRequest {
                program_id: "move".into(),
                incentive_slug: "weekly-steps".into(),
                reward: "a smoothie".into(),
                time_zone: "America/New_York".into(),
                start_time: Some(to_proto(now() - TimeDelta::days(30))),
                repeat_policy: pb::RepeatPolicy::OncePerPeriod as i32,
                period: pb::Period::Week as i32,
                ..Default::default()
            },
            &acme_admin(),
        ))
        .await
        .unwrap()
        .into_inner()
        .employer_incentive
        .unwrap();
    assert_eq!((link.employer_id.as_str(), link.time_zone.as_str()), ("acme", "America/New_York"));
    // Mon 9 Nov, Sat 14 Nov, and Sun 15 Nov 23:00 in New York (Monday 04:00 UTC): one ISO week.
    // Mon 16 Nov: the next.
    let at = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap();
    let steps = [at(9, 15), at(14, 15), at(16, 4), at(16, 15)];
    // Day by day, as they happen (within one period, the first activity processed earns the
    // award: two processors racing on the 9th and the 14th could give either day).
    for t in steps {
        h.process(&[activity("alice", ActivityKind::Steps, t)]).await;
    }
    let awards = summary(&h.stop().await.all_awards().await.unwrap());
    assert_eq!(
        awards,
        vec![
            ("alice".into(), "weekly-steps".into(), "2026-11-09".into(), "2026-W46".into()),
            ("alice".into(), "weekly-steps".into(), "2026-11-16".into(), "2026-W47".into()),
        ]
    );
}

async fn the_catalog_is_for_admins_and_links_for_their_own_employer(mut h: Harness) {
    for auth in [acme_admin(), alice()] {
        let err =
            h.create_incentive("sneaky", each_rule(), &[PbKind::Mood], &auth).await.unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::PermissionDenied, "PERMISSION_DENIED".into())
        );
    }
    let created =
        h.create_incentive("user-birth", each_rule(), &[PbKind::Birth], &admin()).await.unwrap();
    let err = h
        .create_incentive("user-birth", each_rule(), &[PbKind::Birth], &admin())
        .await
        .unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::AlreadyExists, "INCENTIVE_SLUG_TAKEN".into()));
    let err = h.create_incentive("X", streak_rule(1), &[], &admin()).await.unwrap_err();
    assert_eq!(violations(&err), ["slug", "rule.consecutive_days.days", "trigger_kinds"]);
    // An employer admin links for their own employer only; employees not at all.
    let err = h.link("globex", "user-birth", "", &acme_admin()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = h.link("acme", "user-birth", "", &alice()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = h.link("acme", "user-birth", "Mars/Olympus", &acme_admin()).await.unwrap_err();
    assert_eq!(violations(&err), ["time_zone"]);
    let link = h.link("acme", "user-birth", "", &acme_admin()).await.unwrap();
    assert_eq!(link.incentive.as_ref().map(|i| i.id.clone()), Some(created.id.clone()));
    assert_eq!(link.time_zone, "UTC");
    assert_eq!(link.actions, vec![pb::ActionKind::Award as i32, pb::ActionKind::Notify as i32]);
    // Another employer's admin can neither deactivate it nor see it; nothing changed.
    let err = h
        .client
        .deactivate_employer_incentive(req(
            pb::DeactivateEmployerIncentiveRequest { id: link.id.clone() },
            &globex_admin(),
        ))
        .await
        .unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::PermissionDenied, "PERMISSION_DENIED".into()));
    let client = h.client.clone();
    let list = |auth: String| {
        let mut client = client.clone();
        async move {
            client
                .list_employer_incentives(req(
                    pb::ListEmployerIncentivesRequest {
                        employer_id: "acme".into(),
                        ..Default::default()
                    },
                    &auth,
                ))
                .await
                .map(|r| r.into_inner().employer_incentives)
        }
    };
    assert_eq!(list(globex_admin()).await.unwrap_err().code(), Code::PermissionDenied);
    let seen = list(alice()).await.unwrap();
    assert_eq!(seen, vec![link.clone()]);
    // Its own admin deactivates it; later activity no longer counts.
    let off = h
        .client
        .deactivate_employer_incentive(req(
            pb::DeactivateEmployerIncentiveRequest { id: link.id.clone() },
            &acme_admin(),
        ))
        .await
        .unwrap()
        .into_inner()
        .employer_incentive
        .unwrap();
    assert!(!off.active);
    assert_eq!(list(acme_admin()).await.unwrap(), Vec::<pb::EmployerIncentive>::new());
    // A birth now counts towards nothing (and processed, earns nothing).
    let birth = activity("alice", ActivityKind::Birth, now());
    assert_eq!(h.events(std::slice::from_ref(&birth)).await, Vec::<IncentiveEvent>::new());
    h.process(&[birth]).await;
    let store = h.stop().await;
    assert_eq!(store.all_awards().await.unwrap(), Vec::<Award>::new());
}

async fn awards_are_for_the_user_their_employer_admins_and_admins(mut h: Harness) {
    h.note_incentives().await;
    h.process(&[activity("alice", ActivityKind::Birth, now())]).await;
    let own = h.awards_of("alice", &alice()).await.unwrap();
    assert_eq!(
        own.iter()
            .map(|a| (a.user_id.as_str(), a.incentive_slug.as_str(), a.reward.as_str()))
            .collect::<Vec<_>>(),
        vec![("alice", "user-birth", "user-birth reward")]
    );
    assert_eq!(h.awards_of("alice", &acme_admin()).await.unwrap(), own);
    assert_eq!(h.awards_of("alice", &admin()).await.unwrap(), own);
    let err = h.awards_of("alice", &bob()).await.unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::PermissionDenied, "PERMISSION_DENIED".into()));
    // Another employer's admin sees none of what alice earned at acme.
    assert_eq!(h.awards_of("alice", &globex_admin()).await.unwrap(), Vec::<pb::Award>::new());
    let client = h.client.clone();
    let by_employer = |auth: String| {
        let mut client = client.clone();
        async move {
            client
                .list_awards(req(
                    pb::ListAwardsRequest { employer_id: "acme".into(), ..Default::default() },
                    &auth,
                ))
                .await
                .map(|r| r.into_inner().awards)
        }
    };
    assert_eq!(by_employer(acme_admin()).await.unwrap(), own);
    assert_eq!(by_employer(globex_admin()).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(by_employer(alice()).await.unwrap_err().code(), Code::PermissionDenied);
    h.stop().await;
}

async fn watch_awards_streams_the_callers_new_awards(mut h: Harness) {
    h.note_incentives().await;
    let mut stream =
        h.client.watch_awards(req(pb::WatchAwardsRequest {}, &alice())).await.unwrap().into_inner();
    // Give the subscription a moment to be in place upstream (Redis pub/sub).
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.process(&[activity("bob", ActivityKind::Birth, now())]).await;
    h.process(&[activity("alice", ActivityKind::Birth, now())]).await;
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an award within 10 s")
        .unwrap()
        .unwrap();
    let award = first.award.unwrap();
    assert_eq!((award.user_id.as_str(), award.incentive_slug.as_str()), ("alice", "user-birth"));
    h.stop().await;
}

async fn a_new_link_counts_from_the_next_activity(mut h: Harness) {
    h.create_incentive("user-birth", each_rule(), &[PbKind::Birth], &admin()).await.unwrap();
    // The cache has looked acme up (no links) and holds that for a minute; so do the
    // processors after an activity of acme's.
    let birth = activity("alice", ActivityKind::Birth, now());
    assert_eq!(h.events(std::slice::from_ref(&birth)).await, Vec::new());
    h.process(&[activity("carol", ActivityKind::Birth, now())]).await;
    let link = h.link("acme", "user-birth", "", &acme_admin()).await.unwrap();
    // The link's announcement reaches the caches (over Redis pub/sub in the mesh) at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let events = loop {
        let events = h.events(std::slice::from_ref(&birth)).await;
        if !events.is_empty() || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        events.iter().map(|e| e.employer_incentive_id.to_string()).collect::<Vec<_>>(),
        vec![link.id.clone()]
    );
    // Bob's birth earns the award (and the processors now hold the link, for a minute).
    h.process(&[activity("bob", ActivityKind::Birth, now())]).await;
    // And the deactivation reaches the caches too.
    h.client
        .deactivate_employer_incentive(req(
            pb::DeactivateEmployerIncentiveRequest { id: link.id },
            &acme_admin(),
        ))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !h.events(std::slice::from_ref(&birth)).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the link cache still counts a deactivated link"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Alice's birth, processed after the deactivation, earns nothing.
    h.process(&[birth]).await;
    let awards = summary(&h.stop().await.all_awards().await.unwrap());
    assert_eq!(
        awards,
        vec![("bob".into(), "user-birth".into(), "2026-11-20".into(), "once".into())]
    );
}

/// Pages of 2 through an employer's awards list every award once, newest first.
async fn award_pages_walk_the_ledger_newest_first(mut h: Harness) {
    h.note_incentives().await;
    let births: Vec<Activity> =
        (0..5).map(|i| activity(&format!("u{i}"), ActivityKind::Birth, now())).collect();
    h.process(&births).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .client
            .list_awards(req(
                pb::ListAwardsRequest {
                    employer_id: "acme".into(),
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &acme_admin(),
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.awards.len() <= 2);
        seen.extend(page.awards.into_iter().map(|a| a.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut newest_first: Vec<String> =
        h.stop().await.all_awards().await.unwrap().iter().map(|a| a.id.to_string()).collect();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    assert_eq!(seen.len(), 5);
}

macro_rules! suite {
    ($backend:ident, $which:expr) => {
        mod $backend {
            use super::*;
            suite!(@tests $which;
                the_notes_two_events_award_exactly_as_a_user_expects,
                redelivered_and_duplicated_events_award_nothing_more,
                a_redelivered_batch_counts_each_of_its_activities_once,
                a_batch_of_more_events_than_one_transaction_takes_counts_every_activity_once,
                lone_events_of_an_older_writer_and_batches_with_an_invalid_event_still_count,
                a_weekly_incentive_awards_once_per_iso_week,
                the_catalog_is_for_admins_and_links_for_their_own_employer,
                awards_are_for_the_user_their_employer_admins_and_admins,
                watch_awards_streams_the_callers_new_awards,
                award_pages_walk_the_ledger_newest_first,
                a_new_link_counts_from_the_next_activity,
            );
        }
    };
    (@tests $which:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(harness($which).await).await;
            }
        )+
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn parallel_processors_award_every_user_exactly_once() {
            super::parallel_processors_award_every_user_exactly_once($which).await;
        }
    };
}

suite!(embedded, Backend::Embedded);
suite!(mesh, Backend::Mesh);
