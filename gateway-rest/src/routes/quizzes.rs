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
//! # Score updates
//!
//! The seed's "Score update" event reaches the answering user's own sockets right after an
//! answer is taken, whether it came over the socket or over REST. [`ScoreHub`] carries them
//! between the handlers of this edge process: with several edge replicas, a REST answer
//! reaches only the sockets held by the replica that took it (the quiz service's
//! `WatchSession` has no per-caller event that would carry it across replicas).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

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
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tonic::Code;
use utoipa::{IntoParams, ToSchema};

use crate::{
    AppState,
    challenges::{parse_body, parse_page_size},
    leaderboards::{BoardQuery, EntryDto, parse_limit},
    problem::{ApiError, ApiResult, FieldError, Problem},
    rfc3339 as time, upstream,
};

pub mod room;

// ---------------------------------------------------------------------------------------
// JSON shapes

/// A question as its author writes it (answers included: authors and hosts only).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuestionDto {
    /// Server-minted id (UUID).
    pub id: String,
    /// The question, 1 to 500 characters.
    pub text: String,
    /// `single_choice`, `multiple_choice`, `poll` or `short_text`.
    pub kind: String,
    /// The choices (choice kinds).
    pub choices: Vec<String>,
    /// Indexes into `choices` of the correct ones.
    pub correct_choices: Vec<i32>,
    /// Short text: the accepted answers.
    pub accepted_answers: Vec<String>,
    /// Points of a correct answer before speed and streak.
    pub points: i32,
    /// Multiplies the points and the penalty.
    pub multiplier: f64,
    /// Points taken for a wrong answer.
    pub wrong_penalty: i32,
    /// Seconds the question stays open after it is revealed.
    pub time_limit_secs: i32,
}

/// A question in `POST /api/quizzes`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuestionBody {
    /// 1 to 500 characters after trimming.
    #[serde(default)]
    pub text: String,
    /// `single_choice`, `multiple_choice`, `poll` or `short_text`.
    pub kind: Option<String>,
    /// Choice kinds: 2 to 8 choices, each 1 to 200 characters, no two alike.
    #[serde(default)]
    pub choices: Vec<String>,
    /// Indexes of the correct choices: one for single choice, one or more for multiple
    /// choice, none for a poll.
    #[serde(default)]
    pub correct_choices: Vec<i32>,
    /// Short text: 1 to 20 accepted answers (matched trimmed, case-insensitive).
    #[serde(default)]
    pub accepted_answers: Vec<String>,
    /// 0 to 10,000; default 1,000 (0 for a poll).
    #[serde(default)]
    pub points: i32,
    /// 0 to 10; default 1.
    #[serde(default)]
    pub multiplier: f64,
    /// 0 (default) to 10,000.
    #[serde(default)]
    pub wrong_penalty: i32,
    /// 5 to 600; default 20.
    #[serde(default)]
    pub time_limit_secs: i32,
}

/// A quiz.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuizDto {
    /// Server-minted id (UUID v7).
    pub id: String,
    /// 1 to 200 characters.
    pub title: String,
    /// The employer whose people may play it; `null`: everyone.
    pub employer_id: Option<String>,
    /// In play order (empty in lists).
    pub questions: Vec<QuestionDto>,
    /// Who created it.
    pub created_by: String,
    /// Created at, RFC 3339 UTC.
    pub create_time: String,
}

/// Body of `POST /api/quizzes`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateQuizBody {
    /// 1 to 200 characters after trimming.
    #[serde(default)]
    pub title: String,
    /// Employer scope; omit for everyone (admins) or your own employer (employer admins).
    pub employer_id: Option<String>,
    /// 1 to 100 questions, in play order.
    #[serde(default)]
    pub questions: Vec<QuestionBody>,
    /// Retry key (1–128 printable characters); the `Idempotency-Key` header works too.
    pub idempotency_key: Option<String>,
}

/// One page of quizzes.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuizPage {
    /// Newest first, without their questions.
    pub quizzes: Vec<QuizDto>,
    /// Pass as `pageToken` for the next page; empty on the last page.
    pub next_page_token: String,
}

/// Query of `GET /api/quizzes`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct QuizListQuery {
    /// Page size (1 to 100, default 20).
    #[serde(alias = "page_size")]
    pub page_size: Option<String>,
    /// `nextPageToken` of the previous page.
    #[serde(alias = "page_token")]
    pub page_token: Option<String>,
}

