//! The challenge service over real gRPC, on SQLite and on PostgreSQL: one suite, two backends.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use ewpm_kit::{
    auth::{Role, TokenKeys},
    clock::FixedClock,
    settings::Settings,
    timestamp::to_proto,
};
use ewpm_proto::challenge::v1::{self as pb, challenge_service_client::ChallengeServiceClient};
use ewpm_testkit::{Spawned, TestDb, bearer, reason, request as req, spawn_grpc, violations};
use tonic::{Code, Request, transport::Channel};

struct Harness {
    client: ChallengeServiceClient<Channel>,
    clock: Arc<FixedClock>,
    _server: Spawned,
    _db: TestDb,
}

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap()
}

async fn harness(db: TestDb) -> Harness {
    let clock = FixedClock::new(at(10, 12));
    let conn = db.db.clone();
    let c = clock.clone();
    let server = spawn_grpc(|mount, grpc| {
        mount.add(ewpm_challenge::app::build(conn, c, grpc));
    })
    .await
    .unwrap();
    let client = ChallengeServiceClient::connect(server.uri()).await.unwrap();
    Harness { client, clock, _server: server, _db: db }
}

fn admin() -> String {
    bearer("admin-1", Role::Admin, None)
}
fn acme_admin() -> String {
    bearer("acme-admin", Role::EmployerAdmin, Some("acme"))
}
fn acme_employee() -> String {
    bearer("alice", Role::Employee, Some("acme"))
}
fn globex_employee() -> String {
    bearer("bob", Role::Employee, Some("globex"))
}

fn create_req(name: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> pb::CreateChallengeRequest {
    pb::CreateChallengeRequest {
        name: name.into(),
        description: "walk more".into(),
        start_time: Some(to_proto(start)),
        end_time: Some(to_proto(end)),
        goal: Some(pb::Goal { target: 100_000.0, unit: "steps".into() }),
        employer_id: String::new(),
        idempotency_key: String::new(),
        late_grace_seconds: 0,
    }
}

async fn create(h: &mut Harness, request: pb::CreateChallengeRequest, auth: &str) -> pb::Challenge {
    h.client.create_challenge(req(request, auth)).await.unwrap().into_inner().challenge.unwrap()
}

async fn list_all(h: &mut Harness, auth: &str) -> Vec<pb::Challenge> {
    h.client
        .list_challenges(req(
            pb::ListChallengesRequest { page_size: 100, ..Default::default() },
            auth,
        ))
        .await
        .unwrap()
        .into_inner()
        .challenges
}

async fn an_admin_creates_a_challenge_and_reads_it_back(mut h: Harness) {
    let created = create(&mut h, create_req("10k steps", at(1, 0), at(31, 0)), &admin()).await;
    assert_eq!(created.name, "10k steps");
    assert_eq!(created.state, pb::ChallengeState::Active as i32);
    assert_eq!(created.created_by, "admin-1");
    assert_eq!(created.create_time, Some(to_proto(at(10, 12))));
    let got = h
        .client
        .get_challenge(req(pb::GetChallengeRequest { id: created.id.clone() }, &acme_employee()))
        .await
        .unwrap()
        .into_inner()
        .challenge
        .unwrap();
    assert_eq!(got, created);
}

async fn an_employee_cannot_create_and_nothing_is_written(mut h: Harness) {
    let err = h
        .client
        .create_challenge(req(create_req("mine", at(1, 0), at(2, 0)), &acme_employee()))
        .await
        .unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::PermissionDenied, "PERMISSION_DENIED"));
    assert_eq!(list_all(&mut h, &admin()).await, vec![]);
}

