//! Conversions between `google.protobuf.Timestamp` and `chrono`.

use chrono::{DateTime, Utc};
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
