//! `ewpm.quiz.v1.QuizService`: converts requests to domain values, calls [`Quizzes`], converts
//! the results back. Proto types stop here (and in [`crate::watch`], which sends them).

use ewpm_kit::{auth::Caller, error::FieldViolation, idempotency, paging, timestamp};
use ewpm_proto::quiz::v1::{self as pb, quiz_service_server::QuizService};
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    domain::{Kind, Question, QuestionInput, ScoringInput},
    error::QuizError,
    service::{self, Idempotency, Quizzes, Receipt, Shown, Standings, ranks},
    store::{ParticipantRow, QuizRow, SessionRow, State},
    watch::Hub,
};

/// The gRPC face of the quiz service.
#[derive(Clone)]
pub struct QuizGrpc {
    quizzes: Quizzes,
    hub: Hub,
}

impl QuizGrpc {
    /// Serves `quizzes`, with session streams from `hub`.
    pub fn new(quizzes: Quizzes, hub: Hub) -> Self {
        Self { quizzes, hub }
    }
}

fn key(raw: &str, fingerprint: String) -> Result<Idempotency, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.chars().count() > 128 || raw.chars().any(|c| c.is_control()) {
        return Err(QuizError::from(FieldViolation::new(
            "idempotency_key",
            "must be 1 to 128 printable characters",
        ))
        .into());
    }
    Ok(Some((raw.to_string(), fingerprint)))
}

#[tonic::async_trait]
impl QuizService for QuizGrpc {
    async fn create_quiz(
        &self,
        request: Request<pb::CreateQuizRequest>,
    ) -> Result<Response<pb::CreateQuizResponse>, Status> {
        let caller = Caller::of(&request)?;
        let mut r = request.into_inner();
        let raw_key = std::mem::take(&mut r.idempotency_key);
        let idempotency = key(&raw_key, idempotency::fingerprint(&r.encode_to_vec()))?;
        let questions: Vec<QuestionInput> = r.questions.iter().map(question_input).collect();
        let quiz = self
            .quizzes
            .create_quiz(&caller, &r.title, &r.employer_id, &questions, idempotency)
            .await?;
        Ok(Response::new(pb::CreateQuizResponse { quiz: Some(quiz_to_proto(&quiz)) }))
    }

    async fn get_quiz(
        &self,
        request: Request<pb::GetQuizRequest>,
    ) -> Result<Response<pb::GetQuizResponse>, Status> {
        let caller = Caller::of(&request)?;
        let quiz = self.quizzes.get_quiz(&caller, &request.into_inner().id).await?;
        Ok(Response::new(pb::GetQuizResponse { quiz: Some(quiz_to_proto(&quiz)) }))
    }

    async fn list_quizzes(
        &self,
        request: Request<pb::ListQuizzesRequest>,
    ) -> Result<Response<pb::ListQuizzesResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::ListQuizzesRequest { page_size, page_token } = request.into_inner();
        let limit = paging::page_size(page_size).map_err(QuizError::from)?;
        let before: Option<String> = paging::decode_token(&page_token).map_err(QuizError::from)?;
        let mut rows = self.quizzes.list_quizzes(&caller, before.as_deref(), limit + 1).await?;
        let next_page_token = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|q| paging::encode_token(&q.id)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListQuizzesResponse {
            quizzes: rows.iter().map(quiz_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let mut r = request.into_inner();
        let raw_key = std::mem::take(&mut r.idempotency_key);
        let idempotency = key(&raw_key, idempotency::fingerprint(&r.encode_to_vec()))?;
        let scoring = r.scoring.unwrap_or_default();
        let scoring = ScoringInput {
            accuracy_only: scoring.accuracy_only,
            speed_weight: scoring.speed_weight,
            streak_bonus: scoring.streak_bonus,
            streak_cap: scoring.streak_cap,
            delivery_grace_ms: scoring.delivery_grace_ms,
        };
        let session = self
            .quizzes
            .create_session(
                &caller,
                &r.quiz_id,
                r.late_join.unwrap_or(true),
                r.team_mode,
                scoring,
                idempotency,
            )
            .await?;
        Ok(Response::new(pb::CreateSessionResponse {
            session: Some(session_to_proto(&session, 0)),
        }))
    }

    async fn open_session(
        &self,
        request: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::OpenSessionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let s = self.quizzes.open(&caller, &request.into_inner().session_id).await?;
        let session = Some(self.with_count(&s).await?);
        Ok(Response::new(pb::OpenSessionResponse { session }))
    }

    async fn start_session(
        &self,
        request: Request<pb::StartSessionRequest>,
    ) -> Result<Response<pb::StartSessionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let s = self.quizzes.start(&caller, &request.into_inner().session_id).await?;
        let session = Some(self.with_count(&s).await?);
        Ok(Response::new(pb::StartSessionResponse { session }))
    }

