//! `google.protobuf.Struct` ↔ JSON, the one conversion the services (free-form fields of
//! requests) and the REST edge (those fields in bodies and answers) share. Numbers are doubles
//! in a `Struct`; whole ones within ±2^53 come back as JSON integers (`34`, not `34.0`).

use prost_types::{ListValue, Struct, Value as ProtoValue, value::Kind};
use serde_json::{Map, Number, Value};

/// A JSON object as a `Struct`.
pub fn to_struct(map: Map<String, Value>) -> Struct {
    Struct { fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect() }
}

/// A JSON value as a protobuf `Value`.
pub fn to_value(v: Value) -> ProtoValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => {
            Kind::ListValue(ListValue { values: items.into_iter().map(to_value).collect() })
        }
        Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    ProtoValue { kind: Some(kind) }
}

/// A `Struct` as a JSON object, refusing numbers JSON cannot hold (NaN, ±∞): for input.
pub fn from_struct(s: Struct) -> Result<Map<String, Value>, NonFinite> {
    s.fields.into_iter().map(|(k, v)| Ok((k, from_value(v)?))).collect()
}

/// A `Struct` as a JSON object, numbers JSON cannot hold as `null`: for output.
pub fn from_struct_lossy(s: Struct) -> Map<String, Value> {
    s.fields.into_iter().map(|(k, v)| (k, from_value(v).unwrap_or(Value::Null))).collect()
}

/// A number JSON cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("numbers must be finite")]
pub struct NonFinite;

fn from_value(v: ProtoValue) -> Result<Value, NonFinite> {
    Ok(match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => {
            const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
            if n.fract() == 0.0 && n.abs() <= EXACT {
                Value::from(n as i64)
            } else {
                Number::from_f64(n).map(Value::Number).ok_or(NonFinite)?
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.into_iter().map(from_value).collect::<Result<_, _>>()?)
        }
        Some(Kind::StructValue(s)) => Value::Object(from_struct(s)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_survives_the_round_trip_with_whole_numbers_whole() {
        let json = serde_json::json!({"minute": 34, "score": "2-1", "xg": 1.25, "tags": [true, null], "o": {"a": -3}});
        let Value::Object(map) = json.clone() else { unreachable!() };
        assert_eq!(from_struct(to_struct(map)).map(Value::Object), Ok(json));
    }

    #[test]
    fn non_finite_numbers_are_refused_for_input_and_null_in_output() {
        let odd = Struct {
            fields: [("nan".to_string(), ProtoValue { kind: Some(Kind::NumberValue(f64::NAN)) })]
                .into(),
        };
        assert_eq!(from_struct(odd.clone()), Err(NonFinite));
        assert_eq!(Value::Object(from_struct_lossy(odd)), serde_json::json!({"nan": null}));
    }
}
