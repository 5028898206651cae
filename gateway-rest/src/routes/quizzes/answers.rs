//! Answers and joins: reading an answer's JSON, the HTTP status each SubmitAnswer and
//! JoinSession failure answers on each path, and the score updates an answer sends to the
//! answering user's sockets.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::http::{HeaderMap, StatusCode};
use ewpm_kit::auth::Caller;
use ewpm_proto::quiz::v1 as qpb;
use serde_json::Value;
use tokio::sync::mpsc;
use tonic::Code;

use super::shapes::{AnswerReceiptDto, ScoreUpdateDto, receipt_dto};
use crate::{
    AppState,
    problem::{ApiError, FieldError, Problem},
    upstream,
};

// ---------------------------------------------------------------------------------------
// JSON → proto: answers

/// Where an answer came from: the seed's snake_case path, the REST resource, or the room.
/// Each names its fields its own way and answers a few reasons with its own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerDoor {
    /// `POST /update-score`.
    Seed,
    /// `POST /api/quiz-sessions/{id}/answers`, and the room's `answer` message.
    Api,
}

/// A JSON `answer` as the proto `Answer`: an integer is one choice, an array of integers the
/// choices, a string the text. Anything else is a field error naming `field`.
pub fn parse_answer(value: &Value, field: &str) -> Result<qpb::Answer, FieldError> {
    const SHAPE: &str = "must be a choice index, an array of choice indexes, or a text";
    let bad = |description: &str| FieldError {
        field: field.to_string(),
        description: description.to_string(),
    };
    let index = |v: &Value| v.as_i64().and_then(|n| i32::try_from(n).ok());
    match value {
        Value::Number(_) => index(value)
            .map(|n| qpb::Answer { choices: vec![n], text: String::new() })
            .ok_or_else(|| bad("must be a whole-number choice index")),
        Value::Array(items) => items
            .iter()
            .map(index)
            .collect::<Option<Vec<i32>>>()
            .map(|choices| qpb::Answer { choices, text: String::new() })
            .ok_or_else(|| bad("must hold whole-number choice indexes only")),
        Value::String(text) => Ok(qpb::Answer { choices: Vec::new(), text: text.clone() }),
        _ => Err(bad(SHAPE)),
    }
}

/// A required non-empty string field of `object`.
fn string_field(
    object: &serde_json::Map<String, Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> String {
    match object.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::String(_)) => {
            errors
                .push(FieldError { field: field.into(), description: "must not be empty".into() });
            String::new()
        }
        None | Some(Value::Null) => {
            errors.push(FieldError { field: field.into(), description: "is required".into() });
            String::new()
        }
        Some(_) => {
            errors.push(FieldError { field: field.into(), description: "must be a string".into() });
            String::new()
        }
    }
}

/// An answer message or body: `session` names the session id field (absent when the
/// session comes from the path), `question` and `answer` theirs, and `extra` the keys that
/// may also be present (the room's `type`). Every bad field is reported at once.
pub fn parse_answer_object(
    value: &Value,
    session: Option<&str>,
    question: &str,
    extra: &[&str],
) -> Result<(String, String, qpb::Answer), ApiError> {
    let Some(object) = value.as_object() else {
        return Err(Problem::bad_request("body", "must be a JSON object").into());
    };
    let mut errors = Vec::new();
    let session_id = session.map(|f| string_field(object, f, &mut errors)).unwrap_or_default();
    let question_id = string_field(object, question, &mut errors);
    let answer = match object.get("answer") {
        None | Some(Value::Null) => {
            errors.push(FieldError { field: "answer".into(), description: "is required".into() });
            None
        }
        Some(v) => parse_answer(v, "answer").map_err(|e| errors.push(e)).ok(),
    };
    let known =
        |k: &str| session == Some(k) || k == question || k == "answer" || extra.contains(&k);
    for key in object.keys().filter(|k| !known(k)) {
        errors.push(FieldError {
            field: key.clone(),
            description: "is not a field of this body".into(),
        });
    }
    match answer {
        Some(answer) if errors.is_empty() => Ok((session_id, question_id, answer)),
        _ => Err(Problem::invalid(errors).into()),
    }
}

