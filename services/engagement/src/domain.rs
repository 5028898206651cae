//! Match events and match metrics as values: parsing what a client sends (every bad field at
//! once), clock-skew correction, late events, event ids, and the counts a match's metrics are
//! made of, with the snapshot a reader sees. No I/O.

use std::{
    collections::{BTreeMap, HashSet},
    sync::LazyLock,
    time::Duration,
};

use chrono::{DateTime, Utc};
use ewpm_kit::error::FieldViolation;
use hdrhistogram::Histogram;
use serde_json::Value;
use uuid::Uuid;

/// Microseconds in a minute.
pub const MINUTE_US: i64 = 60_000_000;

/// How many peak periods a snapshot lists.
pub const PEAKS: usize = 5;

/// The namespace of event ids derived from a source and a client event id (UUID v5).
const CLIENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f0c_51d2_7a4e_4c1b_9d55_1e7b_3c0a_e001);

/// Longest match id, team id, player id.
const MAX_ID_CHARS: usize = 64;
/// Longest client event id.
const MAX_CLIENT_ID_CHARS: usize = 128;
/// Longest event type.
const MAX_TYPE_CHARS: usize = 64;
/// Metadata limits.
const MAX_METADATA_KEYS: usize = 32;
const MAX_METADATA_KEY_CHARS: usize = 64;
const MAX_METADATA_DEPTH: usize = 4;
const MAX_METADATA_STRING_CHARS: usize = 1024;
const MAX_METADATA_BYTES: usize = 4096;
/// The match clock's range (`metadata.minute`).
const MAX_MATCH_MINUTE: i64 = 200;
/// How old a backfilled event may be.
const MAX_BACKFILL_AGE: Duration = Duration::from_secs(10 * 366 * 24 * 3600);
/// Largest clock offset a `sent_at` may imply.
const MAX_OFFSET: Duration = Duration::from_secs(7 * 24 * 3600);

/// The rules ingest holds events to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most events per call.
    pub max_batch: usize,
    /// How far after the server's time an event may lie.
    pub max_future: Duration,
    /// How far before it (outside a backfill).
    pub max_age: Duration,
    /// Offsets up to this are network delay, not skew.
    pub skew_tolerance: Duration,
    /// How long after its end a minute stays provisional.
    pub lateness: Duration,
}

/// One event as a client sent it (the wire's fields, not yet checked).
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// Client event id; empty for none.
    pub event_id: String,
    /// The match.
    pub match_id: String,
    /// The type.
    pub event_type: String,
    /// Team; empty for none.
    pub team_id: String,
    /// Player; empty for none.
    pub player_id: String,
    /// Metadata as JSON (an object), or the reason it could not be one.
    pub metadata: Result<Option<Value>, String>,
    /// When it happened by the client's clock.
    pub occurred_at: Option<DateTime<Utc>>,
}

impl Default for Input {
    fn default() -> Self {
        Self {
            event_id: String::new(),
            match_id: String::new(),
            event_type: String::new(),
            team_id: String::new(),
            player_id: String::new(),
            metadata: Ok(None),
            occurred_at: None,
        }
    }
}

/// A checked, normalized event, as it is queued and stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its id.
    pub event_id: Uuid,
    /// The client's id, if any.
    pub client_event_id: Option<String>,
    /// The match.
    pub match_id: String,
    /// The type.
    pub event_type: String,
    /// Team.
    pub team_id: Option<String>,
    /// Player.
    pub player_id: Option<String>,
    /// Metadata (a JSON object), if any.
    pub metadata_json: Option<String>,
    /// When it happened (corrected), µs since the epoch.
    pub occurred_us: i64,
    /// When it happened by the client's clock, µs.
    pub client_occurred_us: i64,
    /// When it was accepted, µs.
    pub received_us: i64,
    /// Who sent it.
    pub source: String,
    /// `metadata.minute`.
    pub match_minute: Option<i32>,
    /// Arrived after its minute was final.
    pub late: bool,
    /// Came in a backfill.
    pub backfill: bool,
    /// The ingest call that accepted it.
    pub ingest_id: Uuid,
    /// The body's fingerprint.
    pub fingerprint: String,
}

