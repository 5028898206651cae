//! Conversions between `google.protobuf.Timestamp` and `chrono`.

use chrono::{DateTime, NaiveDateTime, Utc};
use prost_types::Timestamp;

/// A protobuf timestamp as a UTC time; `None` when it is out of range or its nanos are invalid.
pub fn from_proto(ts: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

/// A UTC time as a protobuf timestamp.
pub fn to_proto(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Parses the timestamps real feeds and devices send: RFC 3339, with or without `Z` (no
/// offset means UTC), with a space instead of the `T` or before the offset (`-13:00`,
/// `+0100`). `None` when it is not a time.
pub fn parse_lenient(raw: &str) -> Option<DateTime<Utc>> {
    let s = raw.trim();
    if s.len() < 19 || !s.is_ascii() {
        return None;
    }
    // "2023-01-01 03:52:48" → "2023-01-01T03:52:48"
    let mut s = s.to_string();
    if s.as_bytes()[10] == b' ' {
        s.replace_range(10..11, "T");
    }
    // "…48 -13:00" / "…48 Z" → "…48-13:00" / "…48Z": drop spaces before the offset.
    let (head, tail) = s.split_at(19);
    let s = format!("{head}{}", tail.trim_start());
    if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(&s, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    // No offset at all: the field is named ...Utc, so it is UTC.
    NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc())
}
