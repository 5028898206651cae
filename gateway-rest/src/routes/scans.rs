//! REST routes of the scan service. The feed keeps the Scan Event API's own path and shape
//! (`/v1/scans/scanevents`, PascalCase); parcel routes are camelCase like the rest of `/api`.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use ewpm_proto::scan::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::{
    AppState,
    problem::{ApiError, ApiResult, Problem},
    rfc3339 as time, upstream,
};

/// A page of the feed, in the Scan Event API's shape.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ScanEventPage {
    /// Events in event id order; empty when the reader has caught up.
    pub scan_events: Vec<ScanEventDto>,
}

/// One scan event, in the Scan Event API's shape.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ScanEventDto {
    /// Feed position.
    pub event_id: i64,
    /// Parcel.
    pub parcel_id: i64,
    /// `PICKUP`, `DELIVERY`, `STATUS`, …
    #[serde(rename = "Type")]
    pub kind: String,
    /// Scan time, RFC 3339 UTC.
    pub created_date_time_utc: String,
    /// Status code.
    pub status_code: String,
    /// Device.
    pub device: DeviceDto,
    /// Courier.
    pub user: UserDto,
}

/// A scanning device.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceDto {
    /// The device's own id of the scan.
    pub device_transaction_id: i64,
    /// Device id.
    pub device_id: i64,
}

/// The courier.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct UserDto {
    /// User id.
    pub user_id: String,
    /// Carrier code.
    pub carrier_id: String,
    /// Run id.
    pub run_id: String,
}

/// Body of `POST /v1/scans/scanevents`: the feed shape without `EventId`. Keys may be
/// PascalCase or camelCase; ids may be numbers or numeric strings.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct UploadBody {
    /// The scans (1 to 5000).
    #[serde(alias = "scanEvents", rename = "ScanEvents")]
    #[schema(value_type = Vec<Object>)]
    pub scan_events: Vec<Value>,
}

/// Answer of an upload.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct UploadAnswer {
    /// The event id of each scan, in order (a retried scan gets its first id).
    pub event_ids: Vec<i64>,
}

/// Query of the feed.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// First event id (inclusive).
    #[serde(rename = "FromEventId", alias = "fromEventId", alias = "from_event_id", default)]
    #[param(rename = "FromEventId")]
    pub from_event_id: Option<String>,
    /// Page size (default 100, max 5000).
    #[serde(rename = "Limit", alias = "limit", default)]
    #[param(rename = "Limit")]
    pub limit: Option<String>,
}

/// A parcel's latest state.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParcelDto {
    /// Parcel id.
    pub parcel_id: i64,
    /// Latest applied event.
    pub last_event_id: i64,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its status code.
    pub status_code: String,
    /// Its run id.
    pub run_id: String,
    /// Its scan time.
    pub created_date_time_utc: String,
    /// First PICKUP time, or null.
    pub pickup_time_utc: Option<String>,
    /// First DELIVERY time, or null.
    pub delivery_time_utc: Option<String>,
    /// Events applied to the parcel.
    pub event_count: i64,
}

/// A page of parcels.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParcelPage {
    /// Parcels by id.
    pub parcels: Vec<ParcelDto>,
    /// Token of the next page; empty on the last.
    pub next_page_token: String,
}

/// Query of the parcel list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ParcelQuery {
    /// Only parcels whose latest event has this type.
    pub status: Option<String>,
    /// Page size (default 20, max 100).
    #[serde(alias = "pageSize")]
    pub page_size: Option<String>,
    /// Token of the next page.
    #[serde(alias = "pageToken")]
    pub page_token: Option<String>,
}

/// The projector's position.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectorStatusDto {
    /// `own` or the external feed URL.
    pub source: String,
    /// Last applied event id.
    pub checkpoint: i64,
    /// Newest known source event id.
    pub source_head: i64,
    /// `sourceHead - checkpoint`.
    pub lag: i64,
    /// Last success, RFC 3339, or null.
    pub last_success_time: Option<String>,
    /// Whether the answering process leads.
    pub leader: bool,
    /// `standby`, `not_polled`, `failing`, `catching_up` or `caught_up`: a lag of 0 means
    /// caught up only in `caught_up`.
    pub state: String,
    /// When `sourceHead` was last learned from the source, RFC 3339, or null (never).
    pub source_head_time: Option<String>,
    /// Why the last step failed, while failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Since when steps fail, RFC 3339, while they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
}