async fn bad_input_names_every_field_and_writes_nothing(mut h: Harness) {
    let err = h
        .client
        .create_challenge(req(create_req("x", at(2, 0), at(1, 0)), &admin()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["end_time"]);

    let mut bad = create_req("   ", at(1, 0), at(2, 0));
    bad.goal = Some(pb::Goal { target: 0.0, unit: String::new() });
    bad.name = "n".repeat(201);
    let err = h.client.create_challenge(req(bad, &admin())).await.unwrap_err();
    assert_eq!(violations(&err), ["name", "goal.target", "goal.unit"]);

    let mut missing = create_req("x", at(1, 0), at(2, 0));
    missing.start_time = None;
    missing.goal = None;
    let err = h.client.create_challenge(req(missing, &admin())).await.unwrap_err();
    assert_eq!(violations(&err), ["start_time", "goal"]);

    // What a store cannot hold is bad input, not an internal error.
    let mut unstorable = create_req("x", at(1, 0), at(2, 0));
    unstorable.start_time = Some(prost_types::Timestamp { seconds: -5_000_000_000_000, nanos: 0 });
    unstorable.description = "nul \u{0} byte".into();
    unstorable.idempotency_key = "k\u{0}".into();
    let err = h.client.create_challenge(req(unstorable, &admin())).await.unwrap_err();
    assert_eq!(violations(&err), ["description", "start_time", "idempotency_key"]);
    let mut bad_nanos = create_req("x", at(1, 0), at(2, 0));
    bad_nanos.end_time = Some(prost_types::Timestamp { seconds: 0, nanos: 2_000_000_000 });
    let err = h.client.create_challenge(req(bad_nanos, &admin())).await.unwrap_err();
    assert_eq!(violations(&err), ["end_time"]);

    assert_eq!(list_all(&mut h, &admin()).await, vec![]);
}

async fn unknown_and_malformed_ids_are_not_found_and_invalid(mut h: Harness) {
    let err = h
        .client
        .get_challenge(req(
            pb::GetChallengeRequest { id: uuid::Uuid::now_v7().to_string() },
            &admin(),
        ))
        .await
        .unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::NotFound, "CHALLENGE_NOT_FOUND"));
    let err = h
        .client
        .get_challenge(req(pb::GetChallengeRequest { id: "nope".into() }, &admin()))
        .await
        .unwrap_err();
    assert_eq!((err.code(), violations(&err)), (Code::InvalidArgument, vec!["id".to_string()]));
}

async fn missing_forged_and_expired_tokens_are_unauthenticated(mut h: Harness) {
    let err = h
        .client
        .list_challenges(Request::new(pb::ListChallengesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Unauthenticated, "MISSING_TOKEN"));

    let forged = TokenKeys::new("not-the-secret", &Settings::default().auth).mint(
        "mallory",
        Role::Admin,
        None,
    );
    let err = h
        .client
        .create_challenge(req(create_req("x", at(1, 0), at(2, 0)), &format!("Bearer {forged}")))
        .await
        .unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Unauthenticated, "INVALID_TOKEN"));

    let expired = ewpm_testkit::expired_bearer("admin-1", Role::Admin);
    let err = h
        .client
        .create_challenge(req(create_req("x", at(1, 0), at(2, 0)), &expired))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(list_all(&mut h, &admin()).await, vec![]);
}

