//! The `progress` queue's wire format: an item ([`Queued`]) travels as an
//! `ewpm.progress.v1.QueuedEntry`, and what an idempotency key remembers ([`Remembered`]) is
//! stored as an `ewpm.progress.v1.IdempotencyRecord`.
//!
//! Upgrade safety: the previous release queued and remembered JSON. Items it queued may still
//! sit in a Redis stream or the embedded queue file when a writer of this release starts, and its
//! idempotency records live for 24 hours, so decoding tries protobuf first and falls back to
//! that JSON. The fallback can go in the release after the one that first writes protobuf
//! (once every queue has drained and 24 hours have passed since the upgrade).

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use ewpm_kit::timestamp;
use ewpm_proto::progress::v1::{
    IdempotencyRecord, QueuedActivity, QueuedEntry, QueuedProgress, queued_entry::Item,
};
use prost::Message;
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    activity::ActivityKind,
    domain::{Entry, LoggedActivity, Queued},
};

/// What an idempotency key remembers: the first request's fingerprint and what it queued
/// (its answer).
#[derive(Debug, Clone, PartialEq)]
pub struct Remembered {
    /// The first request's fingerprint.
    pub fingerprint: String,
    /// What the first request queued.
    pub answer: Queued,
}

/// The queue payload of `item`.
pub fn encode(item: &Queued) -> Vec<u8> {
    to_proto(item).encode_to_vec()
}

/// The item of a queue payload: protobuf, or the previous release's JSON.
pub fn decode(payload: &[u8]) -> anyhow::Result<Queued> {
    let proto =
        QueuedEntry::decode(payload).context("not a protobuf QueuedEntry").and_then(from_proto);
    match proto {
        Ok(item) => Ok(item),
        // Remove with the JSON form (see the module doc).
        Err(err) => serde_json::from_slice(payload)
            .map_err(|_| err.context("nor a JSON progress entry or logged activity")),
    }
}

/// The stored form of `record`.
pub fn encode_record(record: &Remembered) -> Vec<u8> {
    let Remembered { fingerprint, answer } = record;
    IdempotencyRecord { fingerprint: fingerprint.clone(), answer: Some(to_proto(answer)) }
        .encode_to_vec()
}

/// A stored idempotency record: protobuf, or the previous release's JSON.
pub fn decode_record(stored: &[u8]) -> anyhow::Result<Remembered> {
    let proto = IdempotencyRecord::decode(stored)
        .context("not a protobuf IdempotencyRecord")
        .and_then(|IdempotencyRecord { fingerprint, answer }| {
            let answer = from_proto(answer.context("an idempotency record without an answer")?)?;
            Ok(Remembered { fingerprint, answer })
        });
    match proto {
        Ok(record) => Ok(record),
        // Remove with the JSON form (see the module doc).
        Err(err) => {
            #[derive(Deserialize)]
            struct Json {
                fingerprint: String,
                answer: Queued,
            }
            let Json { fingerprint, answer } = serde_json::from_slice(stored)
                .map_err(|_| err.context("nor a JSON idempotency record"))?;
            Ok(Remembered { fingerprint, answer })
        }
    }
}

fn to_proto(item: &Queued) -> QueuedEntry {
    let item = match item {
        Queued::Progress(Entry {
            id,
            challenge_id,
            user_id,
            employer_id,
            value,
            occurred_at,
            accepted_at,
        }) => Item::Progress(QueuedProgress {
            entry_id: id.to_string(),
            challenge_id: challenge_id.to_string(),
            user_id: user_id.clone(),
            employer_id: employer_id.clone().unwrap_or_default(),
            value: *value,
            occurred_at: Some(timestamp::to_proto(*occurred_at)),
            accepted_at: Some(timestamp::to_proto(*accepted_at)),
        }),
        Queued::Activity(LoggedActivity {
            id,
            kind,
            user_id,
            employer_id,
            value,
            note,
            occurred_at,
            accepted_at,
        }) => Item::Activity(QueuedActivity {
            activity_id: id.to_string(),
            kind: kind.to_proto(),
            user_id: user_id.clone(),
            employer_id: employer_id.clone().unwrap_or_default(),
            value: *value,
            note: note.clone(),
            occurred_at: Some(timestamp::to_proto(*occurred_at)),
            accepted_at: Some(timestamp::to_proto(*accepted_at)),
        }),
    };
    QueuedEntry { item: Some(item) }
}

