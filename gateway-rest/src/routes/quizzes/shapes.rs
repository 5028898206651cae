//! The quiz routes' JSON shapes and their mapping from the proto messages (by hand: see the
//! table in [`crate::routes`]). Enums are lower-case words; empty strings that mean "none"
//! and unset times are `null`.

use ewpm_proto::quiz::v1 as qpb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{leaderboards::EntryDto, problem::Problem, rfc3339 as time};

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
    pub points: Option<i32>,
    /// 0 to 10; default 1.
    pub multiplier: Option<f64>,
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
    /// Pass as `pageToken` for the page before; left out on the first page.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub prev_page_token: String,
    /// The period read; left out for `all` (quiz boards never reset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// `true` when the board is below its employer's minimum members; left out otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub withheld: bool,
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

pub(crate) fn opt_string(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

pub(crate) fn opt_time(ts: Option<prost_types::Timestamp>) -> Option<String> {
    opt_string(time(ts))
}

pub(crate) fn kind_name(kind: i32) -> &'static str {
    match qpb::QuestionKind::try_from(kind) {
        Ok(qpb::QuestionKind::SingleChoice) => "single_choice",
        Ok(qpb::QuestionKind::MultipleChoice) => "multiple_choice",
        Ok(qpb::QuestionKind::Poll) => "poll",
        Ok(qpb::QuestionKind::ShortText) => "short_text",
        _ => "unspecified",
    }
}

pub(crate) fn parse_kind(raw: Option<&str>) -> Option<qpb::QuestionKind> {
    match raw {
        None => Some(qpb::QuestionKind::Unspecified),
        Some("single_choice") => Some(qpb::QuestionKind::SingleChoice),
        Some("multiple_choice") => Some(qpb::QuestionKind::MultipleChoice),
        Some("poll") => Some(qpb::QuestionKind::Poll),
        Some("short_text") => Some(qpb::QuestionKind::ShortText),
        Some(_) => None,
    }
}

pub(crate) fn state_name(state: i32) -> &'static str {
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
        points: points.unwrap_or_default(),
        multiplier: multiplier.unwrap_or_default(),
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

pub(crate) fn scoring_proto(s: ScoringDto) -> qpb::ScoringRules {
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

pub(crate) fn result_dto(r: qpb::QuestionResult) -> QuestionResultDto {
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

pub(crate) fn revealed_dto(r: qpb::RevealedQuestion) -> RevealedQuestionDto {
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

pub(crate) fn standing_dto(s: qpb::Standing) -> QuizStandingDto {
    let qpb::Standing { rank, user_id, team, score, correct } = s;
    QuizStandingDto { rank, user_id, team: opt_string(team), score, correct }
}

pub(crate) fn team_dto(t: qpb::TeamStanding) -> TeamStandingDto {
    let qpb::TeamStanding { rank, team, score, members } = t;
    TeamStandingDto { rank, team, score, members }
}

pub(crate) fn finished_dto(f: qpb::FinishSessionResponse) -> FinishedDto {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
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
                points: Some(1000),
                multiplier: Some(1.0),
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
}
