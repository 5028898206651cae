//! Request JSON → `IngestEventsRequest`, and the service's field paths back into the routes'
//! JSON naming.
//!
//! Bodies are read by hand from a `serde_json::Value` rather than derived: every bad field is
//! named in the 400 (`eventType`, `events[3].metadata`), all at once, where serde would stop
//! at the first with a message naming only a line and column. The edge checks shapes only
//! (JSON types, RFC 3339 times, known keys); the service checks every rule of the values and
//! answers INVALID_ARGUMENT naming proto paths, which [`json_field`] renames.

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use ewpm_proto::engagement::v1 as pb;
use serde_json::{Map, Value};

use super::shapes::{BatchBody, EventBody, NewEventDto};
use crate::problem::{ApiError, FieldError, Problem, camel_path};

/// The keys of one event object.
const EVENT_KEYS: &[&str] =
    &["matchId", "eventType", "teamId", "playerId", "metadata", "eventId", "occurredAt"];
/// The keys of a single-event body: an event's and the time it was sent.
const SINGLE_KEYS: &[&str] =
    &["matchId", "eventType", "teamId", "playerId", "metadata", "eventId", "occurredAt", "sentAt"];
/// The keys of a batch body.
const BATCH_KEYS: &[&str] = &["events", "sentAt", "backfill"];

/// The body of `POST /api/events` as the request: the event, and its match id (the answer's
/// `Location`). `header_key` (the `Idempotency-Key` header) is the client event id when the
/// body names none.
pub(crate) fn single_request(
    body: &Bytes,
    header_key: Option<String>,
) -> Result<(String, pb::IngestEventsRequest), ApiError> {
    let value = json_body(body)?;
    let mut bad = Vec::new();
    let EventBody { event, sent_at } = match Reader::new(&value, "", "body", SINGLE_KEYS, &mut bad)
    {
        Some(mut r) => {
            let event = new_event(&mut r);
            EventBody { event, sent_at: r.text("sentAt") }
        }
        None => EventBody::default(),
    };
    let sent_at = time(sent_at.as_deref(), "sentAt", &mut bad);
    let match_id = event.match_id.clone();
    let mut input = event_input(event, "", &mut bad);
    if input.event_id.is_empty() {
        input.event_id = header_key.unwrap_or_default();
    }
    if !bad.is_empty() {
        return Err(Problem::invalid(bad).into());
    }
    Ok((match_id, pb::IngestEventsRequest { events: vec![input], sent_at, backfill: false }))
}

/// The body of `POST /api/events/batch` as the request.
pub(crate) fn batch_request(body: &Bytes) -> Result<pb::IngestEventsRequest, ApiError> {
    let value = json_body(body)?;
    let mut bad = Vec::new();
    let BatchBody { events, sent_at, backfill } =
        match Reader::new(&value, "", "body", BATCH_KEYS, &mut bad) {
            Some(mut r) => {
                let items = r.array("events").unwrap_or_default();
                let sent_at = r.text("sentAt");
                let backfill = r.boolean("backfill");
                let events = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let at = format!("events[{i}].");
                        let name = format!("events[{i}]");
                        match Reader::new(item, &at, &name, EVENT_KEYS, r.bad) {
                            Some(mut e) => new_event(&mut e),
                            None => NewEventDto::default(),
                        }
                    })
                    .collect();
                BatchBody { events, sent_at, backfill }
            }
            None => BatchBody::default(),
        };
    let sent_at = time(sent_at.as_deref(), "sentAt", &mut bad);
    let events = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| event_input(e, &format!("events[{i}]."), &mut bad))
        .collect();
    if !bad.is_empty() {
        return Err(Problem::invalid(bad).into());
    }
    Ok(pb::IngestEventsRequest { events, sent_at, backfill: backfill.unwrap_or(false) })
}

/// A service field path in the JSON naming of the route: proto field names in camelCase
/// (`events[3].event_type` → `events[3].eventType`), keys under `metadata` as the client
/// spelled them (`events[0].metadata.home_score` stays so). For the single-event route
/// (`single`) without the `events[0].` its body does not have: `eventType`, `metadata.x`.
pub(crate) fn json_field(path: &str, single: bool) -> String {
    let path = if single { path.strip_prefix("events[0].").unwrap_or(path) } else { path };
    let mut out: Vec<String> = Vec::new();
    let mut segments = path.split('.');
    for segment in segments.by_ref() {
        out.push(camel_path(segment));
        if segment == "metadata" {
            break;
        }
    }
    out.extend(segments.map(str::to_string));
    out.join(".")
}

/// The body as JSON (any JSON; [`Reader::new`] checks it is an object).
fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::bad_request("body", "must be a JSON object").into());
    }
    serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request("body", format!("is not valid JSON: {e}")).into())
}

