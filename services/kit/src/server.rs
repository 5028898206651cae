//! The gRPC server bootstrap every service uses.
//!
//! [`serve`] mounts the given services behind the auth interceptor and adds what every EWPM
//! server has: `grpc.health.v1` (one status per service, flipped to NOT_SERVING as shutdown
//! starts), reflection v1 and v1alpha (EWPM, health and `google.rpc` error-detail types
//! registered, so grpcurl can decode `BadRequest`), a span per RPC carrying the `trace_id`
//! (taken from an incoming `traceparent`, else new), Prometheus request metrics with the
//! standard go-grpc-prometheus names, and graceful shutdown bounded by a grace period.
//!
//! What a caller cannot do to a server:
//! - grow its metrics: labels are the RPC's service and method only when the path names a
//!   mounted RPC, else `unmatched` (a path is any string the caller likes);
//! - hold more than `limits.max_in_flight` calls at once: the next one answers
//!   RESOURCE_EXHAUSTED (reason `SERVER_BUSY`, with `RetryInfo`) at once;
//! - keep a unary call running past `limits.request_timeout_secs`: DEADLINE_EXCEEDED;
//! - make the server blame itself for the caller's garbage: a request body that is not the
//!   RPC's protobuf message answers INVALID_ARGUMENT (tonic says INTERNAL).
//!
//! A unary call still running when shutdown's grace period is about to end is answered
//! UNAVAILABLE (`SHUTTING_DOWN`, with `RetryInfo`) instead of being dropped with its
//! connection, so the client knows to retry elsewhere.
//!
//! Readiness follows the dependencies named with [`Mount::depend_on`] (see [`crate::health`]);
//! the status `liveness` does not.

use std::{
    collections::HashSet,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{net::TcpListener, sync::Semaphore};
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

use crate::{
    auth::Authenticator,
    health::{Dependency, LIVENESS},
    settings::{GrpcSettings, HealthSettings, LimitSettings, Settings},
};

/// The services one server mounts.
pub struct Mount {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    auth: Authenticator,
    health: HealthReporter,
    dependencies: Vec<Dependency>,
    health_settings: HealthSettings,
    limits: LimitSettings,
}

impl Mount {
    /// An empty set whose services will all require a token verified by `auth`, with the
    /// default health settings and limits.
    pub fn new(auth: Authenticator) -> Self {
        let (health, _) = tonic_health::server::health_reporter();
        let defaults = Settings::default();
        Self {
            routes: Routes::builder(),
            names: Vec::new(),
            auth,
            health,
            dependencies: Vec::new(),
            health_settings: defaults.health,
            limits: defaults.limits,
        }
    }

    /// The services mounted so far, with health, as one tower service called in this
    /// process: what [`serve`] answers over HTTP/2, each call in the same layers (its span,
    /// metrics, concurrency limit and timeout; its token checked by the service's
    /// interceptor), without encoding frames or crossing a socket. For a REST edge in the
    /// same process as the services (`ewpm dev`). Health answers as the server's does (the
    /// same reporter); the concurrency limit is this stack's own.
    pub fn local(&self) -> crate::client::Upstream {
        use tower::ServiceExt;
        let health = HealthServer::new(HealthService::from_health_reporter(self.health.clone()));
        let routes = self.routes.clone().routes().add_service(health);
        let stack = ObserveLayer::new(&self.names, &self.limits).layer(routes);
        crate::client::Upstream::new(ServiceExt::<http::Request<Body>>::map_err(
            stack,
            |never: Infallible| -> tonic::transport::Error { match never {} },
        ))
    }

    /// The same with the process's health settings and limits.
    pub fn configured(auth: Authenticator, settings: &Settings) -> Self {
        Self {
            health_settings: settings.health.clone(),
            limits: settings.limits.clone(),
            ..Self::new(auth)
        }
    }

    /// Makes readiness depend on `dependency` (see [`crate::health`]).
    pub fn depend_on(&mut self, dependency: Dependency) -> &mut Self {
        self.dependencies.push(dependency);
        self
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
        let auth = self.auth.clone();
        self.add_behind(service, auth)
    }

    /// As [`Mount::add`], for a service that also takes `ingest` tokens (it checks itself
    /// which of its RPCs they may call).
    pub fn add_admitting_ingest<S>(&mut self, service: S) -> &mut Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let auth = self.auth.admitting_ingest();
        self.add_behind(service, auth)
    }

    fn add_behind<S>(&mut self, service: S, auth: Authenticator) -> &mut Self
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
        self.routes.add_service(InterceptedService::new(service, auth));
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
    let Mount { routes, names, auth: _, health: reporter, dependencies, health_settings, limits } =
        mount;
    let health = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
    for name in names.iter().chain([&LIVENESS]) {
        reporter.set_service_status(*name, ServingStatus::Serving).await;
    }
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    let observe = ObserveLayer::new(&names, &limits);
    // Calls still open just before the grace period ends are answered UNAVAILABLE (retry
    // elsewhere) while the connection can still carry the answer, rather than dropped with it.
    let abandon = observe.abandon.clone();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace.saturating_sub(ANSWER_MARGIN)).await;
            abandon.cancel();
        }
    });
    let readiness = tokio::spawn(crate::health::watch(
        reporter.clone(),
        names.clone(),
        dependencies,
        health_settings,
        shutdown.clone(),
    ));
    let reflection_v1 = reflection().build_v1().context("build reflection v1")?;
    let reflection_v1alpha = reflection().build_v1alpha().context("build reflection v1alpha")?;

    let signal = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            readiness.abort();
            reporter.set_service_status("", ServingStatus::NotServing).await;
            for name in names.into_iter().chain([LIVENESS]) {
                reporter.set_service_status(name, ServingStatus::NotServing).await;
            }
        }
    };
    let addr = listener.local_addr().ok();
    let server = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(observe)
        .add_routes(routes.routes())
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        // TCP_NODELAY on every accepted connection: without it a response that ends in a small
        // write waits for the peer's delayed ACK (~40 ms on Linux) — every unary call did.
        .serve_with_incoming_shutdown(incoming(listener), signal);
    tracing::debug!(?addr, "gRPC server started");
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
    axum::serve(nodelay(listener), app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("metrics server failed")
}