/// A batch as ingest accepted it for checking.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The events, in the order sent.
    pub events: Vec<Event>,
    /// The clock offset applied, in ms.
    pub offset_ms: i64,
}

/// Microseconds since the epoch.
pub fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// A time from microseconds since the epoch.
pub fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

/// A match id: 1 to 64 of `A-Z a-z 0-9 _ - . :`.
pub fn parse_match_id(field: &str, raw: &str) -> Result<String, FieldViolation> {
    if raw.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    if raw.chars().count() > MAX_ID_CHARS || !raw.chars().all(is_id_char) {
        return Err(FieldViolation::new(
            field,
            "must be 1 to 64 of A-Z a-z 0-9 _ - . : (the feed's match id)",
        ));
    }
    Ok(raw.to_string())
}

/// An event type: 1 to 64 of `a-z 0-9 _`.
pub fn parse_event_type(field: &str, raw: &str) -> Result<String, FieldViolation> {
    if raw.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    if raw.len() > MAX_TYPE_CHARS
        || !raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(FieldViolation::new(field, "must be 1 to 64 of a-z 0-9 _ (e.g. yellow_card)"));
    }
    Ok(raw.to_string())
}

fn optional_text(field: &str, raw: &str) -> Result<Option<String>, FieldViolation> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.chars().count() > MAX_ID_CHARS || raw.chars().any(char::is_control) {
        return Err(FieldViolation::new(
            field,
            "must be at most 64 characters, without control characters",
        ));
    }
    Ok(Some(raw.to_string()))
}

fn client_id(field: &str, raw: &str) -> Result<Option<String>, FieldViolation> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.len() > MAX_CLIENT_ID_CHARS || !raw.chars().all(is_id_char) {
        return Err(FieldViolation::new(field, "must be 1 to 128 of A-Z a-z 0-9 _ - . :"));
    }
    Ok(Some(raw.to_string()))
}

/// Checks metadata against the limits; returns the match clock minute if it has one.
fn check_metadata(field: &str, value: &Value, out: &mut Vec<FieldViolation>) -> Option<i32> {
    fn walk(field: &str, value: &Value, depth: usize, out: &mut Vec<FieldViolation>) {
        match value {
            Value::Object(map) => {
                if depth > MAX_METADATA_DEPTH {
                    out.push(FieldViolation::new(field, "nests deeper than 4 levels"));
                    return;
                }
                if map.len() > MAX_METADATA_KEYS {
                    out.push(FieldViolation::new(field, "has more than 32 keys"));
                }
                for (k, v) in map {
                    if k.is_empty()
                        || k.chars().count() > MAX_METADATA_KEY_CHARS
                        || k.chars().any(char::is_control)
                    {
                        out.push(FieldViolation::new(
                            field,
                            "keys must be 1 to 64 characters without control characters",
                        ));
                        continue;
                    }
                    walk(&format!("{field}.{k}"), v, depth + 1, out);
                }
            }
            Value::Array(items) => {
                if depth > MAX_METADATA_DEPTH {
                    out.push(FieldViolation::new(field, "nests deeper than 4 levels"));
                    return;
                }
                if items.len() > MAX_METADATA_KEYS {
                    out.push(FieldViolation::new(field, "has more than 32 items"));
                }
                for (i, v) in items.iter().enumerate() {
                    walk(&format!("{field}[{i}]"), v, depth + 1, out);
                }
            }
            Value::String(s) if s.chars().count() > MAX_METADATA_STRING_CHARS => {
                out.push(FieldViolation::new(field, "is longer than 1,024 characters"));
            }
            _ => {}
        }
    }
    let before = out.len();
    walk(field, value, 1, out);
    if out.len() == before {
        let size = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
        if size > MAX_METADATA_BYTES {
            out.push(FieldViolation::new(field, "is larger than 4 KiB as JSON"));
        }
    }
    match value.get("minute") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64) {
            Some(m) if (0..=MAX_MATCH_MINUTE).contains(&m) => i32::try_from(m).ok(),
            _ => {
                out.push(FieldViolation::new(
                    format!("{field}.minute"),
                    "the match clock must be a whole number from 0 to 200",
                ));
                None
            }
        },
        Some(_) => {
            out.push(FieldViolation::new(
                format!("{field}.minute"),
                "the match clock must be a whole number from 0 to 200",
            ));
            None
        }
    }
}

