//! End to end: the mesh as separate processes (`ewpm migrate`, `ewpm serve challenge`,
//! `ewpm serve gateway`) against PostgreSQL, driven over REST and gRPC; and `ewpm dev` as a
//! user runs it, down to SIGTERM.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use ewpm_kit::auth::{Role, TokenKeys};
use ewpm_proto::challenge::v1::{self as pb, challenge_service_client::ChallengeServiceClient};
use ewpm_testkit::{Proc, TEST_SECRET, TestDb, expired_bearer, free_port, keys};
use serde_json::{Value, json};
use tonic::{Code, Request};
use tonic_types::StatusExt;

fn ewpm(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ewpm"));
    cmd.current_dir(dir).env("EWPM_LOG__FORMAT", "json").env("EWPM_LOG__LEVEL", "warn");
    cmd
}

/// Waits until the edge's `/health` at `url` reports every one of `services` serving.
async fn wait_ready(url: &str, services: &[&str]) {
    let client = ewpm_testkit::http_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(url).send().await
            && let Ok(body) = r.json::<Value>().await
            && services.iter().all(|s| body["services"][s] == "serving")
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn bearer_for(sub: &str, role: Role, employer: Option<&str>) -> String {
    format!("Bearer {}", keys().mint(sub, role, employer))
}

fn expired_token() -> String {
    expired_bearer("admin", Role::Admin)
}

fn forged_token() -> String {
    let settings = ewpm_kit::settings::Settings::default().auth;
    format!("Bearer {}", TokenKeys::new("forged", &settings).mint("admin", Role::Admin, None))
}

fn challenge_body(start: &str, end: &str) -> Value {
    json!({"name": "10k steps a day", "startTime": start, "endTime": end, "goal": {"target": 300000, "unit": "steps"}})
}

#[tokio::test]
async fn the_mesh_serves_challenges_over_rest_and_grpc_as_separate_processes() {
    let db = TestDb::postgres_unmigrated().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let status = ewpm(dir.path()).arg("migrate").env("DATABASE_URL", &db.url).status().unwrap();
    assert!(status.success(), "ewpm migrate failed");

    let (grpc_port, metrics_port, http_port) = (free_port(), free_port(), free_port());
    let _challenge = Proc(
        ewpm(dir.path())
            .args(["serve", "challenge"])
            .env("DATABASE_URL", &db.url)
            .env("EWPM_AUTH__SECRET", TEST_SECRET)
            .env("EWPM_GRPC__ADDR", format!("127.0.0.1:{grpc_port}"))
            .env("EWPM_METRICS__ADDR", format!("127.0.0.1:{metrics_port}"))
            .spawn()
            .unwrap(),
    );
    let scan_port = free_port();
    let _scan = Proc(
        ewpm(dir.path())
            .args(["serve", "scan"])
            .env("DATABASE_URL", &db.url)
            .env("EWPM_AUTH__SECRET", TEST_SECRET)
            .env("EWPM_GRPC__ADDR", format!("127.0.0.1:{scan_port}"))
            .env("EWPM_METRICS__ADDR", format!("127.0.0.1:{}", free_port()))
            .env("EWPM_SCAN__PROJECTOR__POLL_INTERVAL_MS", "50")
            .spawn()
            .unwrap(),
    );
    let _gateway = Proc(
        ewpm(dir.path())
            .args(["serve", "gateway"])
            .env("EWPM_AUTH__SECRET", TEST_SECRET)
            .env("EWPM_HTTP__ADDR", format!("127.0.0.1:{http_port}"))
            .env("EWPM_SERVICES__CHALLENGE", format!("http://127.0.0.1:{grpc_port}"))
            .env("EWPM_SERVICES__SCAN", format!("http://127.0.0.1:{scan_port}"))
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{http_port}");
    wait_ready(&format!("{base}/health"), &["challenge", "scan"]).await;
    let http = ewpm_testkit::http_client();
    let admin = bearer_for("admin-1", Role::Admin, None);
    let employee = bearer_for("alice", Role::Employee, Some("acme"));

    // REST: an admin creates (201, Location), the challenge reads back.
    let r = http
        .post(format!("{base}/api/challenges"))
        .header("authorization", &admin)
        .json(&challenge_body("2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let created: Value = r.json().await.unwrap();
    assert_eq!(location, format!("/api/challenges/{}", created["id"].as_str().unwrap()));
    assert_eq!(
        (created["state"].as_str(), created["employerId"].is_null()),
        (Some("active"), true)
    );
    let got: Value = http
        .get(format!("{base}{location}"))
        .header("authorization", &employee)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, created);

    // REST errors: 403, 400 naming the field, 404, 401 for no / forged / expired tokens.
    let problem = |status: u16, reason: &str| (status, reason.to_string());
    let post = |auth: Option<String>, body: Value| {
        let mut rb = http.post(format!("{base}/api/challenges")).json(&body);
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        rb.send()
    };
    let as_problem = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let body: Value = r.json().await.unwrap();
        (status, body)
    };
    let valid = challenge_body("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z");
    let (s, b) = as_problem(post(Some(employee.clone()), valid.clone()).await.unwrap()).await;
    assert_eq!((s, b["reason"].as_str().unwrap().to_string()), problem(403, "PERMISSION_DENIED"));
    let (s, b) = as_problem(
        post(Some(admin.clone()), challenge_body("2026-02-01T00:00:00Z", "2026-01-01T00:00:00Z"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["errors"],
        json!([{"field": "endTime", "description": "must be after the start time"}])
    );
    let (s, _) = as_problem(post(None, valid.clone()).await.unwrap()).await;
    assert_eq!(s, 401);
    let (s, b) = as_problem(post(Some(forged_token()), valid.clone()).await.unwrap()).await;
    assert_eq!((s, b["reason"].as_str().unwrap().to_string()), problem(401, "INVALID_TOKEN"));
    let (s, _) = as_problem(post(Some(expired_token()), valid.clone()).await.unwrap()).await;
    assert_eq!(s, 401);
    let r = http
        .get(format!("{base}/api/challenges/{}", uuid::Uuid::now_v7()))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap();
    let (s, b) = as_problem(r).await;
    assert_eq!((s, b["reason"].as_str().unwrap().to_string()), problem(404, "CHALLENGE_NOT_FOUND"));
    let r = http
        .post(format!("{base}/api/challenges"))
        .header("authorization", &admin)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(as_problem(r).await.0, 400);

    // REST: patch, list by state, the user's active list (self only, unless admin).
    let r = http
        .patch(format!("{base}{location}"))
        .header("authorization", &admin)
        .json(&json!({"name": "12k steps", "goal": {"target": 360000}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let patched: Value = r.json().await.unwrap();
    assert_eq!(
        (
            patched["name"].as_str(),
            patched["goal"]["target"].as_f64(),
            patched["goal"]["unit"].as_str()
        ),
        (Some("12k steps"), Some(360000.0), Some("steps"))
    );
    let list: Value = http
        .get(format!("{base}/api/challenges?state=active&page_size=10"))
        .header("authorization", &employee)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!({"challenges": [patched.clone()], "nextPageToken": ""}));
    let mine: Value = http
        .get(format!("{base}/api/users/alice/challenges/active"))
        .header("authorization", &employee)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["challenges"][0]["id"], patched["id"]);
    let r = http
        .get(format!("{base}/api/users/bob/challenges/active"))
        .header("authorization", &employee)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // gRPC straight to the service: the same rules.
    let mut grpc =
        ChallengeServiceClient::connect(format!("http://127.0.0.1:{grpc_port}")).await.unwrap();
    let with = |auth: &str, id: &str| {
        let mut r = Request::new(pb::GetChallengeRequest { id: id.to_string() });
        r.metadata_mut().insert("authorization", auth.parse().unwrap());
        r
    };
    let id = patched["id"].as_str().unwrap();
    let c = grpc.get_challenge(with(&employee, id)).await.unwrap().into_inner().challenge.unwrap();
    assert_eq!(c.name, "12k steps");
    for auth in [forged_token(), expired_token()] {
        assert_eq!(
            grpc.get_challenge(with(&auth, id)).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    assert_eq!(
        grpc.get_challenge(Request::new(pb::GetChallengeRequest { id: id.into() }))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let err =
        grpc.get_challenge(with(&admin, &uuid::Uuid::now_v7().to_string())).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mut create = Request::new(pb::CreateChallengeRequest {
        name: "x".into(),
        start_time: Some(prost_types::Timestamp { seconds: 2_000_000_000, nanos: 0 }),
        end_time: Some(prost_types::Timestamp { seconds: 1_000_000_000, nanos: 0 }),
        goal: Some(pb::Goal { target: 1.0, unit: "km".into() }),
        ..Default::default()
    });
    create.metadata_mut().insert("authorization", admin.parse().unwrap());
    let err = grpc.create_challenge(create).await.unwrap_err();
    let fields: Vec<_> = err
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!((err.code(), fields), (Code::InvalidArgument, vec!["end_time".to_string()]));
    let mut create = Request::new(pb::CreateChallengeRequest::default());
    create.metadata_mut().insert("authorization", employee.parse().unwrap());
    assert_eq!(grpc.create_challenge(create).await.unwrap_err().code(), Code::PermissionDenied);

    // The scan service and its projector, as their own process on PostgreSQL.
    let upload = json!({"ScanEvents": [
        {"ParcelId": 42, "Type": "PICKUP", "CreatedDateTimeUtc": "2023-01-01T03:52:48 -13:00",
         "Device": {"DeviceId": 1, "DeviceTransactionId": 1}, "User": {"UserId": "NC1001", "CarrierId": "PC", "RunId": 7}},
        {"ParcelId": 42, "Type": "STATUS", "CreatedDateTimeUtc": "2023-01-02T00:00:00Z", "StatusCode": "DELAYED",
         "Device": {"DeviceId": 1, "DeviceTransactionId": 2}, "User": {"UserId": "NC1001", "CarrierId": "PC", "RunId": 7}}
    ]});
    let r = http
        .post(format!("{base}/v1/scans/scanevents"))
        .header("authorization", &employee)
        .json(&upload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let deadline = Instant::now() + Duration::from_secs(30);
    let parcel: Value = loop {
        let r = http
            .get(format!("{base}/api/parcels/42"))
            .header("authorization", &employee)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break r.json().await.unwrap();
        }
        assert_eq!(r.status(), 404);
        assert!(Instant::now() < deadline, "parcel 42 was not projected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (
            parcel["lastEventId"].as_i64(),
            parcel["statusCode"].as_str(),
            parcel["pickupTimeUtc"].as_str()
        ),
        (Some(2), Some("DELAYED"), Some("2023-01-01T16:52:48Z"))
    );
    let status: Value = http
        .get(format!("{base}/api/scans/projector"))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((status["source"].as_str(), status["leader"].as_bool()), (Some("own"), Some(true)));

    // Operations: metrics on both, the OpenAPI document and the offline docs page.
    let metrics = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"grpc_server_handled_total{grpc_service="ewpm.challenge.v1.ChallengeService",grpc_method="GetChallenge",grpc_code="NotFound"}"#),
        "{metrics}"
    );
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            r#"http_server_requests_total{method="POST",route="/api/challenges",status="201"}"#
        ),
        "{metrics}"
    );
    let openapi: Value =
        http.get(format!("{base}/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    assert!(openapi["paths"]["/api/users/{userId}/challenges/active"]["get"].is_object());
    let docs = http.get(format!("{base}/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger-ui"));
    // The page's assets come from the binary, not a CDN: it works offline.
    let bundle = http.get(format!("{base}/docs/swagger-ui-bundle.js")).send().await.unwrap();
    assert_eq!(bundle.status(), 200);
    assert!(bundle.bytes().await.unwrap().len() > 100_000);
    let unknown = http.get(format!("{base}/api/nope")).send().await.unwrap();
    assert_eq!(as_problem(unknown).await.0, 404);
    // Errors axum answers itself are problem+json too.
    let r = http
        .delete(format!("{base}/api/challenges"))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap();
    let (s, b) = as_problem(r).await;
    assert_eq!((s, b["reason"].as_str()), (405, Some("METHOD_NOT_ALLOWED")));
    let r = http
        .get(format!("{base}/api/challenges?state=sideways"))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap();
    let (s, b) = as_problem(r).await;
    assert_eq!((s, b["errors"][0]["field"].as_str()), (400, Some("state")));
    let r = http
        .post(format!("{base}/api/challenges"))
        .header("authorization", &admin)
        .json(&json!({"name": "x", "startTime": "yesterday"}))
        .send()
        .await
        .unwrap();
    let (s, b) = as_problem(r).await;
    assert_eq!((s, b["errors"][0]["field"].as_str()), (400, Some("startTime")));
}

#[tokio::test]
async fn ewpm_dev_prints_working_tokens_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (grpc_port, http_port) = (free_port(), free_port());
    let stdout = std::fs::File::create(dir.path().join("stdout")).unwrap();
    let mut dev = Proc(
        ewpm(dir.path())
            .env("EWPM_GRPC__ADDR", format!("127.0.0.1:{grpc_port}"))
            .env("EWPM_HTTP__ADDR", format!("127.0.0.1:{http_port}"))
            .stdout(Stdio::from(stdout))
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{http_port}");
    wait_ready(&format!("{base}/health"), &["challenge", "scan"]).await;
    let banner = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    let printed = |name: &str| {
        banner
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("{name} not printed:\n{banner}"))
    };
    let (admin, employee) = (printed("ADMIN"), printed("EMPLOYEE"));
    assert!(
        banner.contains(&format!(
            "grpcurl -plaintext -H 'authorization: Bearer {admin}' 127.0.0.1:{grpc_port} "
        )),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("curl -sS -X POST http://127.0.0.1:{http_port}/api/challenges")),
        "{banner}"
    );
    assert!(dir.path().join("data/ewpm.db").is_file());

    // The printed admin token creates; the employee token is refused.
    let http = ewpm_testkit::http_client();
    let valid = challenge_body("2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z");
    let r = http
        .post(format!("{base}/api/challenges"))
        .bearer_auth(&admin)
        .json(&valid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!("{base}/api/challenges"))
        .bearer_auth(&employee)
        .json(&valid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // `ewpm token` in the same directory mints tokens this instance accepts.
    let out = ewpm(dir.path())
        .args(["token", "--sub", "carol", "--role", "employee", "--employer", "acme"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let r = http
        .get(format!("{base}/api/users/carol/challenges/active"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Scans: a device upload (PascalCase, numeric RunId, offset timestamps), the feed in
    // the Scan Event API's shape, and the projected parcel state.
    let upload = json!({"ScanEvents": [
        {"ParcelId": 7141, "Type": "PICKUP", "CreatedDateTimeUtc": "2023-01-01T03:52:48 -13:00", "StatusCode": "",
         "Device": {"DeviceId": 665, "DeviceTransactionId": 73729}, "User": {"UserId": "NC1001", "CarrierId": "PC", "RunId": 57924}},
        {"parcelId": 7141, "type": "delivery", "createdDateTimeUtc": "2023-01-02T10:00:00Z",
         "device": {"deviceId": 665, "deviceTransactionId": 73730}, "user": {"userId": "NC1001", "carrierId": "PC", "runId": "57925"}}
    ]});
    let r = http
        .post(format!("{base}/v1/scans/scanevents"))
        .bearer_auth(&employee)
        .json(&upload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"EventIds": [1, 2]}));
    // A retried upload stores nothing new.
    let r = http
        .post(format!("{base}/v1/scans/scanevents"))
        .bearer_auth(&employee)
        .json(&upload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"EventIds": [1, 2]}));
    let feed: Value = http
        .get(format!("{base}/v1/scans/scanevents?FromEventId=2&Limit=10"))
        .bearer_auth(&employee)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        feed,
        json!({"ScanEvents": [{"EventId": 2, "ParcelId": 7141, "Type": "DELIVERY", "CreatedDateTimeUtc": "2023-01-02T10:00:00Z",
            "StatusCode": "", "Device": {"DeviceTransactionId": 73730, "DeviceId": 665},
            "User": {"UserId": "NC1001", "CarrierId": "PC", "RunId": "57925"}}]})
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let parcel = loop {
        let r = http
            .get(format!("{base}/api/parcels/7141"))
            .bearer_auth(&employee)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let p: Value = r.json().await.unwrap();
            if p["lastEventId"] == 2 {
                break p;
            }
        }
        assert!(Instant::now() < deadline, "parcel 7141 was not projected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        parcel,
        json!({"parcelId": 7141, "lastEventId": 2, "type": "DELIVERY", "statusCode": "", "runId": "57925",
            "createdDateTimeUtc": "2023-01-02T10:00:00Z", "pickupTimeUtc": "2023-01-01T16:52:48Z",
            "deliveryTimeUtc": "2023-01-02T10:00:00Z", "eventCount": 2})
    );
    let r = http
        .post(format!("{base}/v1/scans/scanevents"))
        .bearer_auth(&employee)
        .json(&json!({"ScanEvents": [{"ParcelId": 0, "Type": "PICKUP"}]}))
        .send()
        .await
        .unwrap();
    let (s, b) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_eq!(s, 400);
    let fields: Vec<&str> =
        b["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["events[0].parcelId", "events[0].createTime"]);

    // A connected gRPC client does not keep the process alive past SIGTERM.
    let mut grpc =
        ChallengeServiceClient::connect(format!("http://127.0.0.1:{grpc_port}")).await.unwrap();
    let mut list = Request::new(pb::ListChallengesRequest::default());
    list.metadata_mut().insert("authorization", format!("Bearer {admin}").parse().unwrap());
    assert_eq!(grpc.list_challenges(list).await.unwrap().into_inner().challenges.len(), 1);
    let sent = Instant::now();
    let status = Command::new("kill").args(["-TERM", &dev.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    // A bound to catch a hang, not a timing assertion: the process must exit by itself.
    let exit = loop {
        if let Some(exit) = dev.0.try_wait().unwrap() {
            break exit;
        }
        assert!(sent.elapsed() < Duration::from_secs(60), "ewpm dev did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("ewpm dev exited {:?} after SIGTERM", sent.elapsed());
    assert!(exit.success(), "{exit:?}");
    drop(grpc);
}
