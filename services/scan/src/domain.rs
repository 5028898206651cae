//! Scan domain types: a parsed scan, and the fold of scans into a parcel's state. No I/O.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ewpm_kit::error::FieldViolation;

/// Longest scan type, status code, user id, carrier id and run id (what the tables hold).
pub const MAX_TYPE: usize = 32;
/// Longest status code.
pub const MAX_STATUS_CODE: usize = 64;
/// Longest user id.
pub const MAX_USER_ID: usize = 64;
/// Longest carrier id.
pub const MAX_CARRIER_ID: usize = 32;
/// Longest run id.
pub const MAX_RUN_ID: usize = 64;

/// The scan type that sets a parcel's pickup time.
pub const PICKUP: &str = "PICKUP";
/// The scan type that sets a parcel's delivery time.
pub const DELIVERY: &str = "DELIVERY";

/// A scan as a device reports it, validated, without a feed position yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The parcel.
    pub parcel_id: i64,
    /// Upper-case scan type (`PICKUP`, `DELIVERY`, `STATUS`, or any other).
    pub kind: String,
    /// When the device scanned.
    pub created_at: DateTime<Utc>,
    /// Free status code.
    pub status_code: String,
    /// Scanning device.
    pub device_id: i64,
    /// The device's id of this scan (0 = unknown).
    pub device_transaction_id: i64,
    /// Courier.
    pub user_id: String,
    /// Carrier code.
    pub carrier_id: String,
    /// Delivery run.
    pub run_id: String,
}

/// A scan with its feed position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEvent {
    /// Feed position.
    pub event_id: i64,
    /// The scan.
    pub scan: Scan,
}

/// The raw fields of a scan, before validation.
#[derive(Debug, Clone, Default)]
pub struct RawScan<'a> {
    /// Parcel id.
    pub parcel_id: i64,
    /// Type.
    pub kind: &'a str,
    /// Scan time, if given and valid.
    pub created_at: Option<DateTime<Utc>>,
    /// Status code.
    pub status_code: &'a str,
    /// Device id.
    pub device_id: i64,
    /// Device transaction id.
    pub device_transaction_id: i64,
    /// User id.
    pub user_id: &'a str,
    /// Carrier id.
    pub carrier_id: &'a str,
    /// Run id.
    pub run_id: &'a str,
}

fn text(v: &mut Vec<FieldViolation>, field: &str, raw: &str, max: usize, required: bool) -> String {
    let s = raw.trim();
    if required && s.is_empty() {
        v.push(FieldViolation::new(field, "must not be empty"));
    } else if s.chars().count() > max {
        v.push(FieldViolation::new(field, format!("must be at most {max} characters")));
    } else if s.chars().any(char::is_control) {
        v.push(FieldViolation::new(field, "must not contain control characters"));
    }
    s.to_string()
}

impl Scan {
    /// Validates raw fields; violations name the fields (proto names).
    pub fn parse(raw: RawScan<'_>) -> Result<Self, Vec<FieldViolation>> {
        let mut v = Vec::new();
        if raw.parcel_id <= 0 {
            v.push(FieldViolation::new("parcel_id", "must be greater than 0"));
        }
        let kind = text(&mut v, "type", raw.kind, MAX_TYPE, true).to_ascii_uppercase();
        let created_at = match raw.created_at {
            None => {
                v.push(FieldViolation::new("create_time", "is required and must be a valid time"));
                None
            }
            Some(t) if !(0..=253_402_300_799).contains(&t.timestamp()) => {
                v.push(FieldViolation::new("create_time", "must be between 1970 and 9999"));
                None
            }
            Some(t) => Some(t),
        };
        let status_code = text(&mut v, "status_code", raw.status_code, MAX_STATUS_CODE, false);
        if raw.device_id < 0 {
            v.push(FieldViolation::new("device.device_id", "must not be negative"));
        }
        if raw.device_transaction_id < 0 {
            v.push(FieldViolation::new("device.device_transaction_id", "must not be negative"));
        }
        let user_id = text(&mut v, "user.user_id", raw.user_id, MAX_USER_ID, false);
        let carrier_id = text(&mut v, "user.carrier_id", raw.carrier_id, MAX_CARRIER_ID, false);
        let run_id = text(&mut v, "user.run_id", raw.run_id, MAX_RUN_ID, false);
        match created_at {
            Some(created_at) if v.is_empty() => Ok(Self {
                parcel_id: raw.parcel_id,
                kind,
                created_at,
                status_code,
                device_id: raw.device_id,
                device_transaction_id: raw.device_transaction_id,
                user_id,
                carrier_id,
                run_id,
            }),
            _ => Err(v),
        }
    }
}