/// The clock offset a `sent_at` implies (server arrival minus `sent_at`, in ms); zero within
/// the tolerance.
pub fn clock_offset_ms(
    sent_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<i64, FieldViolation> {
    let Some(sent) = sent_at else { return Ok(0) };
    let offset = (now - sent).num_milliseconds();
    if offset.unsigned_abs() > MAX_OFFSET.as_millis() as u64 {
        return Err(FieldViolation::new(
            "sent_at",
            "is more than 7 days from the server's time: fix the device's clock",
        ));
    }
    if offset.unsigned_abs() <= tolerance.as_millis() as u64 { Ok(0) } else { Ok(offset) }
}

/// The id of an event: derived from its source and client id (a retry gets the same one), or
/// minted.
pub fn event_id(source: &str, client_event_id: Option<&str>) -> Uuid {
    match client_event_id {
        Some(id) => Uuid::new_v5(&CLIENT_ID_NAMESPACE, format!("{source}\n{id}").as_bytes()),
        None => Uuid::now_v7(),
    }
}

/// The fingerprint of an event's body as the client sent it (what tells a retry from a
/// conflicting reuse of its id): match, type, team, player, metadata (keys sorted), time.
fn fingerprint(input: &Input, metadata: Option<&Value>) -> String {
    let body = serde_json::json!([
        input.match_id,
        input.event_type,
        input.team_id,
        input.player_id,
        metadata,
        input.occurred_at.map(|t| t.timestamp_micros()),
    ]);
    ewpm_kit::idempotency::fingerprint(body.to_string().as_bytes())
}

/// Whether an event for the minute of `occurred_us` arriving at `received_us` is late: its
/// minute ended more than `lateness` before.
pub fn is_late(occurred_us: i64, received_us: i64, lateness: Duration) -> bool {
    let minute_end = occurred_us.div_euclid(MINUTE_US) * MINUTE_US + MINUTE_US;
    received_us > minute_end + lateness.as_micros() as i64
}

/// Checks and normalizes a batch: every bad field of every event at once (named
/// `events[i].field`), or the events with ids, corrected times and fingerprints.
pub fn parse_batch(
    inputs: Vec<Input>,
    sent_at: Option<DateTime<Utc>>,
    backfill: bool,
    source: &str,
    ingest_id: Uuid,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Parsed, Vec<FieldViolation>> {
    let mut out = Vec::new();
    if inputs.is_empty() {
        out.push(FieldViolation::new("events", "must hold at least one event"));
    }
    if inputs.len() > limits.max_batch {
        out.push(FieldViolation::new(
            "events",
            format!("holds {} events; at most {} per call", inputs.len(), limits.max_batch),
        ));
        return Err(out);
    }
    let offset_ms = match clock_offset_ms(sent_at, now, limits.skew_tolerance) {
        Ok(o) => o,
        Err(v) => {
            out.push(v);
            0
        }
    };
    let now_us = micros(now);
    let oldest =
        now_us - if backfill { MAX_BACKFILL_AGE } else { limits.max_age }.as_micros() as i64;
    let newest = now_us + limits.max_future.as_micros() as i64;
    let mut events = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let f = |name: &str| format!("events[{i}].{name}");
        fn check<T>(out: &mut Vec<FieldViolation>, r: Result<T, FieldViolation>) -> Option<T> {
            r.map_err(|v| out.push(v)).ok()
        }
        let client = check(&mut out, client_id(&f("event_id"), &input.event_id));
        let match_id = check(&mut out, parse_match_id(&f("match_id"), &input.match_id));
        let event_type = check(&mut out, parse_event_type(&f("event_type"), &input.event_type));
        let team_id = check(&mut out, optional_text(&f("team_id"), &input.team_id));
        let player_id = check(&mut out, optional_text(&f("player_id"), &input.player_id));
        let (metadata, match_minute) = match &input.metadata {
            Ok(None) => (None, None),
            Ok(Some(value @ Value::Object(_))) => {
                let minute = check_metadata(&f("metadata"), value, &mut out);
                (Some(value.clone()), minute)
            }
            Ok(Some(_)) => {
                out.push(FieldViolation::new(f("metadata"), "must be a JSON object"));
                (None, None)
            }
            Err(why) => {
                out.push(FieldViolation::new(f("metadata"), why.clone()));
                (None, None)
            }
        };
        let client_occurred_us = input.occurred_at.map_or(now_us, micros);
        let occurred_us = if input.occurred_at.is_some() {
            client_occurred_us.saturating_add(offset_ms.saturating_mul(1000))
        } else {
            now_us
        };
        if occurred_us > newest {
            out.push(FieldViolation::new(
                f("occurred_at"),
                "lies more than 5 minutes in the future (after clock-skew correction)",
            ));
        } else if occurred_us < oldest {
            out.push(FieldViolation::new(
                f("occurred_at"),
                if backfill {
                    "lies more than 10 years in the past"
                } else {
                    "lies more than 24 hours in the past: send old events as a backfill"
                },
            ));
        }
        let (Some(client), Some(match_id), Some(event_type), Some(team_id), Some(player_id)) =
            (client, match_id, event_type, team_id, player_id)
        else {
            continue;
        };
        let fingerprint = fingerprint(&input, metadata.as_ref());
        events.push(Event {
            event_id: event_id(source, client.as_deref()),
            client_event_id: client,
            match_id,
            event_type,
            team_id,
            player_id,
            metadata_json: metadata.map(|m| m.to_string()),
            occurred_us,
            client_occurred_us,
            received_us: now_us,
            source: source.to_string(),
            match_minute,
            late: !backfill && is_late(occurred_us, now_us, limits.lateness),
            backfill,
            ingest_id,
            fingerprint,
        });
    }
    if out.is_empty() { Ok(Parsed { events, offset_ms }) } else { Err(out) }
}

/// The ingest latency histogram's shape: 1 µs to 1 hour, 2 significant digits.
static SHAPE: LazyLock<Histogram<u64>> = LazyLock::new(|| {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).unwrap_or_else(|_| Histogram::new(2).unwrap())
});

