//! The session room: one WebSocket per browser tab, one upstream `WatchSession` stream per
//! socket, opened with the caller's token (the quiz service sees who is connected: presence,
//! and the delivery time it counts for fair speed scoring).
//!
//! Server → client: text frames, each a [`QuizEvent`] JSON object with a `type`:
//! `session`, `question_revealed`, `question_closed`, `participant_count`, `leaderboard`,
//! `finished`, `score_update` (the caller's own new score, right after each answer they give
//! here or over REST on this edge), and the replies `answer_receipt` and `error` (a problem
//! with the status the REST route would answer).
//!
//! Client → server: `{"type":"answer","questionId":"…","answer":…}`, with `answer` as in
//! `POST /api/quiz-sessions/{id}/answers`. Answers are taken one at a time per socket, in
//! order. A message that is not that (binary, not JSON, another `type`, over
//! [`MAX_MESSAGE_BYTES`]) is answered with an `error` and the socket stays open; a frame over
//! [`MAX_FRAME_BYTES`] is refused by the protocol layer (the edge never buffers more than
//! that) and the socket closes with 1009.
//!
//! Lifetime: a ping every [`PING_EVERY`]; a client silent (no pong, no message) for
//! [`IDLE_AFTER`] is closed (1001). When the upstream ends the socket closes 1000 after the
//! events before it; when it fails, an `error` goes out and the socket closes 1011; when the
//! edge shuts down, 1001. The socket holds a stream slot (the same caps as SSE) until it
//! ends.

use std::time::Duration;

use axum::{
    extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket},
    http::{HeaderMap, StatusCode},
};
use futures::{SinkExt, Stream, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    QuizEvent,
    answers::{AnswerDoor, parse_answer_object, submit_answer},
};
use crate::{AppState, StreamSlot, problem::Problem};
use ewpm_kit::auth::Caller;

/// The largest client message the room reads; longer ones are answered with an `error`.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;
/// The largest frame or message the protocol layer accepts at all.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// How often the room pings the client.
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// How long a client may stay silent (no pong either) before the room closes.
pub const IDLE_AFTER: Duration = Duration::from_secs(65);
/// Messages waiting for a slow client before the room stops reading upstream for it.
const OUTBOX: usize = 64;
/// How long the room waits for its last messages and close frame to go out.
const FLUSH_WITHIN: Duration = Duration::from_secs(5);

/// One socket's room: who is in it and how to call the quiz service for them.
pub struct Room {
    state: AppState,
    /// The caller's `authorization` (and `traceparent`) only: what upstream calls forward.
    headers: HeaderMap,
    caller: Caller,
    session_id: String,
}

impl Room {
    /// The room of `caller` in session `session_id`, calling with `headers`' token.
    pub fn new(state: AppState, headers: &HeaderMap, caller: Caller, session_id: String) -> Self {
        let mut forwarded = HeaderMap::new();
        for name in [axum::http::header::AUTHORIZATION.as_str(), "traceparent"] {
            if let Some(value) = headers.get(name) {
                forwarded.insert(name, value.clone());
            }
        }
        Self { state, headers: forwarded, caller, session_id }
    }