/// How a session scores answers. In a request, an absent field takes its default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoringDto {
    /// Every correct answer earns its full points: no speed factor, no streak bonus.
    #[serde(default)]
    pub accuracy_only: bool,
    /// Share of the points speed decides: 0 to 1; default 0.5.
    pub speed_weight: Option<f64>,
    /// Bonus per consecutive correct answer, as a share of the points: 0 to 1; default 0.1.
    pub streak_bonus: Option<f64>,
    /// Most consecutive answers the streak bonus counts: 0 to 20; default 5.
    pub streak_cap: Option<i32>,
    /// Delivery delay that does not count against speed, in ms: 0 to 10,000; default 2,000.
    pub delivery_grace_ms: Option<i32>,
}

/// A session of a quiz.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionDto {
    /// Server-minted id (UUID v7); its leaderboard is `quiz:<id>`.
    pub id: String,
    /// The quiz.
    pub quiz_id: String,
    /// The quiz's title.
    pub title: String,
    /// The quiz's employer; `null`: open to everyone.
    pub employer_id: Option<String>,
    /// `scheduled`, `open`, `running` or `finished`.
    pub state: String,
    /// Whether people may join while it runs.
    pub late_join: bool,
    /// Participants join a team; a team's score is its members' average.
    pub team_mode: bool,
    /// The scoring rules.
    pub scoring: ScoringDto,
    /// Questions in the quiz.
    pub question_count: i32,
    /// Questions revealed so far.
    pub revealed_count: i32,
    /// Participants so far.
    pub participant_count: i32,
    /// The host who created it.
    pub host: String,
    /// Created at, RFC 3339 UTC.
    pub create_time: String,
    /// Started at; `null` before the start.
    pub start_time: Option<String>,
    /// Finished at; `null` before the end.
    pub finish_time: Option<String>,
}

/// Body of `POST /api/quiz-sessions`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSessionBody {
    /// The quiz to run.
    #[serde(default)]
    pub quiz_id: String,
    /// Whether people may join while it runs; default true.
    pub late_join: Option<bool>,
    /// Participants join a team.
    #[serde(default)]
    pub team_mode: bool,
    /// Scoring rules; defaults when absent.
    pub scoring: Option<ScoringDto>,
    /// Retry key (1–128 printable characters); the `Idempotency-Key` header works too.
    pub idempotency_key: Option<String>,
}

/// A question as a participant sees it: never with its answer.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlayQuestionDto {
    /// The question's id.
    pub id: String,
    /// Position in the quiz, from 0.
    pub index: i32,
    /// The question.
    pub text: String,
    /// `single_choice`, `multiple_choice`, `poll` or `short_text`.
    pub kind: String,
    /// The choices (choice kinds).
    pub choices: Vec<String>,
    /// Points of a correct answer before speed and streak.
    pub points: i32,
    /// Multiplies the points and the penalty.
    pub multiplier: f64,
    /// Seconds it stays open after the reveal.
    pub time_limit_secs: i32,
    /// Revealed at, server clock, RFC 3339 UTC.
    pub reveal_time: String,
    /// Closes at the latest, server clock, RFC 3339 UTC.
    pub deadline: String,
    /// Whether it is closed.
    pub closed: bool,
}

/// A closed question's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuestionResultDto {
    /// The question.
    pub question_id: String,
    /// Answers per choice, by choice index (choice kinds).
    pub choice_counts: Vec<i32>,
    /// How many answered it.
    pub answered: i32,
    /// How many answered correctly.
    pub correct: i32,
    /// The correct choices (choice kinds).
    pub correct_choices: Vec<i32>,
    /// The accepted answers (short text).
    pub accepted_answers: Vec<String>,
}

/// A revealed question with, once closed, its result.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevealedQuestionDto {
    /// The question as participants see it.
    pub question: PlayQuestionDto,
    /// Its result; `null` while it is open.
    pub result: Option<QuestionResultDto>,
}

/// One participant of a session.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantDto {
    /// The participant's id.
    pub id: String,
    /// The session.
    pub session_id: String,
    /// The user.
    pub user_id: String,
    /// Their team (team mode); `null` otherwise.
    pub team: Option<String>,
    /// The sum of their answers' points.
    pub score: f64,
    /// Questions answered.
    pub answered: i32,
    /// Questions answered correctly.
    pub correct: i32,
    /// Correct answers in a row, up to the last one.
    pub streak: i32,
    /// Joined at, RFC 3339 UTC.
    pub join_time: String,
}

