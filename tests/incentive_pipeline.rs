//! The activity pipeline end to end, as separate processes on PostgreSQL + Redis: REST edge →
//! progress service (LogActivity) → Redis Streams → batch writers → activity log and the
//! `activity` topic → incentive processor processes → streaks and awards → REST. The
//! progress side never waits for the incentive side: an incentive outage delays awards only.

use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Days, TimeDelta, Utc};
use ewpm_incentive::{PROCESSOR_GROUP, store::IncentiveStore};
use ewpm_kit::{
    auth::Role,
    bus::{Bus, RedisBus},
};
use ewpm_progress::activity::{Activity, ActivityKind};
use ewpm_proto::progress::v1::{
    ACTIVITY_TOPIC, ActivityBatch, SubmitProgressRequest,
    progress_service_client::ProgressServiceClient,
};
use ewpm_testkit::{Proc, bearer, free_port, get_json, http_client, servers};
use prost::Message as _;
use serde_json::{Value, json};
use tonic::Request;
use uuid::Uuid;

mod common;
use common::{Mesh, admin, start_dev};

fn acme_admin() -> String {
    bearer("ann", Role::EmployerAdmin, Some("acme"))
}

fn employee(user: &str) -> String {
    bearer(user, Role::Employee, Some("acme"))
}