/// The scan event feed.
#[utoipa::path(
    get, path = "/v1/scans/scanevents", tag = "scans",
    params(FeedQuery),
    responses((status = 200, description = "A page; empty when caught up", body = ScanEventPage)),
    security(("bearer" = []))
)]
pub async fn feed(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> ApiResult<Json<ScanEventPage>> {
    let from_event_id = number(q.from_event_id.as_deref(), "FromEventId")?.unwrap_or(1);
    let limit = number(q.limit.as_deref(), "Limit")?.unwrap_or(0);
    let limit = i32::try_from(limit).map_err(|_| Problem::bad_request("Limit", "is too large"))?;
    let mut client = state.scan.clone();
    let r = client
        .list_scan_events(upstream::request(
            &headers,
            pb::ListScanEventsRequest { from_event_id, limit },
        ))
        .await?
        .into_inner();
    Ok(Json(ScanEventPage { scan_events: r.events.into_iter().map(event_dto).collect() }))
}

/// Device upload of scans.
#[utoipa::path(
    post, path = "/v1/scans/scanevents", tag = "scans",
    request_body = UploadBody,
    responses(
        (status = 201, description = "Stored; the event ids in order", body = UploadAnswer),
        (status = 400, description = "Invalid scans", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn upload(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let body: UploadBody = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request("body", format!("is not a ScanEvents upload: {e}")))?;
    let events = body
        .scan_events
        .iter()
        .enumerate()
        .map(|(i, v)| {
            new_scan(v).map_err(|(field, why)| {
                ApiError::from(Problem::bad_request(&format!("ScanEvents[{i}].{field}"), why))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut client = state.scan.clone();
    let r = client
        .ingest_scan_events(upstream::request(&headers, pb::IngestScanEventsRequest { events }))
        .await
        .map_err(|s| ApiError::from_status(&s, ""))?;
    Ok((StatusCode::CREATED, Json(UploadAnswer { event_ids: r.into_inner().event_ids }))
        .into_response())
}

/// One parcel's latest state.
#[utoipa::path(
    get, path = "/api/parcels/{parcelId}", tag = "scans",
    params(("parcelId" = i64, Path, description = "Parcel id")),
    responses(
        (status = 200, description = "The parcel", body = ParcelDto),
        (status = 404, description = "Never scanned or not projected yet", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn parcel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(parcel_id): Path<String>,
) -> ApiResult<Json<ParcelDto>> {
    let parcel_id = parcel_id
        .trim()
        .parse::<i64>()
        .map_err(|_| Problem::bad_request("parcelId", "must be a whole number"))?;
    let mut client = state.scan.clone();
    let r =
        client.get_parcel(upstream::request(&headers, pb::GetParcelRequest { parcel_id })).await?;
    Ok(Json(parcel_dto(r.into_inner().parcel.unwrap_or_default())))
}

/// Parcel states.
#[utoipa::path(
    get, path = "/api/parcels", tag = "scans",
    params(ParcelQuery),
    responses((status = 200, description = "One page", body = ParcelPage)),
    security(("bearer" = []))
)]
pub async fn parcels(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ParcelQuery>,
) -> ApiResult<Json<ParcelPage>> {
    let page_size = number(q.page_size.as_deref(), "page_size")?.unwrap_or(0);
    let request = pb::ListParcelsRequest {
        status: q.status.unwrap_or_default(),
        page_size: i32::try_from(page_size)
            .map_err(|_| Problem::bad_request("page_size", "is too large"))?,
        page_token: q.page_token.unwrap_or_default(),
    };
    let mut client = state.scan.clone();
    let r = client.list_parcels(upstream::request(&headers, request)).await?.into_inner();
    Ok(Json(ParcelPage {
        parcels: r.parcels.into_iter().map(parcel_dto).collect(),
        next_page_token: r.next_page_token,
    }))
}

/// Where the projector stands.
#[utoipa::path(
    get, path = "/api/scans/projector", tag = "scans",
    responses((status = 200, description = "Projector status", body = ProjectorStatusDto)),
    security(("bearer" = []))
)]
pub async fn projector(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<ProjectorStatusDto>> {
    let mut client = state.scan.clone();
    let s = client
        .get_projector_status(upstream::request(&headers, pb::GetProjectorStatusRequest {}))
        .await?
        .into_inner();
    Ok(Json(ProjectorStatusDto {
        source: s.source,
        checkpoint: s.checkpoint,
        source_head: s.source_head,
        lag: s.lag,
        last_success_time: s.last_success_time.map(|t| time(Some(t))),
        leader: s.leader,
        state: pb::ProjectorState::try_from(s.state)
            .unwrap_or(pb::ProjectorState::Unspecified)
            .as_str_name()
            .trim_start_matches("PROJECTOR_STATE_")
            .to_ascii_lowercase(),
        source_head_time: s.source_head_time.map(|t| time(Some(t))),
        last_error: Some(s.last_error).filter(|e| !e.is_empty()),
        failing_since: s.failing_since.map(|t| time(Some(t))),
    }))
}

fn number(raw: Option<&str>, field: &str) -> Result<Option<i64>, ApiError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => raw
            .parse::<i64>()
            .map(Some)
            .map_err(|_| Problem::bad_request(field, "must be a whole number").into()),
    }
}

/// A key of a JSON object, case-insensitively.
fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

fn int(v: Option<&Value>, field: &str) -> Result<i64, (String, String)> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => {
            n.as_i64().ok_or_else(|| (field.to_string(), "must be a whole number".to_string()))
        }
        Some(Value::String(s)) => {
            s.trim().parse().map_err(|_| (field.to_string(), "must be a whole number".to_string()))
        }
        Some(_) => Err((field.to_string(), "must be a whole number".to_string())),
    }
}

