//! Tolerant reading of a Scan Event API page (`{"ScanEvents":[...]}`), as real feeds send it:
//! PascalCase or camelCase keys, numbers as strings and strings as numbers, timestamps with or
//! without `Z`, with offsets such as `-13:00`, with a space before the offset or instead of
//! the `T`. A malformed event does not fail the page: it comes back as [`Item::Malformed`] with
//! the reason, for the dead-letter table.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::domain::{RawScan, Scan, ScanEvent};

/// One element of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A valid event.
    Event(ScanEvent),
    /// An event that could not be read.
    Malformed {
        /// Its event id, when that much was readable.
        event_id: Option<i64>,
        /// Why it was rejected.
        reason: String,
        /// The element as received.
        payload: String,
    },
}

impl Item {
    /// The event id, if known.
    pub fn event_id(&self) -> Option<i64> {
        match self {
            Item::Event(e) => Some(e.event_id),
            Item::Malformed { event_id, .. } => *event_id,
        }
    }
}

/// Parses a response body. Errors only when the body as a whole is unusable (not JSON, or no
/// event list): that is a source failure, retried, not a dead letter.
pub fn parse_page(body: &[u8]) -> Result<Vec<Item>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let list = match &value {
        Value::Array(items) => items,
        Value::Object(map) => match get(map, "scanevents") {
            Some(Value::Array(items)) => items,
            Some(Value::Null) | None => return Err("body has no ScanEvents list".into()),
            Some(_) => return Err("ScanEvents is not a list".into()),
        },
        _ => return Err("body is neither an object nor a list".into()),
    };
    Ok(list.iter().map(parse_item).collect())
}

/// A key looked up case-insensitively (so `EventId`, `eventId` and `eventid` all match).
fn get<'a>(map: &'a Map<String, Value>, lower: &str) -> Option<&'a Value> {
    map.iter().find(|(k, _)| k.eq_ignore_ascii_case(lower)).map(|(_, v)| v)
}

fn int(v: Option<&Value>) -> Result<Option<i64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64().map(Some).ok_or_else(|| format!("{n} is not a whole number"))
        }
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => {
            s.trim().parse::<i64>().map(Some).map_err(|_| format!("{s:?} is not a whole number"))
        }
        Some(other) => Err(format!("{other} is not a number")),
    }
}

fn string(v: Option<&Value>) -> Result<String, String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        Some(other) => Err(format!("{other} is not text")),
    }
}

/// Parses the timestamps real feeds send; `None` when it is not a time.
pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    ewpm_kit::timestamp::parse_lenient(raw)
}

fn parse_item(value: &Value) -> Item {
    let payload = value.to_string();
    let malformed =
        |event_id, reason: String| Item::Malformed { event_id, reason, payload: payload.clone() };
    let Value::Object(map) = value else {
        return malformed(None, "event is not an object".into());
    };
    let event_id = match int(get(map, "eventid")) {
        Ok(Some(id)) if id > 0 => id,
        Ok(Some(id)) => return malformed(None, format!("EventId {id} is not positive")),
        Ok(None) => return malformed(None, "EventId is missing".into()),
        Err(e) => return malformed(None, format!("EventId: {e}")),
    };
    match parse_scan(map) {
        Ok(scan) => Item::Event(ScanEvent { event_id, scan }),
        Err(reason) => malformed(Some(event_id), reason),
    }
}

