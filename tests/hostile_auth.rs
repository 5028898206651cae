//! Hostile callers against every door of the mesh (separate processes on PostgreSQL + Redis):
//! every RPC of every EWPM service and every REST route, each with no token, a malformed
//! header, a token signed with another key, an expired one, an unsigned `alg: none` one and
//! one for another audience. All must be rejected as unauthenticated (gRPC UNAUTHENTICATED,
//! REST 401 problem+json, even when the body is garbage), and nothing may change: every SQL
//! table's row count and the Redis keys under the mesh's prefix are the same afterwards.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ewpm_kit::auth::{Claims, Role, TokenKeys};
use ewpm_testkit::{TEST_SECRET, expired_bearer, free_port};
use fred::prelude::{ClientLike, KeysInterface};
use prost::Message;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;
use tonic::{Code, Request, codec::Streaming, transport::Channel};

mod common;
use common::Mesh;

/// The bad `authorization` values, by name.
fn hostile_tokens() -> Vec<(&'static str, Option<String>)> {
    let settings = ewpm_kit::settings::Settings::default();
    let now = chrono::Utc::now().timestamp();
    let claims = |aud: &str| Claims {
        sub: "mallory".into(),
        employer_id: Some("acme".into()),
        role: Role::Admin,
        iss: "ewpm".into(),
        aud: aud.into(),
        iat: now,
        exp: now + 600,
    };
    let ours = TokenKeys::new(TEST_SECRET, &settings.auth);
    let forged =
        TokenKeys::new("not-the-mesh-secret", &settings.auth).mint("mallory", Role::Admin, None);
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims("ewpm")).unwrap())
    );
    vec![
        ("none", None),
        ("not a bearer", Some("Basic bWFsbG9yeTpzZWNyZXQ=".to_string())),
        ("garbage", Some("Bearer not.a.jwt".to_string())),
        ("forged", Some(format!("Bearer {forged}"))),
        ("expired", Some(expired_bearer("mallory", Role::Admin))),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        ("wrong audience", Some(format!("Bearer {}", ours.encode(&claims("someone-else"))))),
    ]
}

/// Every RPC of the EWPM services: (service, method, server streaming).
fn every_rpc() -> Vec<(String, String, bool)> {
    let set = prost_types::FileDescriptorSet::decode(ewpm_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut rpcs = Vec::new();
    for file in set.file {
        for service in &file.service {
            for method in &service.method {
                rpcs.push((
                    format!("{}.{}", file.package(), service.name()),
                    method.name().to_string(),
                    method.server_streaming(),
                ));
            }
        }
    }
    rpcs
}

/// Row counts of every table, and the Redis keys under the mesh's prefix.
async fn state(mesh: &Mesh) -> (BTreeMap<String, i64>, Vec<String>) {
    let db = &mesh.db.db;
    let backend = db.get_database_backend();
    let tables = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
        ))
        .await
        .unwrap();
    let mut counts = BTreeMap::new();
    for row in tables {
        let table: String = row.try_get("", "t").unwrap();
        let n = db
            .query_one_raw(Statement::from_string(
                backend,
                format!("SELECT COUNT(*) AS n FROM \"{table}\""),
            ))
            .await
            .unwrap()
            .unwrap();
        counts.insert(table, n.try_get::<i64>("", "n").unwrap());
    }
    let redis = ewpm_kit::redis::connect(&mesh.redis_url).await.unwrap();
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, batch): (String, Vec<String>) = redis
            .scan_page(cursor.clone(), format!("{}*", mesh.prefix), Some(1000), None)
            .await
            .unwrap();
        keys.extend(batch);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    redis.quit().await.ok();
    keys.sort();
    (counts, keys)
}