/// The histogram bucket of a latency in µs (its lowest equivalent value); what counters
/// and the `latency_bucket` column hold.
pub fn latency_bucket(latency_us: i64) -> i64 {
    let v = u64::try_from(latency_us).unwrap_or(0).clamp(1, 3_600_000_000);
    i64::try_from(SHAPE.lowest_equivalent(v)).unwrap_or(i64::MAX)
}

/// A match's counts: what its metrics are made of. Increments of one ingest call for one
/// match have the same shape (and add up with [`Counts::add`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events.
    pub total: i64,
    /// Events by type.
    pub by_type: BTreeMap<String, i64>,
    /// Events per wall-clock minute (minutes since the epoch).
    pub minutes: BTreeMap<i64, i64>,
    /// Late events per minute.
    pub late: BTreeMap<i64, i64>,
    /// Events per match minute.
    pub clock: BTreeMap<i32, i64>,
    /// The first event time (µs) per match minute.
    pub clock_first: BTreeMap<i32, i64>,
    /// Ingest latency: histogram bucket (µs) → events.
    pub latency: BTreeMap<i64, i64>,
    /// The newest event time, µs.
    pub max_event_us: i64,
    /// The newest acceptance time, µs.
    pub newest_received_us: i64,
    /// The ingest latency of the newest accepted event, µs.
    pub newest_lag_us: i64,
}