    async fn reveal_next_question(
        &self,
        request: Request<pb::RevealNextQuestionRequest>,
    ) -> Result<Response<pb::RevealNextQuestionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let (s, shown) =
            self.quizzes.reveal_next(&caller, &request.into_inner().session_id).await?;
        Ok(Response::new(pb::RevealNextQuestionResponse {
            session: Some(self.with_count(&s).await?),
            question: Some(play_question(&shown)),
        }))
    }

    async fn close_question(
        &self,
        request: Request<pb::CloseQuestionRequest>,
    ) -> Result<Response<pb::CloseQuestionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let (s, shown) =
            self.quizzes.close_question(&caller, &request.into_inner().session_id).await?;
        Ok(Response::new(pb::CloseQuestionResponse {
            session: Some(self.with_count(&s).await?),
            question: Some(revealed_question(&shown)),
        }))
    }

    async fn finish_session(
        &self,
        request: Request<pb::FinishSessionRequest>,
    ) -> Result<Response<pb::FinishSessionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let (s, standings) = self.quizzes.finish(&caller, &request.into_inner().session_id).await?;
        let session = self.with_count(&s).await?;
        Ok(Response::new(finished(session, &standings)))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let view = self.quizzes.view(&caller, &request.into_inner().session_id).await?;
        let standings = view.standings.as_ref();
        Ok(Response::new(pb::GetSessionResponse {
            session: Some(session_to_proto(&view.session, view.participant_count)),
            questions: view.shown.iter().map(revealed_question).collect(),
            host_questions: view
                .quiz
                .as_ref()
                .map(|q| q.questions.iter().map(question_to_proto).collect())
                .unwrap_or_default(),
            me: view.me.as_ref().map(participant_to_proto),
            standings: standings.map(|s| standings_to_proto(&s.participants)).unwrap_or_default(),
            teams: standings.map(teams_to_proto).unwrap_or_default(),
        }))
    }

    async fn join_session(
        &self,
        request: Request<pb::JoinSessionRequest>,
    ) -> Result<Response<pb::JoinSessionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::JoinSessionRequest { session_id, team } = request.into_inner();
        let p = self.quizzes.join(&caller, &session_id, &team).await?;
        Ok(Response::new(pb::JoinSessionResponse { participant: Some(participant_to_proto(&p)) }))
    }

    async fn submit_answer(
        &self,
        request: Request<pb::SubmitAnswerRequest>,
    ) -> Result<Response<pb::SubmitAnswerResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::SubmitAnswerRequest { session_id, question_id, answer } = request.into_inner();
        let answer = answer.unwrap_or_default();
        let receipt = self
            .quizzes
            .answer(&caller, &session_id, &question_id, &answer.choices, &answer.text)
            .await?;
        Ok(Response::new(receipt_to_proto(&receipt)))
    }

    type WatchSessionStream = ReceiverStream<Result<pb::WatchSessionResponse, Status>>;

    async fn watch_session(
        &self,
        request: Request<pb::WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        let caller = Caller::of(&request)?;
        let pb::WatchSessionRequest { session_id, top } = request.into_inner();
        let top = match top {
            0 => 10,
            t @ 1..=100 => usize::try_from(t).unwrap_or(10),
            _ => {
                return Err(QuizError::from(FieldViolation::new("top", "must be 0 to 100")).into());
            }
        };
        let rx = self.hub.watch(&caller, &session_id, top).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn export_results(
        &self,
        request: Request<pb::ExportResultsRequest>,
    ) -> Result<Response<pb::ExportResultsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let pb::ExportResultsRequest { session_id, kind } = request.into_inner();
        let per_question = match pb::ExportKind::try_from(kind) {
            Ok(pb::ExportKind::Participants | pb::ExportKind::Unspecified) => false,
            Ok(pb::ExportKind::Questions) => true,
            Err(_) => {
                return Err(QuizError::from(FieldViolation::new(
                    "kind",
                    "must be EXPORT_KIND_PARTICIPANTS or EXPORT_KIND_QUESTIONS",
                ))
                .into());
            }
        };
        let csv = self.quizzes.export(&caller, &session_id, per_question).await?;
        Ok(Response::new(pb::ExportResultsResponse { csv }))
    }

    type GetSessionScoresStream = ReceiverStream<Result<pb::GetSessionScoresResponse, Status>>;

    async fn get_session_scores(
        &self,
        request: Request<pb::GetSessionScoresRequest>,
    ) -> Result<Response<Self::GetSessionScoresStream>, Status> {
        let caller = Caller::of(&request)?;
        if !caller.is_admin() {
            return Err(QuizError::Forbidden("admins and services only".into()).into());
        }
        let id = service::uuid_field(&request.into_inner().session_id, "session_id")
            .map_err(QuizError::from)?;
        if self.quizzes.store().session(&id).await.map_err(QuizError::from)?.is_none() {
            return Err(QuizError::SessionNotFound(id).into());
        }
        let scores = self.quizzes.store().scores(&id).await.map_err(QuizError::from)?;
        let mut chunks: Vec<pb::GetSessionScoresResponse> = Vec::new();
        let mut current: Vec<pb::ParticipantScores> = Vec::new();
        for (user, answer_id, points) in scores {
            match current.last_mut() {
                Some(p) if p.user_id == user => {
                    p.answers.push(pb::AnswerScore { answer_id, points });
                }
                _ => {
                    if current.len() == 500 {
                        chunks.push(pb::GetSessionScoresResponse {
                            participants: std::mem::take(&mut current),
                        });
                    }
                    current.push(pb::ParticipantScores {
                        user_id: user,
                        answers: vec![pb::AnswerScore { answer_id, points }],
                    });
                }
            }
        }
        if !current.is_empty() {
            chunks.push(pb::GetSessionScoresResponse { participants: current });
        }
        let (tx, rx) = tokio::sync::mpsc::channel(chunks.len().max(1));
        for chunk in chunks {
            // Capacity is the chunk count: never full, never closed yet.
            let _ = tx.try_send(Ok(chunk));
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl QuizGrpc {
    async fn with_count(&self, s: &SessionRow) -> Result<pb::Session, Status> {
        let n = self.quizzes.store().participant_count(&s.id).await.map_err(QuizError::from)?;
        Ok(session_to_proto(s, n))
    }
}

fn kind_of(k: i32) -> Option<Kind> {
    match pb::QuestionKind::try_from(k).ok()? {
        pb::QuestionKind::SingleChoice => Some(Kind::SingleChoice),
        pb::QuestionKind::MultipleChoice => Some(Kind::MultipleChoice),
        pb::QuestionKind::Poll => Some(Kind::Poll),
        pb::QuestionKind::ShortText => Some(Kind::ShortText),
        pb::QuestionKind::Unspecified => None,
    }
}

fn kind_to_proto(k: Kind) -> pb::QuestionKind {
    match k {
        Kind::SingleChoice => pb::QuestionKind::SingleChoice,
        Kind::MultipleChoice => pb::QuestionKind::MultipleChoice,
        Kind::Poll => pb::QuestionKind::Poll,
        Kind::ShortText => pb::QuestionKind::ShortText,
    }
}

fn question_input(q: &pb::Question) -> QuestionInput {
    QuestionInput {
        text: q.text.clone(),
        kind: kind_of(q.kind),
        choices: q.choices.clone(),
        correct: q.correct_choices.clone(),
        accepted: q.accepted_answers.clone(),
        points: q.points,
        multiplier: q.multiplier,
        wrong_penalty: q.wrong_penalty,
        time_limit_secs: q.time_limit_secs,
    }
}

fn to_i32(n: impl TryInto<i32>) -> i32 {
    n.try_into().unwrap_or(i32::MAX)
}

/// A question with its answers (authors and hosts only).
pub fn question_to_proto(q: &Question) -> pb::Question {
    pb::Question {
        id: q.id.clone(),
        text: q.text.clone(),
        kind: kind_to_proto(q.kind).into(),
        choices: q.choices.clone(),
        correct_choices: q.correct.iter().map(|&c| to_i32(c)).collect(),
        accepted_answers: q.accepted.clone(),
        points: Some(to_i32(q.points)),
        multiplier: Some(q.multiplier),
        wrong_penalty: to_i32(q.wrong_penalty),
        time_limit_secs: to_i32(q.time_limit_secs),
    }
}

fn quiz_to_proto(q: &QuizRow) -> pb::Quiz {
    pb::Quiz {
        id: q.id.clone(),
        title: q.title.clone(),
        employer_id: q.employer_id.clone().unwrap_or_default(),
        questions: q.questions.iter().map(question_to_proto).collect(),
        created_by: q.created_by.clone(),
        create_time: Some(timestamp::to_proto(q.created_at)),
    }
}

fn state_to_proto(s: State) -> pb::SessionState {
    match s {
        State::Scheduled => pb::SessionState::Scheduled,
        State::Open => pb::SessionState::Open,
        State::Running => pb::SessionState::Running,
        State::Finished => pb::SessionState::Finished,
    }
}

/// A session with its participant count.
pub fn session_to_proto(s: &SessionRow, participants: i64) -> pb::Session {
    pb::Session {
        id: s.id.clone(),
        quiz_id: s.quiz_id.clone(),
        title: s.title.clone(),
        employer_id: s.employer_id.clone().unwrap_or_default(),
        state: state_to_proto(s.state).into(),
        late_join: s.late_join,
        team_mode: s.team_mode,
        scoring: Some(pb::ScoringRules {
            accuracy_only: s.scoring.accuracy_only,
            speed_weight: Some(s.scoring.speed_weight),
            streak_bonus: Some(s.scoring.streak_bonus),
            streak_cap: Some(to_i32(s.scoring.streak_cap)),
            delivery_grace_ms: Some(to_i32(s.scoring.delivery_grace_ms)),
        }),
        question_count: s.question_count,
        revealed_count: s.revealed_count,
        participant_count: to_i32(participants),
        host: s.host.clone(),
        create_time: Some(timestamp::to_proto(s.created_at)),
        start_time: s.started_at.map(timestamp::to_proto),
        finish_time: s.finished_at.map(timestamp::to_proto),
    }
}

/// A revealed question as participants see it: no answer fields exist in this message.
pub fn play_question(s: &Shown) -> pb::PlayQuestion {
    let q = &s.question;
    pb::PlayQuestion {
        id: q.id.clone(),
        index: s.revealed.position,
        text: q.text.clone(),
        kind: kind_to_proto(q.kind).into(),
        choices: q.choices.clone(),
        points: to_i32(q.points),
        multiplier: q.multiplier,
        time_limit_secs: to_i32(q.time_limit_secs),
        reveal_time: Some(timestamp::to_proto(s.revealed.revealed_at)),
        deadline: Some(timestamp::to_proto(s.revealed.deadline)),
        closed: s.closed,
    }
}

/// A revealed question with its result once closed (the correct answer goes out only then).
pub fn revealed_question(s: &Shown) -> pb::RevealedQuestion {
    let result = match (&s.outcome, s.closed) {
        (Some(o), true) => Some(pb::QuestionResult {
            question_id: s.question.id.clone(),
            choice_counts: o.choice_counts.clone(),
            answered: o.answered,
            correct: o.correct,
            correct_choices: s.question.correct.iter().map(|&c| to_i32(c)).collect(),
            accepted_answers: s.question.accepted.clone(),
        }),
        _ => None,
    };
    pb::RevealedQuestion { question: Some(play_question(s)), result }
}

/// A participant.
pub fn participant_to_proto(p: &ParticipantRow) -> pb::Participant {
    pb::Participant {
        id: p.id.clone(),
        session_id: p.session_id.clone(),
        user_id: p.user_id.clone(),
        team: p.team.clone().unwrap_or_default(),
        score: p.score,
        answered: p.answered,
        correct: p.correct,
        streak: p.streak,
        join_time: Some(timestamp::to_proto(p.joined_at)),
    }
}

fn standings_to_proto(sorted: &[ParticipantRow]) -> Vec<pb::Standing> {
    ranks(sorted)
        .into_iter()
        .zip(sorted)
        .map(|(rank, p)| pb::Standing {
            rank,
            user_id: p.user_id.clone(),
            team: p.team.clone().unwrap_or_default(),
            score: p.score,
            correct: p.correct,
        })
        .collect()
}

fn teams_to_proto(s: &Standings) -> Vec<pb::TeamStanding> {
    let mut out: Vec<pb::TeamStanding> = Vec::with_capacity(s.teams.len());
    for (i, (team, score, members)) in s.teams.iter().enumerate() {
        let rank = match out.last() {
            Some(prev) if prev.score == *score => prev.rank,
            _ => to_i32(i + 1),
        };
        out.push(pb::TeamStanding {
            rank,
            team: team.clone(),
            score: *score,
            members: to_i32(*members),
        });
    }
    out
}

/// The final standings message.
pub fn finished(session: pb::Session, standings: &Standings) -> pb::FinishSessionResponse {
    pb::FinishSessionResponse {
        session: Some(session),
        standings: standings_to_proto(&standings.participants),
        teams: teams_to_proto(standings),
    }
}

fn receipt_to_proto(r: &Receipt) -> pb::SubmitAnswerResponse {
    pb::SubmitAnswerResponse {
        answer_id: r.answer_id.clone(),
        correct: r.correct,
        points: r.points,
        score: r.score,
        streak: r.streak,
        elapsed_ms: r.elapsed_ms,
        accept_time: Some(timestamp::to_proto(r.at)),
    }
}
