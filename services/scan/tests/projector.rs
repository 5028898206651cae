//! The projector against a feed server in the Scan Event API's format (the real-world
//! fixture, faults injected), and the scan service over gRPC; on SQLite and on PostgreSQL.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Utc};
use ewpm_kit::{CancellationToken, auth::Role, clock::SystemClock};
use ewpm_proto::scan::v1::{self as pb, scan_service_client::ScanServiceClient};
use ewpm_scan::{
    projector::{
        HttpFeed, Lease, Projector, ProjectorConfig, ProjectorState, Source, Status, Step,
    },
    store::{ParcelState, ScanStore},
};
use ewpm_testkit::{TestDb, bearer, spawn_grpc};
use serde_json::{Value, json};
use tonic::{Code, Request};
use tonic_types::StatusExt;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/events-store.json");

fn fixture() -> Vec<Value> {
    let text = std::fs::read_to_string(FIXTURE).unwrap_or_else(|e| panic!("read {FIXTURE}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// What a simple fold over the file says each parcel ends as. Written independently of the
/// service's fold: events in id order; each newer event replaces the state; the first PICKUP
/// and the first DELIVERY set their times.
fn expected_states(events: &[Value]) -> Vec<ParcelState> {
    let mut states: HashMap<i64, ParcelState> = HashMap::new();
    let mut sorted: Vec<&Value> = events.iter().collect();
    sorted.sort_by_key(|e| e["EventId"].as_i64().unwrap());
    for e in sorted {
        let at = DateTime::parse_from_str(
            e["CreatedDateTimeUtc"].as_str().unwrap(),
            "%Y-%m-%dT%H:%M:%S %:z",
        )
        .unwrap()
        .with_timezone(&Utc);
        let kind = e["Type"].as_str().unwrap().to_string();
        let parcel = e["ParcelId"].as_i64().unwrap();
        let run = match &e["User"]["RunId"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let s = states.entry(parcel).or_insert(ParcelState {
            parcel_id: parcel,
            last_event_id: 0,
            kind: String::new(),
            status_code: String::new(),
            run_id: String::new(),
            created_at: at,
            pickup_at: None,
            delivery_at: None,
            event_count: 0,
        });
        s.last_event_id = e["EventId"].as_i64().unwrap();
        s.status_code = e["StatusCode"].as_str().unwrap().to_string();
        s.run_id = run;
        s.created_at = at;
        s.event_count += 1;
        if kind == "PICKUP" && s.pickup_at.is_none() {
            s.pickup_at = Some(at);
        }
        if kind == "DELIVERY" && s.delivery_at.is_none() {
            s.delivery_at = Some(at);
        }
        s.kind = kind;
    }
    let mut v: Vec<_> = states.into_values().collect();
    v.sort_by_key(|s| s.parcel_id);
    v
}

/// A feed server in the exercise's format over `events`, failing now and then: every
/// `fail_every`-th request answers 500 or 503, and "caught up" is a 204.
#[derive(Clone)]
struct Feed {
    events: Arc<Vec<Value>>,
    requests: Arc<AtomicUsize>,
    fail_every: usize,
}

async fn serve_feed(
    State(feed): State<Feed>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let n = feed.requests.fetch_add(1, Ordering::SeqCst) + 1;
    if feed.fail_every > 0 && n % feed.fail_every == 0 {
        let code = if n % 2 == 0 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return (code, "try again").into_response();
    }
    let from: i64 = q["FromEventId"].parse().unwrap();
    let limit: usize = q["Limit"].parse().unwrap();
    let page: Vec<&Value> = feed
        .events
        .iter()
        .filter(|e| e.get("EventId").and_then(Value::as_i64).is_none_or(|id| id >= from))
        .take(limit)
        .collect();
    if page.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    axum::Json(json!({ "ScanEvents": page })).into_response()
}

async fn start_feed(events: Vec<Value>, fail_every: usize) -> (String, Feed) {
    let feed =
        Feed { events: Arc::new(events), requests: Arc::new(AtomicUsize::new(0)), fail_every };
    let app = Router::new().route("/v1/scans/scanevents", get(serve_feed)).with_state(feed.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/scans/scanevents", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, feed)
}

fn projector(store: &ScanStore, url: &str, page_size: u32) -> Projector {
    projector_with(store, url, page_size, Status::default())
}

fn projector_with(store: &ScanStore, url: &str, page_size: u32, status: Status) -> Projector {
    let config = ProjectorConfig {
        page_size,
        poll_interval: Duration::from_millis(20),
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(20),
        owner: "test".into(),
    };
    Projector::new(
        store.clone(),
        Source::Http(HttpFeed::new(url, None).unwrap()),
        Lease::Local,
        config,
        status,
        Arc::new(SystemClock),
    )
}

/// Steps until the source is caught up, retrying failed steps (as `run` would).
async fn drain(p: &mut Projector) -> usize {
    let shutdown = CancellationToken::new();
    let mut failures = 0;
    for _ in 0..10_000 {
        match p.step(&shutdown).await {
            Ok(Step::CaughtUp) => return failures,
            Ok(_) => {}
            Err(_) => failures += 1,
        }
    }
    panic!("projector never caught up");
}

async fn the_fixture_folds_to_what_the_file_says(db: TestDb) {
    let events = fixture();
    assert_eq!(events.len(), 857);
    let (url, feed) = start_feed(events.clone(), 7).await;
    let store = ScanStore::new(db.db.clone());
    let mut p = projector(&store, &url, 50);
    let failures = drain(&mut p).await;
    assert!(failures > 0, "the feed injected faults; the projector must have retried");
    assert_eq!(store.all_parcels().await.unwrap(), expected_states(&events));
    assert_eq!(store.checkpoint(&url, Utc::now()).await.unwrap(), 857);
    assert_eq!(store.dead_letters(&url).await.unwrap(), vec![]);
    // ListParcels pages through the parcels whose latest scan is a DELIVERY, by id.
    let conn = db.db.clone();
    let server = spawn_grpc(|mount, grpc| {
        mount.add(ewpm_scan::app::build(conn, Arc::new(SystemClock), grpc, Status::default()));
    })
    .await
    .unwrap();
    let mut client = ScanServiceClient::connect(server.uri()).await.unwrap();
    let auth = bearer("ops", Role::Admin, None);
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let mut r = Request::new(pb::ListParcelsRequest {
            status: "delivery".into(),
            page_size: 50,
            page_token: token,
        });
        r.metadata_mut().insert("authorization", auth.parse().unwrap());
        let page = client.list_parcels(r).await.unwrap().into_inner();
        pages += 1;
        seen.extend(page.parcels.iter().map(|p| (p.parcel_id, p.r#type.clone())));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let delivered: Vec<(i64, String)> = expected_states(&events)
        .into_iter()
        .filter(|p| p.kind == "DELIVERY")
        .map(|p| (p.parcel_id, p.kind))
        .collect();
    assert!(delivered.len() > 100);
    assert_eq!((pages, seen), (delivered.len().div_ceil(50), delivered));
    server.shutdown.cancel();

    // Caught up is stable: another step reads nothing new and changes nothing.
    let before = feed.requests.load(Ordering::SeqCst);
    drain(&mut p).await;
    assert!(feed.requests.load(Ordering::SeqCst) > before);
    assert_eq!(store.all_parcels().await.unwrap(), expected_states(&events));
}

async fn malformed_events_are_dead_lettered_and_the_rest_applied(db: TestDb) {
    let mut events: Vec<Value> = fixture().into_iter().take(40).collect();
    // Gaps are fine; broken events are kept aside with their reason.
    events.retain(|e| e["EventId"].as_i64().unwrap() % 10 != 0);
    events.push(
        json!({"EventId": 41, "ParcelId": 1, "CreatedDateTimeUtc": "not a time", "Type": "PICKUP"}),
    );
    events.push(json!({"EventId": "42", "ParcelId": "x", "CreatedDateTimeUtc": "2023-01-01T00:00:00Z", "Type": "PICKUP"}));
    events.push(json!({"eventId": 43, "parcelId": 5, "createdDateTimeUtc": "2023-01-01T00:00:00Z", "type": "RETURNED",
        "user": {"runId": 77}}));
    let (url, _) = start_feed(events.clone(), 0).await;
    let store = ScanStore::new(db.db.clone());
    drain(&mut projector(&store, &url, 16)).await;
    let dead = store.dead_letters(&url).await.unwrap();
    let dead: Vec<(Option<i64>, bool)> = dead
        .iter()
        .map(|d| {
            (d.event_id, d.reason.contains("CreatedDateTimeUtc") || d.reason.contains("ParcelId"))
        })
        .collect();
    assert_eq!(dead, vec![(Some(41), true), (Some(42), true)]);
    assert_eq!(store.checkpoint(&url, Utc::now()).await.unwrap(), 43);
    let returned = store.parcel(5).await.unwrap().unwrap();
    assert_eq!(
        (returned.kind.as_str(), returned.run_id.as_str(), returned.pickup_at),
        ("RETURNED", "77", None)
    );
    let good: Vec<Value> = events
        .into_iter()
        .take_while(|e| e["EventId"].as_i64().is_some_and(|id| id <= 40))
        .collect();
    let mut want = expected_states(&good);
    let mut got = store.all_parcels().await.unwrap();
    got.retain(|p| p.parcel_id != 5);
    want.retain(|p| p.parcel_id != 5);
    assert_eq!(got, want);
}

async fn ingest_assigns_increasing_ids_and_retries_are_not_stored_twice(db: TestDb) {
    let conn = db.db.clone();
    let server = spawn_grpc(|mount, grpc| {
        mount.add(ewpm_scan::app::build(conn, Arc::new(SystemClock), grpc, Status::default()));
    })
    .await
    .unwrap();
    let mut client = ScanServiceClient::connect(server.uri()).await.unwrap();
    let auth = bearer("device-1", Role::Employee, None);
    let req = |events: Vec<pb::NewScanEvent>| {
        let mut r = Request::new(pb::IngestScanEventsRequest { events });
        r.metadata_mut().insert("authorization", auth.parse().unwrap());
        r
    };
    let scan = |parcel: i64, tx: i64| pb::NewScanEvent {
        parcel_id: parcel,
        r#type: "pickup".into(),
        create_time: Some(prost_types::Timestamp { seconds: 1_672_531_200 + tx, nanos: 0 }),
        status_code: String::new(),
        device: Some(pb::Device { device_id: 9, device_transaction_id: tx }),
        user: Some(pb::ScanUser {
            user_id: "NC1001".into(),
            carrier_id: "NC".into(),
            run_id: "1".into(),
        }),
    };
    // Concurrent uploads: every id distinct, and the feed is one increasing sequence.
    let mut handles = Vec::new();
    for c in 0..8i64 {
        let mut client = client.clone();
        let batch: Vec<_> = (0..50).map(|i| scan(c * 1000 + i + 1, c * 1000 + i + 1)).collect();
        let r = req(batch);
        handles.push(tokio::spawn(async move {
            client.ingest_scan_events(r).await.unwrap().into_inner().event_ids
        }));
    }
    let mut ids: Vec<i64> = Vec::new();
    for h in handles {
        let batch = h.await.unwrap();
        assert!(batch.windows(2).all(|w| w[0] < w[1]), "{batch:?}");
        ids.extend(batch);
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=400).collect::<Vec<_>>());

    // A retried upload (same device transactions) gets the same ids and stores nothing; the
    // ids it would have taken are skipped (gaps are allowed in the feed). Scans without a
    // device transaction id are never taken for retries.
    let retry: Vec<_> =
        (0..3).map(|i| scan(i + 1, i + 1)).chain([scan(77, 0), scan(77, 0)]).collect();
    let again = client.ingest_scan_events(req(retry)).await.unwrap().into_inner().event_ids;
    assert_eq!(again, vec![1, 2, 3, 404, 405]);
    let mut list = Request::new(pb::ListScanEventsRequest { from_event_id: 399, limit: 10 });
    list.metadata_mut().insert("authorization", auth.parse().unwrap());
    let page = client.list_scan_events(list).await.unwrap().into_inner().events;
    assert_eq!(page.iter().map(|e| e.event_id).collect::<Vec<_>>(), vec![399, 400, 404, 405]);
    assert_eq!(page[2].r#type, "PICKUP");

    // Bad scans name their fields and store nothing.
    let mut bad = scan(0, 5000);
    bad.create_time = None;
    bad.r#type = "x".repeat(40);
    let err = client.ingest_scan_events(req(vec![scan(1, 6000), bad])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = err
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["events[1].parcel_id", "events[1].type", "events[1].create_time"]);
    let err = client.ingest_scan_events(req(vec![])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(ScanStore::new(db.db.clone()).head().await.unwrap(), 405);

    // No token: nothing.
    let err = client
        .ingest_scan_events(Request::new(pb::IngestScanEventsRequest {
            events: vec![scan(1, 7000)],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut get = Request::new(pb::GetParcelRequest { parcel_id: 123_456 });
    get.metadata_mut().insert("authorization", auth.parse().unwrap());
    assert_eq!(client.get_parcel(get).await.unwrap_err().code(), Code::NotFound);
    server.shutdown.cancel();
}

/// The status never claims "caught up" (lag 0) before the first poll or while the feed
/// fails: it says which, with the error and the head it last saw.
async fn the_status_tells_standby_failing_and_caught_up_apart(db: TestDb) {
    let store = ScanStore::new(db.db.clone());
    let status = Status::default();
    let (down, _) = start_feed(fixture(), 1).await;
    let failing = projector_with(&store, &down, 100, status.clone());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(failing.run(shutdown.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status.get().state() != ProjectorState::Failing {
        assert!(std::time::Instant::now() < deadline, "never failing: {:?}", status.get());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = status.get();
    assert_eq!((seen.head_seen, seen.last_success), (None, None));
    let error = seen.failing.map(|(_, why)| why).unwrap_or_default();
    assert!(error.contains("500") || error.contains("503"), "{error}");
    shutdown.cancel();
    running.await.unwrap();

    let fresh = Status::default();
    let (up, _) = start_feed(fixture(), 0).await;
    let mut p = projector_with(&store, &up, 1000, fresh.clone());
    // Not led yet: standby, whatever its numbers say.
    assert_eq!(fresh.get().state(), ProjectorState::Standby);
    drain(&mut p).await;
    let done = fresh.get();
    assert_eq!(done.failing, None);
    assert!(done.head_seen.is_some());
    assert_eq!(done.head, done.checkpoint);
}

macro_rules! suite {
    ($backend:ident, $db:expr) => {
        mod $backend {
            use super::*;
            suite!(@tests $db;
                the_fixture_folds_to_what_the_file_says,
                malformed_events_are_dead_lettered_and_the_rest_applied,
                ingest_assigns_increasing_ids_and_retries_are_not_stored_twice,
                the_status_tells_standby_failing_and_caught_up_apart,
            );
        }
    };
    (@tests $db:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                super::$name($db.await.unwrap()).await;
            }
        )+
    };
}

suite!(sqlite, TestDb::sqlite(&[&ewpm_scan::MODULE]));
suite!(postgres, TestDb::postgres(&[&ewpm_scan::MODULE]));
