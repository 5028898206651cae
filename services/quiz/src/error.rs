//! Errors of the quiz service and their one mapping to `tonic::Status`.
//!
//! | error | gRPC code | reason | REST (seed paths) |
//! |---|---|---|---|
//! | bad field | INVALID_ARGUMENT | `INVALID_ARGUMENT` + field violations | 400 |
//! | unknown session | NOT_FOUND | `SESSION_NOT_FOUND` | 400 on join |
//! | already joined | ALREADY_EXISTS | `ALREADY_JOINED` | 409 |
//! | not joinable | FAILED_PRECONDITION | `SESSION_NOT_JOINABLE` | 409 |
//! | not a participant | PERMISSION_DENIED | `NOT_A_PARTICIPANT` | 403 |
//! | question of another quiz | INVALID_ARGUMENT | `QUESTION_NOT_IN_QUIZ` | 400 |
//! | not revealed / closed | FAILED_PRECONDITION | `QUESTION_NOT_REVEALED` / `QUESTION_CLOSED` | 400 |
//! | second answer | ALREADY_EXISTS | `ALREADY_ANSWERED` | 400 |

use ewpm_kit::error::{self, FieldViolation};
use tonic::{Code, Status};

/// What went wrong, for the caller.
#[derive(Debug, thiserror::Error)]
pub enum QuizError {
    /// The request has bad fields.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// No such quiz the caller may author.
    #[error("quiz {0} not found")]
    QuizNotFound(String),
    /// No such session the caller may see.
    #[error("session {0} not found")]
    SessionNotFound(String),
    /// The caller may not do this (not an author or host of it).
    #[error("{0}")]
    Forbidden(String),
    /// The caller joined before.
    #[error("user already joined session {0}")]
    AlreadyJoined(String),
    /// The session cannot be joined now.
    #[error("session cannot be joined: {0}")]
    NotJoinable(String),
    /// The caller did not join the session.
    #[error("not a participant of session {0}")]
    NotParticipant(String),
    /// The question is not one of the session's quiz.
    #[error("question {0} is not in this session's quiz")]
    QuestionNotInQuiz(String),
    /// Not revealed yet.
    #[error("question {0} has not been revealed yet")]
    QuestionNotRevealed(String),
    /// Closed (time up, ended by the host, or the session finished).
    #[error("question {0} is closed")]
    QuestionClosed(String),
    /// Answered before.
    #[error("question {0} already answered")]
    AlreadyAnswered(String),
    /// Every question was revealed.
    #[error("every question has been revealed")]
    NoMoreQuestions,
    /// No question is open.
    #[error("no question is open")]
    NoOpenQuestion,
    /// The session is not in a state the action applies to.
    #[error("{0}")]
    WrongState(String),
    /// Another request changed the session meanwhile.
    #[error("the session changed meanwhile; retry")]
    Concurrent,
    /// The caller (`caller`) or this process (`process`) holds too many streams.
    #[error("too many open session streams ({0} cap)")]
    TooManyStreams(&'static str),
    /// An idempotency key reused with another request.
    #[error("idempotency_key was used with a different request")]
    KeyReused,
    /// Anything else: logged, answered as Internal.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<FieldViolation> for QuizError {
    fn from(v: FieldViolation) -> Self {
        Self::Invalid(vec![v])
    }
}

impl From<Vec<FieldViolation>> for QuizError {
    fn from(v: Vec<FieldViolation>) -> Self {
        Self::Invalid(v)
    }
}

impl From<QuizError> for Status {
    fn from(err: QuizError) -> Self {
        let message = err.to_string();
        let (code, reason) = match err {
            QuizError::Invalid(violations) => {
                return error::invalid_argument("INVALID_ARGUMENT", &violations);
            }
            QuizError::Unexpected(err) => return error::internal(&err),
            QuizError::TooManyStreams(scope) => {
                return error::retry_after(
                    Code::ResourceExhausted,
                    "TOO_MANY_STREAMS",
                    format!(
                        "too many open session streams ({scope} cap); close one or retry shortly"
                    ),
                    std::time::Duration::from_secs(5),
                );
            }
            QuizError::QuizNotFound(_) => (Code::NotFound, "QUIZ_NOT_FOUND"),
            QuizError::SessionNotFound(_) => (Code::NotFound, "SESSION_NOT_FOUND"),
            QuizError::Forbidden(_) => (Code::PermissionDenied, "PERMISSION_DENIED"),
            QuizError::AlreadyJoined(_) => (Code::AlreadyExists, "ALREADY_JOINED"),
            QuizError::NotJoinable(_) => (Code::FailedPrecondition, "SESSION_NOT_JOINABLE"),
            QuizError::NotParticipant(_) => (Code::PermissionDenied, "NOT_A_PARTICIPANT"),
            QuizError::QuestionNotInQuiz(_) => (Code::InvalidArgument, "QUESTION_NOT_IN_QUIZ"),
            QuizError::QuestionNotRevealed(_) => {
                (Code::FailedPrecondition, "QUESTION_NOT_REVEALED")
            }
            QuizError::QuestionClosed(_) => (Code::FailedPrecondition, "QUESTION_CLOSED"),
            QuizError::AlreadyAnswered(_) => (Code::AlreadyExists, "ALREADY_ANSWERED"),
            QuizError::NoMoreQuestions => (Code::FailedPrecondition, "NO_MORE_QUESTIONS"),
            QuizError::NoOpenQuestion => (Code::FailedPrecondition, "NO_OPEN_QUESTION"),
            QuizError::WrongState(_) => (Code::FailedPrecondition, "SESSION_STATE"),
            QuizError::Concurrent => (Code::Aborted, "CONCURRENT_CHANGE"),
            QuizError::KeyReused => (Code::InvalidArgument, "IDEMPOTENCY_KEY_REUSED"),
        };
        error::status(code, reason, message)
    }
}