impl Counts {
    /// Counts one stored event: `stored_us` is when it was written.
    pub fn count(&mut self, e: &Event, latency_bucket: i64, stored_us: i64) {
        self.total += 1;
        *self.by_type.entry(e.event_type.clone()).or_default() += 1;
        let minute = e.occurred_us.div_euclid(MINUTE_US);
        *self.minutes.entry(minute).or_default() += 1;
        if e.late {
            *self.late.entry(minute).or_default() += 1;
        }
        if let Some(m) = e.match_minute {
            *self.clock.entry(m).or_default() += 1;
            let first = self.clock_first.entry(m).or_insert(e.occurred_us);
            *first = (*first).min(e.occurred_us);
        }
        *self.latency.entry(latency_bucket).or_default() += 1;
        self.max_event_us = self.max_event_us.max(e.occurred_us);
        if e.received_us >= self.newest_received_us {
            self.newest_received_us = e.received_us;
            self.newest_lag_us = stored_us - e.received_us;
        }
    }

    /// Adds `other` (the maxima and the newest lag merge as the newer).
    pub fn add(&mut self, other: &Counts) {
        fn sum<K: Ord + Clone>(into: &mut BTreeMap<K, i64>, from: &BTreeMap<K, i64>) {
            for (k, v) in from {
                *into.entry(k.clone()).or_default() += v;
            }
        }
        self.total += other.total;
        sum(&mut self.by_type, &other.by_type);
        sum(&mut self.minutes, &other.minutes);
        sum(&mut self.late, &other.late);
        sum(&mut self.clock, &other.clock);
        for (k, v) in &other.clock_first {
            let first = self.clock_first.entry(*k).or_insert(*v);
            *first = (*first).min(*v);
        }
        sum(&mut self.latency, &other.latency);
        self.max_event_us = self.max_event_us.max(other.max_event_us);
        if other.newest_received_us >= self.newest_received_us {
            self.newest_received_us = other.newest_received_us;
            self.newest_lag_us = other.newest_lag_us;
        }
    }

    /// Drops per-minute counts older than `retention` before the newest event's minute.
    pub fn prune(&mut self, retention: Duration) {
        let keep_from = self.max_event_us.div_euclid(MINUTE_US) - (retention.as_secs() / 60) as i64;
        self.minutes.retain(|m, _| *m >= keep_from);
        self.late.retain(|m, _| *m >= keep_from);
    }
}

/// How peaks are bucketed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucketing {
    /// By wall-clock minute.
    WallClock,
    /// By match minute.
    MatchClock,
}

/// One peak period.
#[derive(Debug, Clone, PartialEq)]
pub struct Peak {
    /// The bucket's start (a match minute's first event).
    pub start_us: i64,
    /// Events in it.
    pub count: i64,
    /// The match minute, when bucketed by match clock.
    pub match_minute: Option<i32>,
}

/// One minute of a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Minute {
    /// Minutes since the epoch.
    pub minute: i64,
    /// Events.
    pub count: i64,
    /// Final (only late events change it now).
    pub is_final: bool,
    /// Late events in it.
    pub late: i64,
}

/// A match's metrics as a reader sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The match.
    pub match_id: String,
    /// Events.
    pub total: i64,
    /// Events by type.
    pub by_type: BTreeMap<String, i64>,
    /// Busiest buckets, busiest first.
    pub peaks: Vec<Peak>,
    /// Ingest latency p50, p95, p99 in ms.
    pub percentiles: [f64; 3],
    /// How peaks are bucketed.
    pub bucketing: Bucketing,
    /// Minutes, oldest first.
    pub minutes: Vec<Minute>,
    /// The newest event time, µs (0: none).
    pub max_event_us: i64,
    /// Minutes ending before this (µs) are final.
    pub final_before_us: i64,
    /// The newest event's ingest latency, ms.
    pub ingest_lag_ms: i64,
    /// Late events.
    pub late_events: i64,
}

