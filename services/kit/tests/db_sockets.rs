//! The PostgreSQL pool's TCP sockets have TCP_NODELAY (sqlx 0.9.0 leaves Nagle's algorithm
//! on; `db::connect` turns it off after each new connection).

use std::{os::fd::FromRawFd, str::FromStr};

use ewpm_testkit::servers;
use sea_orm::ConnectionTrait;

/// Every TCP socket of this process whose peer port is `port`: whether it has TCP_NODELAY.
fn sockets_to(port: u16) -> Vec<bool> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if !std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        {
            continue;
        }
        // SAFETY: borrowed for two getsockopt calls, never closed.
        let socket = std::mem::ManuallyDrop::new(unsafe { socket2::Socket::from_raw_fd(fd) });
        let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
        if peer.is_some_and(|a| a.port() == port)
            && let Ok(nodelay) = socket.tcp_nodelay()
        {
            found.push(nodelay);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_postgres_connection_has_tcp_nodelay() {
    let url = &servers().postgres_url;
    let options = sea_orm::sqlx::postgres::PgConnectOptions::from_str(url).expect("a URL");
    assert!(
        options.get_socket().is_none() && !options.get_host().starts_with('/'),
        "the test server must be reached over TCP: {url}"
    );
    let port = options.get_port();
    let db = ewpm_kit::db::connect(url).await.expect("connect");
    // Several statements at once, so the pool opens several connections.
    let sleeps = (0..4).map(|_| db.execute_unprepared("SELECT pg_sleep(0.2)"));
    for result in futures::future::join_all(sleeps).await {
        result.expect("statement");
    }
    let sockets = sockets_to(port);
    assert!(sockets.len() >= 4, "expected the pool's 4+ connections, found {sockets:?}");
    assert!(sockets.iter().all(|nodelay| *nodelay), "a socket without TCP_NODELAY: {sockets:?}");
}
