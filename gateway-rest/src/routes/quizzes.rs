//! REST routes of live quizzes: authoring (`/api/quizzes`), hosting and playing sessions
//! (`/api/quiz-sessions`), the seed's own paths (`POST /quiz-session/{id}/join`,
//! `POST /update-score`), the session's events as Server-Sent Events, and the session room as
//! a WebSocket (see [`room`]).
//!
//! Every route forwards the caller's token to the quiz service, which decides who may do
//! what. The edge only reads shapes: it maps JSON to proto and back, and picks the HTTP
//! status the seed asks for where it differs from the platform's gRPC → HTTP table (a join of
//! an unknown session is 400, a second answer 400, not 404 and 409).
//!
//! # Layout
//! - this file: the handlers and their OpenAPI documentation.
//! - [`shapes`]: the JSON shapes and their mapping from proto (the SSE and room events too).
//! - [`answers`]: answer JSON → proto, the status each JoinSession and SubmitAnswer failure
//!   answers per path, and [`ScoreHub`].
//! - [`room`]: the WebSocket room.
//!
//! # Score updates
//!
//! The seed's "Score update" event reaches the answering user's own sockets right after an
//! answer is taken, whether it came over the socket or over REST. [`ScoreHub`] carries them
//! between the handlers of this edge process: with several edge replicas, a REST answer
//! reaches only the sockets held by the replica that took it (the quiz service's
//! `WatchSession` has no per-caller event that would carry it across replicas).

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use ewpm_kit::auth::Caller;
use ewpm_proto::{leaderboard::v1 as lpb, quiz::v1 as qpb};
use futures::{Stream, StreamExt};
use serde_json::Value;

use crate::{
    AppState,
    challenges::{parse_body, parse_page_size},
    leaderboards::{BoardQuery, entry_dto, named_period, page_request},
    problem::{ApiError, ApiResult, FieldError, Problem},
    upstream,
};

pub mod answers;
pub mod room;
pub mod shapes;

use answers::submit_answer;
pub use answers::{
    AnswerDoor, ScoreHub, ScoreSubscription, answer_problem, join_problem, parse_answer,
    parse_answer_object,
};
pub use shapes::*;
use shapes::{finished_dto, parse_kind, revealed_dto, scoring_proto, standing_dto, team_dto};

// ---------------------------------------------------------------------------------------
// Routes: the seed's paths

/// Joins a quiz session as the caller (the seed's path).
#[utoipa::path(
    post, path = "/quiz-session/{id}/join", tag = "quizzes",
    params(("id" = String, Path, description = "Quiz session id")),
    responses(
        (status = 200, description = "Joined: the caller's participant", body = ParticipantDto),
        (status = 400, description = "The session does not exist (or the caller may not see it), or the id is missing or malformed (`SESSION_NOT_FOUND`, `INVALID_ARGUMENT`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The caller already joined (`ALREADY_JOINED`), or the session's state does not admit joins: not open yet, finished, or running with late join off (`SESSION_NOT_JOINABLE`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn seed_join(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<ParticipantDto>> {
    join(&state, &headers, id, String::new()).await
}

async fn join(
    state: &AppState,
    headers: &HeaderMap,
    session_id: String,
    team: String,
) -> ApiResult<Json<ParticipantDto>> {
    let request = qpb::JoinSessionRequest { session_id, team };
    let r = state
        .quiz
        .clone()
        .join_session(upstream::request(headers, request))
        .await
        .map_err(|status| ApiError::from(join_problem(&status)))?;
    Ok(Json(participant_dto(r.into_inner().participant.unwrap_or_default())))
}

/// Answers a question of a quiz session as the caller (the seed's path and snake_case body).
#[utoipa::path(
    post, path = "/update-score", tag = "quizzes",
    request_body(content = UpdateScoreBody, description = "`answer`: a choice index, an array of choice indexes (multiple choice) or a text (short text)"),
    responses(
        (status = 200, description = "Taken and scored: the receipt", body = AnswerReceiptDto),
        (status = 400, description = "A missing or bad field (field errors), an unknown session, a question of another quiz (`QUESTION_NOT_IN_QUIZ`), not revealed yet (`QUESTION_NOT_REVEALED`) or closed (`QUESTION_CLOSED`), or answered already (`ALREADY_ANSWERED`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller did not join the session (`NOT_A_PARTICIPANT`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update_score(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<AnswerReceiptDto>> {
    let value = json_value(&body)?;
    let (session_id, question_id, answer) =
        parse_answer_object(&value, Some("quiz_session_id"), "question_id", &[])?;
    let receipt =
        submit_answer(&state, &headers, &caller, session_id, question_id, answer, AnswerDoor::Seed)
            .await?;
    Ok(Json(receipt))
}

fn json_value(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::bad_request("body", "must be a JSON object").into());
    }
    serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request("body", format!("is not valid JSON: {e}")).into())
}

