//! Channels to other services of the mesh.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// A lazily connecting channel to the service at `uri` (`http://host:port`): a process starts
/// even when the service is not up yet, and its calls answer Unavailable until it is. Calls
/// set their own deadlines.
pub fn channel(uri: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(uri.to_string())
        .map_err(|e| anyhow::anyhow!("invalid service address {uri:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}