/// The snapshot of `counts` at `now_us`.
pub fn snapshot(match_id: &str, counts: &Counts, now_us: i64, lateness: Duration) -> Snapshot {
    let clocked: i64 = counts.clock.values().sum();
    let bucketing = if clocked > 0 && clocked * 2 >= counts.total {
        Bucketing::MatchClock
    } else {
        Bucketing::WallClock
    };
    let mut peaks: Vec<Peak> = match bucketing {
        Bucketing::MatchClock => counts
            .clock
            .iter()
            .map(|(m, n)| Peak {
                start_us: counts.clock_first.get(m).copied().unwrap_or_default(),
                count: *n,
                match_minute: Some(*m),
            })
            .collect(),
        Bucketing::WallClock => counts
            .minutes
            .iter()
            .map(|(m, n)| Peak { start_us: m * MINUTE_US, count: *n, match_minute: None })
            .collect(),
    };
    peaks.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.match_minute.cmp(&b.match_minute))
            .then(a.start_us.cmp(&b.start_us))
    });
    peaks.truncate(PEAKS);
    let final_before_us = now_us - lateness.as_micros() as i64;
    let minutes = counts
        .minutes
        .iter()
        .map(|(m, n)| Minute {
            minute: *m,
            count: *n,
            is_final: (m + 1) * MINUTE_US <= final_before_us,
            late: counts.late.get(m).copied().unwrap_or_default(),
        })
        .collect();
    Snapshot {
        match_id: match_id.to_string(),
        total: counts.total,
        by_type: counts.by_type.clone(),
        peaks,
        percentiles: percentiles(&counts.latency),
        bucketing,
        minutes,
        max_event_us: counts.max_event_us,
        final_before_us,
        ingest_lag_ms: counts.newest_lag_us.max(0) / 1000,
        late_events: counts.late.values().sum(),
    }
}

/// p50, p95, p99 in ms (to 0.1 ms) of a latency histogram's buckets; zeros when empty.
pub fn percentiles(buckets: &BTreeMap<i64, i64>) -> [f64; 3] {
    let mut h = SHAPE.clone();
    h.reset();
    for (bucket, n) in buckets {
        if let (Ok(v), Ok(n)) = (u64::try_from(*bucket), u64::try_from(*n)) {
            h.record_n(v.clamp(1, 3_600_000_000), n).ok();
        }
    }
    if h.is_empty() {
        return [0.0; 3];
    }
    let ms = |q: f64| (h.value_at_quantile(q) as f64 / 100.0).round() / 10.0;
    [ms(0.50), ms(0.95), ms(0.99)]
}

/// Final minutes of `now` whose count differs from `before` (late events since): (minute,
/// previous count, count).
pub fn corrections(before: &[Minute], now: &[Minute]) -> Vec<(i64, i64, i64)> {
    let previous: BTreeMap<i64, (i64, bool)> =
        before.iter().map(|m| (m.minute, (m.count, m.is_final))).collect();
    now.iter()
        .filter_map(|m| match previous.get(&m.minute) {
            Some((count, true)) if *count != m.count => Some((m.minute, *count, m.count)),
            _ => None,
        })
        .collect()
}

