//! The quiz service's rules, in domain terms: who may do what, the host flow, joining and
//! answering. Proto types stay in [`crate::grpc`].

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use ewpm_kit::{
    auth::{Caller, is_valid_employer_id},
    cache::TtlCache,
    clock::SharedClock,
    error::{FieldViolation, Violations},
    notices::Notices,
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    domain::{self, Given, Kind, Question, QuestionInput, Scoring, ScoringInput},
    error::QuizError,
    store::{
        AnswerGroup, Conflict, NewAnswer, ParticipantRow, QuizRow, QuizStore, Revealed, SessionRow,
        State,
    },
    writer::AnswerWriter,
};

/// How long a quiz's questions are cached (they never change once created).
const QUIZ_CACHE: Duration = Duration::from_secs(600);

/// A request's idempotency key and the fingerprint of its body.
pub type Idempotency = Option<(String, String)>;

/// A question's outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Answers per choice.
    pub choice_counts: Vec<i32>,
    /// Answers.
    pub answered: i32,
    /// Correct answers.
    pub correct: i32,
    /// Mean points of the answers.
    pub mean_points: f64,
}

/// A revealed question of a session with its question and, once closed, its outcome.
#[derive(Debug, Clone)]
pub struct Shown {
    /// The question (answers included: callers decide what to send).
    pub question: Question,
    /// When it was revealed and closes.
    pub revealed: Revealed,
    /// Closed at the time it was read.
    pub closed: bool,
    /// Its outcome, when closed.
    pub outcome: Option<Outcome>,
}

/// The receipt of an answer.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// Answer id.
    pub answer_id: String,
    /// Correct (None: poll).
    pub correct: Option<bool>,
    /// Points earned.
    pub points: f64,
    /// Score after it.
    pub score: f64,
    /// Streak after it.
    pub streak: i32,
    /// Elapsed ms counted.
    pub elapsed_ms: i64,
    /// When it was taken.
    pub at: DateTime<Utc>,
}

/// Standings: participants best first, and teams (team mode).
#[derive(Debug, Clone, Default)]
pub struct Standings {
    /// Participants, best first (at most 100).
    pub participants: Vec<ParticipantRow>,
    /// Teams: (team, average, members), best first.
    pub teams: Vec<(String, f64, i64)>,
}

/// What a caller sees of a session.
#[derive(Debug, Clone)]
pub struct SessionView {
    /// The session.
    pub session: SessionRow,
    /// Participants now.
    pub participant_count: i64,
    /// Whether the caller hosts it.
    pub host: bool,
    /// Revealed questions.
    pub shown: Vec<Shown>,
    /// Hosts: the quiz's questions.
    pub quiz: Option<Arc<QuizRow>>,
    /// The caller's participation.
    pub me: Option<ParticipantRow>,
    /// Hosts, and everyone once finished.
    pub standings: Option<Standings>,
}

/// The quiz service.
#[derive(Clone)]
pub struct Quizzes {
    store: QuizStore,
    clock: SharedClock,
    notices: Arc<dyn Notices>,
    quizzes: Arc<TtlCache<String, Arc<QuizRow>>>,
    answered: Arc<Notify>,
    writer: AnswerWriter,
}

impl Quizzes {
    /// The service over `store`, announcing session changes on `notices`; `answered` is
    /// notified after each stored answer (the relay of this process waits on it).
    pub fn new(
        store: QuizStore,
        clock: SharedClock,
        notices: Arc<dyn Notices>,
        answered: Arc<Notify>,
    ) -> Self {
        Self {
            writer: AnswerWriter::spawn(store.clone()),
            store,
            clock,
            notices,
            quizzes: Arc::new(TtlCache::with_capacity(QUIZ_CACHE, 1000)),
            answered,
        }
    }

    /// The store.
    pub fn store(&self) -> &QuizStore {
        &self.store
    }