/// Reads the keys of one JSON object, recording each bad one under its JSON path.
struct Reader<'a, 'b> {
    object: &'a Map<String, Value>,
    /// The path prefix of the object's keys (`events[3].`, or empty for the body).
    at: &'a str,
    bad: &'b mut Vec<FieldError>,
}

impl<'a, 'b> Reader<'a, 'b> {
    /// A reader of `value`, which must be an object (else a violation naming `name`) with
    /// only the keys `known` (else a violation per other key).
    fn new(
        value: &'a Value,
        at: &'a str,
        name: &str,
        known: &[&str],
        bad: &'b mut Vec<FieldError>,
    ) -> Option<Self> {
        let Some(object) = value.as_object() else {
            bad.push(FieldError {
                field: name.to_string(),
                description: "must be a JSON object".into(),
            });
            return None;
        };
        for key in object.keys().filter(|k| !known.contains(&k.as_str())) {
            bad.push(FieldError {
                field: format!("{at}{key}"),
                description: format!("is not a field here; the fields are {}", known.join(", ")),
            });
        }
        Some(Self { object, at, bad })
    }

    /// The value of `key`; absent and `null` are `None`.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.object.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&mut self, key: &str, description: &str) {
        self.bad.push(FieldError {
            field: format!("{}{key}", self.at),
            description: description.into(),
        });
    }

    fn text(&mut self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.wrong(key, "must be a string");
                None
            }
        }
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.wrong(key, "must be true or false");
                None
            }
        }
    }

    fn object(&mut self, key: &str) -> Option<Map<String, Value>> {
        match self.get(key)? {
            Value::Object(map) => Some(map.clone()),
            _ => {
                self.wrong(key, "must be a JSON object");
                None
            }
        }
    }

    fn array(&mut self, key: &str) -> Option<&'a [Value]> {
        match self.get(key)? {
            Value::Array(items) => Some(items.as_slice()),
            _ => {
                self.wrong(key, "must be an array");
                None
            }
        }
    }
}

/// The event keys of the object `r` reads.
fn new_event(r: &mut Reader<'_, '_>) -> NewEventDto {
    NewEventDto {
        match_id: r.text("matchId").unwrap_or_default(),
        event_type: r.text("eventType").unwrap_or_default(),
        team_id: r.text("teamId"),
        player_id: r.text("playerId"),
        metadata: r.object("metadata"),
        event_id: r.text("eventId"),
        occurred_at: r.text("occurredAt"),
    }
}

/// The proto event; a bad `occurredAt` is recorded under `at`.
fn event_input(e: NewEventDto, at: &str, bad: &mut Vec<FieldError>) -> pb::EventInput {
    let NewEventDto { match_id, event_type, team_id, player_id, metadata, event_id, occurred_at } =
        e;
    pb::EventInput {
        event_id: event_id.unwrap_or_default(),
        match_id,
        event_type,
        team_id: team_id.unwrap_or_default(),
        player_id: player_id.unwrap_or_default(),
        metadata: metadata.map(ewpm_kit::json::to_struct),
        occurred_at: time(occurred_at.as_deref(), &format!("{at}occurredAt"), bad),
    }
}