// ---------------------------------------------------------------------------------------
// gRPC status → the statuses these paths promise

fn with_status(mut p: Problem, status: StatusCode) -> Problem {
    p.status = status.as_u16();
    p.title = status.canonical_reason().unwrap_or("Error").to_string();
    p
}

/// Renames the service's field paths (already camelCase) to this path's names; recomputes
/// the detail from them.
fn rename_fields(mut p: Problem, rename: impl Fn(&str) -> Option<&'static str>) -> Problem {
    if p.errors.is_empty() {
        return p;
    }
    for e in &mut p.errors {
        let top = e.field.split(['.', '[']).next().unwrap_or_default();
        if let Some(name) = rename(&e.field).or_else(|| rename(top)) {
            e.field = name.to_string();
        }
    }
    p.detail = p
        .errors
        .iter()
        .map(|e| format!("{} {}", e.field, e.description))
        .collect::<Vec<_>>()
        .join("; ");
    p
}

/// The problem for a JoinSession failure, on both join paths: an unknown session (or a
/// missing or malformed id) is 400, as the seed says; already joined, and a session not
/// joinable now (not open yet, finished, or running with late join off), are 409.
pub fn join_problem(status: &tonic::Status) -> Problem {
    let p = Problem::from_status(status, "");
    let p = match (status.code(), p.reason.as_str()) {
        (_, "SESSION_NOT_FOUND") | (Code::NotFound, _) => with_status(p, StatusCode::BAD_REQUEST),
        (_, "SESSION_NOT_JOINABLE") | (_, "ALREADY_JOINED") => with_status(p, StatusCode::CONFLICT),
        _ => p,
    };
    rename_fields(p, |f| match f {
        "sessionId" => Some("id"),
        _ => None,
    })
}

