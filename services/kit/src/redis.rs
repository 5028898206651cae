//! Redis helpers shared by the bus and the score store.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
};

use anyhow::Context;
use fred::{
    clients::SubscriberClient,
    prelude::{Client, ClientLike, Config, ReconnectPolicy},
    types::{FromValue, MultipleKeys, MultipleValues, scripts::Script},
};

/// A connected publisher and a connected subscriber for pub/sub at `url`. The subscriber
/// keeps reconnecting forever (backing off to 5 s): live streams depend on it; restoring its
/// subscriptions after a reconnect is the caller's part.
pub async fn pubsub(url: &str) -> anyhow::Result<(Client, SubscriberClient)> {
    let config = Config::from_url(url).context("Redis URL")?;
    let publisher =
        fred::types::Builder::from_config(config.clone()).build().context("Redis client")?;
    publisher.init().await.context("connect to Redis")?;
    let subscriber = fred::types::Builder::from_config(config)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build_subscriber_client()
        .context("Redis subscriber client")?;
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
