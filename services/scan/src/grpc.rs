//! `ewpm.scan.v1.ScanService`: converts requests to domain values, calls the store, the
//! ingest writer or the projector status, converts back. Proto types stop here.

use ewpm_kit::{
    auth::Caller,
    error::{FieldViolation, Violations},
    paging, timestamp,
};
use ewpm_proto::scan::v1::{self as pb, scan_service_server::ScanService};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::{
    domain::{RawScan, Scan, ScanEvent},
    error::ScanError,
    ingest::Ingestor,
    projector,
    store::{ParcelState, ScanStore},
};

/// Largest IngestScanEvents batch.
pub const MAX_INGEST_BATCH: usize = 5_000;
/// Largest ListScanEvents page.
pub const MAX_FEED_PAGE: i32 = 5_000;
/// ListScanEvents page when `limit` is 0.
pub const DEFAULT_FEED_PAGE: i32 = 100;

/// The gRPC face of the scan service.
#[derive(Clone)]
pub struct ScanGrpc {
    store: ScanStore,
    ingestor: Ingestor,
    status: projector::Status,
}

impl ScanGrpc {
    /// Serves `store`, ingesting through `ingestor`, reporting the projector's `status`.
    pub fn new(store: ScanStore, ingestor: Ingestor, status: projector::Status) -> Self {
        Self { store, ingestor, status }
    }
}

#[derive(Serialize, Deserialize)]
struct ParcelCursor {
    after: i64,
}

#[tonic::async_trait]
impl ScanService for ScanGrpc {
    async fn ingest_scan_events(
        &self,
        request: Request<pb::IngestScanEventsRequest>,
    ) -> Result<Response<pb::IngestScanEventsResponse>, Status> {
        Caller::of(&request)?;
        let pb::IngestScanEventsRequest { events } = request.into_inner();
        let scans = parse_batch(events)?;
        let event_ids = self.ingestor.ingest(scans).await.map_err(ScanError::from)?;
        Ok(Response::new(pb::IngestScanEventsResponse { event_ids }))
    }

    async fn list_scan_events(
        &self,
        request: Request<pb::ListScanEventsRequest>,
    ) -> Result<Response<pb::ListScanEventsResponse>, Status> {
        Caller::of(&request)?;
        let pb::ListScanEventsRequest { from_event_id, limit } = request.into_inner();
        let limit = match limit {
            0 => DEFAULT_FEED_PAGE,
            n if n < 0 => {
                return Err(
                    ScanError::from(FieldViolation::new("limit", "must not be negative")).into()
                );
            }
            n => n.min(MAX_FEED_PAGE),
        };
        let events = self
            .store
            .events_from(from_event_id.max(1), limit as u32)
            .await
            .map_err(ScanError::from)?;
        Ok(Response::new(pb::ListScanEventsResponse {
            events: events.into_iter().map(event_to_proto).collect(),
        }))
    }

    async fn get_parcel(
        &self,
        request: Request<pb::GetParcelRequest>,
    ) -> Result<Response<pb::GetParcelResponse>, Status> {
        Caller::of(&request)?;
        let pb::GetParcelRequest { parcel_id } = request.into_inner();
        if parcel_id <= 0 {
            return Err(ScanError::from(FieldViolation::new(
                "parcel_id",
                "must be greater than 0",
            ))
            .into());
        }
        let parcel = self.store.parcel(parcel_id).await.map_err(ScanError::from)?;
        let parcel = parcel.ok_or(ScanError::ParcelNotFound { id: parcel_id })?;
        Ok(Response::new(pb::GetParcelResponse { parcel: Some(parcel_to_proto(&parcel)) }))
    }

