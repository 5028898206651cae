//! Callers trying to grow a process's state, against the mesh as separate processes: made-up
//! gRPC paths and HTTP methods must not add metric series or memory, and one caller cannot
//! hold more than its share of live streams.

use std::time::Duration;

use ewpm_kit::auth::Role;
use ewpm_testkit::{bearer, free_port};
use tonic::{Request, transport::Channel};

mod common;
use common::Mesh;

/// Series (sample lines) of `metric` in Prometheus text from `url`.
async fn series(url: &str, metric: &str) -> usize {
    let text = ewpm_testkit::http_client().get(url).send().await.unwrap().text().await.unwrap();
    text.lines().filter(|l| l.starts_with(metric)).count()
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `n` unary calls to made-up paths (no token), numbered from `from`, 32 at a time.
async fn made_up_calls(channel: Channel, from: usize, n: usize) {
    let mut tasks = Vec::new();
    for lane in 0..32 {
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            for i in (from + lane..from + n).step_by(32) {
                grpc.ready().await.unwrap();
                let path = format!("/evil{i}.Service{i}/Method{i}").parse().unwrap();
                let codec = tonic_prost::ProstCodec::<(), ()>::default();
                let result = grpc.unary(Request::new(()), path, codec).await;
                assert!(result.is_err(), "a made-up path answered");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// `n` requests with made-up methods and paths to the edge at `base`, 32 at a time.
async fn made_up_requests(base: String, from: usize, n: usize) {
    let mut tasks = Vec::new();
    for lane in 0..32 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let client = ewpm_testkit::http_client();
            for i in (from + lane..from + n).step_by(32) {
                let method = reqwest::Method::from_bytes(format!("EVIL{i}").as_bytes()).unwrap();
                let response =
                    client.request(method, format!("{base}/evil/{i}")).send().await.unwrap();
                assert!(response.status().is_client_error(), "{}", response.status());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn made_up_paths_and_methods_add_no_metric_series_and_no_memory() {
    let mut mesh = Mesh::start(false).await;
    // A leaderboard process of the test's own, to read its metrics and memory.
    let (grpc, metrics) = (free_port(), free_port());
    let child = mesh.spawn_child(
        &["serve", "leaderboard"],
        grpc,
        &[("EWPM_METRICS__ADDR", &format!("127.0.0.1:{metrics}"))],
    );
    let pid = child.id();
    mesh.procs.push(ewpm_testkit::Proc(child));
    let channel = Channel::from_shared(format!("http://127.0.0.1:{grpc}")).unwrap();
    let channel = loop {
        if let Ok(c) = channel.connect().await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let grpc_metrics = format!("http://127.0.0.1:{metrics}/metrics");
    let edge_metrics = format!("{}/metrics", mesh.base());

    // Warm up (allocator, connection buffers, the `unmatched` series).
    made_up_calls(channel.clone(), 0, 1_000).await;
    made_up_requests(mesh.base(), 0, 1_000).await;
    // A scrape is a request too: the first one adds its own route's series.
    series(&edge_metrics, "http_server_").await;
    let grpc_series = series(&grpc_metrics, "grpc_server_").await;
    let edge_series = series(&edge_metrics, "http_server_").await;
    let rss = rss_kib(pid);

    made_up_calls(channel, 1_000, 10_000).await;
    made_up_requests(mesh.base(), 1_000, 10_000).await;
    let grpc_after = series(&grpc_metrics, "grpc_server_").await;
    let edge_after = series(&edge_metrics, "http_server_").await;
    let rss_after = rss_kib(pid);
    eprintln!(
        "10,000 made-up gRPC paths: series {grpc_series} -> {grpc_after}, RSS {rss} -> {rss_after} KiB; \
         10,000 made-up HTTP methods and paths: series {edge_series} -> {edge_after}"
    );
    assert_eq!(grpc_after, grpc_series, "gRPC metric series grew with made-up paths");
    assert_eq!(edge_after, edge_series, "HTTP metric series grew with made-up methods and paths");
    // Unbounded labels cost about 5 KiB a path (50 MiB for 10,000); allow allocator noise.
    assert!(rss_after < rss + 8 * 1024, "RSS grew from {rss} to {rss_after} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_caller_cannot_hold_more_than_its_share_of_live_streams() {
    let mesh = Mesh::start(false).await;
    let client = ewpm_testkit::http_client();
    let url = format!("{}/api/me/awards/stream", mesh.base());
    let greedy = bearer("greedy", Role::Employee, Some("acme"));
    let mut open = Vec::new();
    for _ in 0..16 {
        let response = client.get(&url).header("authorization", &greedy).send().await.unwrap();
        assert_eq!(response.status(), 200);
        open.push(response);
    }
    let refused = client.get(&url).header("authorization", &greedy).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "5");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["reason"], "TOO_MANY_STREAMS");
    // Another caller is not affected.
    let other = bearer("modest", Role::Employee, Some("acme"));
    let response = client.get(&url).header("authorization", &other).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // A closed stream gives its place back.
    drop(open.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = client.get(&url).header("authorization", &greedy).send().await.unwrap();
        if again.status() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a closed stream kept its slot");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