/// `POST url` with a JSON body; the status and the JSON answer.
async fn post(url: &str, auth: &str, body: Value) -> (u16, Value) {
    let r = http_client()
        .post(url)
        .header("authorization", auth)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Noon UTC `days_ago` days before today (a past instant on that Berlin day too).
fn noon(days_ago: u64) -> DateTime<Utc> {
    let day = Utc::now().date_naive() - Days::new(days_ago);
    day.and_hms_opt(12, 0, 0).unwrap().and_utc()
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The catalog of the note, linked by acme (days counted in Berlin) through the REST edge.
async fn note_incentives(base: &str) {
    for (slug, rule, kinds) in [
        (
            "data-logged-5-sequential-days",
            json!({"consecutiveDays": {"days": 5}}),
            json!(["mood", "symptom"]),
        ),
        ("user-birth", json!({"eachOccurrence": {}}), json!(["birth"])),
    ] {
        let body = json!({"slug": slug, "description": format!("{slug}, for people"), "rule": rule, "triggerKinds": kinds});
        let (status, created) = post(&format!("{base}/api/incentives"), &admin(), body).await;
        assert_eq!(status, 201, "{created}");
        let link = json!({
            "programId": "maternity-2026",
            "incentiveSlug": slug,
            "reward": "pregnancy pillow",
            "timeZone": "Europe/Berlin",
            "startTime": rfc3339(Utc::now() - TimeDelta::days(30)),
        });
        let (status, linked) =
            post(&format!("{base}/api/employers/acme/incentives"), &acme_admin(), link).await;
        assert_eq!(status, 201, "{linked}");
        assert_eq!(linked["incentive"]["slug"], slug);
    }
}

/// Polls until the progress queue and the activity topic are fully processed (the
/// processors' group exists: they have started).
async fn drained(mesh: &Mesh) {
    let bus = RedisBus::connect(&servers().redis_url, &mesh.prefix).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let writes = bus.backlog("progress", "progress-writer").await.unwrap();
        let activity = bus.backlog(ACTIVITY_TOPIC, PROCESSOR_GROUP).await.unwrap();
        let group = bus.pending(ACTIVITY_TOPIC, PROCESSOR_GROUP).await.is_ok();
        if writes == 0 && activity == 0 && group {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not drained: {writes} writes, {activity} activities left (group exists: {group})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (slug, award day) of a user's awards, read through the REST edge as the user.
async fn awards_of(base: &str, user: &str) -> Vec<(String, String)> {
    let page = get_json(&format!("{base}/api/users/{user}/awards"), &employee(user)).await;
    let mut awards: Vec<(String, String)> = page["awards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (a["incentiveSlug"].as_str().unwrap().into(), a["awardDay"].as_str().unwrap().into())
        })
        .collect();
    awards.sort();
    awards
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_notes_demo_through_the_rest_edge() {
    let mesh = Mesh::start(true).await;
    let base = mesh.base();
    note_incentives(&base).await;
    // Another employer's admin cannot link to acme's programs.
    let foreign = bearer("gus", Role::EmployerAdmin, Some("globex"));
    let link = json!({"programId": "p", "incentiveSlug": "user-birth", "reward": "r"});
    let (status, problem) =
        post(&format!("{base}/api/employers/acme/incentives"), &foreign, link).await;
    assert_eq!((status, problem["reason"].as_str()), (403, Some("PERMISSION_DENIED")));

    // Alice logs her mood on five consecutive days.
    for days_ago in (1..=5).rev() {
        let body = json!({"kind": "mood", "value": 4, "occurredAt": rfc3339(noon(days_ago))});
        let (status, logged) =
            post(&format!("{base}/api/activities"), &employee("alice"), body).await;
        assert_eq!(status, 202, "{logged}");
        assert_eq!(
            (logged["kind"].as_str(), logged["userId"].as_str()),
            (Some("mood"), Some("alice"))
        );
    }
    // Bob logs five times on one day.
    for hour in 0..5 {
        let at = noon(2) - TimeDelta::hours(hour);
        let body = json!({"kind": "symptom", "note": "nausea", "occurredAt": rfc3339(at)});
        let (status, _) = post(&format!("{base}/api/activities"), &employee("bob"), body).await;
        assert_eq!(status, 202);
    }
    // Carol reports a birth, and reports it again.
    for _ in 0..2 {
        let body = json!({"occurredAt": rfc3339(noon(1))});
        let (status, logged) = post(&format!("{base}/api/births"), &employee("carol"), body).await;
        assert_eq!((status, logged["kind"].as_str()), (202, Some("birth")));
    }
    drained(&mesh).await;

    let yesterday = (Utc::now().date_naive() - Days::new(1)).to_string();
    assert_eq!(
        awards_of(&base, "alice").await,
        vec![("data-logged-5-sequential-days".into(), yesterday.clone())]
    );
    assert_eq!(awards_of(&base, "bob").await, Vec::<(String, String)>::new());
    assert_eq!(awards_of(&base, "carol").await, vec![("user-birth".into(), yesterday)]);
    // Bob may not read alice's awards; acme's admin may.
    let r = http_client()
        .get(format!("{base}/api/users/alice/awards"))
        .header("authorization", employee("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let page = get_json(&format!("{base}/api/employers/acme/awards"), &acme_admin()).await;
    assert_eq!(page["awards"].as_array().unwrap().len(), 2);
    assert_eq!(page["awards"][0]["reward"], "pregnancy pillow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processor_processes_one_killed_with_sigkill_award_every_user_exactly_once() {
    let mesh = Mesh::start_with(true, false).await;
    note_incentives(&mesh.base()).await;
    // 1,500 users each log five consecutive days and a birth: 9,000 activities on the
    // `activity` topic, as the progress writers publish them (a message per written batch,
    // here of 10).
    let bus: Arc<dyn Bus> =
        Arc::new(RedisBus::connect(&servers().redis_url, &mesh.prefix).await.unwrap());
    let users: Vec<String> = (0..1500).map(|u| format!("user-{u:04}")).collect();
    let activity = |user: &str, kind, days_ago| Activity {
        id: Uuid::now_v7(),
        kind,
        user_id: user.to_string(),
        employer_id: Some("acme".into()),
        value: None,
        occurred_at: noon(days_ago),
    };
    let mut activities = Vec::new();
    for days_ago in (1..=5).rev() {
        for u in &users {
            activities.push(activity(u, ActivityKind::Mood, days_ago));
        }
    }
    for u in &users {
        activities.push(activity(u, ActivityKind::Birth, 3));
    }
    let batches: Vec<Vec<u8>> = activities
        .chunks(10)
        .map(|chunk| {
            ActivityBatch { activities: chunk.iter().map(Activity::to_event).collect() }
                .encode_to_vec()
        })
        .collect();
    for chunk in batches.chunks(50) {
        bus.publish(ACTIVITY_TOPIC, chunk).await.unwrap();
    }
    let spawn_processor = || -> Proc {
        let mut cmd: Command = mesh.ewpm();
        cmd.args(["serve", "incentive-processor"])
            .env("EWPM_GRPC__ADDR", format!("127.0.0.1:{}", free_port()))
            .env("EWPM_METRICS__ADDR", format!("127.0.0.1:{}", free_port()))
            // 10 messages: 100 activities per batch.
            .env("EWPM_INCENTIVE__BATCH_SIZE", "10")
            .env("EWPM_INCENTIVE__RECLAIM_IDLE_MS", "1000")
            .stdout(Stdio::null());
        Proc(cmd.spawn().unwrap())
    };
    let mut doomed = spawn_processor();
    let _survivor = spawn_processor();
    let store = IncentiveStore::new(mesh.db.db.clone());
    // Kill one processor with SIGKILL once some awards are recorded: mid-run.
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.all_awards().await.unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "no awards were recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.0.kill().unwrap();
    doomed.0.wait().unwrap();
    let at_kill = store.all_awards().await.unwrap().len();
    assert!(at_kill < 3000, "the run was over before the kill ({at_kill} awards)");
    drained(&mesh).await;

    let awards = store.all_awards().await.unwrap();
    let mut got: Vec<(String, String, String)> = awards
        .iter()
        .map(|a| (a.user_id.clone(), a.incentive_slug.clone(), a.award_day.to_string()))
        .collect();
    got.sort();
    let fifth = (Utc::now().date_naive() - Days::new(1)).to_string();
    let birth = (Utc::now().date_naive() - Days::new(3)).to_string();
    let mut expected = Vec::new();
    for u in &users {
        expected.push((u.clone(), "data-logged-5-sequential-days".to_string(), fifth.clone()));
        expected.push((u.clone(), "user-birth".to_string(), birth.clone()));
    }
    expected.sort();
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
    assert_eq!(bus.pending(ACTIVITY_TOPIC, PROCESSOR_GROUP).await.unwrap(), 0);
}

/// `total` SubmitProgress calls over gRPC from 16 clients, spread over `users` acme employees,
/// values 1..=5; every call must be accepted. Returns the sum and how many were pushed back
/// (429, retried as a client would).
async fn submit_progress(mesh: &Mesh, challenge: &str, users: usize, total: u64) -> (f64, u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let channel = Mesh::channel(mesh.progress).await;
    let next = Arc::new(AtomicU64::new(0));
    let pushed_back = Arc::new(AtomicU64::new(0));
    let tokens: Arc<Vec<String>> =
        Arc::new((0..users).map(|u| employee(&format!("walker-{u}"))).collect());
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut client = ProgressServiceClient::new(channel.clone());
        let (next, pushed_back, tokens) = (next.clone(), pushed_back.clone(), tokens.clone());
        let challenge = challenge.to_string();
        tasks.push(tokio::spawn(async move {
            let mut sum = 0.0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return sum;
                }
                let value = (i % 5 + 1) as f64;
                loop {
                    let mut request = Request::new(SubmitProgressRequest {
                        challenge_id: challenge.clone(),
                        value,
                        occurred_at: None,
                        idempotency_key: String::new(),
                    });
                    let token = &tokens[i as usize % tokens.len()];
                    request.metadata_mut().insert("authorization", token.parse().unwrap());
                    match client.submit_progress(request).await {
                        Ok(_) => break,
                        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                            pushed_back.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(s) => panic!("SubmitProgress refused: {s:?}"),
                    }
                }
                sum += value;
            }
        }));
    }
    let mut sum = 0.0;
    for t in tasks {
        sum += t.await.unwrap();
    }
    (sum, pushed_back.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_incentive_outage_delays_awards_never_progress() {
    let mut mesh = Mesh::start(true).await;
    let base = mesh.base();
    note_incentives(&base).await;
    let challenge = mesh.challenge().await;
    // The incentive service and its processors go down.
    mesh.kill_incentive();

    // 10,000 submissions by acme employees, and the note's demo logged meanwhile: alice's mood
    // on five consecutive days, bob's five symptoms on one day, carol's birth reported twice.
    let started = Instant::now();
    let total = 10_000;
    let (sum, pushed_back) = submit_progress(&mesh, &challenge, 7, total).await;
    for days_ago in (1..=5).rev() {
        let body = json!({"kind": "mood", "value": 4, "occurredAt": rfc3339(noon(days_ago))});
        let (status, logged) =
            post(&format!("{base}/api/activities"), &employee("alice"), body).await;
        assert_eq!(status, 202, "{logged}");
    }
    for hour in 0..5 {
        let at = noon(2) - TimeDelta::hours(hour);
        let body = json!({"kind": "symptom", "note": "nausea", "occurredAt": rfc3339(at)});
        let (status, _) = post(&format!("{base}/api/activities"), &employee("bob"), body).await;
        assert_eq!(status, 202);
    }
    for _ in 0..2 {
        let body = json!({"occurredAt": rfc3339(noon(1))});
        let (status, _) = post(&format!("{base}/api/births"), &employee("carol"), body).await;
        assert_eq!(status, 202);
    }
    // Everything reaches SQL and the board while the incentive service is down, without
    // push-back.
    mesh.drained(std::slice::from_ref(&challenge), total, sum).await;
    println!(
        "{total} submissions reached SQL and the board in {:.1} s with the incentive service down",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(pushed_back, 0, "SubmitProgress pushed back during the outage");
    let log = ewpm_progress::store::ProgressStore::new(mesh.db.db.clone());
    let mut logged = Vec::new();
    for user in ["alice", "bob", "carol"] {
        logged.push(log.activities_of(user, 100).await.unwrap().len());
    }
    assert_eq!(logged, [5, 5, 2], "every logged activity reached the activity log");
    let store = IncentiveStore::new(mesh.db.db.clone());
    assert_eq!(store.all_awards().await.unwrap(), Vec::new(), "no award without the service");

    // Back up: every due award appears, exactly once.
    mesh.start_incentive().await;
    drained(&mesh).await;
    let yesterday = (Utc::now().date_naive() - Days::new(1)).to_string();
    assert_eq!(
        awards_of(&base, "alice").await,
        vec![("data-logged-5-sequential-days".into(), yesterday.clone())]
    );
    assert_eq!(awards_of(&base, "bob").await, Vec::<(String, String)>::new());
    assert_eq!(awards_of(&base, "carol").await, vec![("user-birth".into(), yesterday)]);
    assert_eq!(store.all_awards().await.unwrap().len(), 2);
}

/// Rows of `table` in the SQLite database of the `ewpm dev` in `dir`.
async fn dev_rows(dir: &std::path::Path, table: &str) -> i64 {
    use sea_orm::ConnectionTrait;
    let url = format!("sqlite://{}?mode=ro", dir.join("data/ewpm.db").display());
    let db = sea_orm::Database::connect(&url).await.unwrap();
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ewpm_dev_keeps_recorded_activity_for_the_processors_across_a_sigkill() {
    // The first life runs without incentive processors: recorded activity can only wait on
    // the `activity` topic, which must be the durable SQLite bus to outlive a SIGKILL.
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, base, admin) =
        start_dev(dir.path(), &[("EWPM_INCENTIVE__PROCESSOR_ENABLED", "false")]).await;
    let token = |sub: &str, role: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_ewpm"))
            .current_dir(dir.path())
            .args(["token", "--sub", sub, "--role", role, "--employer", "acme"])
            .output()
            .unwrap();
        format!("Bearer {}", String::from_utf8(out.stdout).unwrap().trim())
    };
    let body = json!({"slug": "user-birth", "description": "a birth", "rule": {"eachOccurrence": {}}, "triggerKinds": ["birth"]});
    let (status, created) =
        post(&format!("{base}/api/incentives"), &format!("Bearer {admin}"), body).await;
    assert_eq!(status, 201, "{created}");
    let link = json!({"programId": "p", "incentiveSlug": "user-birth", "reward": "a pillow",
        "startTime": rfc3339(Utc::now() - TimeDelta::days(30))});
    let (status, linked) = post(
        &format!("{base}/api/employers/acme/incentives"),
        &token("ann", "employer_admin"),
        link,
    )
    .await;
    assert_eq!(status, 201, "{linked}");
    let users: Vec<String> = (0..20).map(|u| format!("mother-{u:02}")).collect();
    for u in &users {
        let body = json!({"occurredAt": rfc3339(noon(1))});
        let (status, _) = post(&format!("{base}/api/births"), &token(u, "employee"), body).await;
        assert_eq!(status, 202);
    }
    // Written (and so published and acknowledged on the progress queue), then killed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while dev_rows(dir.path(), "activity_log").await < 20 {
        assert!(Instant::now() < deadline, "the births were not written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dev.0.kill().unwrap();
    dev.0.wait().unwrap();

    // The second life has processors: every birth earns its award, once.
    let (_dev, _, _) = start_dev(dir.path(), &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while dev_rows(dir.path(), "awards").await < 20 {
        assert!(Instant::now() < deadline, "awards missing after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = format!("sqlite://{}?mode=ro", dir.path().join("data/ewpm.db").display());
    let store = IncentiveStore::new(sea_orm::Database::connect(&url).await.unwrap());
    let mut awarded: Vec<String> =
        store.all_awards().await.unwrap().into_iter().map(|a| a.user_id).collect();
    awarded.sort();
    assert_eq!(awarded, users);
}
