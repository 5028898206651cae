//! Database connections (SeaORM over SQLite or PostgreSQL).
//!
//! Every service's tables live in one database server; each module migrates its own tables
//! with its own migration history (`Module::migrate`).

use std::time::Duration;

use anyhow::Context;
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, Statement, Value};

/// Opens a connection pool for `url` (`sqlite://path?mode=rwc` or `postgres://…`). For
/// SQLite the parent directory is created and the file runs in WAL mode.
pub async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    let sqlite = url.starts_with("sqlite:");
    if sqlite
        && let Some(path) = sqlite_path(url)
        && let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    let mut options = ConnectOptions::new(url.to_string());
    options
        .max_connections(if sqlite { 4 } else { 16 })
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        // Per connection, not once per pool: `synchronous` and `busy_timeout` belong to a
        // connection, and a pool connection left at `synchronous=FULL` syncs the WAL on every
        // commit (the batch writers' commits were waiting on it).
        .map_sqlx_sqlite_opts(|o| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
        });
    if let Some(port) = postgres_tcp_port(url) {
        options.map_sqlx_postgres_pool_opts(move |pool| {
            pool.after_connect(move |_conn, _meta| {
                Box::pin(async move {
                    nodelay::set_on_sockets_to(port);
                    Ok(())
                })
            })
        });
    }
    Database::connect(options).await.with_context(|| format!("connect to database {}", redact(url)))
}

/// A statement for `backend` from SQL written with PostgreSQL's `$n` parameters (SQLite takes
/// them as `?n`), so one text serves both databases. The text must hold no other `$`.
pub fn statement(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = if backend == DbBackend::Postgres { sql.to_string() } else { sql.replace('$', "?") };
    Statement::from_sql_and_values(backend, sql, values)
}

/// The server port of a PostgreSQL URL reached over TCP (`None` for a Unix socket, which has
/// no Nagle's algorithm to turn off, and for SQLite).
fn postgres_tcp_port(url: &str) -> Option<u16> {
    use std::str::FromStr;
    if !(url.starts_with("postgres:") || url.starts_with("postgresql:")) {
        return None;
    }
    let options = sea_orm::sqlx::postgres::PgConnectOptions::from_str(url).ok()?;
    let host = options.get_host();
    (options.get_socket().is_none() && !host.starts_with('/')).then(|| options.get_port())
}

/// TCP_NODELAY on this process's PostgreSQL sockets.
///
/// sqlx 0.9.0 no longer sets TCP_NODELAY on the sockets it opens (it did before; fixed in its
/// repository, not yet released) and has no hook to reach a connection's socket. With Nagle's
/// algorithm on, a statement larger than one segment (a batch insert) leaves its tail segment
/// waiting for the server's delayed ACK, up to 40 ms, on every such round trip. So after each
/// new pool connection (the socket exists by then) this walks the process's open sockets and
/// sets TCP_NODELAY on every TCP socket whose peer port is the database's and that lacks it.
/// Drop this when sqlx sets it again.
mod nodelay {
    /// Sets TCP_NODELAY on every TCP socket of this process connected to `port`; how many
    /// needed it.
    #[cfg(target_os = "linux")]
    pub(super) fn set_on_sockets_to(port: u16) -> usize {
        use std::os::fd::FromRawFd;
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return 0 };
        let mut set = 0;
        for entry in dir.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            // Only sockets (their link reads `socket:[inode]`).
            if !std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
            {
                continue;
            }
            // SAFETY: the fd is only borrowed for a getpeername/getsockopt/setsockopt and never
            // closed (ManuallyDrop). Were it closed and reused by another thread meanwhile, the
            // worst outcome is TCP_NODELAY on another TCP socket of this process, which every
            // other socket here (gRPC, HTTP, Redis) already has.
            let socket = std::mem::ManuallyDrop::new(unsafe { socket2::Socket::from_raw_fd(fd) });
            let to_database = socket
                .peer_addr()
                .ok()
                .and_then(|addr| addr.as_socket())
                .is_some_and(|addr| addr.port() == port);
            if to_database
                && socket.tcp_nodelay().is_ok_and(|on| !on)
                && socket.set_tcp_nodelay(true).is_ok()
            {
                set += 1;
            }
        }
        set
    }

    /// Elsewhere sqlx's sockets keep Nagle's algorithm.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn set_on_sockets_to(_port: u16) -> usize {
        0
    }
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// `postgres://u@h:p/old?x` → `postgres://u@h:p/<name>?x`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::ConnectionTrait;

    #[test]
    fn a_database_name_is_replaced_keeping_the_rest() {
        assert_eq!(with_database("postgres://u@h:1/postgres", "x"), "postgres://u@h:1/x");
        assert_eq!(
            with_database("postgres://u@h:1/postgres?sslmode=disable", "x"),
            "postgres://u@h:1/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }

    #[tokio::test]
    async fn an_embedded_database_is_created_in_a_new_directory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/nested/ewpm.db?mode=rwc", dir.path().display());
        let db = connect(&url).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (x INTEGER)").await.unwrap();
        assert!(dir.path().join("nested/ewpm.db").is_file());
    }

    #[tokio::test]
    async fn every_pooled_sqlite_connection_runs_wal_with_normal_sync() {
        use sea_orm::TransactionTrait;
        let dir = tempfile::tempdir().unwrap();
        let db =
            connect(&format!("sqlite://{}/x.db?mode=rwc", dir.path().display())).await.unwrap();
        // Four open transactions hold all four connections of the pool at once.
        let mut txs = Vec::new();
        for _ in 0..4 {
            txs.push(db.begin().await.unwrap());
        }
        for tx in &txs {
            let pragma = |sql: &'static str| async move {
                let row = tx
                    .query_one_raw(sea_orm::Statement::from_string(
                        sea_orm::DatabaseBackend::Sqlite,
                        sql,
                    ))
                    .await
                    .unwrap()
                    .unwrap();
                row.try_get_by_index::<String>(0)
                    .or_else(|_| row.try_get_by_index::<i64>(0).map(|n| n.to_string()))
                    .unwrap()
            };
            // synchronous: 1 = NORMAL.
            assert_eq!(
                (pragma("PRAGMA journal_mode").await, pragma("PRAGMA synchronous").await),
                ("wal".to_string(), "1".to_string())
            );
        }
    }
}