/// A participant's place in the standings.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuizStandingDto {
    /// Rank, from 1.
    pub rank: i32,
    /// The user.
    pub user_id: String,
    /// Their team (team mode); `null` otherwise.
    pub team: Option<String>,
    /// Their score.
    pub score: f64,
    /// Correct answers.
    pub correct: i32,
}

/// A team's place (team mode): its score is its members' average.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamStandingDto {
    /// Rank, from 1.
    pub rank: i32,
    /// The team.
    pub team: String,
    /// The members' average score.
    pub score: f64,
    /// Members.
    pub members: i32,
}

/// What the caller may see of a session.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionViewDto {
    /// The session.
    pub session: SessionDto,
    /// Revealed questions in order (hosts: every question).
    pub questions: Vec<RevealedQuestionDto>,
    /// Hosts only: the quiz's questions with their answers.
    pub host_questions: Vec<QuestionDto>,
    /// The caller's standing once they joined; `null` otherwise.
    pub me: Option<ParticipantDto>,
    /// Hosts, and everyone once finished: the standings (at most 100).
    pub standings: Vec<QuizStandingDto>,
    /// Team standings (team mode).
    pub teams: Vec<TeamStandingDto>,
}

/// A session with the question just revealed or closed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevealDto {
    /// The session after the reveal.
    pub session: SessionDto,
    /// The question now open, as participants see it.
    pub question: PlayQuestionDto,
}

/// A session with the question just closed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloseQuestionDto {
    /// The session after the close.
    pub session: SessionDto,
    /// The question just closed, with its result; `null` when none was open.
    pub question: Option<RevealedQuestionDto>,
}

/// A finished session and its final standings.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FinishedDto {
    /// The session, finished.
    pub session: SessionDto,
    /// The final standings.
    pub standings: Vec<QuizStandingDto>,
    /// Team standings (team mode).
    pub teams: Vec<TeamStandingDto>,
}

/// Body of `POST /api/quiz-sessions/{id}/join` (optional).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinBody {
    /// Team mode only, required there: 1 to 64 characters.
    pub team: Option<String>,
}

/// An answer: a choice index (single choice, poll), an array of choice indexes (multiple
/// choice), or a text (short text).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum AnswerValue {
    /// A choice index.
    Choice(i32),
    /// Choice indexes.
    Choices(Vec<i32>),
    /// A short text answer.
    Text(String),
}

/// Body of `POST /update-score` (the seed's shape, snake_case). Documentation only: the
/// handler reads the JSON itself, to name every bad field at once.
#[derive(Debug, Clone, ToSchema)]
pub struct UpdateScoreBody {
    /// The session.
    pub quiz_session_id: String,
    /// The question answered.
    pub question_id: String,
    /// The answer.
    pub answer: AnswerValue,
}

/// Body of `POST /api/quiz-sessions/{id}/answers`. Documentation only, as
/// [`UpdateScoreBody`].
#[derive(Debug, Clone, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnswerBody {
    /// The question answered.
    pub question_id: String,
    /// The answer.
    pub answer: AnswerValue,
}

/// What happened to an answer.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnswerReceiptDto {
    /// The answer's id (its score change's event id on the leaderboard).
    pub answer_id: String,
    /// Whether it was correct; `null` for a poll.
    pub correct: Option<bool>,
    /// Points it earned (negative for a penalty).
    pub points: f64,
    /// The participant's score after it.
    pub score: f64,
    /// Correct answers in a row after it.
    pub streak: i32,
    /// Milliseconds counted from the reveal (after the delivery grace), server clock.
    pub elapsed_ms: i64,
    /// Accepted at, RFC 3339 UTC.
    pub accept_time: String,
}

/// A session's leaderboard page.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuizLeaderboardDto {
    /// The session.
    pub session_id: String,
    /// Best first.
    pub entries: Vec<EntryDto>,
    /// Participants on the board.
    pub total_members: i64,
    /// Pass as `pageToken` for the next page; left out on the last page.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}