/// Distinct event types of `events`, in first-seen order, per match.
pub fn types_by_match(events: &[&Event]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for e in events {
        if seen.insert((e.match_id.as_str(), e.event_type.as_str())) {
            out.entry(e.match_id.clone()).or_default().push(e.event_type.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw).unwrap().to_utc()
    }

    fn limits() -> Limits {
        Limits {
            max_batch: 3,
            max_future: Duration::from_secs(300),
            max_age: Duration::from_secs(24 * 3600),
            skew_tolerance: Duration::from_secs(1),
            lateness: Duration::from_secs(60),
        }
    }

    fn input(match_id: &str, event_type: &str) -> Input {
        Input {
            match_id: match_id.into(),
            event_type: event_type.into(),
            metadata: Ok(None),
            ..Input::default()
        }
    }

    fn parse(inputs: Vec<Input>, sent_at: Option<DateTime<Utc>>) -> Result<Parsed, Vec<String>> {
        parse_batch(
            inputs,
            sent_at,
            false,
            "feed-1",
            Uuid::nil(),
            at("2026-11-30T12:00:30Z"),
            &limits(),
        )
        .map_err(|v| v.into_iter().map(|v| format!("{}: {}", v.field, v.description)).collect())
    }

    #[test]
    fn every_bad_field_of_every_event_is_reported_at_once() {
        let mut bad = input("", "Goal!");
        bad.metadata = Ok(Some(serde_json::json!({"minute": 300})));
        let mut worse = input("m 1", "goal");
        worse.metadata = Ok(Some(serde_json::json!([1])));
        worse.occurred_at = Some(at("2026-11-28T12:00:00Z"));
        let fields: Vec<String> = parse(vec![input("m1", "goal"), bad, worse], None)
            .unwrap_err()
            .into_iter()
            .map(|v| v.split(':').next().unwrap().to_string())
            .collect();
        assert_eq!(
            fields,
            [
                "events[1].match_id",
                "events[1].event_type",
                "events[1].metadata.minute",
                "events[2].match_id",
                "events[2].metadata",
                "events[2].occurred_at"
            ]
        );
    }

    #[test]
    fn a_batch_over_the_maximum_is_rejected_whole() {
        let err = parse(vec![input("m", "goal"); 4], None).unwrap_err();
        assert_eq!(err, ["events: holds 4 events; at most 3 per call"]);
    }

    #[test]
    fn metadata_past_its_limits_is_rejected_naming_the_place() {
        let deep = serde_json::json!({"a": {"b": {"c": {"d": {"e": 1}}}}});
        let long = serde_json::json!({"s": "x".repeat(1025)});
        let mut many = serde_json::Map::new();
        for i in 0..33 {
            many.insert(format!("k{i}"), Value::from(i));
        }
        for (metadata, field) in [
            (deep, "events[0].metadata.a.b.c.d"),
            (long, "events[0].metadata.s"),
            (Value::Object(many), "events[0].metadata"),
        ] {
            let mut i = input("m", "goal");
            i.metadata = Ok(Some(metadata));
            let err = parse(vec![i], None).unwrap_err();
            assert_eq!(err.len(), 1, "{err:?}");
            assert!(err[0].starts_with(&format!("{field}:")), "{err:?}");
        }
    }

    #[test]
    fn a_client_clock_ahead_is_corrected_and_its_original_time_kept() {
        let mut i = input("m", "goal");
        // The device's clock runs 10 minutes ahead: it sent at 12:10:30 its time.
        i.occurred_at = Some(at("2026-11-30T12:10:00Z"));
        let parsed = parse(vec![i], Some(at("2026-11-30T12:10:30Z"))).unwrap();
        assert_eq!(parsed.offset_ms, -600_000);
        let e = &parsed.events[0];
        assert_eq!(from_micros(e.occurred_us), at("2026-11-30T12:00:00Z"));
        assert_eq!(from_micros(e.client_occurred_us), at("2026-11-30T12:10:00Z"));
    }

    #[test]
    fn an_offset_within_the_tolerance_is_network_delay() {
        let mut i = input("m", "goal");
        i.occurred_at = Some(at("2026-11-30T12:00:00Z"));
        let parsed = parse(vec![i], Some(at("2026-11-30T12:00:29.500Z"))).unwrap();
        assert_eq!(parsed.offset_ms, 0);
        assert_eq!(from_micros(parsed.events[0].occurred_us), at("2026-11-30T12:00:00Z"));
    }

    #[test]
    fn a_retry_gets_the_same_id_and_fingerprint_and_another_body_another_fingerprint() {
        let mut a = input("m", "goal");
        a.event_id = "e-1".into();
        let first = parse(vec![a.clone()], None).unwrap().events.remove(0);
        let again = parse(vec![a.clone()], None).unwrap().events.remove(0);
        a.team_id = "other".into();
        let other = parse(vec![a], None).unwrap().events.remove(0);
        assert_eq!((first.event_id, &first.fingerprint), (again.event_id, &again.fingerprint));
        assert_eq!(first.event_id, other.event_id);
        assert_ne!(first.fingerprint, other.fingerprint);
        assert_eq!(first.event_id.get_version_num(), 5);
    }

    #[test]
    fn an_event_for_a_minute_past_its_grace_is_late() {
        let minute = at("2026-11-30T12:00:00Z").timestamp_micros();
        let grace = Duration::from_secs(60);
        assert!(!is_late(minute + 5, minute + 2 * MINUTE_US, grace));
        assert!(is_late(minute + 5, minute + 2 * MINUTE_US + 1, grace));
    }

    fn event(event_type: &str, occurred: &str, minute: Option<i32>) -> Event {
        let mut i = input("m", event_type);
        i.occurred_at = Some(at(occurred));
        let mut e = parse(vec![i], None).unwrap().events.remove(0);
        e.match_minute = minute;
        e
    }

    #[test]
    fn peaks_are_the_busiest_minutes_and_ties_go_to_the_earlier() {
        let mut c = Counts::default();
        for t in ["2026-11-30T12:00:01Z", "2026-11-30T12:00:02Z", "2026-11-30T11:59:00Z"] {
            c.count(&event("goal", t, None), latency_bucket(1500), 0);
        }
        c.count(&event("cheer", "2026-11-30T11:58:00Z", None), latency_bucket(1500), 0);
        let s = snapshot(
            "m",
            &c,
            at("2026-11-30T12:00:30Z").timestamp_micros(),
            Duration::from_secs(60),
        );
        let peaks: Vec<(DateTime<Utc>, i64)> =
            s.peaks.iter().map(|p| (from_micros(p.start_us), p.count)).collect();
        assert_eq!(
            peaks,
            [
                (at("2026-11-30T12:00:00Z"), 2),
                (at("2026-11-30T11:58:00Z"), 1),
                (at("2026-11-30T11:59:00Z"), 1)
            ]
        );
        assert_eq!(s.bucketing, Bucketing::WallClock);
        assert_eq!(s.minutes.iter().map(|m| m.is_final).collect::<Vec<_>>(), [true, false, false]);
        assert_eq!(s.by_type, BTreeMap::from([("cheer".into(), 1), ("goal".into(), 3)]));
        assert_eq!(s.percentiles, [1.5, 1.5, 1.5]);
    }

    #[test]
    fn events_with_a_match_clock_are_bucketed_by_it() {
        let mut c = Counts::default();
        c.count(&event("goal", "2026-11-30T12:00:01Z", Some(34)), 1, 0);
        c.count(&event("goal", "2026-11-30T12:00:50Z", Some(34)), 1, 0);
        c.count(&event("goal", "2026-11-30T11:59:00Z", Some(33)), 1, 0);
        let s = snapshot(
            "m",
            &c,
            at("2026-11-30T12:00:30Z").timestamp_micros(),
            Duration::from_secs(60),
        );
        assert_eq!(s.bucketing, Bucketing::MatchClock);
        assert_eq!(
            s.peaks,
            [
                Peak {
                    start_us: at("2026-11-30T12:00:01Z").timestamp_micros(),
                    count: 2,
                    match_minute: Some(34)
                },
                Peak {
                    start_us: at("2026-11-30T11:59:00Z").timestamp_micros(),
                    count: 1,
                    match_minute: Some(33)
                },
            ]
        );
    }

    #[test]
    fn counts_of_parts_add_up_to_the_counts_of_the_whole() {
        let events = [
            event("goal", "2026-11-30T12:00:01Z", Some(1)),
            event("card", "2026-11-30T11:50:00Z", None),
            event("goal", "2026-11-30T11:59:59Z", Some(2)),
        ];
        let mut whole = Counts::default();
        let (mut a, mut b) = (Counts::default(), Counts::default());
        for (i, e) in events.iter().enumerate() {
            whole.count(e, latency_bucket(i as i64 * 1000), e.received_us + 10);
            let part = if i == 1 { &mut b } else { &mut a };
            part.count(e, latency_bucket(i as i64 * 1000), e.received_us + 10);
        }
        a.add(&b);
        assert_eq!(a, whole);
    }

    #[test]
    fn a_final_minute_that_changes_is_a_correction() {
        let m = |minute, count, is_final| Minute { minute, count, is_final, late: 0 };
        let before = [m(1, 5, true), m(2, 3, false)];
        let now = [m(1, 6, true), m(2, 4, true)];
        assert_eq!(corrections(&before, &now), [(1, 5, 6)]);
    }
}