    /// Runs the room on `socket` until the client leaves, the upstream `events` end, or the
    /// socket breaks; holds `slot` as long.
    pub async fn run(
        self,
        socket: WebSocket,
        events: impl Stream<Item = Result<QuizEvent, tonic::Status>> + Send + 'static,
        slot: StreamSlot,
    ) {
        let _slot = slot;
        let (sink, inbound) = socket.split();
        let (out, outbox) = mpsc::channel::<Message>(OUTBOX);
        let writer = write(sink, outbox);
        let forward = forward(events, out.clone());
        let closing = self.state.closing.clone();
        let read = self.read(inbound, out.clone());
        tokio::pin!(writer, forward, read);
        tokio::select! {
            () = closing.cancelled() => {
                let _ = out.send(close(1001, "the edge is shutting down")).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer).await;
            }
            () = &mut writer => {}
            () = &mut read => {
                // The client left or went quiet: let its close reply go out, then stop.
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer).await;
            }
            () = &mut forward => {
                // The upstream ended: the events before it and the close frame are queued.
                let _ = tokio::time::timeout(FLUSH_WITHIN, &mut writer).await;
            }
        }
    }

    /// Reads the client's messages until it leaves, answering each in order.
    async fn read(
        &self,
        mut inbound: futures::stream::SplitStream<WebSocket>,
        out: mpsc::Sender<Message>,
    ) {
        loop {
            let message = match tokio::time::timeout(IDLE_AFTER, inbound.next()).await {
                Err(_) => {
                    let _ = out.send(close(1001, "idle")).await;
                    return;
                }
                Ok(None) => return,
                Ok(Some(Err(err))) => {
                    // The protocol layer refused a frame (over MAX_FRAME_BYTES, or malformed):
                    // say which, if the socket still takes a close frame.
                    let text = err.to_string();
                    let frame = if text.contains("Space limit") || text.contains("too long") {
                        close(1009, "a message may hold at most 16 KiB")
                    } else {
                        close(1002, "protocol error")
                    };
                    let _ = out.send(frame).await;
                    return;
                }
                Ok(Some(Ok(message))) => message,
            };
            let reply = match message {
                Message::Text(text) => self.handle(text.as_str()).await,
                Message::Binary(_) => vec![refusal(
                    None,
                    Problem::bad_request("message", "must be a JSON text message"),
                )],
                Message::Ping(_) | Message::Pong(_) => Vec::new(),
                Message::Close(_) => {
                    let _ = out.send(Message::Close(None)).await;
                    return;
                }
            };
            for event in reply {
                if out.send(text(&event)).await.is_err() {
                    return;
                }
            }
        }
    }

    /// The replies to one text message.
    async fn handle(&self, message: &str) -> Vec<QuizEvent> {
        let (question_id, answer) = match parse_message(message) {
            Ok(parsed) => parsed,
            Err((question_id, problem)) => return vec![refusal(question_id, *problem)],
        };
        let submitted = submit_answer(
            &self.state,
            &self.headers,
            &self.caller,
            self.session_id.clone(),
            question_id.clone(),
            answer,
            AnswerDoor::Api,
        )
        .await;
        vec![match submitted {
            Ok(receipt) => QuizEvent::AnswerReceipt { question_id, receipt },
            Err(problem) => refusal(Some(question_id), *problem.0),
        }]
    }
}

/// A client message as an answer to a question, or the problem with it (and the question
/// it named, when it named one).
pub fn parse_message(
    message: &str,
) -> Result<(String, ewpm_proto::quiz::v1::Answer), (Option<String>, Box<Problem>)> {
    if message.len() > MAX_MESSAGE_BYTES {
        let detail = format!("a message may hold at most {MAX_MESSAGE_BYTES} bytes");
        return Err((
            None,
            Box::new(Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", detail)),
        ));
    }
    let value: Value = serde_json::from_str(message).map_err(|e| {
        (None, Box::new(Problem::bad_request("message", format!("is not valid JSON: {e}"))))
    })?;
    let question_id = value.get("questionId").and_then(Value::as_str).map(str::to_string);
    match value.get("type").and_then(Value::as_str) {
        Some("answer") => {}
        _ => {
            let problem = Box::new(Problem::bad_request("type", "must be answer"));
            return Err((question_id, problem));
        }
    }
    parse_answer_object(&value, None, "questionId", &["type"])
        .map(|(_, question, answer)| (question, answer))
        .map_err(|problem| (question_id, problem.0))
}

fn refusal(question_id: Option<String>, problem: Problem) -> QuizEvent {
    QuizEvent::Error { question_id, problem }
}

fn text(event: &QuizEvent) -> Message {
    // A QuizEvent always serializes (strings, numbers, and finite floats from the service;
    // serde_json writes a non-finite float as null).
    let json = serde_json::to_string(event).unwrap_or_else(|_| {
        r#"{"type":"error","problem":{"type":"urn:ewpm:problem:internal","title":"Internal Server Error","status":500,"detail":"unserializable event","reason":"INTERNAL"}}"#.to_string()
    });
    Message::Text(Utf8Bytes::from(json))
}

fn close(code: u16, reason: &str) -> Message {
    // A close reason holds at most 123 bytes: cut at a character boundary below that.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason[..end].to_string();
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) }))
}