/// An RFC 3339 time, or a violation of `field`.
fn time(
    raw: Option<&str>,
    field: &str,
    bad: &mut Vec<FieldError>,
) -> Option<prost_types::Timestamp> {
    let raw = raw?;
    match DateTime::parse_from_rfc3339(raw.trim()) {
        Ok(t) => Some(ewpm_kit::timestamp::to_proto(t.with_timezone(&Utc))),
        Err(_) => {
            bad.push(FieldError {
                field: field.to_string(),
                description: "must be an RFC 3339 timestamp, e.g. 2025-12-24T14:35:00Z".into(),
            });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(err: ApiError) -> Vec<(String, String)> {
        err.0.errors.into_iter().map(|e| (e.field, e.description)).collect()
    }

    #[test]
    fn service_paths_become_json_paths_and_metadata_keys_keep_their_spelling() {
        let cases = [
            ("events[0].event_type", true, "eventType"),
            ("events[0].metadata.home_score", true, "metadata.home_score"),
            ("events[0].metadata", true, "metadata"),
            ("sent_at", true, "sentAt"),
            ("events[3].event_id", false, "events[3].eventId"),
            ("events[3].metadata.a_b.c_d", false, "events[3].metadata.a_b.c_d"),
            ("events", false, "events"),
            ("", false, ""),
        ];
        for (path, single, json) in cases {
            assert_eq!(json_field(path, single), json, "{path}");
        }
    }

    #[test]
    fn a_single_event_becomes_one_event_of_a_batch() {
        let body = Bytes::from(
            json!({
                "matchId": "match_123", "eventType": "goal", "teamId": "al-hilal",
                "playerId": "player_456", "metadata": {"minute": 34, "score": "2-1"},
                "eventId": "feed-1:77", "occurredAt": "2025-12-24T14:35:10Z",
                "sentAt": "2025-12-24T14:35:11.5Z"
            })
            .to_string(),
        );
        let (match_id, request) = single_request(&body, Some("ignored".into())).unwrap();
        let at = |seconds, nanos| Some(prost_types::Timestamp { seconds, nanos });
        assert_eq!(match_id, "match_123");
        assert_eq!(
            request,
            pb::IngestEventsRequest {
                events: vec![pb::EventInput {
                    event_id: "feed-1:77".into(),
                    match_id: "match_123".into(),
                    event_type: "goal".into(),
                    team_id: "al-hilal".into(),
                    player_id: "player_456".into(),
                    metadata: Some(ewpm_kit::json::to_struct(
                        json!({"minute": 34, "score": "2-1"}).as_object().unwrap().clone()
                    )),
                    occurred_at: at(1_766_586_910, 0),
                }],
                sent_at: at(1_766_586_911, 500_000_000),
                backfill: false,
            }
        );
    }

    #[test]
    fn the_idempotency_key_header_is_the_event_id_when_the_body_has_none() {
        let body = Bytes::from_static(br#"{"matchId":"m","eventType":"cheer"}"#);
        let (_, request) = single_request(&body, Some("retry-1".into())).unwrap();
        assert_eq!(request.events[0].event_id, "retry-1");
    }

    #[test]
    fn every_bad_field_of_a_single_event_is_named_at_once() {
        let body = Bytes::from(
            json!({
                "matchId": 7, "eventType": "goal", "metadata": [1, 2],
                "occurredAt": "yesterday", "sentAt": true, "colour": "red"
            })
            .to_string(),
        );
        let mut got = fields(single_request(&body, None).unwrap_err());
        got.sort();
        let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["colour", "matchId", "metadata", "occurredAt", "sentAt"]);
        assert_eq!(got[2].1, "must be a JSON object");
    }

    #[test]
    fn bodies_that_are_not_json_objects_name_the_body() {
        for raw in ["", "  ", "{", "[1]", "\"x\"", "null"] {
            let err = single_request(&Bytes::from(raw), None).unwrap_err();
            assert_eq!((err.0.status, fields(err)[0].0.as_str()), (400, "body"), "{raw:?}");
        }
    }

    #[test]
    fn a_batch_names_bad_fields_by_their_index() {
        let body = Bytes::from(
            json!({
                "events": [
                    {"matchId": "m", "eventType": "goal"},
                    "not an event",
                    {"matchId": "m", "eventType": 3, "metadata": "x", "sentAt": "2025-12-24T14:35:10Z"}
                ],
                "backfill": "yes"
            })
            .to_string(),
        );
        let mut got: Vec<String> =
            fields(batch_request(&body).unwrap_err()).into_iter().map(|(f, _)| f).collect();
        got.sort();
        assert_eq!(
            got,
            [
                "backfill",
                "events[1]",
                "events[2].eventType",
                "events[2].metadata",
                "events[2].sentAt"
            ]
        );
        let err = batch_request(&Bytes::from_static(br#"{"events":{}}"#)).unwrap_err();
        assert_eq!(fields(err)[0].0, "events");
    }

    #[test]
    fn a_batch_keeps_its_order_sent_time_and_backfill() {
        let body = Bytes::from(
            json!({
                "events": [{"matchId": "m", "eventType": "goal"}, {"matchId": "m", "eventType": "cheer"}],
                "sentAt": "2025-12-24T14:35:11Z", "backfill": true
            })
            .to_string(),
        );
        let request = batch_request(&body).unwrap();
        let types: Vec<&str> = request.events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(
            (types, request.sent_at.map(|t| t.seconds), request.backfill),
            (vec!["goal", "cheer"], Some(1_766_586_911), true)
        );
    }

    #[test]
    fn metadata_survives_the_round_trip_through_a_struct() {
        let metadata = json!({
            "minute": 34, "score": "2-1", "xg": 0.37, "var": null, "tags": ["header", 2],
            "where": {"x": -12, "big": 1e300}
        });
        let map = metadata.as_object().unwrap().clone();
        assert_eq!(
            Value::Object(ewpm_kit::json::from_struct_lossy(ewpm_kit::json::to_struct(map))),
            metadata
        );
        let odd = prost_types::Struct {
            fields: [(
                "nan".to_string(),
                prost_types::Value { kind: Some(prost_types::value::Kind::NumberValue(f64::NAN)) },
            )]
            .into(),
        };
        assert_eq!(Value::Object(ewpm_kit::json::from_struct_lossy(odd)), json!({"nan": null}));
    }
}