fn from_proto(QueuedEntry { item }: QueuedEntry) -> anyhow::Result<Queued> {
    Ok(match item.context("a queued entry with neither progress nor activity")? {
        Item::Progress(QueuedProgress {
            entry_id,
            challenge_id,
            user_id,
            employer_id,
            value,
            occurred_at,
            accepted_at,
        }) => Queued::Progress(Entry {
            id: uuid("entry_id", &entry_id)?,
            challenge_id: uuid("challenge_id", &challenge_id)?,
            user_id,
            employer_id: non_empty(employer_id),
            value,
            occurred_at: at("occurred_at", occurred_at)?,
            accepted_at: at("accepted_at", accepted_at)?,
        }),
        Item::Activity(QueuedActivity {
            activity_id,
            kind,
            user_id,
            employer_id,
            value,
            note,
            occurred_at,
            accepted_at,
        }) => Queued::Activity(LoggedActivity {
            id: uuid("activity_id", &activity_id)?,
            kind: ActivityKind::from_proto(kind)
                .filter(|k| *k != ActivityKind::ChallengeProgress)
                .ok_or_else(|| anyhow!("kind {kind} is not a kind of logged activity"))?,
            user_id,
            employer_id: non_empty(employer_id),
            value,
            note,
            occurred_at: at("occurred_at", occurred_at)?,
            accepted_at: at("accepted_at", accepted_at)?,
        }),
    })
}

fn uuid(field: &str, raw: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(raw).with_context(|| format!("{field} {raw:?} is not a UUID"))
}

fn at(field: &str, ts: Option<prost_types::Timestamp>) -> anyhow::Result<DateTime<Utc>> {
    ts.as_ref()
        .and_then(timestamp::from_proto)
        .with_context(|| format!("{field} missing or invalid"))
}

fn non_empty(raw: String) -> Option<String> {
    (!raw.is_empty()).then_some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw).unwrap().to_utc()
    }

    fn entry() -> Queued {
        Queued::Progress(Entry {
            id: Uuid::now_v7(),
            challenge_id: Uuid::now_v7(),
            user_id: "u".into(),
            employer_id: Some("acme".into()),
            value: 3.5,
            occurred_at: at("2026-11-22T10:00:00.123456789Z"),
            accepted_at: at("2026-11-22T10:00:01Z"),
        })
    }

    fn activity() -> Queued {
        Queued::Activity(LoggedActivity {
            id: Uuid::now_v7(),
            kind: ActivityKind::Birth,
            user_id: "u".into(),
            employer_id: None,
            value: None,
            note: "twins\n".into(),
            occurred_at: at("2026-11-22T10:00:00Z"),
            accepted_at: at("2026-11-22T10:00:01Z"),
        })
    }

    fn weight() -> Queued {
        Queued::Activity(LoggedActivity {
            id: Uuid::now_v7(),
            kind: ActivityKind::Weight,
            user_id: "u".into(),
            employer_id: Some("acme".into()),
            value: Some(0.0),
            note: String::new(),
            occurred_at: at("2026-11-22T10:00:00Z"),
            accepted_at: at("2026-11-22T10:00:01Z"),
        })
    }

    #[test]
    fn every_queued_item_round_trips_through_protobuf() {
        for item in [entry(), activity(), weight()] {
            let payload = encode(&item);
            assert_eq!(QueuedEntry::decode(payload.as_slice()).unwrap(), to_proto(&item));
            assert_eq!(decode(&payload).unwrap(), item);
        }
    }

    #[test]
    fn an_item_queued_as_json_by_the_previous_release_still_decodes() {
        for item in [entry(), activity(), weight()] {
            let json = serde_json::to_vec(&item).unwrap();
            assert_eq!(decode(&json).unwrap(), item);
        }
    }

    #[test]
    fn a_payload_that_is_neither_protobuf_nor_json_is_an_error() {
        assert!(decode(b"not an entry").is_err());
        assert!(decode(&QueuedEntry { item: None }.encode_to_vec()).is_err());
        let mut progress_as_activity = to_proto(&activity());
        if let Some(Item::Activity(a)) = &mut progress_as_activity.item {
            a.kind = ActivityKind::ChallengeProgress.to_proto();
        }
        assert!(decode(&progress_as_activity.encode_to_vec()).is_err());
    }

    #[test]
    fn an_idempotency_record_round_trips_through_protobuf() {
        for answer in [entry(), activity()] {
            let record = Remembered { fingerprint: "f|1".into(), answer };
            assert_eq!(decode_record(&encode_record(&record)).unwrap(), record);
        }
    }

    #[test]
    fn an_idempotency_record_stored_as_json_by_the_previous_release_still_decodes() {
        for answer in [entry(), activity()] {
            // The previous release's form: `{"fingerprint": …, "answer": <Entry | LoggedActivity>}`.
            let json = match &answer {
                Queued::Progress(e) => serde_json::json!({"fingerprint": "f|1", "answer": e}),
                Queued::Activity(a) => serde_json::json!({"fingerprint": "f|1", "answer": a}),
            };
            let stored = serde_json::to_vec(&json).unwrap();
            assert_eq!(
                decode_record(&stored).unwrap(),
                Remembered { fingerprint: "f|1".into(), answer }
            );
        }
        assert!(decode_record(b"{}").is_err());
    }
}