/// The problem for a SubmitAnswer failure: not a participant is 403; a question of another
/// quiz, one not revealed yet or closed, and a second answer are 400 (the seed's statuses),
/// each with its reason. An unknown session is 400 on the seed path (the id is a body field)
/// and 404 on the resource path. Field names are the door's.
pub fn answer_problem(status: &tonic::Status, door: AnswerDoor) -> Problem {
    let p = Problem::from_status(status, "");
    let p = match (p.reason.as_str(), door) {
        (
            "QUESTION_NOT_IN_QUIZ"
            | "QUESTION_NOT_REVEALED"
            | "QUESTION_CLOSED"
            | "ALREADY_ANSWERED",
            _,
        ) => with_status(p, StatusCode::BAD_REQUEST),
        ("NOT_A_PARTICIPANT", _) => with_status(p, StatusCode::FORBIDDEN),
        (_, AnswerDoor::Seed) if status.code() == Code::NotFound => {
            with_status(p, StatusCode::BAD_REQUEST)
        }
        _ => p,
    };
    match door {
        AnswerDoor::Seed => rename_fields(p, |f| match f {
            "sessionId" => Some("quiz_session_id"),
            "questionId" => Some("question_id"),
            "answer" => Some("answer"),
            _ => None,
        }),
        AnswerDoor::Api => rename_fields(p, |f| match f {
            "sessionId" => Some("id"),
            "answer" => Some("answer"),
            _ => None,
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Score updates between the handlers of this edge

type Subscribers = HashMap<(String, String), HashMap<u64, mpsc::Sender<ScoreUpdateDto>>>;

/// The sockets of each (session, user) on this edge, for their score updates.
#[derive(Debug, Clone, Default)]
pub struct ScoreHub {
    subscribers: Arc<Mutex<Subscribers>>,
    next: Arc<AtomicU64>,
}

/// A socket's place in the [`ScoreHub`]; dropping it leaves.
#[derive(Debug)]
pub struct ScoreSubscription {
    hub: ScoreHub,
    key: (String, String),
    id: u64,
}

impl Drop for ScoreSubscription {
    fn drop(&mut self) {
        let mut subscribers = self.hub.lock();
        if let Some(mine) = subscribers.get_mut(&self.key) {
            mine.remove(&self.id);
            if mine.is_empty() {
                subscribers.remove(&self.key);
            }
        }
    }
}

/// A session id as one key however the client spelled it (UUIDs in any case).
fn session_key(id: &str) -> String {
    uuid::Uuid::parse_str(id.trim()).map(|u| u.to_string()).unwrap_or_else(|_| id.to_string())
}

impl ScoreHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Score updates of `user` in `session` from now on, until the subscription drops.
    pub fn subscribe(
        &self,
        session: &str,
        user: &str,
    ) -> (ScoreSubscription, mpsc::Receiver<ScoreUpdateDto>) {
        let (tx, rx) = mpsc::channel(8);
        let key = (session_key(session), user.to_string());
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(key.clone()).or_default().insert(id, tx);
        (ScoreSubscription { hub: self.clone(), key, id }, rx)
    }

    /// Hands `update` to every socket of `user` in its session. Never waits: a socket whose
    /// queue is full misses it (its next update carries the score again).
    pub fn publish(&self, user: &str, update: &ScoreUpdateDto) {
        let key = (session_key(&update.session_id), user.to_string());
        if let Some(mine) = self.lock().get(&key) {
            for tx in mine.values() {
                let _ = tx.try_send(update.clone());
            }
        }
    }

    /// Sockets subscribed now.
    pub fn subscribers(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }
}

/// Calls SubmitAnswer with `headers` and tells the caller's sockets their new score.
pub(crate) async fn submit_answer(
    state: &AppState,
    headers: &HeaderMap,
    caller: &Caller,
    session_id: String,
    question_id: String,
    answer: qpb::Answer,
    door: AnswerDoor,
) -> Result<AnswerReceiptDto, ApiError> {
    let request = qpb::SubmitAnswerRequest {
        session_id: session_id.clone(),
        question_id: question_id.clone(),
        answer: Some(answer),
    };
    let r = state
        .quiz
        .clone()
        .submit_answer(upstream::request(headers, request))
        .await
        .map_err(|status| ApiError::from(answer_problem(&status, door)))?;
    let receipt = receipt_dto(r.into_inner());
    state.score_updates.publish(
        &caller.user_id,
        &ScoreUpdateDto {
            session_id,
            question_id,
            answer_id: receipt.answer_id.clone(),
            correct: receipt.correct,
            points: receipt.points,
            score: receipt.score,
            streak: receipt.streak,
        },
    );
    Ok(receipt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::quizzes::shapes::{QuizEvent, receipt_dto};
    use ewpm_kit::error::{FieldViolation, invalid_argument, status};
    use serde_json::json;

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn choices(c: &[i32]) -> qpb::Answer {
        qpb::Answer { choices: c.to_vec(), text: String::new() }
    }

    fn field_names(p: &Problem) -> Vec<&str> {
        p.errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn an_answer_is_a_choice_an_array_of_choices_or_a_text() {
        assert_eq!(parse_answer(&json!(2), "answer"), Ok(choices(&[2])));
        assert_eq!(parse_answer(&json!([0, 3]), "answer"), Ok(choices(&[0, 3])));
        assert_eq!(parse_answer(&json!([]), "answer"), Ok(choices(&[])));
        assert_eq!(
            parse_answer(&json!("Paris"), "answer"),
            Ok(qpb::Answer { choices: Vec::new(), text: "Paris".into() })
        );
    }

    #[test]
    fn anything_else_as_an_answer_is_a_field_error_naming_the_field() {
        for bad in [
            json!(null),
            json!(true),
            json!(1.5),
            json!(1e10),
            json!({"choice": 1}),
            json!([1, "2"]),
            json!([[1]]),
            json!(4_294_967_296_i64),
        ] {
            let err = parse_answer(&bad, "answer").unwrap_err();
            assert_eq!(err.field, "answer", "{bad}");
        }
    }

    #[test]
    fn a_seed_body_missing_every_field_names_them_all_in_snake_case() {
        let err = parse_answer_object(&json!({}), Some("quiz_session_id"), "question_id", &[])
            .unwrap_err();
        assert_eq!(err.0.status, 400);
        assert_eq!(field_names(&err.0), ["quiz_session_id", "question_id", "answer"]);
        assert_eq!(
            err.0.detail,
            "quiz_session_id is required; question_id is required; answer is required"
        );
    }

    #[test]
    fn a_seed_body_reads_its_three_fields() {
        let body = json!({"quiz_session_id": " s-1 ", "question_id": "q-1", "answer": [1, 2]});
        let parsed =
            parse_answer_object(&body, Some("quiz_session_id"), "question_id", &[]).unwrap();
        assert_eq!(parsed, ("s-1".to_string(), "q-1".to_string(), choices(&[1, 2])));
    }

    #[test]
    fn a_body_with_wrong_types_and_unknown_keys_names_each_field() {
        let body = json!({"questionId": 7, "answer": false, "userId": "u-1"});
        let err = parse_answer_object(&body, None, "questionId", &[]).unwrap_err();
        assert_eq!(field_names(&err.0), ["questionId", "answer", "userId"]);
        let err = parse_answer_object(&json!([1]), None, "questionId", &[]).unwrap_err();
        assert_eq!(field_names(&err.0), ["body"]);
        let err =
            parse_answer_object(&json!({"questionId": " ", "answer": 1}), None, "questionId", &[])
                .unwrap_err();
        assert_eq!(err.0.errors[0].description, "must not be empty");
    }

    #[test]
    fn join_failures_answer_the_seeds_statuses() {
        let cases = [
            (
                status(Code::NotFound, "SESSION_NOT_FOUND", "no such session"),
                400,
                "SESSION_NOT_FOUND",
            ),
            (status(Code::AlreadyExists, "ALREADY_JOINED", "joined"), 409, "ALREADY_JOINED"),
            (
                status(Code::FailedPrecondition, "SESSION_NOT_JOINABLE", "finished"),
                409,
                "SESSION_NOT_JOINABLE",
            ),
            (status(Code::PermissionDenied, "PERMISSION_DENIED", "no"), 403, "PERMISSION_DENIED"),
            (tonic::Status::unavailable("down"), 503, "UPSTREAM_UNAVAILABLE"),
        ];
        for (status, http, reason) in cases {
            let p = join_problem(&status);
            assert_eq!((p.status, p.reason.as_str()), (http, reason), "{status:?}");
        }
        let p = join_problem(&status(Code::FailedPrecondition, "SESSION_NOT_JOINABLE", "x"));
        assert_eq!(p.title, "Conflict");
    }

    #[test]
    fn a_missing_or_malformed_session_id_on_join_is_400_naming_the_path_id() {
        let status = invalid_argument(
            "INVALID_ARGUMENT",
            &[FieldViolation::new("session_id", "must be a UUID")],
        );
        let p = join_problem(&status);
        assert_eq!(p.status, 400);
        assert_eq!(
            p.errors,
            vec![FieldError { field: "id".into(), description: "must be a UUID".into() }]
        );
        assert_eq!(p.detail, "id must be a UUID");
    }

    #[test]
    fn answer_failures_answer_the_seeds_statuses_on_both_paths() {
        let cases = [
            (Code::PermissionDenied, "NOT_A_PARTICIPANT", 403, 403),
            (Code::InvalidArgument, "QUESTION_NOT_IN_QUIZ", 400, 400),
            (Code::FailedPrecondition, "QUESTION_NOT_REVEALED", 400, 400),
            (Code::FailedPrecondition, "QUESTION_CLOSED", 400, 400),
            (Code::AlreadyExists, "ALREADY_ANSWERED", 400, 400),
            (Code::NotFound, "SESSION_NOT_FOUND", 400, 404),
            (Code::FailedPrecondition, "SESSION_NOT_RUNNING", 422, 422),
        ];
        for (code, reason, seed, api) in cases {
            let s = status(code, reason, "x");
            let on_seed = answer_problem(&s, AnswerDoor::Seed);
            let on_api = answer_problem(&s, AnswerDoor::Api);
            assert_eq!(
                (on_seed.status, on_seed.reason.as_str(), on_api.status, on_api.reason.as_str()),
                (seed, reason, api, reason),
            );
        }
    }

    #[test]
    fn the_services_field_paths_become_each_paths_own_names() {
        let status = invalid_argument(
            "INVALID_ARGUMENT",
            &[
                FieldViolation::new("session_id", "must be a UUID"),
                FieldViolation::new("question_id", "must be a UUID"),
                FieldViolation::new("answer.text", "must be 1 to 200 characters"),
                FieldViolation::new("answer.choices[0]", "is not a choice"),
            ],
        );
        let seed = answer_problem(&status, AnswerDoor::Seed);
        assert_eq!(field_names(&seed), ["quiz_session_id", "question_id", "answer", "answer"]);
        let api = answer_problem(&status, AnswerDoor::Api);
        assert_eq!(field_names(&api), ["id", "questionId", "answer", "answer"]);
        assert!(api.detail.starts_with("id must be a UUID; questionId must be a UUID"));
    }

    #[test]
    fn room_replies_and_score_updates_are_tagged_objects() {
        let receipt = receipt_dto(qpb::SubmitAnswerResponse {
            answer_id: "a-1".into(),
            correct: None,
            points: 0.0,
            score: 250.5,
            streak: 0,
            elapsed_ms: 1234,
            accept_time: at(1_767_225_601),
        });
        assert_eq!(
            serde_json::to_value(QuizEvent::AnswerReceipt { question_id: "q-1".into(), receipt })
                .unwrap(),
            json!({"type": "answer_receipt", "questionId": "q-1", "receipt": {
                "answerId": "a-1", "correct": null, "points": 0.0, "score": 250.5, "streak": 0,
                "elapsedMs": 1234, "acceptTime": "2026-01-01T00:00:01Z"}})
        );
        let problem = answer_problem(
            &status(Code::AlreadyExists, "ALREADY_ANSWERED", "twice"),
            AnswerDoor::Api,
        );
        assert_eq!(
            serde_json::to_value(QuizEvent::Error { question_id: Some("q-1".into()), problem })
                .unwrap(),
            json!({"type": "error", "questionId": "q-1", "problem": {
                "type": "urn:ewpm:problem:already-answered", "title": "Bad Request", "status": 400,
                "detail": "twice", "reason": "ALREADY_ANSWERED"}})
        );
        let update = ScoreUpdateDto {
            session_id: "s-1".into(),
            question_id: "q-1".into(),
            answer_id: "a-1".into(),
            correct: Some(true),
            points: 900.0,
            score: 900.0,
            streak: 1,
        };
        assert_eq!(
            serde_json::to_value(QuizEvent::ScoreUpdate { update }).unwrap(),
            json!({"type": "score_update", "update": {"sessionId": "s-1", "questionId": "q-1",
                   "answerId": "a-1", "correct": true, "points": 900.0, "score": 900.0, "streak": 1}})
        );
    }

    #[test]
    fn score_updates_reach_every_socket_of_the_user_in_that_session_only() {
        let hub = ScoreHub::default();
        let id = "0194d3c2-5b1e-7c4f-9a51-2d3e4f5a6b7c";
        let (tab1, mut rx1) = hub.subscribe(id, "ann");
        let (_tab2, mut rx2) = hub.subscribe(&id.to_ascii_uppercase(), "ann");
        let (_bob, mut bob) = hub.subscribe(id, "bob");
        let update = ScoreUpdateDto {
            session_id: id.into(),
            question_id: "q".into(),
            answer_id: "a".into(),
            correct: Some(true),
            points: 1.0,
            score: 1.0,
            streak: 1,
        };
        hub.publish("ann", &update);
        assert_eq!(rx1.try_recv().unwrap(), update);
        assert_eq!(rx2.try_recv().unwrap(), update);
        assert!(bob.try_recv().is_err());
        assert_eq!(hub.subscribers(), 3);
        drop(tab1);
        assert_eq!(hub.subscribers(), 2);
    }
}