// ---------------------------------------------------------------------------------------
// Routes: quizzes

/// Creates a quiz with its ordered questions.
#[utoipa::path(
    post, path = "/api/quizzes", tag = "quizzes",
    request_body = CreateQuizBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry key: a retry returns the first result")),
    responses(
        (status = 201, description = "Created", body = QuizDto),
        (status = 400, description = "Invalid fields (all reported at once, e.g. `questions[0].correctChoices`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an author (admins; employer admins for their own employer)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_quiz(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let CreateQuizBody { title, employer_id, questions, idempotency_key } = parse_body(&body)?;
    let mut bad = Vec::new();
    let questions = questions
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            let QuestionBody {
                text,
                kind,
                choices,
                correct_choices,
                accepted_answers,
                points,
                multiplier,
                wrong_penalty,
                time_limit_secs,
            } = q;
            let kind = parse_kind(kind.as_deref()).unwrap_or_else(|| {
                bad.push(FieldError {
                    field: format!("questions[{i}].kind"),
                    description: "must be single_choice, multiple_choice, poll or short_text"
                        .into(),
                });
                qpb::QuestionKind::Unspecified
            });
            qpb::Question {
                id: String::new(),
                text,
                kind: kind as i32,
                choices,
                correct_choices,
                accepted_answers,
                points,
                multiplier,
                wrong_penalty,
                time_limit_secs,
            }
        })
        .collect();
    if !bad.is_empty() {
        return Err(Problem::invalid(bad).into());
    }
    let request = qpb::CreateQuizRequest {
        title,
        employer_id: employer_id.unwrap_or_default(),
        questions,
        idempotency_key: idempotency_key
            .or_else(|| upstream::idempotency_key(&headers))
            .unwrap_or_default(),
    };
    let r = state.quiz.clone().create_quiz(upstream::request(&headers, request)).await?;
    let dto = quiz_dto(r.into_inner().quiz.unwrap_or_default());
    let location = format!("/api/quizzes/{}", dto.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(dto)).into_response())
}

