//! The room's `access_token` query parameter never reaches the logs (at every level, every
//! target) or the metrics: the edge takes it out of the URI before anything else sees it.
//! Its own test binary, because it installs the process's global log subscriber.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use ewpm_gateway::AppState;
use ewpm_kit::{
    CancellationToken,
    auth::{Role, TokenKeys},
    settings::Settings,
};
use tokio::net::TcpListener;
use tracing_subscriber::fmt::MakeWriter;

/// Everything logged, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn the_query_token_reaches_neither_logs_nor_metrics() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .init();
    let metrics = ewpm_kit::telemetry::metrics_handle();
    let settings = Settings::default();
    // No quiz service listens there: the room's upstream call fails (503) after the token
    // was checked, which is enough to have the request logged and counted.
    let addrs = ewpm_gateway::upstream_names()
        .map(|name| (name.to_string(), "http://127.0.0.1:9".to_string()));
    let keys = TokenKeys::new("privacy-test", &settings.auth);
    let state =
        AppState::connect(&addrs.into_iter().collect(), keys.clone(), &settings.limits).unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = http.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(ewpm_gateway::serve(http, state, shutdown.clone()));

    let token = keys.mint("ann", Role::Employee, None);
    let url = format!("ws://{addr}/api/quiz-sessions/s-1/ws?top=5&access_token={token}");
    let refused = tokio_tungstenite::connect_async(url).await.unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(response) = refused else {
        panic!("expected an HTTP refusal, got {refused:?}")
    };
    assert_eq!(response.status(), 503);
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.cancel();

    let rendered = metrics.render();
    assert!(
        rendered.contains(r#"route="/api/quiz-sessions/{id}/ws""#),
        "the request is counted under its route template: {rendered}"
    );
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("/api/quiz-sessions/{id}/ws"), "the request was logged: {logged}");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!rendered.contains(signature), "the token is in the metrics");
    assert!(!logged.contains(signature), "the token is in the logs: {logged}");
}