/// What a page of events does to one parcel, given the parcel's last applied event id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParcelDelta {
    /// The parcel.
    pub parcel_id: i64,
    /// Its newest event in the page.
    pub last_event_id: i64,
    /// That event's type.
    pub kind: String,
    /// That event's status code.
    pub status_code: String,
    /// That event's run id.
    pub run_id: String,
    /// That event's scan time.
    pub created_at: DateTime<Utc>,
    /// Scan time of the page's first PICKUP (applies only if the parcel has none yet).
    pub pickup_at: Option<DateTime<Utc>>,
    /// Scan time of the page's first DELIVERY (applies only if the parcel has none yet).
    pub delivery_at: Option<DateTime<Utc>>,
    /// How many of the page's events apply to the parcel.
    pub event_count: i64,
}

/// Folds `events` (in event id order) into one delta per parcel. An event whose id is not
/// newer than the parcel's last applied event (`last_applied`) changes nothing.
pub fn fold(events: &[ScanEvent], last_applied: &HashMap<i64, i64>) -> Vec<ParcelDelta> {
    let mut deltas: HashMap<i64, ParcelDelta> = HashMap::new();
    let mut order = Vec::new();
    for e in events {
        let s = &e.scan;
        let floor = last_applied.get(&s.parcel_id).copied().unwrap_or(0);
        let current = deltas.get(&s.parcel_id).map_or(floor, |d| d.last_event_id.max(floor));
        if e.event_id <= current {
            continue;
        }
        let d = deltas.entry(s.parcel_id).or_insert_with(|| {
            order.push(s.parcel_id);
            ParcelDelta {
                parcel_id: s.parcel_id,
                last_event_id: 0,
                kind: String::new(),
                status_code: String::new(),
                run_id: String::new(),
                created_at: s.created_at,
                pickup_at: None,
                delivery_at: None,
                event_count: 0,
            }
        });
        d.last_event_id = e.event_id;
        d.kind.clone_from(&s.kind);
        d.status_code.clone_from(&s.status_code);
        d.run_id.clone_from(&s.run_id);
        d.created_at = s.created_at;
        d.event_count += 1;
        if s.kind == PICKUP && d.pickup_at.is_none() {
            d.pickup_at = Some(s.created_at);
        }
        if s.kind == DELIVERY && d.delivery_at.is_none() {
            d.delivery_at = Some(s.created_at);
        }
    }
    order.into_iter().filter_map(|id| deltas.remove(&id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ev(id: i64, parcel: i64, kind: &str, hour: u32) -> ScanEvent {
        ScanEvent {
            event_id: id,
            scan: Scan {
                parcel_id: parcel,
                kind: kind.into(),
                created_at: Utc.with_ymd_and_hms(2023, 1, 1, hour, 0, 0).unwrap(),
                status_code: String::new(),
                device_id: 1,
                device_transaction_id: id,
                user_id: "NC1001".into(),
                carrier_id: "NC".into(),
                run_id: format!("run-{id}"),
            },
        }
    }

    fn t(hour: u32) -> Option<DateTime<Utc>> {
        Some(Utc.with_ymd_and_hms(2023, 1, 1, hour, 0, 0).unwrap())
    }

    #[test]
    fn the_latest_event_wins_and_the_first_pickup_and_delivery_stick() {
        let events = [
            ev(1, 7, "PICKUP", 1),
            ev(2, 7, "STATUS", 2),
            ev(3, 7, "PICKUP", 3),
            ev(4, 7, "DELIVERY", 4),
            ev(5, 7, "DELIVERY", 5),
        ];
        let d = fold(&events, &HashMap::new());
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].last_event_id, d[0].kind.as_str(), d[0].run_id.as_str()),
            (5, "DELIVERY", "run-5")
        );
        assert_eq!((d[0].pickup_at, d[0].delivery_at, d[0].event_count), (t(1), t(4), 5));
    }

    #[test]
    fn events_not_newer_than_the_last_applied_change_nothing() {
        let events = [ev(3, 7, "PICKUP", 3), ev(4, 8, "STATUS", 4), ev(9, 7, "STATUS", 9)];
        let applied = HashMap::from([(7, 5), (8, 4)]);
        let d = fold(&events, &applied);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].parcel_id, d[0].last_event_id, d[0].pickup_at), (7, 9, None));
    }

    #[test]
    fn an_unknown_type_updates_the_state_and_sets_no_time() {
        let d = fold(&[ev(1, 7, "RETURNED", 1)], &HashMap::new());
        assert_eq!(
            (d[0].kind.as_str(), d[0].pickup_at, d[0].delivery_at),
            ("RETURNED", None, None)
        );
    }

    #[test]
    fn a_scan_needs_a_parcel_a_type_and_a_time() {
        let err =
            Scan::parse(RawScan { parcel_id: 0, kind: " ", ..Default::default() }).unwrap_err();
        let fields: Vec<_> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["parcel_id", "type", "create_time"]);
        let ok = Scan::parse(RawScan {
            parcel_id: 1,
            kind: "pickup",
            created_at: t(1),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.kind, "PICKUP");
    }
}