    async fn list_parcels(
        &self,
        request: Request<pb::ListParcelsRequest>,
    ) -> Result<Response<pb::ListParcelsResponse>, Status> {
        Caller::of(&request)?;
        let pb::ListParcelsRequest { status, page_size, page_token } = request.into_inner();
        let mut v = Violations::new();
        let page_size = v.check(paging::page_size(page_size));
        let cursor = v.check(paging::decode_token::<ParcelCursor>(&page_token));
        let kind = status.trim().to_ascii_uppercase();
        if kind.chars().count() > crate::domain::MAX_TYPE || kind.chars().any(char::is_control) {
            v.push(FieldViolation::new("status", "must be at most 32 printable characters"));
        }
        v.finish().map_err(ScanError::from)?;
        let (Some(page_size), Some(cursor)) = (page_size, cursor) else {
            unreachable!("violations were reported above");
        };
        let after = cursor.map_or(0, |c| c.after);
        let kind = (!kind.is_empty()).then_some(kind);
        let mut parcels = self
            .store
            .parcels(kind.as_deref(), after, page_size + 1)
            .await
            .map_err(ScanError::from)?;
        let next_page_token = if parcels.len() > page_size as usize {
            parcels.truncate(page_size as usize);
            parcels
                .last()
                .map(|p| paging::encode_token(&ParcelCursor { after: p.parcel_id }))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListParcelsResponse {
            parcels: parcels.iter().map(parcel_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_projector_status(
        &self,
        request: Request<pb::GetProjectorStatusRequest>,
    ) -> Result<Response<pb::GetProjectorStatusResponse>, Status> {
        Caller::of(&request)?;
        let s = self.status.get();
        use crate::projector::ProjectorState as S;
        let state = match s.state() {
            S::Standby => pb::ProjectorState::Standby,
            S::NotPolled => pb::ProjectorState::NotPolled,
            S::Failing => pb::ProjectorState::Failing,
            S::CatchingUp => pb::ProjectorState::CatchingUp,
            S::CaughtUp => pb::ProjectorState::CaughtUp,
        };
        let (failing_since, last_error) = s.failing.clone().unzip();
        Ok(Response::new(pb::GetProjectorStatusResponse {
            source: s.source,
            checkpoint: s.checkpoint,
            source_head: s.head,
            lag: (s.head - s.checkpoint).max(0),
            last_success_time: s.last_success.map(timestamp::to_proto),
            leader: s.leader,
            state: state as i32,
            source_head_time: s.head_seen.map(timestamp::to_proto),
            last_error: last_error.unwrap_or_default(),
            failing_since: failing_since.map(timestamp::to_proto),
        }))
    }
}

fn parse_batch(events: Vec<pb::NewScanEvent>) -> Result<Vec<Scan>, ScanError> {
    if events.is_empty() || events.len() > MAX_INGEST_BATCH {
        return Err(FieldViolation::new(
            "events",
            format!("must hold 1 to {MAX_INGEST_BATCH} scans"),
        )
        .into());
    }
    let mut scans = Vec::with_capacity(events.len());
    let mut violations = Vec::new();
    for (i, e) in events.into_iter().enumerate() {
        let pb::NewScanEvent { parcel_id, r#type, create_time, status_code, device, user } = e;
        let pb::Device { device_id, device_transaction_id } = device.unwrap_or_default();
        let pb::ScanUser { user_id, carrier_id, run_id } = user.unwrap_or_default();
        let raw = RawScan {
            parcel_id,
            kind: &r#type,
            created_at: create_time.as_ref().and_then(timestamp::from_proto),
            status_code: &status_code,
            device_id,
            device_transaction_id,
            user_id: &user_id,
            carrier_id: &carrier_id,
            run_id: &run_id,
        };
        match Scan::parse(raw) {
            Ok(scan) => scans.push(scan),
            Err(errs) => {
                violations.extend(errs.into_iter().map(|v| v.under(&format!("events[{i}]"))))
            }
        }
        // One bad scan is enough to fix the batch; don't flood the caller.
        if violations.len() >= 100 {
            break;
        }
    }
    if violations.is_empty() { Ok(scans) } else { Err(ScanError::Invalid(violations)) }
}

/// A stored event as the wire shows it.
pub fn event_to_proto(e: ScanEvent) -> pb::ScanEvent {
    let ScanEvent { event_id, scan } = e;
    let Scan {
        parcel_id,
        kind,
        created_at,
        status_code,
        device_id,
        device_transaction_id,
        user_id,
        carrier_id,
        run_id,
    } = scan;
    pb::ScanEvent {
        event_id,
        parcel_id,
        r#type: kind,
        create_time: Some(timestamp::to_proto(created_at)),
        status_code,
        device: Some(pb::Device { device_id, device_transaction_id }),
        user: Some(pb::ScanUser { user_id, carrier_id, run_id }),
    }
}

fn parcel_to_proto(p: &ParcelState) -> pb::Parcel {
    pb::Parcel {
        parcel_id: p.parcel_id,
        last_event_id: p.last_event_id,
        r#type: p.kind.clone(),
        status_code: p.status_code.clone(),
        run_id: p.run_id.clone(),
        create_time: Some(timestamp::to_proto(p.created_at)),
        pickup_time: p.pickup_at.map(timestamp::to_proto),
        delivery_time: p.delivery_at.map(timestamp::to_proto),
        event_count: p.event_count,
    }
}