    /// Now, by the service's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn changed(&self, session_id: &str) {
        if let Err(err) = self.notices.publish(&[session_id.to_string()]).await {
            tracing::warn!(
                session_id,
                error = format!("{err:#}"),
                "session notice not sent; watchers catch up within a second"
            );
        }
    }

    /// A quiz by id, from the cache.
    pub async fn quiz_row(&self, id: &str) -> Result<Option<Arc<QuizRow>>, QuizError> {
        if let Some(q) = self.quizzes.get(&id.to_string()) {
            return Ok(Some(q));
        }
        let Some(quiz) = self.store.quiz(id).await? else { return Ok(None) };
        let quiz = Arc::new(quiz);
        self.quizzes.put(id.to_string(), quiz.clone());
        Ok(Some(quiz))
    }

    // ---- authoring ----

    /// Creates a quiz.
    pub async fn create_quiz(
        &self,
        caller: &Caller,
        title: &str,
        employer_id: &str,
        questions: &[QuestionInput],
        idempotency: Idempotency,
    ) -> Result<Arc<QuizRow>, QuizError> {
        let mut v = Violations::new();
        let title = v.check(domain::title(title));
        let employer = employer(employer_id, &mut v);
        if questions.is_empty() || questions.len() > domain::MAX_QUESTIONS {
            v.push(FieldViolation::new("questions", "must have 1 to 100 questions"));
        }
        let parsed: Vec<Option<Question>> = questions
            .iter()
            .enumerate()
            .map(|(i, q)| {
                domain::question(q, &format!("questions[{i}]"), Uuid::now_v7().to_string(), &mut v)
            })
            .collect();
        v.finish()?;
        let (Some(title), Some(employer)) = (title, employer) else {
            return Err(anyhow::anyhow!("violations were reported above").into());
        };
        if !domain::can_author(caller, employer.as_deref()) {
            return Err(QuizError::Forbidden(match employer {
                None => "only admins may create quizzes without an employer_id".into(),
                Some(e) => format!("only admins and employer admins of {e} may create its quizzes"),
            }));
        }
        if let Some((key, hash)) = &idempotency
            && let Some(found) = self.quiz_by_key(caller, key, hash).await?
        {
            return Ok(found);
        }
        let quiz = QuizRow {
            id: Uuid::now_v7().to_string(),
            title,
            employer_id: employer,
            created_by: caller.user_id.clone(),
            created_at: self.now(),
            questions: parsed.into_iter().flatten().collect(),
        };
        let key = idempotency.as_ref().map(|(k, h)| (k.as_str(), h.as_str()));
        match self.store.create_quiz(&quiz, key).await {
            Ok(()) => Ok(Arc::new(quiz)),
            Err(Conflict::Exists) => match &idempotency {
                Some((key, hash)) => self
                    .quiz_by_key(caller, key, hash)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("quiz key conflict without a quiz").into()),
                None => Err(anyhow::anyhow!("quiz id conflict").into()),
            },
            Err(Conflict::Other(e)) => Err(e.into()),
        }
    }

    /// The quiz `caller` created with idempotency key `key`, if any; KEY_REUSED when its body
    /// differs from this one's (`hash`).
    async fn quiz_by_key(
        &self,
        caller: &Caller,
        key: &str,
        hash: &str,
    ) -> Result<Option<Arc<QuizRow>>, QuizError> {
        match self.store.quiz_by_key(&caller.user_id, key).await? {
            None => Ok(None),
            Some((_, stored)) if stored != hash => Err(QuizError::KeyReused),
            Some((id, _)) => self.quiz_row(&id).await,
        }
    }

    /// The session `caller` created with idempotency key `key`, if any (as
    /// [`Quizzes::quiz_by_key`]).
    async fn session_by_key(
        &self,
        caller: &Caller,
        key: &str,
        hash: &str,
    ) -> Result<Option<SessionRow>, QuizError> {
        match self.store.session_by_key(&caller.user_id, key).await? {
            None => Ok(None),
            Some((_, stored)) if stored != hash => Err(QuizError::KeyReused),
            Some((id, _)) => Ok(Some(self.session_row(&id).await?)),
        }
    }

    /// A quiz the caller may author.
    pub async fn get_quiz(&self, caller: &Caller, id: &str) -> Result<Arc<QuizRow>, QuizError> {
        let id = uuid_field(id, "id")?;
        match self.quiz_row(&id).await? {
            Some(q) if domain::can_author(caller, q.employer_id.as_deref()) => Ok(q),
            _ => Err(QuizError::QuizNotFound(id)),
        }
    }

    /// Quizzes the caller may author, newest first.
    pub async fn list_quizzes(
        &self,
        caller: &Caller,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<QuizRow>, QuizError> {
        let employer = match caller.role {
            ewpm_kit::auth::Role::Admin => None,
            ewpm_kit::auth::Role::EmployerAdmin if caller.employer_id.is_some() => {
                caller.employer_id.as_deref()
            }
            _ => return Err(QuizError::Forbidden("only quiz authors may list quizzes".into())),
        };
        Ok(self.store.quizzes(employer, before, limit).await?)
    }

    // ---- hosting ----

    /// Creates a session of a quiz the caller may author.
    pub async fn create_session(
        &self,
        caller: &Caller,
        quiz_id: &str,
        late_join: bool,
        team_mode: bool,
        scoring: ScoringInput,
        idempotency: Idempotency,
    ) -> Result<SessionRow, QuizError> {
        let mut v = Violations::new();
        let quiz_id = v.check(uuid_field(quiz_id, "quiz_id"));
        let scoring = domain::scoring(scoring, &mut v);
        v.finish()?;
        let quiz_id = quiz_id.ok_or_else(|| anyhow::anyhow!("violations were reported above"))?;
        let quiz = self.get_quiz(caller, &quiz_id).await?;
        if let Some((key, hash)) = &idempotency
            && let Some(found) = self.session_by_key(caller, key, hash).await?
        {
            return Ok(found);
        }
        let session = SessionRow {
            id: Uuid::now_v7().to_string(),
            quiz_id: quiz.id.clone(),
            title: quiz.title.clone(),
            employer_id: quiz.employer_id.clone(),
            state: State::Scheduled,
            late_join,
            team_mode,
            scoring,
            question_count: i32::try_from(quiz.questions.len()).unwrap_or(i32::MAX),
            revealed_count: 0,
            host: caller.user_id.clone(),
            created_at: self.now(),
            started_at: None,
            finished_at: None,
        };
        let key = idempotency.as_ref().map(|(k, h)| (k.as_str(), h.as_str()));
        match self.store.create_session(&session, key).await {
            Ok(()) => Ok(session),
            Err(Conflict::Exists) => match &idempotency {
                Some((key, hash)) => {
                    self.session_by_key(caller, key, hash).await?.ok_or_else(|| {
                        anyhow::anyhow!("session key conflict without a session").into()
                    })
                }
                None => Err(anyhow::anyhow!("session id conflict").into()),
            },
            Err(Conflict::Other(e)) => Err(e.into()),
        }
    }

    async fn session_row(&self, id: &str) -> Result<SessionRow, QuizError> {
        self.store.session(id).await?.ok_or_else(|| QuizError::SessionNotFound(id.to_string()))
    }

    /// A session the caller may see (NOT_FOUND otherwise), and whether they may host it.
    pub async fn visible(
        &self,
        caller: &Caller,
        session_id: &str,
    ) -> Result<(SessionRow, bool), QuizError> {
        let id = uuid_field(session_id, "session_id")?;
        let session = self.store.session(&id).await?.ok_or(QuizError::SessionNotFound(id))?;
        let employer = session.employer_id.as_deref();
        if !domain::can_play(caller, employer) {
            return Err(QuizError::SessionNotFound(session.id));
        }
        let host = domain::can_author(caller, employer);
        Ok((session, host))
    }

    async fn hosted(&self, caller: &Caller, session_id: &str) -> Result<SessionRow, QuizError> {
        match self.visible(caller, session_id).await? {
            (s, true) => Ok(s),
            (s, false) => Err(QuizError::Forbidden(format!("only hosts may run session {}", s.id))),
        }
    }

    async fn transition(
        &self,
        caller: &Caller,
        session_id: &str,
        from: &[State],
        to: State,
        action: &str,
    ) -> Result<SessionRow, QuizError> {
        let session = self.hosted(caller, session_id).await?;
        if !from.contains(&session.state) {
            return Err(QuizError::WrongState(format!(
                "session {} is {}; {action} applies to a {} session",
                session.id,
                session.state.as_str(),
                from.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or ")
            )));
        }
        if !self.store.transition(&session.id, from, to, self.now()).await? {
            return Err(QuizError::Concurrent);
        }
        self.changed(&session.id).await;
        self.session_row(&session.id).await
    }

    /// SCHEDULED → OPEN.
    pub async fn open(&self, caller: &Caller, id: &str) -> Result<SessionRow, QuizError> {
        self.transition(caller, id, &[State::Scheduled], State::Open, "open").await
    }

    /// SCHEDULED or OPEN → RUNNING.
    pub async fn start(&self, caller: &Caller, id: &str) -> Result<SessionRow, QuizError> {
        self.transition(caller, id, &[State::Scheduled, State::Open], State::Running, "start").await
    }

    /// Anything but FINISHED → FINISHED, with the final standings.
    pub async fn finish(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(SessionRow, Standings), QuizError> {
        let s = self
            .transition(
                caller,
                id,
                &[State::Scheduled, State::Open, State::Running],
                State::Finished,
                "finish",
            )
            .await?;
        let standings = self.standings(&s).await?;
        Ok((s, standings))
    }

    /// Reveals the next question.
    pub async fn reveal_next(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(SessionRow, Shown), QuizError> {
        let session = self.hosted(caller, id).await?;
        if session.state != State::Running {
            return Err(QuizError::WrongState(format!(
                "session {} is {}; questions are revealed while it is running",
                session.id,
                session.state.as_str()
            )));
        }
        if session.revealed_count >= session.question_count {
            return Err(QuizError::NoMoreQuestions);
        }
        let quiz = self.quiz_row(&session.quiz_id).await?.ok_or_else(|| {
            anyhow::anyhow!("session {} names missing quiz {}", session.id, session.quiz_id)
        })?;
        let position = session.revealed_count;
        let question = usize::try_from(position)
            .ok()
            .and_then(|p| quiz.questions.get(p))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("quiz {} has no question {position}", quiz.id))?;
        let now = self.now();
        let deadline = now + chrono::TimeDelta::seconds(i64::from(question.time_limit_secs));
        if !self.store.reveal(&session.id, position, &question.id, now, deadline).await? {
            return Err(QuizError::Concurrent);
        }
        self.changed(&session.id).await;
        let revealed = Revealed {
            position,
            question_id: question.id.clone(),
            revealed_at: now,
            deadline,
            closed_at: None,
        };
        let session = self.session_row(&session.id).await?;
        Ok((session, Shown { question, revealed, closed: false, outcome: None }))
    }

    /// Closes the open question early.
    pub async fn close_question(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(SessionRow, Shown), QuizError> {
        let session = self.hosted(caller, id).await?;
        if session.state != State::Running {
            return Err(QuizError::NoOpenQuestion);
        }
        let Some(position) = self.store.close_question(&session.id, None, self.now()).await? else {
            return Err(QuizError::NoOpenQuestion);
        };
        self.changed(&session.id).await;
        let shown = self.shown(&session, false).await?;
        let closed = shown
            .into_iter()
            .find(|s| s.revealed.position == position)
            .ok_or_else(|| anyhow::anyhow!("closed question {position} not found"))?;
        Ok((self.session_row(&session.id).await?, closed))
    }

    /// The session's revealed questions with the outcomes of the closed ones (of every one
    /// with `every_outcome`, for hosts' exports). The outcomes come from one aggregate read,
    /// made only when one is wanted.
    pub async fn shown(
        &self,
        session: &SessionRow,
        every_outcome: bool,
    ) -> Result<Vec<Shown>, QuizError> {
        let quiz = self
            .quiz_row(&session.quiz_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("session {} names a missing quiz", session.id))?;
        let now = self.now();
        let mut out = Vec::new();
        for revealed in self.store.revealed(&session.id).await? {
            let Some(question) = quiz.questions.iter().find(|q| q.id == revealed.question_id)
            else {
                continue;
            };
            let closed = revealed.is_closed(now) || session.state == State::Finished;
            out.push(Shown { question: question.clone(), revealed, closed, outcome: None });
        }
        if out.iter().any(|s| s.closed || every_outcome) {
            let groups = self.store.answer_groups(&session.id).await?;
            for s in out.iter_mut().filter(|s| s.closed || every_outcome) {
                s.outcome = Some(outcome(&s.question, &groups));
            }
        }
        Ok(out)
    }

    /// The standings of a session.
    pub async fn standings(&self, session: &SessionRow) -> Result<Standings, QuizError> {
        let participants = self.store.standings(&session.id, 100).await?;
        let teams =
            if session.team_mode { self.store.teams(&session.id).await? } else { Vec::new() };
        Ok(Standings { participants, teams })
    }

    /// What the caller may see of a session.
    pub async fn view(&self, caller: &Caller, id: &str) -> Result<SessionView, QuizError> {
        let (session, host) = self.visible(caller, id).await?;
        let me = self.store.participant(&session.id, &caller.user_id).await?;
        let shown = self.shown(&session, false).await?;
        let quiz = if host { self.quiz_row(&session.quiz_id).await? } else { None };
        let standings = if host || session.state == State::Finished {
            Some(self.standings(&session).await?)
        } else {
            None
        };
        Ok(SessionView {
            participant_count: self.store.participant_count(&session.id).await?,
            session,
            host,
            shown,
            quiz,
            me,
            standings,
        })
    }

    // ---- playing ----

    /// Joins the caller to a session.
    pub async fn join(
        &self,
        caller: &Caller,
        id: &str,
        team: &str,
    ) -> Result<ParticipantRow, QuizError> {
        let (session, _) = self.visible(caller, id).await?;
        if self.store.participant(&session.id, &caller.user_id).await?.is_some() {
            return Err(QuizError::AlreadyJoined(session.id));
        }
        let team = match (session.team_mode, team.is_empty()) {
            (true, _) => Some(domain::team(team)?),
            (false, true) => None,
            (false, false) => {
                return Err(FieldViolation::new(
                    "team",
                    "must be empty: the session is not in team mode",
                )
                .into());
            }
        };
        match session.state {
            State::Open => {}
            State::Running if session.late_join => {}
            State::Running => {
                return Err(QuizError::NotJoinable("it is running and late join is off".into()));
            }
            State::Scheduled => return Err(QuizError::NotJoinable("it is not open yet".into())),
            State::Finished => return Err(QuizError::NotJoinable("it is finished".into())),
        }
        let participant = ParticipantRow {
            id: Uuid::now_v7().to_string(),
            session_id: session.id.clone(),
            user_id: caller.user_id.clone(),
            team,
            score: 0.0,
            answered: 0,
            correct: 0,
            streak: 0,
            streak_position: -1,
            joined_at: self.now(),
        };
        match self.store.join(&participant).await {
            Ok(()) => {}
            Err(Conflict::Exists) => return Err(QuizError::AlreadyJoined(session.id)),
            Err(Conflict::Other(e)) => return Err(e.into()),
        }
        self.changed(&session.id).await;
        Ok(participant)
    }

    /// Answers a question (see the proto for the order of the checks).
    pub async fn answer(
        &self,
        caller: &Caller,
        session_id: &str,
        question_id: &str,
        choices: &[i32],
        text: &str,
    ) -> Result<Receipt, QuizError> {
        let mut v = Violations::new();
        let session_id = v.check(uuid_field(session_id, "session_id"));
        let question_id = v.check(uuid_field(question_id, "question_id"));
        v.finish()?;
        let (Some(session_id), Some(question_id)) = (session_id, question_id) else {
            return Err(anyhow::anyhow!("violations were reported above").into());
        };
        let Some(ctx) =
            self.store.answer_context(&session_id, &caller.user_id, &question_id).await?
        else {
            return Err(QuizError::NotParticipant(session_id));
        };
        let quiz = self
            .quiz_row(&ctx.quiz_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("session {session_id} names a missing quiz"))?;
        let Some(question) = quiz.questions.iter().find(|q| q.id == question_id) else {
            return Err(QuizError::QuestionNotInQuiz(question_id));
        };
        let given = domain::given(question, choices, text)?;
        let now = self.now();
        let Some(revealed) = ctx.revealed else {
            if ctx.state == State::Finished {
                return Err(QuizError::QuestionClosed(question_id));
            }
            return Err(QuizError::QuestionNotRevealed(question_id));
        };
        if revealed.is_closed(now) || ctx.state == State::Finished {
            return Err(QuizError::QuestionClosed(question_id));
        }
        let elapsed_ms = elapsed_ms(&revealed, ctx.delivered_at, &ctx.scoring, now);
        let p = &ctx.participant;
        let streak_before =
            streak_before(&quiz.questions, p.streak, p.streak_position, revealed.position);
        let correct = domain::is_correct(question, &given);
        let earned = domain::score(question, &ctx.scoring, correct, elapsed_ms, streak_before);
        let answer = NewAnswer {
            id: Uuid::now_v7().to_string(),
            participant_id: p.id.clone(),
            session_id: session_id.clone(),
            user_id: caller.user_id.clone(),
            question_id: question_id.clone(),
            position: revealed.position,
            answer: given.stored(),
            correct,
            score: earned.points,
            streak: i32::try_from(earned.streak).unwrap_or(i32::MAX),
            elapsed_ms,
            at: now,
        };
        let board = ewpm_proto::quiz::v1::board(&session_id);
        let (id, streak) = (answer.id.clone(), answer.streak);
        let Some(score) = self.writer.write(answer, board).await? else {
            return Err(QuizError::AlreadyAnswered(question_id));
        };
        self.answered.notify_one();
        metrics::counter!("ewpm_quiz_answers_total").increment(1);
        Ok(Receipt {
            answer_id: id,
            correct,
            points: earned.points,
            score,
            streak,
            elapsed_ms,
            at: now,
        })
    }

    /// The session's results as CSV (hosts only).
    pub async fn export(
        &self,
        caller: &Caller,
        id: &str,
        per_question: bool,
    ) -> Result<String, QuizError> {
        let session = self.hosted(caller, id).await?;
        let mut csv = String::new();
        if per_question {
            csv.push_str("index,question_id,kind,text,answered,correct,correct_rate,mean_points\n");
            for s in self.shown(&session, true).await? {
                let outcome = s.outcome.unwrap_or_default();
                let rate = if outcome.answered > 0 {
                    f64::from(outcome.correct) / f64::from(outcome.answered)
                } else {
                    0.0
                };
                csv.push_str(&format!(
                    "{},{},{},{},{},{},{:.3},{:.1}\n",
                    s.revealed.position,
                    s.question.id,
                    kind_name(s.question.kind),
                    csv_field(&s.question.text),
                    outcome.answered,
                    outcome.correct,
                    rate,
                    outcome.mean_points
                ));
            }
        } else {
            csv.push_str("rank,user_id,team,score,answered,correct\n");
            let standings = self.store.standings(&session.id, u32::MAX).await?;
            for (rank, p) in ranks(&standings).into_iter().zip(&standings) {
                csv.push_str(&format!(
                    "{rank},{},{},{},{},{}\n",
                    csv_field(&p.user_id),
                    csv_field(p.team.as_deref().unwrap_or("")),
                    p.score,
                    p.answered,
                    p.correct
                ));
            }
        }
        Ok(csv)
    }
}

/// Standard competition ranks ("1224") of participants sorted best first: equal scores
/// share a rank.
pub fn ranks(sorted: &[ParticipantRow]) -> Vec<i32> {
    let mut out = Vec::with_capacity(sorted.len());
    for (i, p) in sorted.iter().enumerate() {
        let rank = match (i, out.last()) {
            (0, _) | (_, None) => 1,
            (_, Some(&prev)) if sorted[i - 1].score == p.score => prev,
            _ => i32::try_from(i + 1).unwrap_or(i32::MAX),
        };
        out.push(rank);
    }
    out
}

/// A CSV field, quoted when it needs to be; a leading `=`, `+`, `-` or `@` is prefixed with
/// `'` so a spreadsheet does not run it as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

/// The wire name of a kind.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::SingleChoice => "single_choice",
        Kind::MultipleChoice => "multiple_choice",
        Kind::Poll => "poll",
        Kind::ShortText => "short_text",
    }
}