/// One entry of a `leaderboard` event.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopEntryDto {
    /// Rank, from 1.
    pub rank: i32,
    /// The user.
    pub user_id: String,
    /// Their score on the board.
    pub score: f64,
}

/// A participant's new score, sent to their own sockets right after an answer is taken.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScoreUpdateDto {
    /// The session.
    pub session_id: String,
    /// The question answered.
    pub question_id: String,
    /// The answer's id.
    pub answer_id: String,
    /// Whether it was correct; `null` for a poll.
    pub correct: Option<bool>,
    /// Points the answer earned.
    pub points: f64,
    /// The participant's score after it.
    pub score: f64,
    /// Correct answers in a row after it.
    pub streak: i32,
}

/// One event of a session, as the SSE stream (`event:` is the `type`) and the WebSocket room
/// send it: a JSON object with a `type`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum QuizEvent {
    /// The session as it is now (first, and whenever its state changes).
    Session {
        /// The session.
        session: SessionDto,
    },
    /// A question was revealed (never with its answer).
    QuestionRevealed {
        /// The question.
        question: PlayQuestionDto,
    },
    /// A question closed, with its result.
    QuestionClosed {
        /// The question.
        question: PlayQuestionDto,
        /// Its result.
        result: Option<QuestionResultDto>,
    },
    /// The number of participants changed.
    ParticipantCount {
        /// Participants now.
        count: i32,
    },
    /// The leaderboard changed (the seed's "Leaderboard Updating").
    #[serde(rename_all = "camelCase")]
    Leaderboard {
        /// The top entries.
        entries: Vec<TopEntryDto>,
        /// Participants on the board.
        member_count: i64,
    },
    /// The session finished: the final standings.
    Finished {
        /// The session, finished.
        session: SessionDto,
        /// The final standings.
        standings: Vec<QuizStandingDto>,
        /// Team standings (team mode).
        teams: Vec<TeamStandingDto>,
    },
    /// The caller's own new score (the seed's "Score update"), right after their answer.
    ScoreUpdate {
        /// The update.
        update: ScoreUpdateDto,
    },
    /// WebSocket only: the receipt of an `answer` message.
    #[serde(rename_all = "camelCase")]
    AnswerReceipt {
        /// The question answered.
        question_id: String,
        /// The receipt.
        receipt: AnswerReceiptDto,
    },
    /// WebSocket only: a message the edge or the service refused, with the problem the REST
    /// route would answer.
    #[serde(rename_all = "camelCase")]
    Error {
        /// The question of the refused answer, when the message named one.
        #[serde(skip_serializing_if = "Option::is_none")]
        question_id: Option<String>,
        /// The problem.
        problem: Problem,
    },
}

/// Query of the session's event stream and room.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// Leaderboard entries the `leaderboard` events carry: default 10, at most 100.
    pub top: Option<String>,
}

/// Query of `GET /api/quiz-sessions/{id}/results.csv`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `participants` (default: one row per participant) or `questions` (one per question).
    pub kind: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Proto → JSON

fn opt_string(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn opt_time(ts: Option<prost_types::Timestamp>) -> Option<String> {
    opt_string(time(ts))
}

fn kind_name(kind: i32) -> &'static str {
    match qpb::QuestionKind::try_from(kind) {
        Ok(qpb::QuestionKind::SingleChoice) => "single_choice",
        Ok(qpb::QuestionKind::MultipleChoice) => "multiple_choice",
        Ok(qpb::QuestionKind::Poll) => "poll",
        Ok(qpb::QuestionKind::ShortText) => "short_text",
        _ => "unspecified",
    }
}

fn parse_kind(raw: Option<&str>) -> Option<qpb::QuestionKind> {
    match raw {
        None => Some(qpb::QuestionKind::Unspecified),
        Some("single_choice") => Some(qpb::QuestionKind::SingleChoice),
        Some("multiple_choice") => Some(qpb::QuestionKind::MultipleChoice),
        Some("poll") => Some(qpb::QuestionKind::Poll),
        Some("short_text") => Some(qpb::QuestionKind::ShortText),
        Some(_) => None,
    }
}

fn state_name(state: i32) -> &'static str {
    match qpb::SessionState::try_from(state) {
        Ok(qpb::SessionState::Scheduled) => "scheduled",
        Ok(qpb::SessionState::Open) => "open",
        Ok(qpb::SessionState::Running) => "running",
        Ok(qpb::SessionState::Finished) => "finished",
        _ => "unspecified",
    }
}

