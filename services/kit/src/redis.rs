//! Redis helpers shared by the bus and the score store.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
};

use fred::{
    prelude::Client,
    types::{FromValue, MultipleKeys, MultipleValues, scripts::Script},
};

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