/// Sends the outbox and a ping every [`PING_EVERY`], until a close frame went out, the outbox
/// closed, or the socket broke.
async fn write(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut outbox: mpsc::Receiver<Message>,
) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        let message = tokio::select! {
            m = outbox.recv() => match m {
                Some(m) => m,
                None => break,
            },
            _ = ping.tick() => Message::Ping(axum::body::Bytes::new()),
        };
        let last = matches!(message, Message::Close(_));
        if sink.send(message).await.is_err() || last {
            break;
        }
    }
    let _ = sink.close().await;
}

/// Queues the upstream's events, then a close frame: 1000 when the session's stream ended,
/// 1011 after an `error` when it failed.
async fn forward(
    events: impl Stream<Item = Result<QuizEvent, tonic::Status>> + Send,
    out: mpsc::Sender<Message>,
) {
    tokio::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if out.send(text(&event)).await.is_err() {
                    return;
                }
            }
            Err(status) => {
                let problem = Problem::from_status(&status, "");
                let reason = problem.reason.clone();
                let _ = out.send(text(&refusal(None, problem))).await;
                let _ = out.send(close(1011, &reason)).await;
                return;
            }
        }
    }
    let _ = out.send(close(1000, "session stream ended")).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(message: &str) -> (Option<String>, u16, Vec<String>) {
        let (question, problem) = parse_message(message).unwrap_err();
        (question, problem.status, problem.errors.into_iter().map(|e| e.field).collect())
    }

    #[test]
    fn an_answer_message_reads_as_a_question_and_an_answer() {
        let (question, answer) =
            parse_message(r#"{"type":"answer","questionId":"q-1","answer":[0,2]}"#).unwrap();
        assert_eq!(question, "q-1");
        assert_eq!(
            answer,
            ewpm_proto::quiz::v1::Answer { choices: vec![0, 2], text: String::new() }
        );
    }

    #[test]
    fn garbage_is_refused_naming_what_is_wrong() {
        assert_eq!(refused("hello"), (None, 400, vec!["message".to_string()]));
        assert_eq!(refused("[]"), (None, 400, vec!["type".to_string()]));
        assert_eq!(
            refused(r#"{"type":"cheat","questionId":"q-1"}"#),
            (Some("q-1".to_string()), 400, vec!["type".to_string()])
        );
        assert_eq!(
            refused(r#"{"type":"answer","questionId":"q-1","answer":{"x":1},"extra":1}"#),
            (Some("q-1".to_string()), 400, vec!["answer".to_string(), "extra".to_string()])
        );
        assert_eq!(
            refused(r#"{"type":"answer"}"#),
            (None, 400, vec!["questionId".to_string(), "answer".to_string()])
        );
        let long = format!(r#"{{"type":"answer","questionId":"{}","answer":1}}"#, "q".repeat(5000));
        let (question, status, _) = refused(&long);
        assert_eq!((question, status), (None, 413));
    }

    #[test]
    fn deep_or_odd_json_never_panics() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(refused(&deep[..MAX_MESSAGE_BYTES]).1, 400);
        assert_eq!(refused("\u{0}").1, 400);
        assert_eq!(refused(r#"{"type":"answer","questionId":"q","answer":1e400}"#).1, 400);
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let Message::Close(Some(frame)) = close(1011, &"é".repeat(200)) else {
            panic!("a close frame")
        };
        assert!(frame.reason.len() <= 123, "{}", frame.reason.len());
    }
}