/// The REST shape of an author's question.
pub fn question_dto(q: qpb::Question) -> QuestionDto {
    let qpb::Question {
        id,
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
    QuestionDto {
        id,
        text,
        kind: kind_name(kind).to_string(),
        choices,
        correct_choices,
        accepted_answers,
        points,
        multiplier,
        wrong_penalty,
        time_limit_secs,
    }
}

/// The REST shape of a quiz.
pub fn quiz_dto(q: qpb::Quiz) -> QuizDto {
    let qpb::Quiz { id, title, employer_id, questions, created_by, create_time } = q;
    QuizDto {
        id,
        title,
        employer_id: opt_string(employer_id),
        questions: questions.into_iter().map(question_dto).collect(),
        created_by,
        create_time: time(create_time),
    }
}

fn scoring_dto(s: qpb::ScoringRules) -> ScoringDto {
    let qpb::ScoringRules {
        accuracy_only,
        speed_weight,
        streak_bonus,
        streak_cap,
        delivery_grace_ms,
    } = s;
    ScoringDto { accuracy_only, speed_weight, streak_bonus, streak_cap, delivery_grace_ms }
}

fn scoring_proto(s: ScoringDto) -> qpb::ScoringRules {
    let ScoringDto { accuracy_only, speed_weight, streak_bonus, streak_cap, delivery_grace_ms } = s;
    qpb::ScoringRules { accuracy_only, speed_weight, streak_bonus, streak_cap, delivery_grace_ms }
}

/// The REST shape of a session.
pub fn session_dto(s: qpb::Session) -> SessionDto {
    let qpb::Session {
        id,
        quiz_id,
        title,
        employer_id,
        state,
        late_join,
        team_mode,
        scoring,
        question_count,
        revealed_count,
        participant_count,
        host,
        create_time,
        start_time,
        finish_time,
    } = s;
    SessionDto {
        id,
        quiz_id,
        title,
        employer_id: opt_string(employer_id),
        state: state_name(state).to_string(),
        late_join,
        team_mode,
        scoring: scoring_dto(scoring.unwrap_or_default()),
        question_count,
        revealed_count,
        participant_count,
        host,
        create_time: time(create_time),
        start_time: opt_time(start_time),
        finish_time: opt_time(finish_time),
    }
}

/// The REST shape of a question as participants see it.
pub fn play_question_dto(q: qpb::PlayQuestion) -> PlayQuestionDto {
    let qpb::PlayQuestion {
        id,
        index,
        text,
        kind,
        choices,
        points,
        multiplier,
        time_limit_secs,
        reveal_time,
        deadline,
        closed,
    } = q;
    PlayQuestionDto {
        id,
        index,
        text,
        kind: kind_name(kind).to_string(),
        choices,
        points,
        multiplier,
        time_limit_secs,
        reveal_time: time(reveal_time),
        deadline: time(deadline),
        closed,
    }
}

fn result_dto(r: qpb::QuestionResult) -> QuestionResultDto {
    let qpb::QuestionResult {
        question_id,
        choice_counts,
        answered,
        correct,
        correct_choices,
        accepted_answers,
    } = r;
    QuestionResultDto {
        question_id,
        choice_counts,
        answered,
        correct,
        correct_choices,
        accepted_answers,
    }
}

fn revealed_dto(r: qpb::RevealedQuestion) -> RevealedQuestionDto {
    let qpb::RevealedQuestion { question, result } = r;
    RevealedQuestionDto {
        question: play_question_dto(question.unwrap_or_default()),
        result: result.map(result_dto),
    }
}

/// The REST shape of a participant.
pub fn participant_dto(p: qpb::Participant) -> ParticipantDto {
    let qpb::Participant {
        id,
        session_id,
        user_id,
        team,
        score,
        answered,
        correct,
        streak,
        join_time,
    } = p;
    ParticipantDto {
        id,
        session_id,
        user_id,
        team: opt_string(team),
        score,
        answered,
        correct,
        streak,
        join_time: time(join_time),
    }
}

fn standing_dto(s: qpb::Standing) -> QuizStandingDto {
    let qpb::Standing { rank, user_id, team, score, correct } = s;
    QuizStandingDto { rank, user_id, team: opt_string(team), score, correct }
}

fn team_dto(t: qpb::TeamStanding) -> TeamStandingDto {
    let qpb::TeamStanding { rank, team, score, members } = t;
    TeamStandingDto { rank, team, score, members }
}

fn finished_dto(f: qpb::FinishSessionResponse) -> FinishedDto {
    let qpb::FinishSessionResponse { session, standings, teams } = f;
    FinishedDto {
        session: session_dto(session.unwrap_or_default()),
        standings: standings.into_iter().map(standing_dto).collect(),
        teams: teams.into_iter().map(team_dto).collect(),
    }
}

/// The REST shape of an answer's receipt.
pub fn receipt_dto(r: qpb::SubmitAnswerResponse) -> AnswerReceiptDto {
    let qpb::SubmitAnswerResponse {
        answer_id,
        correct,
        points,
        score,
        streak,
        elapsed_ms,
        accept_time,
    } = r;
    AnswerReceiptDto {
        answer_id,
        correct,
        points,
        score,
        streak,
        elapsed_ms,
        accept_time: time(accept_time),
    }
}

/// The event a `WatchSession` message carries; `None` for an empty one (a newer service's
/// event this edge does not know yet arrives as one and is skipped).
pub fn event(m: qpb::WatchSessionResponse) -> Option<QuizEvent> {
    use qpb::watch_session_response::Event;
    Some(match m.event? {
        Event::Session(s) => QuizEvent::Session { session: session_dto(s) },
        Event::QuestionRevealed(q) => {
            QuizEvent::QuestionRevealed { question: play_question_dto(q) }
        }
        Event::QuestionClosed(r) => {
            let RevealedQuestionDto { question, result } = revealed_dto(r);
            QuizEvent::QuestionClosed { question, result }
        }
        Event::ParticipantCount(count) => QuizEvent::ParticipantCount { count },
        Event::Leaderboard(top) => {
            let qpb::LeaderboardTop { entries, member_count } = top;
            QuizEvent::Leaderboard {
                entries: entries
                    .into_iter()
                    .map(|e| {
                        let qpb::leaderboard_top::Entry { rank, user_id, score } = e;
                        TopEntryDto { rank, user_id, score }
                    })
                    .collect(),
                member_count,
            }
        }
        Event::Finished(f) => {
            let FinishedDto { session, standings, teams } = finished_dto(f);
            QuizEvent::Finished { session, standings, teams }
        }
    })
}

impl QuizEvent {
    /// The `type` of the event (the SSE `event:` name).
    pub fn kind(&self) -> &'static str {
        match self {
            QuizEvent::Session { .. } => "session",
            QuizEvent::QuestionRevealed { .. } => "question_revealed",
            QuizEvent::QuestionClosed { .. } => "question_closed",
            QuizEvent::ParticipantCount { .. } => "participant_count",
            QuizEvent::Leaderboard { .. } => "leaderboard",
            QuizEvent::Finished { .. } => "finished",
            QuizEvent::ScoreUpdate { .. } => "score_update",
            QuizEvent::AnswerReceipt { .. } => "answer_receipt",
            QuizEvent::Error { .. } => "error",
        }
    }
}

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