/// How many correct answers in a row end right before the question at `position`: the stored
/// streak, unless a scored question since its last correct answer went unanswered.
fn streak_before(questions: &[Question], streak: i32, streak_position: i32, position: i32) -> u32 {
    if streak <= 0 || streak_position < 0 || streak_position >= position {
        return 0;
    }
    let skipped_scored = ((streak_position + 1)..position).any(|p| {
        usize::try_from(p).ok().and_then(|p| questions.get(p)).is_some_and(|q| q.kind != Kind::Poll)
    });
    if skipped_scored { 0 } else { u32::try_from(streak).unwrap_or(0) }
}

/// Milliseconds an answer at `now` took: from the reveal, plus the time the question took to
/// reach the participant's connection (at most the delivery grace).
fn elapsed_ms(
    revealed: &Revealed,
    delivered_at: Option<DateTime<Utc>>,
    scoring: &Scoring,
    now: DateTime<Utc>,
) -> i64 {
    let delay = delivered_at
        .map(|d| (d - revealed.revealed_at).num_milliseconds().max(0))
        .unwrap_or(0)
        .min(i64::from(scoring.delivery_grace_ms));
    ((now - revealed.revealed_at).num_milliseconds() - delay).max(0)
}

/// The outcome of a question from its session's answer groups (others' groups are skipped).
pub fn outcome(question: &Question, groups: &[AnswerGroup]) -> Outcome {
    let mut counts = vec![0i64; question.choices.len()];
    let (mut answered, mut correct, mut points) = (0i64, 0i64, 0.0);
    for g in groups.iter().filter(|g| g.question_id == question.id) {
        if question.kind.has_choices() {
            for c in Given::stored_choices(&g.answer) {
                if let Some(n) = counts.get_mut(c) {
                    *n += g.count;
                }
            }
        }
        answered += g.count;
        correct += g.correct;
        points += g.score;
    }
    let to_i32 = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
    #[allow(clippy::cast_precision_loss)]
    let mean_points = if answered == 0 { 0.0 } else { points / answered as f64 };
    Outcome {
        choice_counts: counts.into_iter().map(to_i32).collect(),
        answered: to_i32(answered),
        correct: to_i32(correct),
        mean_points,
    }
}