fn text(v: Option<&Value>, field: &str) -> Result<String, (String, String)> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err((field.to_string(), "must be text".to_string())),
    }
}

fn new_scan(v: &Value) -> Result<pb::NewScanEvent, (String, String)> {
    if !v.is_object() {
        return Err(("".into(), "must be an object".into()));
    }
    let device = get(v, "Device").cloned().unwrap_or(Value::Null);
    let user = get(v, "User").cloned().unwrap_or(Value::Null);
    let created = text(get(v, "CreatedDateTimeUtc"), "CreatedDateTimeUtc")?;
    let create_time = match created.trim() {
        "" => None,
        raw => Some(
            ewpm_kit::timestamp::parse_lenient(raw).map(ewpm_kit::timestamp::to_proto).ok_or_else(
                || {
                    (
                        "CreatedDateTimeUtc".to_string(),
                        "must be a timestamp such as 2023-01-01T03:52:48Z".to_string(),
                    )
                },
            )?,
        ),
    };
    Ok(pb::NewScanEvent {
        parcel_id: int(get(v, "ParcelId"), "ParcelId")?,
        r#type: text(get(v, "Type"), "Type")?,
        create_time,
        status_code: text(get(v, "StatusCode"), "StatusCode")?,
        device: Some(pb::Device {
            device_id: int(get(&device, "DeviceId"), "Device.DeviceId")?,
            device_transaction_id: int(
                get(&device, "DeviceTransactionId"),
                "Device.DeviceTransactionId",
            )?,
        }),
        user: Some(pb::ScanUser {
            user_id: text(get(&user, "UserId"), "User.UserId")?,
            carrier_id: text(get(&user, "CarrierId"), "User.CarrierId")?,
            run_id: text(get(&user, "RunId"), "User.RunId")?,
        }),
    })
}

fn event_dto(e: pb::ScanEvent) -> ScanEventDto {
    let pb::ScanEvent { event_id, parcel_id, r#type, create_time, status_code, device, user } = e;
    let pb::Device { device_id, device_transaction_id } = device.unwrap_or_default();
    let pb::ScanUser { user_id, carrier_id, run_id } = user.unwrap_or_default();
    ScanEventDto {
        event_id,
        parcel_id,
        kind: r#type,
        created_date_time_utc: time(create_time),
        status_code,
        device: DeviceDto { device_transaction_id, device_id },
        user: UserDto { user_id, carrier_id, run_id },
    }
}

fn parcel_dto(p: pb::Parcel) -> ParcelDto {
    let pb::Parcel {
        parcel_id,
        last_event_id,
        r#type,
        status_code,
        run_id,
        create_time,
        pickup_time,
        delivery_time,
        event_count,
    } = p;
    ParcelDto {
        parcel_id,
        last_event_id,
        kind: r#type,
        status_code,
        run_id,
        created_date_time_utc: time(create_time),
        pickup_time_utc: pickup_time.map(|t| time(Some(t))),
        delivery_time_utc: delivery_time.map(|t| time(Some(t))),
        event_count,
    }
}
