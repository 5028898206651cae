//! The gRPC server bootstrap every service uses.
//!
//! [`serve`] mounts the given services behind the auth interceptor and adds what every EWPM
//! server has: `grpc.health.v1` (one status per service, flipped to NOT_SERVING as shutdown
//! starts), reflection v1 and v1alpha (EWPM, health and `google.rpc` error-detail types
//! registered, so grpcurl can decode `BadRequest`), a span per RPC carrying the `trace_id`
//! (taken from an incoming `traceparent`, else new), Prometheus request metrics with the
//! standard go-grpc-prometheus names, and graceful shutdown bounded by a grace period.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    server::NamedService,
    service::{Routes, RoutesBuilder, interceptor::InterceptedService},
    transport::Server,
};
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::{auth::Authenticator, settings::GrpcSettings};

/// The services one server mounts.
pub struct Mount {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    auth: Authenticator,
    health: HealthReporter,
}

impl Mount {
    /// An empty set whose services will all require a token verified by `auth`.
    pub fn new(auth: Authenticator) -> Self {
        let (health, _) = tonic_health::server::health_reporter();
        Self { routes: Routes::builder(), names: Vec::new(), auth, health }
    }

    /// The health reporter the server will serve, for statuses a service sets itself (a
    /// background task's health under its own name).
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Adds a service behind the auth interceptor.
    pub fn add<S>(&mut self, service: S) -> &mut Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(InterceptedService::new(service, self.auth.clone()));
        self
    }

    /// The fully qualified names of the mounted services.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))
}

/// Serves `mount` on `listener` until `shutdown` is cancelled, then marks every service
/// NOT_SERVING, stops accepting, and waits up to `shutdown_grace_secs` for open calls and
/// streams before dropping them.
pub async fn serve(
    listener: TcpListener,
    mount: Mount,
    settings: &GrpcSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Mount { routes, names, auth: _, health: reporter } = mount;
    let health = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
    for name in &names {
        reporter.set_service_status(*name, ServingStatus::Serving).await;
    }
    let reflection_v1 = reflection().build_v1().context("build reflection v1")?;
    let reflection_v1alpha = reflection().build_v1alpha().context("build reflection v1alpha")?;

    let signal = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            reporter.set_service_status("", ServingStatus::NotServing).await;
            for name in names {
                reporter.set_service_status(name, ServingStatus::NotServing).await;
            }
        }
    };
    let addr = listener.local_addr().ok();
    let server = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(ObserveLayer)
        .add_routes(routes.routes())
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal);
    tracing::debug!(?addr, "gRPC server started");
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    tokio::select! {
        result = server => result.context("gRPC server failed"),
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "open calls outlived the grace period; dropped");
            Ok(())
        }
    }
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ewpm_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // Both reflection versions list both, so either kind of client sees the other.
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// Serves `GET /metrics` (Prometheus text) on `addr` until `shutdown`; for a single service
/// in mesh mode. Embedded mode exposes the same registry on the REST edge.
pub async fn serve_metrics(
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let handle = crate::telemetry::metrics_handle();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("metrics server failed")
}

/// Wraps every RPC in a span and records its metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner }
    }
}

/// See [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<http::Request<B>> for Observe<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        let trace_id = trace_id(request.headers());
        let span =
            tracing::info_span!("rpc", rpc.service = %service, rpc.method = %method, %trace_id);
        metrics::counter!("grpc_server_started_total", "grpc_service" => service.clone(), "grpc_method" => method.clone())
            .increment(1);
        let started = Instant::now();
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let result = future.await;
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .unwrap_or(0),
                    Err(_) => 2,
                };
                let code = code_name(code);
                let elapsed = started.elapsed().as_secs_f64();
                metrics::counter!("grpc_server_handled_total", "grpc_service" => service.clone(), "grpc_method" => method.clone(), "grpc_code" => code)
                    .increment(1);
                metrics::histogram!("grpc_server_handling_seconds", "grpc_service" => service, "grpc_method" => method)
                    .record(elapsed);
                tracing::debug!(grpc.code = code, elapsed_ms = elapsed * 1e3, "rpc finished");
                result
            }
            .instrument(span),
        )
    }
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`).
fn split_path(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default().to_string();
    let method = parts.next().unwrap_or_default().to_string();
    (service, method)
}

/// The trace id of an incoming W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), else a new one.
pub fn trace_id(headers: &http::HeaderMap) -> String {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let mut parts = v.split('-');
            let (_version, id) = (parts.next()?, parts.next()?);
            (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32))
                .then(|| id.to_ascii_lowercase())
        })
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// The canonical gRPC code name, as go-grpc-prometheus labels it.
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incoming_traceparent_keeps_its_trace_id() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01".parse().unwrap(),
        );
        assert_eq!(trace_id(&headers), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn a_missing_or_malformed_traceparent_gets_a_new_trace_id() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", "garbage".parse().unwrap());
        let id = trace_id(&headers);
        assert_eq!(id.len(), 32);
        assert_ne!(id, trace_id(&headers));
    }

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/ewpm.challenge.v1.ChallengeService/GetChallenge"),
            ("ewpm.challenge.v1.ChallengeService".to_string(), "GetChallenge".to_string())
        );
        assert_eq!(code_name(16), "Unauthenticated");
    }
}
