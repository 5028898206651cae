//! What every gRPC server holds callers to, on a real service (challenge, on SQLite): a body
//! that is not the RPC's message is the caller's error, a caller over its rate is told when
//! to come back, a server at its limit of calls refuses at once, and a unary call that runs
//! too long ends with DEADLINE_EXCEEDED.

use std::{sync::Arc, time::Duration};

use ewpm_challenge::standings::Standings;
use ewpm_kit::{
    auth::{Role, ServiceToken},
    clock::SystemClock,
    settings::Settings,
};
use ewpm_proto::challenge::v1::{
    self as cpb, GetChallengeRequest, ListActiveChallengesRequest,
    challenge_service_client::ChallengeServiceClient,
};
use ewpm_testkit::{TestDb, bearer, keys, reason, request, spawn_grpc_with};
use tonic::{Code, transport::Channel};

/// A leaderboard address that accepts connections and never answers: standings look-ups
/// against it take their whole 2 s deadline.
async fn blackhole() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}")
}

/// The challenge service behind `settings`' limits, its standings from a silent leaderboard.
async fn serve(settings: &Settings) -> (ChallengeServiceClient<Channel>, TestDb) {
    let (channel, db, _) = serve_channel(settings).await;
    (ChallengeServiceClient::new(channel), db)
}

/// The same, as a channel.
async fn serve_channel(settings: &Settings) -> (Channel, TestDb, ewpm_kit::CancellationToken) {
    let db = TestDb::sqlite(ewpm::MODULES).await.unwrap();
    let conn = db.db.clone();
    let leaderboard = blackhole().await;
    let server = spawn_grpc_with(settings, move |mount, grpc| {
        let token = Arc::new(ServiceToken::new(keys(), "challenge"));
        let standings = Standings::from_leaderboard(&leaderboard, token).unwrap();
        mount.add(ewpm_challenge::app::build_with(conn, Arc::new(SystemClock), grpc, standings));
    })
    .await
    .unwrap();
    let channel = Channel::from_shared(server.uri()).unwrap().connect().await.unwrap();
    let shutdown = server.shutdown.clone();
    // The server runs until the test process ends (or its shutdown is cancelled).
    std::mem::forget(server);
    (channel, db, shutdown)
}

/// An open challenge active now, so ListActiveChallenges looks up standings.
async fn active_challenge(client: &mut ChallengeServiceClient<Channel>) {
    let now = chrono::Utc::now().timestamp();
    client
        .create_challenge(request(
            cpb::CreateChallengeRequest {
                name: "steps".into(),
                description: String::new(),
                start_time: Some(prost_types::Timestamp { seconds: now - 3600, nanos: 0 }),
                end_time: Some(prost_types::Timestamp { seconds: now + 3600, nanos: 0 }),
                goal: Some(cpb::Goal { target: 1000.0, unit: "steps".into() }),
                employer_id: String::new(),
                idempotency_key: String::new(),
                late_grace_seconds: 0,
            },
            &bearer("admin", Role::Admin, None),
        ))
        .await
        .unwrap();
}

fn list_active(who: &str) -> tonic::Request<ListActiveChallengesRequest> {
    request(ListActiveChallengesRequest::default(), &bearer(who, Role::Employee, None))
}

#[tokio::test]
async fn a_body_that_is_not_the_rpcs_message_is_invalid_argument() {
    let (channel, _db, _) = serve_channel(&Settings::default()).await;
    // A Duration's field 1 is a varint where GetChallengeRequest's is a string.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = "/ewpm.challenge.v1.ChallengeService/GetChallenge".parse().unwrap();
    let codec = tonic_prost::ProstCodec::<prost_types::Duration, GetChallengeRequest>::default();
    let status = grpc
        .unary(
            request(
                prost_types::Duration { seconds: 5, nanos: 0 },
                &bearer("u", Role::Admin, None),
            ),
            path,
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

#[tokio::test]
async fn a_caller_over_its_rate_is_told_when_to_come_back_and_others_are_not_affected() {
    let mut settings = Settings::default();
    settings.limits.rate_per_sec = 1;
    settings.limits.burst = 5;
    let (mut client, _db) = serve(&settings).await;
    let get = |who: &str| {
        request(
            GetChallengeRequest { id: uuid::Uuid::nil().to_string() },
            &bearer(who, Role::Admin, None),
        )
    };
    for _ in 0..5 {
        // Within the burst: the service answers (no such challenge).
        assert_eq!(client.get_challenge(get("greedy")).await.unwrap_err().code(), Code::NotFound);
    }
    let refused = client.get_challenge(get("greedy")).await.unwrap_err();
    let delay = ewpm_kit::error::retry_delay(&refused).unwrap();
    assert_eq!(
        (refused.code(), reason(&refused)),
        (Code::ResourceExhausted, "RATE_LIMITED".into())
    );
    assert!(delay > Duration::ZERO && delay <= Duration::from_secs(1), "{delay:?}");
    assert_eq!(client.get_challenge(get("modest")).await.unwrap_err().code(), Code::NotFound);
    // Services calling services are not limited.
    let service = ServiceToken::new(keys(), "progress");
    for _ in 0..20 {
        let call = service.authorize(tonic::Request::new(GetChallengeRequest {
            id: uuid::Uuid::nil().to_string(),
        }));
        assert_eq!(client.get_challenge(call).await.unwrap_err().code(), Code::NotFound);
    }
}

#[tokio::test]
async fn a_server_at_its_limit_of_calls_refuses_the_next_at_once() {
    let mut settings = Settings::default();
    settings.limits.max_in_flight = 1;
    let (mut client, _db) = serve(&settings).await;
    active_challenge(&mut client).await;
    let mut slow = client.clone();
    let first = tokio::spawn(async move { slow.list_active_challenges(list_active("a")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let refused = client.list_active_challenges(list_active("b")).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused)), (Code::ResourceExhausted, "SERVER_BUSY".into()));
    assert!(ewpm_kit::error::retry_delay(&refused).is_some());
    assert!(started.elapsed() < Duration::from_secs(1), "the refusal waited");
    // The first call still completes (without standings: the leaderboard never answered).
    assert!(first.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_unary_call_running_past_the_request_timeout_ends_with_deadline_exceeded() {
    let mut settings = Settings::default();
    settings.limits.request_timeout_secs = 1;
    let (mut client, _db) = serve(&settings).await;
    active_challenge(&mut client).await;
    let status = client.list_active_challenges(list_active("a")).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::DeadlineExceeded, "REQUEST_TIMEOUT".into())
    );
}

#[tokio::test]
async fn a_call_still_open_when_shutdown_ends_is_answered_unavailable_not_dropped() {
    let mut settings = Settings::default();
    settings.grpc.shutdown_grace_secs = 1;
    let (channel, _db, shutdown) = serve_channel(&settings).await;
    let mut client = ChallengeServiceClient::new(channel);
    active_challenge(&mut client).await;
    let slow = tokio::spawn(async move { client.list_active_challenges(list_active("a")).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.cancel();
    let status = slow.await.unwrap().unwrap_err();
    assert_eq!((status.code(), reason(&status)), (Code::Unavailable, "SHUTTING_DOWN".into()));
    assert!(ewpm_kit::error::retry_delay(&status).is_some());
}