/// Wraps every RPC in a span, records its metrics, and holds the limits of the module doc.
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    /// `/pkg.Service/Method` of every RPC this server serves.
    known: Arc<HashSet<String>>,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    /// Cancelled just before shutdown's grace period ends: open calls are then answered.
    abandon: CancellationToken,
}

/// How long before the end of the shutdown grace period open calls are answered UNAVAILABLE.
const ANSWER_MARGIN: Duration = Duration::from_millis(300);

impl ObserveLayer {
    /// For a server mounting `services` (health and reflection are added), with `limits`.
    pub fn new(services: &[&'static str], limits: &LimitSettings) -> Self {
        Self {
            known: Arc::new(known_methods(services)),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            timeout: Duration::from_secs(limits.request_timeout_secs.max(1)),
            abandon: CancellationToken::new(),
        }
    }
}

/// The paths of every RPC of `services` and of health and reflection, from the descriptor
/// sets the server registers for reflection.
fn known_methods(services: &[&'static str]) -> HashSet<String> {
    use prost::Message;
    let mut wanted: HashSet<&str> = services.iter().copied().collect();
    wanted.extend([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]);
    let mut known = HashSet::new();
    for set in [
        ewpm_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
        for file in set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                if wanted.contains(name.as_str()) {
                    known.extend(service.method.iter().map(|m| format!("/{name}/{}", m.name())));
                }
            }
        }
    }
    known
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner, layer: self.clone() }
    }
}

/// See [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    layer: ObserveLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for Observe<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
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
        let path = request.uri().path();
        let (service, method) = if self.layer.known.contains(path) {
            split_path(path)
        } else {
            ("unmatched".to_string(), "unmatched".to_string())
        };
        let trace_id = trace_id(request.headers());
        let span =
            tracing::info_span!("rpc", rpc.service = %service, rpc.method = %method, %trace_id);
        metrics::counter!("grpc_server_started_total", "grpc_service" => service.clone(), "grpc_method" => method.clone())
            .increment(1);
        let started = Instant::now();
        let permit = self.layer.in_flight.clone().try_acquire_owned().ok();
        let future = permit.is_some().then(|| span.in_scope(|| self.inner.call(request)));
        let timeout = self.layer.timeout;
        let abandon = self.layer.abandon.clone();
        Box::pin(
            async move {
                let result = match future {
                    None => Ok(crate::error::retry_after(
                        tonic::Code::ResourceExhausted,
                        "SERVER_BUSY",
                        "the server is at its limit of concurrent calls; retry shortly",
                        Duration::from_millis(100),
                    )
                    .into_http()),
                    Some(future) => tokio::select! {
                        result = tokio::time::timeout(timeout, future) => match result {
                            Ok(result) => result.map(invalid_body_is_invalid_argument),
                            Err(_) => Ok(crate::error::status(
                                tonic::Code::DeadlineExceeded,
                                "REQUEST_TIMEOUT",
                                format!("the call took longer than {} s", timeout.as_secs()),
                            )
                            .into_http()),
                        },
                        () = abandon.cancelled() => Ok(crate::error::retry_after(
                            tonic::Code::Unavailable,
                            "SHUTTING_DOWN",
                            "the server is shutting down; retry",
                            Duration::from_millis(100),
                        )
                        .into_http()),
                    },
                };
                drop(permit);
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

/// tonic answers a request body it cannot decode as the RPC's message with INTERNAL ("failed
/// to decode Protobuf message"); it is the caller's garbage, so INVALID_ARGUMENT.
fn invalid_body_is_invalid_argument(mut response: http::Response<Body>) -> http::Response<Body> {
    let headers = response.headers();
    let internal = headers.get("grpc-status").is_some_and(|v| v.as_bytes() == b"13");
    let decode = headers.get("grpc-message").is_some_and(|v| {
        let m = v.as_bytes();
        m.starts_with(b"failed to decode Protobuf message")
            || m.starts_with(b"failed%20to%20decode%20Protobuf%20message")
    });
    if internal && decode {
        response.headers_mut().insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    response
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

/// A gRPC server's connections from `listener`, each with TCP_NODELAY.
fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// An HTTP server's connections from `listener`, each with TCP_NODELAY (as gRPC's: a small
/// response must not wait for the client's delayed ACK).
pub fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "set TCP_NODELAY on an accepted connection");
        }
    })
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

    #[tokio::test]
    async fn accepted_connections_have_tcp_nodelay() {
        use axum::serve::Listener as _;
        use futures::StreamExt as _;
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = grpc.local_addr().unwrap();
        let mut connections = incoming(grpc);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = connections.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = http.local_addr().unwrap();
        let mut http = nodelay(http);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = http.accept().await;
        assert!(accepted.nodelay().unwrap());
    }
}
