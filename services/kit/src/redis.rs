//! Redis helpers shared by the bus, the score store and pub/sub: every client EWPM opens
//! comes from [`builder`], so every one reconnects by itself and every command has a timeout.
//!
//! Without a reconnect policy a fred client that loses its connection (a Redis restart)
//! never reconnects and its commands hang forever; without a command timeout a half-open
//! connection holds callers forever. Here:
//! - reconnects back off exponentially from 50 ms to 2 s, with up to 100 ms of jitter, and
//!   never give up; commands in flight when the connection dropped are re-sent after the
//!   reconnect (at most [`MAX_COMMAND_ATTEMPTS`] times), blocking reads included;
//! - every command fails after [`COMMAND_TIMEOUT`] (a blocking read gets its block time on
//!   top, see [`with_timeout`]), so a caller answers UNAVAILABLE instead of hanging;
//! - a connection with a command unanswered for [`UNRESPONSIVE_AFTER`] is closed and
//!   reconnected (half-open sockets after a network fault).

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
    time::Duration,
};

use anyhow::Context;
use fred::{
    clients::SubscriberClient,
    prelude::{Client, ClientLike, Config, ReconnectPolicy},
    types::{Builder, FromValue, MultipleKeys, MultipleValues, config::Options, scripts::Script},
};

/// How long any Redis command may take before it fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a command is sent at most (the first try and re-sends after reconnects).
pub const MAX_COMMAND_ATTEMPTS: u32 = 3;
/// A connection with a command unanswered this long (beyond the command's own block time)
/// is presumed dead and reconnected.
pub const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(10);

/// The reconnect policy of every client: exponential backoff 50 ms → 2 s with jitter, forever.
pub fn reconnect_policy() -> ReconnectPolicy {
    let mut policy = ReconnectPolicy::new_exponential(0, 50, 2_000, 2);
    policy.set_jitter(100);
    policy
}

/// A client builder for `url` with the reconnect policy and timeouts above.
pub fn builder(url: &str) -> anyhow::Result<Builder> {
    let config = Config::from_url(url).context("Redis URL")?;
    let mut builder = Builder::from_config(config);
    builder
        .set_policy(reconnect_policy())
        .with_performance_config(|c| c.default_command_timeout = COMMAND_TIMEOUT)
        .with_connection_config(|c| {
            c.connection_timeout = COMMAND_TIMEOUT;
            c.internal_command_timeout = COMMAND_TIMEOUT;
            c.max_command_attempts = MAX_COMMAND_ATTEMPTS;
            c.unresponsive.max_timeout = Some(UNRESPONSIVE_AFTER);
            c.unresponsive.interval = Duration::from_secs(1);
            // fred leaves Nagle's algorithm on: a command written while an earlier one is
            // still unacknowledged would wait for that ACK.
            c.tcp.nodelay = Some(true);
        });
    Ok(builder)
}

/// A connected client for `url` (see [`builder`]). Fails when Redis cannot be reached now;
/// once connected it reconnects by itself for ever.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let client = builder(url)?.build().context("Redis client")?;
    client.init().await.context("connect to Redis")?;
    Ok(client)
}

/// Options for one command that may block on the server for `block` (`XREADGROUP BLOCK`):
/// the usual timeout on top of the block time.
pub fn with_timeout(block: Duration) -> Options {
    Options { timeout: Some(COMMAND_TIMEOUT + block), ..Options::default() }
}

/// A connected publisher and a connected subscriber for pub/sub at `url`. Both reconnect by
/// themselves (see [`builder`]); restoring the subscriber's subscriptions after a reconnect is
/// the caller's part.
pub async fn pubsub(url: &str) -> anyhow::Result<(Client, SubscriberClient)> {
    let publisher = connect(url).await?;
    let subscriber = builder(url)?.build_subscriber_client().context("Redis subscriber client")?;
    subscriber.init().await.context("connect the Redis subscriber")?;
    Ok((publisher, subscriber))
}

/// Runs a Lua script by its SHA1 (`EVALSHA`), loading it once per server when the server does
/// not know it yet: a hot script is not re-sent and re-hashed on every call as `EVAL` would.
pub async fn eval<R, K, V>(
    client: &Client,
    lua: &'static str,
    keys: K,
    args: V,
) -> Result<R, fred::error::Error>
where
    R: FromValue,
    K: Into<MultipleKeys> + Send,
    V: TryInto<MultipleValues> + Send,
    V::Error: Into<fred::error::Error> + Send,
{
    static SCRIPTS: LazyLock<Mutex<HashMap<usize, Script>>> = LazyLock::new(Mutex::default);
    // Scripts are `'static` constants: their address names them.
    let script = SCRIPTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(lua.as_ptr() as usize)
        .or_insert_with(|| Script::from_lua(lua))
        .clone();
    script.evalsha_with_reload(client, keys, args).await
}