/// A canonical UUID field (lowercase, hyphenated).
pub fn uuid_field(raw: &str, field: &str) -> Result<String, FieldViolation> {
    if raw.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    Uuid::try_parse(raw)
        .map(|u| u.to_string())
        .map_err(|_| FieldViolation::new(field, "must be a UUID"))
}

fn employer(raw: &str, v: &mut Violations) -> Option<Option<String>> {
    if raw.is_empty() {
        return Some(None);
    }
    if is_valid_employer_id(raw) {
        Some(Some(raw.to_string()))
    } else {
        v.push(FieldViolation::new(
            "employer_id",
            "must be 1 to 64 letters, digits, '-', '_' or '.'",
        ));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(kind: Kind) -> Question {
        Question {
            id: "q".into(),
            text: "?".into(),
            kind,
            choices: vec![],
            correct: vec![],
            accepted: vec![],
            points: 1000,
            multiplier: 1.0,
            wrong_penalty: 0,
            time_limit_secs: 20,
        }
    }

    #[test]
    fn a_streak_survives_polls_but_not_a_skipped_scored_question() {
        let qs = vec![
            q(Kind::SingleChoice),
            q(Kind::Poll),
            q(Kind::SingleChoice),
            q(Kind::SingleChoice),
        ];
        assert_eq!(streak_before(&qs, 2, 0, 1), 2);
        assert_eq!(streak_before(&qs, 2, 0, 2), 2, "the poll in between does not break it");
        assert_eq!(streak_before(&qs, 2, 0, 3), 0, "question 2 went unanswered");
        assert_eq!(streak_before(&qs, 0, -1, 1), 0);
    }

    #[test]
    fn delivery_delay_counts_up_to_the_grace() {
        let at = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let r = Revealed {
            position: 0,
            question_id: "q".into(),
            revealed_at: at,
            deadline: at + chrono::TimeDelta::seconds(20),
            closed_at: None,
        };
        let rules = Scoring::default();
        let now = at + chrono::TimeDelta::milliseconds(5000);
        assert_eq!(elapsed_ms(&r, None, &rules, now), 5000);
        let slow = Some(at + chrono::TimeDelta::milliseconds(1500));
        assert_eq!(elapsed_ms(&r, slow, &rules, now), 3500);
        let very_slow = Some(at + chrono::TimeDelta::milliseconds(4000));
        assert_eq!(elapsed_ms(&r, very_slow, &rules, now), 3000, "capped at the 2 s grace");
    }

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=SUM(A1)"), "'=SUM(A1)");
    }
}