async fn employer_scope_decides_who_creates_sees_and_changes(mut h: Harness) {
    let own = create(&mut h, create_req("acme walk", at(1, 0), at(31, 0)), &acme_admin()).await;
    assert_eq!(own.employer_id, "acme");
    let mut other = create_req("globex walk", at(1, 0), at(31, 0));
    other.employer_id = "globex".into();
    let err = h.client.create_challenge(req(other.clone(), &acme_admin())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let globex = create(&mut h, other, &admin()).await;
    let open = create(&mut h, create_req("open walk", at(1, 0), at(31, 0)), &admin()).await;

    // Readers see open challenges and their own employer's only.
    let names = |cs: Vec<pb::Challenge>| cs.into_iter().map(|c| c.name).collect::<Vec<_>>();
    assert_eq!(names(list_all(&mut h, &acme_employee()).await), ["acme walk", "open walk"]);
    assert_eq!(names(list_all(&mut h, &globex_employee()).await), ["globex walk", "open walk"]);
    let err = h
        .client
        .get_challenge(req(pb::GetChallengeRequest { id: globex.id.clone() }, &acme_employee()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = h
        .client
        .list_challenges(req(
            pb::ListChallengesRequest { employer_id: "globex".into(), ..Default::default() },
            &acme_employee(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // An employer admin may not change an open challenge; nothing changes.
    let rename = |id: &str| pb::UpdateChallengeRequest {
        challenge: Some(pb::Challenge {
            id: id.into(),
            name: "renamed".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["name".into()] }),
    };
    let err = h.client.update_challenge(req(rename(&open.id), &acme_admin())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = h.client.update_challenge(req(rename(&own.id), &acme_employee())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let renamed =
        h.client.update_challenge(req(rename(&own.id), &acme_admin())).await.unwrap().into_inner();
    assert_eq!(renamed.challenge.unwrap().name, "renamed");
    assert_eq!(names(list_all(&mut h, &admin()).await), ["renamed", "globex walk", "open walk"]);
}

async fn an_update_changes_only_masked_fields_and_stays_valid(mut h: Harness) {
    let c = create(&mut h, create_req("walk", at(1, 0), at(31, 0)), &admin()).await;
    h.clock.set(at(11, 0));
    let update = pb::UpdateChallengeRequest {
        challenge: Some(pb::Challenge {
            id: c.id.clone(),
            name: "ignored, not in the mask".into(),
            goal: Some(pb::Goal { target: 5.0, unit: "ignored".into() }),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["goal.target".into()] }),
    };
    let updated = h
        .client
        .update_challenge(req(update, &admin()))
        .await
        .unwrap()
        .into_inner()
        .challenge
        .unwrap();
    assert_eq!(
        updated,
        pb::Challenge {
            goal: Some(pb::Goal { target: 5.0, unit: "steps".into() }),
            updated_by: "admin-1".into(),
            update_time: Some(to_proto(at(11, 0))),
            ..c.clone()
        }
    );

    let backwards = pb::UpdateChallengeRequest {
        challenge: Some(pb::Challenge {
            id: c.id.clone(),
            end_time: Some(to_proto(at(1, 0))),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["end_time".into()] }),
    };
    let err = h.client.update_challenge(req(backwards, &admin())).await.unwrap_err();
    assert_eq!(violations(&err), ["end_time"]);
    let unknown = pb::UpdateChallengeRequest {
        challenge: Some(pb::Challenge { id: c.id.clone(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["created_by".into()] }),
    };
    let err = h.client.update_challenge(req(unknown, &admin())).await.unwrap_err();
    assert_eq!(violations(&err), ["update_mask"]);
    let got =
        h.client.get_challenge(req(pb::GetChallengeRequest { id: c.id }, &admin())).await.unwrap();
    assert_eq!(got.into_inner().challenge.unwrap(), updated);
}

async fn listing_filters_by_state_and_pages_in_creation_order(mut h: Harness) {
    // now = day 10, 12:00
    let upcoming = create(&mut h, create_req("upcoming", at(11, 0), at(20, 0)), &admin()).await;
    let ended = create(&mut h, create_req("ended", at(1, 0), at(9, 0)), &admin()).await;
    let mut active = Vec::new();
    for i in 0..5 {
        active.push(
            create(&mut h, create_req(&format!("active {i}"), at(1, 0), at(20 + i, 0)), &admin())
                .await,
        );
    }
    let by_state = |state: pb::ChallengeState| pb::ListChallengesRequest {
        state: state as i32,
        page_size: 100,
        ..Default::default()
    };
    let ids = |cs: Vec<pb::Challenge>| cs.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let r = h
        .client
        .list_challenges(req(by_state(pb::ChallengeState::Upcoming), &admin()))
        .await
        .unwrap();
    assert_eq!(ids(r.into_inner().challenges), [upcoming.id]);
    let r =
        h.client.list_challenges(req(by_state(pb::ChallengeState::Ended), &admin())).await.unwrap();
    assert_eq!(ids(r.into_inner().challenges), [ended.id]);

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let r = h
            .client
            .list_challenges(req(
                pb::ListChallengesRequest {
                    state: pb::ChallengeState::Active as i32,
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &admin(),
            ))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(ids(r.challenges));
        token = r.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!((pages, seen), (3, ids(active)));

    let err = h
        .client
        .list_challenges(req(
            pb::ListChallengesRequest { page_token: "garbage".into(), ..Default::default() },
            &admin(),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["page_token"]);
    let err = h
        .client
        .list_challenges(req(
            pb::ListChallengesRequest { state: 42, page_size: -1, ..Default::default() },
            &admin(),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["state", "page_size"]);
}

async fn active_challenges_of_a_user_end_soonest_first(mut h: Harness) {
    let later = create(&mut h, create_req("later", at(1, 0), at(25, 0)), &admin()).await;
    let sooner = create(&mut h, create_req("sooner", at(1, 0), at(15, 0)), &acme_admin()).await;
    let not_yet = create(&mut h, create_req("not yet", at(11, 0), at(25, 0)), &admin()).await;
    let mut globex = create_req("globex", at(1, 0), at(25, 0));
    globex.employer_id = "globex".into();
    create(&mut h, globex, &admin()).await;

    let active = |user: &str, employer: &str| pb::ListActiveChallengesRequest {
        user_id: user.into(),
        employer_id: employer.into(),
        ..Default::default()
    };
    let ids = |r: pb::ListActiveChallengesResponse| {
        r.challenges.into_iter().map(|c| c.id).collect::<Vec<_>>()
    };
    let mine =
        h.client.list_active_challenges(req(active("alice", ""), &acme_employee())).await.unwrap();
    assert_eq!(ids(mine.into_inner()), [sooner.id.clone(), later.id.clone()]);
    let err = h
        .client
        .list_active_challenges(req(active("carol", ""), &acme_employee()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let for_admin =
        h.client.list_active_challenges(req(active("carol", "acme"), &admin())).await.unwrap();
    assert_eq!(ids(for_admin.into_inner()), [sooner.id.clone(), later.id.clone()]);

    // Past the first end and the second start: same end time, so creation order.
    h.clock.set(at(16, 0));
    let mine =
        h.client.list_active_challenges(req(active("", ""), &acme_employee())).await.unwrap();
    assert_eq!(ids(mine.into_inner()), [later.id, not_yet.id]);
}

async fn a_retried_create_returns_the_first_result(mut h: Harness) {
    let mut request = create_req("walk", at(1, 0), at(31, 0));
    request.idempotency_key = "key-1".into();
    let first = create(&mut h, request.clone(), &admin()).await;
    let second = create(&mut h, request.clone(), &admin()).await;
    assert_eq!(first, second);
    request.name = "different".into();
    let err = h.client.create_challenge(req(request, &admin())).await.unwrap_err();
    assert_eq!(
        (violations(&err), reason(&err)),
        (vec!["idempotency_key".to_string()], "IDEMPOTENCY_KEY_REUSED".to_string())
    );
    assert_eq!(list_all(&mut h, &admin()).await.len(), 1);
}

async fn a_late_grace_is_stored_returned_and_changed_within_seven_days(mut h: Harness) {
    let mut request = create_req("late syncs", at(1, 0), at(5, 0));
    request.late_grace_seconds = 86_400;
    let c = create(&mut h, request, &admin()).await;
    assert_eq!(c.late_grace_seconds, 86_400);
    let got = h.client.get_challenge(req(pb::GetChallengeRequest { id: c.id.clone() }, &admin()));
    assert_eq!(got.await.unwrap().into_inner().challenge.unwrap(), c);
    for bad in [604_801, -1] {
        let mut request = create_req("too late", at(1, 0), at(5, 0));
        request.late_grace_seconds = bad;
        let err = h.client.create_challenge(req(request, &admin())).await.unwrap_err();
        assert_eq!(
            (err.code(), violations(&err)),
            (Code::InvalidArgument, vec!["late_grace_seconds".to_string()])
        );
    }
    // Without a mask a set (non-zero) grace changes; named in the mask it may go back to 0.
    let grace = |id: &str, secs: i32, mask: &[&str]| pb::UpdateChallengeRequest {
        challenge: Some(pb::Challenge {
            id: id.to_string(),
            late_grace_seconds: secs,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: mask.iter().map(|p| p.to_string()).collect(),
        }),
    };
    let updated = h.client.update_challenge(req(grace(&c.id, 604_800, &[]), &admin())).await;
    assert_eq!(updated.unwrap().into_inner().challenge.unwrap().late_grace_seconds, 604_800);
    let updated = h
        .client
        .update_challenge(req(grace(&c.id, 0, &["late_grace_seconds"]), &admin()))
        .await
        .unwrap()
        .into_inner()
        .challenge
        .unwrap();
    assert_eq!(updated, pb::Challenge { late_grace_seconds: 0, ..c.clone() });
    let err = h
        .client
        .update_challenge(req(grace(&c.id, 604_801, &["late_grace_seconds"]), &admin()))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["challenge.late_grace_seconds"]);
}

async fn a_goal_below_the_minimum_target_is_refused(mut h: Harness) {
    for (target, field) in
        [(5e-324, "goal.target"), (0.0009, "goal.target"), (f64::NAN, "goal.target")]
    {
        let mut request = create_req("tiny", at(1, 0), at(20, 0));
        request.goal = Some(pb::Goal { target, unit: "steps".into() });
        let err = h.client.create_challenge(req(request, &admin())).await.unwrap_err();
        assert_eq!(
            (err.code(), violations(&err)),
            (Code::InvalidArgument, vec![field.to_string()])
        );
    }
    let mut request = create_req("smallest", at(1, 0), at(20, 0));
    request.goal = Some(pb::Goal { target: 0.001, unit: "km".into() });
    let c = create(&mut h, request, &admin()).await;
    assert_eq!(c.goal, Some(pb::Goal { target: 0.001, unit: "km".into() }));
    assert_eq!(list_all(&mut h, &admin()).await, vec![c]);
}

macro_rules! suite {
    ($backend:ident, $db:expr) => {
        mod $backend {
            use super::*;
            suite!(@tests $db;
                an_admin_creates_a_challenge_and_reads_it_back,
                an_employee_cannot_create_and_nothing_is_written,
                bad_input_names_every_field_and_writes_nothing,
                unknown_and_malformed_ids_are_not_found_and_invalid,
                missing_forged_and_expired_tokens_are_unauthenticated,
                employer_scope_decides_who_creates_sees_and_changes,
                an_update_changes_only_masked_fields_and_stays_valid,
                listing_filters_by_state_and_pages_in_creation_order,
                active_challenges_of_a_user_end_soonest_first,
                a_retried_create_returns_the_first_result,
                a_late_grace_is_stored_returned_and_changed_within_seven_days,
                a_goal_below_the_minimum_target_is_refused,
            );
        }
    };
    (@tests $db:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                super::$name(harness($db.await.unwrap()).await).await;
            }
        )+
    };
}

suite!(sqlite, TestDb::sqlite(&[&ewpm_challenge::MODULE]));
suite!(postgres, TestDb::postgres(&[&ewpm_challenge::MODULE]));