/// A 400 naming every field in `errors`.
fn invalid(errors: Vec<FieldError>) -> Problem {
    let detail =
        errors.iter().map(|e| format!("{} {}", e.field, e.description)).collect::<Vec<_>>();
    let mut p = Problem::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", detail.join("; "));
    p.errors = errors;
    p
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
        _ => Err(invalid(errors).into()),
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
        return Err(invalid(bad).into());
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
        (status = 422, description = "The session is not `scheduled`", body = Problem, content_type = "application/problem+json"),
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
        (status = 422, description = "The session is not `open`", body = Problem, content_type = "application/problem+json"),
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
        (status = 422, description = "The session is not `running`, or every question was revealed (`NO_MORE_QUESTIONS`)", body = Problem, content_type = "application/problem+json"),
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
        (status = 422, description = "The session is not `running`", body = Problem, content_type = "application/problem+json"),
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
        (status = 422, description = "The session is finished already, or was never opened", body = Problem, content_type = "application/problem+json"),
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
    let BoardQuery { limit, page_token } = q;
    let page_size = parse_limit(limit.as_deref(), "limit")?;
    // The session first, with the caller's token: one the caller may not see is a 404 here
    // as on `GET /api/quiz-sessions/{id}`, and an unknown id is not an empty board.
    let request = qpb::GetSessionRequest { session_id: id.clone() };
    let r = state.quiz.clone().get_session(upstream::request(&headers, request)).await?;
    let session_id = r.into_inner().session.map(|s| s.id).unwrap_or(id);
    let request = lpb::GetLeaderboardRequest {
        board: qpb::board(&session_id),
        page_size,
        page_token: page_token.unwrap_or_default(),
    };
    let r = state.leaderboard.clone().get_leaderboard(upstream::request(&headers, request)).await?;
    let lpb::GetLeaderboardResponse { entries, total_members, next_page_token } = r.into_inner();
    Ok(Json(QuizLeaderboardDto {
        session_id,
        entries: entries
            .into_iter()
            .map(|e| EntryDto { rank: e.rank, user_id: e.member, score: e.score })
            .collect(),
        total_members,
        next_page_token,
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
        ("access_token" = Option<String>, Query, description = "The bearer token, for browsers (which cannot set headers on a WebSocket); `Authorization: Bearer` works too"),
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
        .max_message_size(room::MAX_FRAME_BYTES)
        .max_frame_size(room::MAX_FRAME_BYTES)
        .on_upgrade(move |socket| room.run(socket, events, slot)))
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn play_question() -> qpb::PlayQuestion {
        qpb::PlayQuestion {
            id: "q-1".into(),
            index: 0,
            text: "Capital of France?".into(),
            kind: qpb::QuestionKind::SingleChoice as i32,
            choices: vec!["Paris".into(), "Lyon".into()],
            points: 1000,
            multiplier: 2.0,
            time_limit_secs: 20,
            reveal_time: at(1_767_225_600),
            deadline: at(1_767_225_620),
            closed: false,
        }
    }

    fn json_of(m: qpb::watch_session_response::Event) -> Value {
        let event = event(qpb::WatchSessionResponse { event: Some(m) }).unwrap();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], event.kind());
        json
    }

    #[test]
    fn a_revealed_question_event_carries_no_answer() {
        use qpb::watch_session_response::Event;
        assert_eq!(
            serde_json::to_string(&json_of(Event::QuestionRevealed(play_question()))).unwrap(),
            concat!(
                r#"{"question":{"choices":["Paris","Lyon"],"closed":false,"deadline":"2026-01-01T00:00:20Z","#,
                r#""id":"q-1","index":0,"kind":"single_choice","multiplier":2.0,"points":1000,"#,
                r#""revealTime":"2026-01-01T00:00:00Z","text":"Capital of France?","timeLimitSecs":20},"#,
                r#""type":"question_revealed"}"#
            )
        );
    }

    #[test]
    fn a_closed_question_event_carries_its_result() {
        use qpb::watch_session_response::Event;
        let closed = qpb::RevealedQuestion {
            question: Some(qpb::PlayQuestion { closed: true, ..play_question() }),
            result: Some(qpb::QuestionResult {
                question_id: "q-1".into(),
                choice_counts: vec![3, 1],
                answered: 4,
                correct: 3,
                correct_choices: vec![0],
                accepted_answers: Vec::new(),
            }),
        };
        let json = json_of(Event::QuestionClosed(closed));
        assert_eq!(json["question"]["closed"], true);
        assert_eq!(
            json["result"],
            json!({"questionId": "q-1", "choiceCounts": [3, 1], "answered": 4, "correct": 3,
                   "correctChoices": [0], "acceptedAnswers": []})
        );
    }

    #[test]
    fn count_leaderboard_and_finished_events_read_as_documented() {
        use qpb::watch_session_response::Event;
        assert_eq!(
            json_of(Event::ParticipantCount(7)),
            json!({"type": "participant_count", "count": 7})
        );
        let top = qpb::LeaderboardTop {
            entries: vec![qpb::leaderboard_top::Entry {
                rank: 1,
                user_id: "ann".into(),
                score: 1500.0,
            }],
            member_count: 2,
        };
        assert_eq!(
            json_of(Event::Leaderboard(top)),
            json!({"type": "leaderboard", "entries": [{"rank": 1, "userId": "ann", "score": 1500.0}],
                   "memberCount": 2})
        );
        let finished = qpb::FinishSessionResponse {
            session: Some(qpb::Session {
                id: "s-1".into(),
                state: qpb::SessionState::Finished as i32,
                finish_time: at(1_767_225_700),
                ..Default::default()
            }),
            standings: vec![qpb::Standing {
                rank: 1,
                user_id: "ann".into(),
                team: String::new(),
                score: 1500.0,
                correct: 1,
            }],
            teams: Vec::new(),
        };
        let json = json_of(Event::Finished(finished));
        assert_eq!(
            (
                &json["session"]["state"],
                &json["session"]["finishTime"],
                &json["session"]["startTime"]
            ),
            (&json!("finished"), &json!("2026-01-01T00:01:40Z"), &Value::Null)
        );
        assert_eq!(
            json["standings"],
            json!([{"rank": 1, "userId": "ann", "team": null, "score": 1500.0, "correct": 1}])
        );
        assert!(event(qpb::WatchSessionResponse { event: None }).is_none());
    }

    #[test]
    fn a_session_answers_exactly_this_json() {
        let s = qpb::Session {
            id: "s-1".into(),
            quiz_id: "z-1".into(),
            title: "Friday quiz".into(),
            employer_id: "acme".into(),
            state: qpb::SessionState::Running as i32,
            late_join: true,
            team_mode: false,
            scoring: Some(qpb::ScoringRules {
                accuracy_only: false,
                speed_weight: Some(0.5),
                streak_bonus: None,
                streak_cap: Some(5),
                delivery_grace_ms: None,
            }),
            question_count: 3,
            revealed_count: 1,
            participant_count: 2,
            host: "admin-1".into(),
            create_time: at(1_767_225_000),
            start_time: at(1_767_225_600),
            finish_time: None,
        };
        assert_eq!(
            serde_json::to_string(&session_dto(s)).unwrap(),
            concat!(
                r#"{"id":"s-1","quizId":"z-1","title":"Friday quiz","employerId":"acme","state":"running","#,
                r#""lateJoin":true,"teamMode":false,"scoring":{"accuracyOnly":false,"speedWeight":0.5,"#,
                r#""streakBonus":null,"streakCap":5,"deliveryGraceMs":null},"questionCount":3,"#,
                r#""revealedCount":1,"participantCount":2,"host":"admin-1","#,
                r#""createTime":"2025-12-31T23:50:00Z","startTime":"2026-01-01T00:00:00Z","finishTime":null}"#
            )
        );
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
    fn an_author_question_keeps_its_answers_and_a_quiz_its_open_employer_as_null() {
        let quiz = qpb::Quiz {
            id: "z-1".into(),
            title: "T".into(),
            employer_id: String::new(),
            questions: vec![qpb::Question {
                id: "q-1".into(),
                text: "Say hi".into(),
                kind: qpb::QuestionKind::ShortText as i32,
                choices: Vec::new(),
                correct_choices: Vec::new(),
                accepted_answers: vec!["hi".into()],
                points: 1000,
                multiplier: 1.0,
                wrong_penalty: 0,
                time_limit_secs: 20,
            }],
            created_by: "admin-1".into(),
            create_time: at(1_767_225_600),
        };
        let json = serde_json::to_value(quiz_dto(quiz)).unwrap();
        assert_eq!(json["employerId"], Value::Null);
        assert_eq!(json["questions"][0]["kind"], "short_text");
        assert_eq!(json["questions"][0]["acceptedAnswers"], json!(["hi"]));
    }

    #[test]
    fn question_kinds_read_as_lower_case_words_only() {
        assert_eq!(parse_kind(Some("multiple_choice")), Some(qpb::QuestionKind::MultipleChoice));
        assert_eq!(parse_kind(None), Some(qpb::QuestionKind::Unspecified));
        assert_eq!(parse_kind(Some("SINGLE_CHOICE")), None);
        for kind in 0..=4 {
            let name = kind_name(kind);
            if kind > 0 {
                assert_eq!(parse_kind(Some(name)).map(|k| k as i32), Some(kind));
            }
        }
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

    #[test]
    fn top_and_kind_queries_are_checked_at_the_edge() {
        assert_eq!(parse_top(None).unwrap(), 0);
        assert_eq!(parse_top(Some("100")).unwrap(), 100);
        for bad in ["0", "101", "x", "-1"] {
            let err = parse_top(Some(bad)).unwrap_err();
            assert_eq!(field_names(&err.0), ["top"]);
        }
    }
}