/// Calls `/service/method` with an empty message (valid protobuf for any request) and
/// `authorization`; the status it ends with.
async fn call(
    channel: Channel,
    service: &str,
    method: &str,
    streaming: bool,
    auth: Option<&str>,
) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path: http::uri::PathAndQuery = format!("/{service}/{method}").parse().unwrap();
    let mut request = Request::new(());
    if let Some(Ok(value)) = auth.map(str::parse) {
        request.metadata_mut().insert("authorization", value);
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    if streaming {
        match grpc.server_streaming(request, path, codec).await {
            Ok(response) => {
                let mut stream: Streaming<()> = response.into_inner();
                match stream.message().await {
                    Ok(_) => Code::Ok,
                    Err(status) => status.code(),
                }
            }
            Err(status) => status.code(),
        }
    } else {
        match grpc.unary(request, path, codec).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rpc_and_route_rejects_every_bad_token_and_changes_nothing() {
    let mut mesh = Mesh::start(true).await;
    let scan = free_port();
    mesh.spawn(&["serve", "scan"], scan, &[]);
    let quiz = free_port();
    mesh.spawn(&["serve", "quiz"], quiz, &[]);
    let engagement = free_port();
    mesh.spawn(&["serve", "engagement"], engagement, &[]);
    common::wait_serving(quiz, "ewpm.quiz.v1.QuizService").await;
    common::wait_serving(engagement, "ewpm.engagement.v1.EngagementService").await;
    let ports: BTreeMap<&str, u16> = [
        ("ewpm.challenge.v1.ChallengeService", mesh.challenge),
        ("ewpm.progress.v1.ProgressService", mesh.progress),
        ("ewpm.leaderboard.v1.LeaderboardService", mesh.leaderboard),
        ("ewpm.incentive.v1.IncentiveService", mesh.incentive),
        ("ewpm.scan.v1.ScanService", scan),
        ("ewpm.quiz.v1.QuizService", quiz),
        ("ewpm.engagement.v1.EngagementService", engagement),
    ]
    .into();
    // Some state to protect: a challenge. And the scan projector's first poll (which writes
    // its checkpoint) done, so the only writers left would be the hostile calls.
    mesh.challenge().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut scan_client = ewpm_proto::scan::v1::scan_service_client::ScanServiceClient::new(
        Channel::from_shared(format!("http://127.0.0.1:{scan}")).unwrap().connect_lazy(),
    );
    loop {
        let mut request = Request::new(ewpm_proto::scan::v1::GetProjectorStatusRequest {});
        request.metadata_mut().insert("authorization", common::admin().parse().unwrap());
        let state = match scan_client.get_projector_status(request).await {
            Ok(r) => r.into_inner().state(),
            Err(_) => ewpm_proto::scan::v1::ProjectorState::Unspecified,
        };
        if state == ewpm_proto::scan::v1::ProjectorState::CaughtUp {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the scan projector did not poll: {state:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let before = state(&mesh).await;

    let tokens = hostile_tokens();
    let rpcs = every_rpc();
    assert!(rpcs.len() >= 25, "the descriptor set lists {} RPCs", rpcs.len());
    let mut wrong = Vec::new();
    let mut calls = 0;
    for (service, method, streaming) in &rpcs {
        let port =
            *ports.get(service.as_str()).unwrap_or_else(|| panic!("no process serves {service}"));
        let channel =
            Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect_lazy();
        for (name, token) in &tokens {
            let code = call(channel.clone(), service, method, *streaming, token.as_deref()).await;
            calls += 1;
            if code != Code::Unauthenticated {
                wrong.push(format!("{service}/{method} with {name}: {code:?}"));
            }
        }
    }

    // REST: every route of the OpenAPI document, path parameters filled in, a body that is
    // not even JSON (authentication comes first).
    let client = ewpm_testkit::http_client();
    let doc: Value = client
        .get(format!("{}/openapi.json", mesh.base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut routes = 0;
    for (path, item) in paths {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "7141" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys() {
            let method: http::Method = method.to_uppercase().parse().unwrap();
            routes += 1;
            for (name, token) in &tokens {
                let mut request = client
                    .request(method.clone(), format!("{}{concrete}", mesh.base()))
                    .header("content-type", "application/json")
                    .body("{\"not json");
                if let Some(token) = token {
                    request = request.header("authorization", token);
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let kind = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                calls += 1;
                if status != 401 || kind != "application/problem+json" {
                    wrong.push(format!("{method} {path} with {name}: {status} {kind}"));
                }
            }
        }
    }
    assert!(routes >= 20, "the OpenAPI document lists {routes} operations");
    assert_eq!(
        wrong,
        Vec::<String>::new(),
        "{} of {calls} hostile calls were not rejected as unauthenticated",
        wrong.len()
    );
    // A device's valid ingest token reads and changes nothing either: every RPC but the one
    // that takes events refuses it (IngestEvents itself refuses this empty request).
    let ingest = ewpm_testkit::bearer("device-1", Role::Ingest, None);
    let mut leaked = Vec::new();
    for (service, method, streaming) in &rpcs {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{}", ports[service.as_str()]))
            .unwrap()
            .connect_lazy();
        let code = call(channel, service, method, *streaming, Some(&ingest)).await;
        let expected =
            if method == "IngestEvents" { Code::InvalidArgument } else { Code::PermissionDenied };
        if code != expected {
            leaked.push(format!("{service}/{method} with an ingest token: {code:?}"));
        }
    }
    assert_eq!(leaked, Vec::<String>::new());
    // Nothing changed: not a row, not a key.
    assert_eq!(state(&mesh).await, before);
}

/// A challenge of employer `acme` only, with progress on its board; its id.
async fn acme_challenge_with_progress(mesh: &Mesh) -> String {
    let client = ewpm_testkit::http_client();
    let acme_admin = ewpm_testkit::bearer("hr-acme", Role::EmployerAdmin, Some("acme"));
    let created: Value = client
        .post(format!("{}/api/challenges", mesh.base()))
        .header("authorization", &acme_admin)
        .json(&serde_json::json!({
            "name": "acme steps", "startTime": "2020-01-01T00:00:00Z",
            "endTime": "2099-01-01T00:00:00Z", "goal": {"target": 1000, "unit": "steps"},
            "employerId": "acme"
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap_or_else(|| panic!("{created}")).to_string();
    let alice = ewpm_testkit::bearer("alice", Role::Employee, Some("acme"));
    let r = client
        .post(format!("{}/api/challenges/{id}/progress", mesh.base()))
        .header("authorization", &alice)
        .json(&serde_json::json!({"value": 42}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The entry reaches the board (writer flush, then the applier).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let board = ewpm_testkit::get_json(
            &format!("{}/api/challenges/{id}/leaderboard", mesh.base()),
            &alice,
        )
        .await;
        if board["entries"].as_array().is_some_and(|e| !e.is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the entry never reached the board: {board}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_board_is_hidden_from_everyone_its_challenge_is_hidden_from_on_grpc_and_rest() {
    use ewpm_proto::leaderboard::v1::{
        GetLeaderboardRequest, GetRankRequest, WatchLeaderboardRequest,
        leaderboard_service_client::LeaderboardServiceClient,
    };
    let mesh = Mesh::start(true).await;
    let id = acme_challenge_with_progress(&mesh).await;
    let board = format!("challenge:{id}");
    let before = state(&mesh).await;
    let outsiders = [
        (
            "an employee of another employer",
            ewpm_testkit::bearer("bob", Role::Employee, Some("globex")),
        ),
        ("an employee of no employer", ewpm_testkit::bearer("carol", Role::Employee, None)),
        (
            "another employer's admin",
            ewpm_testkit::bearer("hr-globex", Role::EmployerAdmin, Some("globex")),
        ),
    ];
    let mut client = LeaderboardServiceClient::new(
        Channel::from_shared(format!("http://127.0.0.1:{}", mesh.leaderboard))
            .unwrap()
            .connect_lazy(),
    );
    let http = ewpm_testkit::http_client();
    let mut seen = Vec::new();
    for (who, token) in &outsiders {
        let page = client
            .get_leaderboard(ewpm_testkit::request(
                GetLeaderboardRequest {
                    board: board.clone(),
                    page_size: 10,
                    page_token: String::new(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(|_| ());
        let rank = client
            .get_rank(ewpm_testkit::request(
                GetRankRequest {
                    board: board.clone(),
                    member: "alice".into(),
                    neighbours: 2,
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(|_| ());
        let watch = client
            .watch_leaderboard(ewpm_testkit::request(
                WatchLeaderboardRequest { board: board.clone(), top_n: 10, ..Default::default() },
                token,
            ))
            .await
            .map(|_| ());
        for (door, result) in
            [("GetLeaderboard", page), ("GetRank", rank), ("WatchLeaderboard", watch)]
        {
            seen.push((*who, door.to_string(), result.map_err(|s| s.code()).err()));
        }
        for path in ["leaderboard", "leaderboard/me", "leaderboard/stream"] {
            let r = http
                .get(format!("{}/api/challenges/{id}/{path}", mesh.base()))
                .header("authorization", token)
                .send()
                .await
                .unwrap();
            // 404 reads as NOT_FOUND; anything else fails the comparison below.
            let code = if r.status() == 404 { Code::NotFound } else { Code::Unknown };
            seen.push((*who, format!("GET {path}"), Some(code)));
        }
    }
    let expected: Vec<_> = outsiders
        .iter()
        .flat_map(|(who, _)| {
            [
                "GetLeaderboard",
                "GetRank",
                "WatchLeaderboard",
                "GET leaderboard",
                "GET leaderboard/me",
                "GET leaderboard/stream",
            ]
            .map(|door| (*who, door.to_string(), Some(Code::NotFound)))
        })
        .collect();
    assert_eq!(seen, expected);
    // Its own employer's employee and an admin do see it.
    for token in [ewpm_testkit::bearer("alice", Role::Employee, Some("acme")), common::admin()] {
        let mut r = Request::new(GetLeaderboardRequest {
            board: board.clone(),
            page_size: 10,
            page_token: String::new(),
            ..Default::default()
        });
        r.metadata_mut().insert("authorization", token.parse().unwrap());
        let page = client.get_leaderboard(r).await.unwrap().into_inner();
        assert_eq!(
            page.entries.iter().map(|e| (e.member.as_str(), e.score)).collect::<Vec<_>>(),
            [("alice", 42.0)]
        );
    }
    assert_eq!(state(&mesh).await, before);
}
