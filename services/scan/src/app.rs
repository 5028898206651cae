//! Builds the scan service and its projector from settings.

use std::time::Duration;

use ewpm_kit::{
    CancellationToken, clock::SharedClock, retry::sleep_or_shutdown, settings::GrpcSettings,
};
use ewpm_proto::scan::v1::scan_service_server::ScanServiceServer;
use sea_orm::DatabaseConnection;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    grpc::ScanGrpc,
    ingest::Ingestor,
    projector::{self, HttpFeed, Lease, Projector, ProjectorConfig, Source},
    settings::ProjectorSettings,
    store::ScanStore,
};

/// Health name of the projector (`grpc.health.v1` service field).
pub const PROJECTOR_HEALTH: &str = "ewpm.scan.v1.Projector";

/// The tonic service over `db` (migrated); `status` is the projector's, if one runs here.
pub fn build(
    db: DatabaseConnection,
    clock: SharedClock,
    grpc: &GrpcSettings,
    status: projector::Status,
) -> ScanServiceServer<ScanGrpc> {
    let store = ScanStore::new(db);
    let ingestor = Ingestor::spawn(store.clone(), clock.clone());
    ScanServiceServer::new(ScanGrpc::new(store, ingestor, status))
        .max_decoding_message_size(grpc.max_message_bytes)
}

/// The projector configured by `settings`, reading `database_url` for its lease.
pub fn projector(
    db: DatabaseConnection,
    database_url: &str,
    clock: SharedClock,
    settings: &ProjectorSettings,
    status: projector::Status,
) -> anyhow::Result<Projector> {
    let store = ScanStore::new(db.clone());
    let source = match settings.source.as_str() {
        "own" => Source::Own(store.clone()),
        url if url.starts_with("http://") || url.starts_with("https://") => {
            Source::Http(HttpFeed::new(url, settings.source_token.clone())?)
        }
        other => anyhow::bail!(
            "EWPM_SCAN__PROJECTOR__SOURCE must be `own` or an http(s) URL of a Scan Event API, not {other:?}"
        ),
    };
    let lease = Lease::for_source(&db, database_url, &source.name());
    let config = ProjectorConfig {
        page_size: settings.page_size.clamp(1, 10_000),
        poll_interval: Duration::from_millis(settings.poll_interval_ms),
        ..ProjectorConfig::default()
    };
    Ok(Projector::new(store, source, lease, config, status, clock))
}

/// Keeps the projector's health current: SERVING unless this process leads and has not
/// succeeded for `stale_after`.
pub async fn report_health(
    health: HealthReporter,
    status: projector::Status,
    clock: SharedClock,
    stale_after: Duration,
    shutdown: CancellationToken,
) {
    let stale = chrono::TimeDelta::from_std(stale_after).unwrap_or(chrono::TimeDelta::MAX);
    let started = clock.now();
    loop {
        let s = status.get();
        let since = s.last_success.max(s.leader_since).unwrap_or(started);
        let healthy = !s.leader || clock.now() - since <= stale;
        let serving = if healthy { ServingStatus::Serving } else { ServingStatus::NotServing };
        health.set_service_status(PROJECTOR_HEALTH, serving).await;
        if sleep_or_shutdown(Duration::from_secs(1), &shutdown).await {
            health.set_service_status(PROJECTOR_HEALTH, ServingStatus::NotServing).await;
            return;
        }
    }
}