/// Lists the quizzes the caller may author, newest first (without their questions).
#[utoipa::path(
    get, path = "/api/quizzes", tag = "quizzes",
    params(QuizListQuery),
    responses(
        (status = 200, description = "One page", body = QuizPage),
        (status = 400, description = "Bad page size or token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_quizzes(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<QuizListQuery>,
) -> ApiResult<Json<QuizPage>> {
    let QuizListQuery { page_size, page_token } = q;
    let request = qpb::ListQuizzesRequest {
        page_size: parse_page_size(page_size.as_deref(), "pageSize")?,
        page_token: page_token.unwrap_or_default(),
    };
    let r = state.quiz.clone().list_quizzes(upstream::request(&headers, request)).await?;
    let r = r.into_inner();
    Ok(Json(QuizPage {
        quizzes: r.quizzes.into_iter().map(quiz_dto).collect(),
        next_page_token: r.next_page_token,
    }))
}

/// A quiz with its questions and their answers (authors only).
#[utoipa::path(
    get, path = "/api/quizzes/{id}", tag = "quizzes",
    params(("id" = String, Path, description = "Quiz id")),
    responses(
        (status = 200, description = "The quiz", body = QuizDto),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such quiz the caller may author", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_quiz(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<QuizDto>> {
    let request = qpb::GetQuizRequest { id };
    let r = state.quiz.clone().get_quiz(upstream::request(&headers, request)).await?;
    Ok(Json(quiz_dto(r.into_inner().quiz.unwrap_or_default())))
}

// ---------------------------------------------------------------------------------------
// Routes: sessions

/// Creates a session of a quiz, `scheduled` (hosts only).
#[utoipa::path(
    post, path = "/api/quiz-sessions", tag = "quizzes",
    request_body = CreateSessionBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry key: a retry returns the first result")),
    responses(
        (status = 201, description = "Created", body = SessionDto),
        (status = 400, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a host of this quiz", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such quiz visible to the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let CreateSessionBody { quiz_id, late_join, team_mode, scoring, idempotency_key } =
        parse_body(&body)?;
    let request = qpb::CreateSessionRequest {
        quiz_id,
        late_join,
        team_mode,
        scoring: scoring.map(scoring_proto),
        idempotency_key: idempotency_key
            .or_else(|| upstream::idempotency_key(&headers))
            .unwrap_or_default(),
    };
    let r = state.quiz.clone().create_session(upstream::request(&headers, request)).await?;
    let dto = session_dto(r.into_inner().session.unwrap_or_default());
    let location = format!("/api/quiz-sessions/{}", dto.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(dto)).into_response())
}

/// What the caller may see of a session: hosts everything; participants the revealed
/// questions (without answers until each closes) and their own standing.
#[utoipa::path(
    get, path = "/api/quiz-sessions/{id}", tag = "quizzes",
    params(("id" = String, Path, description = "Quiz session id")),
    responses(
        (status = 200, description = "The session as the caller may see it", body = SessionViewDto),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session visible to the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionViewDto>> {
    let request = qpb::GetSessionRequest { session_id: id };
    let r = state.quiz.clone().get_session(upstream::request(&headers, request)).await?;
    let qpb::GetSessionResponse { session, questions, host_questions, me, standings, teams } =
        r.into_inner();
    Ok(Json(SessionViewDto {
        session: session_dto(session.unwrap_or_default()),
        questions: questions.into_iter().map(revealed_dto).collect(),
        host_questions: host_questions.into_iter().map(question_dto).collect(),
        me: me.map(participant_dto),
        standings: standings.into_iter().map(standing_dto).collect(),
        teams: teams.into_iter().map(team_dto).collect(),
    }))
}

/// Opens a `scheduled` session for joining (hosts only).
#[utoipa::path(
    post, path = "/api/quiz-sessions/{id}/open", tag = "quizzes",
    params(("id" = String, Path, description = "Quiz session id")),
    responses(
        (status = 200, description = "The session, `open`", body = SessionDto),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session visible to the caller", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The session is not `scheduled` (`SESSION_STATE`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another host action changed the session at the same moment (`CONCURRENT_CHANGE`); retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn open_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionDto>> {
    let request = qpb::OpenSessionRequest { session_id: id };
    let r = state.quiz.clone().open_session(upstream::request(&headers, request)).await?;
    Ok(Json(session_dto(r.into_inner().session.unwrap_or_default())))
}

/// Starts an `open` session (`running`); no question is revealed yet (hosts only).
#[utoipa::path(
    post, path = "/api/quiz-sessions/{id}/start", tag = "quizzes",
    params(("id" = String, Path, description = "Quiz session id")),
    responses(
        (status = 200, description = "The session, `running`", body = SessionDto),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session visible to the caller", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The session is not `open` (`SESSION_STATE`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another host action changed the session at the same moment (`CONCURRENT_CHANGE`); retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn start_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionDto>> {
    let request = qpb::StartSessionRequest { session_id: id };
    let r = state.quiz.clone().start_session(upstream::request(&headers, request)).await?;
    Ok(Json(session_dto(r.into_inner().session.unwrap_or_default())))
}

/// Closes the open question, if any, and reveals the next one; its clock starts now (hosts
/// only).
#[utoipa::path(
    post, path = "/api/quiz-sessions/{id}/reveal", tag = "quizzes",
    params(("id" = String, Path, description = "Quiz session id")),
    responses(
        (status = 200, description = "The session and the question now open", body = RevealDto),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session visible to the caller", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The session is not `running` (`SESSION_STATE`), or every question was revealed (`NO_MORE_QUESTIONS`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another host action changed the session at the same moment (`CONCURRENT_CHANGE`); retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn reveal(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<RevealDto>> {
    let request = qpb::RevealNextQuestionRequest { session_id: id };
    let r = state.quiz.clone().reveal_next_question(upstream::request(&headers, request)).await?;
    let qpb::RevealNextQuestionResponse { session, question } = r.into_inner();
    Ok(Json(RevealDto {
        session: session_dto(session.unwrap_or_default()),
        question: play_question_dto(question.unwrap_or_default()),
    }))
}

/// Closes the open question before its time limit (hosts only).
#[utoipa::path(
    post, path = "/api/quiz-sessions/{id}/close-question", tag = "quizzes",
    params(("id" = String, Path, description = "Quiz session id")),
    responses(
        (status = 200, description = "The session and the question just closed, with its result", body = CloseQuestionDto),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session visible to the caller", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The session is not `running` (`SESSION_STATE`), or no question is open (`NO_OPEN_QUESTION`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another host action changed the session at the same moment (`CONCURRENT_CHANGE`); retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn close_question(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<CloseQuestionDto>> {
    let request = qpb::CloseQuestionRequest { session_id: id };
    let r = state.quiz.clone().close_question(upstream::request(&headers, request)).await?;
    let qpb::CloseQuestionResponse { session, question } = r.into_inner();
    Ok(Json(CloseQuestionDto {
        session: session_dto(session.unwrap_or_default()),
        question: question.map(revealed_dto),
    }))
}

/// Finishes the session: the open question closes, nobody may join or answer (hosts only).
#[utoipa::path(
    post, path = "/api/quiz-sessions/{id}/finish", tag = "quizzes",
    params(("id" = String, Path, description = "Quiz session id")),
    responses(
        (status = 200, description = "The session, `finished`, and the final standings", body = FinishedDto),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session visible to the caller", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The session is finished already, or was never opened (`SESSION_STATE`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another host action changed the session at the same moment (`CONCURRENT_CHANGE`); retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn finish(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<FinishedDto>> {
    let request = qpb::FinishSessionRequest { session_id: id };
    let r = state.quiz.clone().finish_session(upstream::request(&headers, request)).await?;
    Ok(Json(finished_dto(r.into_inner())))
}

/// Joins a session as the caller (the same answers as `POST /quiz-session/{id}/join`).
#[utoipa::path(
    post, path = "/api/quiz-sessions/{id}/join", tag = "quizzes",
    params(("id" = String, Path, description = "Quiz session id")),
    request_body(content = Option<JoinBody>, description = "Optional; `team` is required in team mode"),
    responses(
        (status = 200, description = "Joined: the caller's participant", body = ParticipantDto),
        (status = 400, description = "The session does not exist (or the caller may not see it), the id is malformed, or a bad `team` (`SESSION_NOT_FOUND`, `INVALID_ARGUMENT`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The caller already joined (`ALREADY_JOINED`), or the session's state does not admit joins: not open yet, finished, or running with late join off (`SESSION_NOT_JOINABLE`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn api_join(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ParticipantDto>> {
    let JoinBody { team } = if body.iter().all(u8::is_ascii_whitespace) {
        JoinBody::default()
    } else {
        parse_body(&body)?
    };
    join(&state, &headers, id, team.unwrap_or_default()).await
}

/// Answers a question of the session as the caller (the same answers as `POST /update-score`,
/// but an unknown session is 404).
#[utoipa::path(
    post, path = "/api/quiz-sessions/{id}/answers", tag = "quizzes",
    params(("id" = String, Path, description = "Quiz session id")),
    request_body(content = AnswerBody, description = "`answer`: a choice index, an array of choice indexes (multiple choice) or a text (short text)"),
    responses(
        (status = 200, description = "Taken and scored: the receipt", body = AnswerReceiptDto),
        (status = 400, description = "A missing or bad field (field errors), a question of another quiz (`QUESTION_NOT_IN_QUIZ`), not revealed yet (`QUESTION_NOT_REVEALED`) or closed (`QUESTION_CLOSED`), or answered already (`ALREADY_ANSWERED`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller did not join the session (`NOT_A_PARTICIPANT`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session visible to the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn answer(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<AnswerReceiptDto>> {
    let value = json_value(&body)?;
    let (_, question_id, answer) = parse_answer_object(&value, None, "questionId", &[])?;
    let receipt =
        submit_answer(&state, &headers, &caller, id, question_id, answer, AnswerDoor::Api).await?;
    Ok(Json(receipt))
}

/// The session's leaderboard (`quiz:<id>` on the leaderboard service).
#[utoipa::path(
    get, path = "/api/quiz-sessions/{id}/leaderboard", tag = "quizzes",
    params(("id" = String, Path, description = "Quiz session id"), BoardQuery),
    responses(
        (status = 200, description = "Best first", body = QuizLeaderboardDto),
        (status = 400, description = "Bad limit, or the id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session visible to the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn leaderboard(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<BoardQuery>,
) -> ApiResult<Json<QuizLeaderboardDto>> {
    let mut request = page_request(q)?;
    // The session first, with the caller's token: one the caller may not see is a 404 here
    // as on `GET /api/quiz-sessions/{id}`, and an unknown id is not an empty board.
    let session = qpb::GetSessionRequest { session_id: id.clone() };
    let r = state.quiz.clone().get_session(upstream::request(&headers, session)).await?;
    let session_id = r.into_inner().session.map(|s| s.id).unwrap_or(id);
    request.board = qpb::board(&session_id);
    let r = state.leaderboard.clone().get_leaderboard(upstream::request(&headers, request)).await?;
    // As on the challenge's board, the caller's own place (`me`) is left out.
    let lpb::GetLeaderboardResponse {
        entries,
        total_members,
        next_page_token,
        prev_page_token,
        me: _,
        period,
        withheld,
    } = r.into_inner();
    Ok(Json(QuizLeaderboardDto {
        session_id,
        entries: entries.into_iter().map(entry_dto).collect(),
        total_members,
        next_page_token,
        prev_page_token,
        period: named_period(period),
        withheld,
    }))
}

/// `top` of the stream and room: 0 (the service's default, 10) or 1 to 100.
fn parse_top(raw: Option<&str>) -> Result<i32, ApiError> {
    match raw {
        None | Some("") => Ok(0),
        Some(raw) => raw.parse::<i32>().ok().filter(|n| (1..=100).contains(n)).ok_or_else(|| {
            Problem::bad_request("top", "must be a whole number from 1 to 100").into()
        }),
    }
}

/// The session's events as Server-Sent Events: `event:` is the event's `type` (`session`
/// first, then `question_revealed`, `question_closed`, `participant_count`, `leaderboard`,
/// `finished`), `data:` the [`QuizEvent`] JSON; plus the caller's own `score_update`s.
/// Comments keep idle connections alive.
#[utoipa::path(
    get, path = "/api/quiz-sessions/{id}/stream", tag = "quizzes",
    params(("id" = String, Path, description = "Quiz session id"), WatchQuery),
    responses(
        (status = 200, description = "text/event-stream of session events (QuizEvent JSON, `event:` its `type`)", content_type = "text/event-stream"),
        (status = 400, description = "Bad `top`, or the id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session visible to the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<WatchQuery>,
) -> ApiResult {
    let top = parse_top(q.top.as_deref())?;
    let slot = state.streams.acquire(&caller)?;
    let events = watch(&state, &headers, &caller, id, top).await?;
    Ok(upstream::sse_events(slot, events.map(|e| e.map(|e| Some((e.kind(), e))))))
}

/// The session's events for `caller`: the quiz service's `WatchSession` (with the caller's
/// token, so the service sees who is connected) and the caller's own score updates, until
/// the service ends the stream. A failure is the last item.
async fn watch(
    state: &AppState,
    headers: &HeaderMap,
    caller: &Caller,
    session_id: String,
    top: i32,
) -> Result<impl Stream<Item = Result<QuizEvent, tonic::Status>> + Send + 'static, ApiError> {
    let (subscription, scores) = state.score_updates.subscribe(&session_id, &caller.user_id);
    let request = upstream::stream_request(headers, qpb::WatchSessionRequest { session_id, top });
    let events = state.quiz.clone().watch_session(request).await?.into_inner();
    Ok(futures::stream::unfold(Some((events, scores, subscription)), |open| async move {
        let (mut events, mut scores, subscription) = open?;
        loop {
            tokio::select! {
                m = events.next() => match m {
                    None => return None,
                    Some(Err(status)) => return Some((Err(status), None)),
                    Some(Ok(m)) => match event(m) {
                        Some(e) => return Some((Ok(e), Some((events, scores, subscription)))),
                        None => continue,
                    },
                },
                Some(update) = scores.recv() => {
                    let e = QuizEvent::ScoreUpdate { update };
                    return Some((Ok(e), Some((events, scores, subscription))));
                }
            }
        }
    }))
}

/// The session's results as CSV (hosts only).
#[utoipa::path(
    get, path = "/api/quiz-sessions/{id}/results.csv", tag = "quizzes",
    params(("id" = String, Path, description = "Quiz session id"), ExportQuery),
    responses(
        (status = 200, description = "CSV with a header row: per participant (rank, user, team, score, answered, correct) or per question (index, text, answered, correct, correct rate, mean points)", body = String, content_type = "text/csv"),
        (status = 400, description = "Bad `kind`, or the id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session visible to the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> ApiResult {
    let kind = match q.kind.as_deref() {
        None | Some("") | Some("participants") => qpb::ExportKind::Participants,
        Some("questions") => qpb::ExportKind::Questions,
        Some(_) => {
            return Err(Problem::bad_request("kind", "must be participants or questions").into());
        }
    };
    let request = qpb::ExportResultsRequest { session_id: id, kind: kind as i32 };
    let r = state.quiz.clone().export_results(upstream::request(&headers, request)).await?;
    let name = match kind {
        qpb::ExportKind::Questions => "questions",
        _ => "participants",
    };
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"quiz-{name}.csv\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8")),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        r.into_inner().csv,
    )
        .into_response())
}

/// The session room as a WebSocket: see [`room`] for the messages.
#[utoipa::path(
    get, path = "/api/quiz-sessions/{id}/ws", tag = "quizzes",
    params(
        ("id" = String, Path, description = "Quiz session id"),
        WatchQuery,
        ("access_token" = Option<String>, Query, description = "The bearer token, for clients that cannot set headers on a WebSocket. Browsers had better offer it as the subprotocol `ewpm.bearer.<token>` beside `ewpm.room.v1` (answered with `ewpm.room.v1`), which keeps it out of URLs; `Authorization: Bearer` works too"),
    ),
    responses(
        (status = 101, description = "Switched to the WebSocket room: server messages are QuizEvent JSON (`session`, `question_revealed`, `question_closed`, `participant_count`, `leaderboard`, `finished`, `score_update`, `answer_receipt`, `error`); the client sends `{\"type\":\"answer\",\"questionId\":\"...\",\"answer\":...}`", body = QuizEvent),
        (status = 400, description = "Not a WebSocket upgrade, bad `top`, or the id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session visible to the caller", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn ws(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<WatchQuery>,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> ApiResult<Response> {
    let top = parse_top(q.top.as_deref())?;
    let slot = state.streams.acquire(&caller)?;
    let events = watch(&state, &headers, &caller, id.clone(), top).await?;
    let room = room::Room::new(state, &headers, caller, id);
    Ok(upgrade
        .protocols([crate::ROOM_PROTOCOL])
        .max_message_size(room::MAX_FRAME_BYTES)
        .max_frame_size(room::MAX_FRAME_BYTES)
        .on_upgrade(move |socket| room.run(socket, events, slot)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_names(p: &Problem) -> Vec<&str> {
        p.errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn top_and_kind_queries_are_checked_at_the_edge() {
        assert_eq!(parse_top(None).unwrap(), 0);
        assert_eq!(parse_top(Some("100")).unwrap(), 100);
        for bad in ["0", "101", "x", "-1"] {
            let err = parse_top(Some(bad)).unwrap_err();
            assert_eq!(field_names(&err.0), ["top"]);
        }
    }

    #[tokio::test]
    async fn the_router_mounts_every_quiz_route_and_the_document_lists_each_with_its_methods() {
        let settings = ewpm_kit::settings::Settings::default();
        let addrs = crate::upstream_names()
            .map(|name| (name.to_string(), "http://127.0.0.1:9".to_string()));
        let state = AppState::connect(
            &addrs.into_iter().collect(),
            ewpm_kit::auth::TokenKeys::new("test", &settings.auth),
            &settings.limits,
        )
        .unwrap();
        // Overlapping routes would panic while the router is built.
        let _router = crate::router(state);
        let doc = serde_json::to_value(<crate::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
        let mut operations: Vec<String> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(path, _)| path.contains("quiz") || path.as_str() == "/update-score")
            .flat_map(|(path, item)| {
                item.as_object().unwrap().keys().map(move |m| format!("{m} {path}"))
            })
            .collect();
        operations.sort_unstable();
        assert_eq!(
            operations,
            [
                "get /api/quiz-sessions/{id}",
                "get /api/quiz-sessions/{id}/leaderboard",
                "get /api/quiz-sessions/{id}/results.csv",
                "get /api/quiz-sessions/{id}/stream",
                "get /api/quiz-sessions/{id}/ws",
                "get /api/quizzes",
                "get /api/quizzes/{id}",
                "post /api/quiz-sessions",
                "post /api/quiz-sessions/{id}/answers",
                "post /api/quiz-sessions/{id}/close-question",
                "post /api/quiz-sessions/{id}/finish",
                "post /api/quiz-sessions/{id}/join",
                "post /api/quiz-sessions/{id}/open",
                "post /api/quiz-sessions/{id}/reveal",
                "post /api/quiz-sessions/{id}/start",
                "post /api/quizzes",
                "post /quiz-session/{id}/join",
                "post /update-score",
            ]
        );
        // The seed's statuses are in the document as the brief states them.
        let responses = |method: &str, path: &str| -> Vec<String> {
            let mut codes: Vec<String> = doc["paths"][path][method]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            codes.sort_unstable();
            codes
        };
        assert_eq!(
            responses("post", "/quiz-session/{id}/join"),
            ["200", "400", "401", "403", "409", "429", "503"]
        );
        assert_eq!(responses("post", "/update-score"), ["200", "400", "401", "403", "429", "503"]);
    }
}
