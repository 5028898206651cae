//! Channels to other services of the mesh.

use std::time::Duration;

use tonic::{
    body::Body,
    transport::{Channel, Endpoint},
};

/// A gRPC service stack as a tower service: a [`Channel`] to a server (see [`upstream`]), or
/// the services of this process ([`crate::server::Mount::local`]). Clients of either are
/// `XServiceClient<Upstream>`.
pub type Upstream = tower::util::BoxCloneSyncService<
    http::Request<Body>,
    http::Response<Body>,
    tonic::transport::Error,
>;

/// A channel as an [`Upstream`].
pub fn upstream(channel: Channel) -> Upstream {
    Upstream::new(channel)
}

/// A lazily connecting channel to the service at `uri` (`http://host:port`): a process starts
/// even when the service is not up yet, and its calls answer Unavailable until it is. Calls
/// set their own deadlines.
pub fn channel(uri: &str) -> anyhow::Result<Channel> {
    Ok(endpoint(uri)?.connect_lazy())
}

/// As [`channel`], over `connections` HTTP/2 connections (at least 1) with calls spread over
/// the ready ones: one connection's frames are all written and read by one task, which a
/// busy caller (the REST edge) saturates before the service is. Must be called inside a Tokio
/// runtime (the pool runs a task of its own).
pub fn pooled(uri: &str, connections: usize) -> anyhow::Result<Channel> {
    if connections <= 1 {
        return channel(uri);
    }
    let endpoint = endpoint(uri)?;
    Ok(Channel::balance_list((0..connections).map(|_| endpoint.clone())))
}

fn endpoint(uri: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(uri.to_string())
        .map_err(|e| anyhow::anyhow!("invalid service address {uri:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true))
}