fn parse_scan(map: &Map<String, Value>) -> Result<Scan, String> {
    let empty = Map::new();
    let object = |key: &str| match get(map, key) {
        Some(Value::Object(o)) => Ok(o),
        None | Some(Value::Null) => Ok(&empty),
        Some(_) => Err(format!("{key} is not an object")),
    };
    let device = object("device")?;
    let user = object("user")?;
    let field = |name: &str, r: Result<String, String>| r.map_err(|e| format!("{name}: {e}"));
    let num = |name: &str, r: Result<Option<i64>, String>| {
        r.map(Option::unwrap_or_default).map_err(|e| format!("{name}: {e}"))
    };
    let created_raw = field("CreatedDateTimeUtc", string(get(map, "createddatetimeutc")))?;
    let created_at = parse_time(&created_raw);
    if created_at.is_none() {
        return Err(format!("CreatedDateTimeUtc {created_raw:?} is not a time"));
    }
    let kind = field("Type", string(get(map, "type")))?;
    let status_code = field("StatusCode", string(get(map, "statuscode")))?;
    let user_id = field("User.UserId", string(get(user, "userid")))?;
    let carrier_id = field("User.CarrierId", string(get(user, "carrierid")))?;
    let run_id = field("User.RunId", string(get(user, "runid")))?;
    let raw = RawScan {
        parcel_id: num("ParcelId", int(get(map, "parcelid")))?,
        kind: &kind,
        created_at,
        status_code: &status_code,
        device_id: num("Device.DeviceId", int(get(device, "deviceid")))?,
        device_transaction_id: num(
            "Device.DeviceTransactionId",
            int(get(device, "devicetransactionid")),
        )?,
        user_id: &user_id,
        carrier_id: &carrier_id,
        run_id: &run_id,
    };
    Scan::parse(raw).map_err(|violations| {
        violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn real_feed_timestamps_are_read_as_utc() {
        let want = Utc.with_ymd_and_hms(2023, 1, 1, 16, 52, 48).unwrap();
        for raw in [
            "2023-01-01T03:52:48 -13:00",
            "2023-01-01T03:52:48-13:00",
            "2023-01-01 03:52:48 -13:00",
            "2023-01-01T16:52:48Z",
            "2023-01-01T16:52:48",
            "2023-01-01T16:52:48.000Z",
            "2023-01-01T17:52:48 +0100",
        ] {
            assert_eq!(parse_time(raw), Some(want), "{raw}");
        }
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2023-13-01T00:00:00Z"), None);
    }

    #[test]
    fn pascal_and_camel_case_numbers_and_strings_are_all_read() {
        let body = br#"{"ScanEvents":[
            {"EventId":1,"ParcelId":7141,"CreatedDateTimeUtc":"2023-01-01T03:52:48 -13:00","Type":"PICKUP","StatusCode":"",
             "Device":{"DeviceId":665,"DeviceTransactionId":73729},"User":{"UserId":"NC1001","CarrierId":"PC","RunId":57924}},
            {"eventId":"2","parcelId":"8891","createdDateTimeUtc":"2023-01-05T10:59:45Z","type":"delivery",
             "device":{"deviceId":1,"deviceTransactionId":2},"user":{"userId":"X","carrierId":"ZZ","runId":"R-9"}}
        ]}"#;
        let items = parse_page(body).unwrap();
        let Item::Event(first) = &items[0] else { panic!("{items:?}") };
        assert_eq!(
            (first.event_id, first.scan.parcel_id, first.scan.run_id.as_str()),
            (1, 7141, "57924")
        );
        let Item::Event(second) = &items[1] else { panic!("{items:?}") };
        assert_eq!(
            (second.event_id, second.scan.kind.as_str(), second.scan.carrier_id.as_str()),
            (2, "DELIVERY", "ZZ")
        );
    }

    #[test]
    fn a_malformed_event_is_kept_with_its_reason_and_the_rest_is_read() {
        let body = br#"{"ScanEvents":[
            {"EventId":5,"ParcelId":1,"CreatedDateTimeUtc":"not a time","Type":"PICKUP"},
            {"ParcelId":1},
            {"EventId":6,"ParcelId":1,"CreatedDateTimeUtc":"2023-01-01T00:00:00Z","Type":"STATUS"}
        ]}"#;
        let items = parse_page(body).unwrap();
        assert!(
            matches!(&items[0], Item::Malformed { event_id: Some(5), reason, .. } if reason.contains("CreatedDateTimeUtc"))
        );
        assert!(matches!(&items[1], Item::Malformed { event_id: None, .. }));
        assert!(matches!(&items[2], Item::Event(e) if e.event_id == 6));
    }

    #[test]
    fn an_empty_body_or_list_is_caught_up_and_garbage_is_a_source_error() {
        assert_eq!(parse_page(b"").unwrap(), vec![]);
        assert_eq!(parse_page(br#"{"ScanEvents":[]}"#).unwrap(), vec![]);
        assert!(parse_page(b"<html>").is_err());
        assert!(parse_page(br#"{"Events":[]}"#).is_err());
    }
}
