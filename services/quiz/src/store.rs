//! The quiz tables: every read and write, on SQLite and PostgreSQL alike (statements are
//! written with `$n` parameters; SQLite gets them as `?n`).

use std::{collections::HashMap, sync::Arc};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, SqlErr, Statement,
    TransactionTrait, Value,
};
use serde::{Deserialize, Serialize};

use crate::domain::{Question, Scoring};

/// Where a session is in its life (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created, not joinable yet.
    Scheduled,
    /// Joinable.
    Open,
    /// Questions are being revealed.
    Running,
    /// Over.
    Finished,
}

impl State {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Scheduled => "scheduled",
            State::Open => "open",
            State::Running => "running",
            State::Finished => "finished",
        }
    }

    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "scheduled" => State::Scheduled,
            "open" => State::Open,
            "running" => State::Running,
            "finished" => State::Finished,
            other => anyhow::bail!("unknown session state {other:?}"),
        })
    }
}

/// A quiz row with its questions (in order).
#[derive(Debug, Clone)]
pub struct QuizRow {
    /// Quiz id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Employer, if any.
    pub employer_id: Option<String>,
    /// Creator.
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Questions in order (empty in listings).
    pub questions: Vec<Question>,
}

/// A session row.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// Session id.
    pub id: String,
    /// Its quiz.
    pub quiz_id: String,
    /// The quiz's title.
    pub title: String,
    /// The quiz's employer.
    pub employer_id: Option<String>,
    /// State.
    pub state: State,
    /// Late join allowed.
    pub late_join: bool,
    /// Team mode.
    pub team_mode: bool,
    /// Scoring rules.
    pub scoring: Scoring,
    /// Questions in the quiz.
    pub question_count: i32,
    /// Questions revealed.
    pub revealed_count: i32,
    /// Host (creator).
    pub host: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Started.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A revealed question of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Revealed {
    /// Position in the quiz.
    pub position: i32,
    /// Question id.
    pub question_id: String,
    /// Revealed at.
    pub revealed_at: DateTime<Utc>,
    /// Closes at the latest.
    pub deadline: DateTime<Utc>,
    /// Closed at (early or by the closer).
    pub closed_at: Option<DateTime<Utc>>,
}

impl Revealed {
    /// Whether it is closed at `now` (closed, or past its deadline).
    pub fn is_closed(&self, now: DateTime<Utc>) -> bool {
        self.closed_at.is_some() || now >= self.deadline
    }
}

/// A participant row.
#[derive(Debug, Clone)]
pub struct ParticipantRow {
    /// Participant id.
    pub id: String,
    /// Session.
    pub session_id: String,
    /// User.
    pub user_id: String,
    /// Team (team mode).
    pub team: Option<String>,
    /// Sum of answer scores.
    pub score: f64,
    /// Answers.
    pub answered: i32,
    /// Correct answers.
    pub correct: i32,
    /// Correct answers in a row.
    pub streak: i32,
    /// Position of the last correct answer of the streak (-1: none).
    pub streak_position: i32,
    /// Joined.
    pub joined_at: DateTime<Utc>,
}

/// What an answer needs to know, read in one statement.
#[derive(Debug, Clone)]
pub struct AnswerContext {
    /// The participant.
    pub participant: ParticipantRow,
    /// The session's quiz.
    pub quiz_id: String,
    /// The session's state.
    pub state: State,
    /// The session's rules.
    pub scoring: Scoring,
    /// The question as revealed in this session, if it was.
    pub revealed: Option<Revealed>,
    /// When the question reached this participant's connection, if recorded.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// An answer to store.
#[derive(Debug, Clone)]
pub struct NewAnswer {
    /// Answer id (the leaderboard event id).
    pub id: String,
    /// Participant.
    pub participant_id: String,
    /// Session.
    pub session_id: String,
    /// User (the board member).
    pub user_id: String,
    /// Question.
    pub question_id: String,
    /// Its position.
    pub position: i32,
    /// The answer as stored.
    pub answer: String,
    /// Correct (None: poll).
    pub correct: Option<bool>,
    /// Points.
    pub score: f64,
    /// Streak after it.
    pub streak: i32,
    /// Elapsed ms counted.
    pub elapsed_ms: i64,
    /// When.
    pub at: DateTime<Utc>,
}

/// The outbox payload of a score change (`participant_score_change`, `ADD_ANSWER`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreChange {
    /// Board (`quiz:<session>`).
    pub board: String,
    /// Member (user id).
    pub member: String,
    /// Points.
    pub delta: f64,
    /// When the answer committed (unix ms).
    pub committed_unix_ms: i64,
}

/// One unpublished outbox row.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Sequence.
    pub seq: i64,
    /// Event id (the answer id).
    pub event_id: String,
    /// Payload.
    pub change: ScoreChange,
}

/// The answers of one question that gave the same answer, for results.
#[derive(Debug, Clone)]
pub struct AnswerGroup {
    /// The question.
    pub question_id: String,
    /// The answer as stored.
    pub answer: String,
    /// How many gave it.
    pub count: i64,
    /// How many of them were correct (all or none).
    pub correct: i64,
    /// Their points, summed.
    pub score: f64,
}

/// Why an insert did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Conflict {
    /// A unique constraint refused it.
    #[error("already exists")]
    Exists,
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn unique(err: DbErr, what: &str) -> Conflict {
    if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
        Conflict::Exists
    } else {
        Conflict::Other(anyhow::Error::new(err).context(what.to_string()))
    }
}

/// Advisory lock class of outbox relays (PostgreSQL), "QZRL".
const RELAY_LOCK_CLASS: i32 = 0x515A_524C;

/// The quiz tables.
#[derive(Clone)]
pub struct QuizStore {
    db: DatabaseConnection,
    backend: DbBackend,
    /// SQLite has no row locks to skip: relays in this process take turns.
    relay_turn: Arc<tokio::sync::Mutex<()>>,
}

impl QuizStore {
    /// The tables in `db` (migrated).
    pub fn new(db: DatabaseConnection) -> Self {
        let backend = db.get_database_backend();
        Self { db, backend, relay_turn: Arc::default() }
    }

    /// The connection.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    fn stmt(&self, sql: &str, values: Vec<Value>) -> Statement {
        stmt(self.backend, sql, values)
    }

    async fn all(&self, sql: &str, values: Vec<Value>) -> Result<Vec<QueryResult>, DbErr> {
        self.db.query_all_raw(self.stmt(sql, values)).await
    }

    async fn one(&self, sql: &str, values: Vec<Value>) -> Result<Option<QueryResult>, DbErr> {
        self.db.query_one_raw(self.stmt(sql, values)).await
    }

    async fn exec(&self, sql: &str, values: Vec<Value>) -> Result<u64, DbErr> {
        Ok(self.db.execute_raw(self.stmt(sql, values)).await?.rows_affected())
    }

    // ---- quizzes ----

    /// Inserts a quiz and its questions; [`Conflict::Exists`] when the creator used the
    /// idempotency key before.
    pub async fn create_quiz(
        &self,
        quiz: &QuizRow,
        idempotency: Option<(&str, &str)>,
    ) -> Result<(), Conflict> {
        let tx = self.db.begin().await.map_err(|e| unique(e, "begin"))?;
        tx.execute_raw(stmt(
            self.backend,
            "INSERT INTO quizzes (id, title, employer_id, created_by, created_at, idempotency_key, request_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                quiz.id.clone().into(),
                quiz.title.clone().into(),
                quiz.employer_id.clone().into(),
                quiz.created_by.clone().into(),
                quiz.created_at.into(),
                idempotency.map(|(k, _)| k.to_string()).into(),
                idempotency.map(|(_, h)| h.to_string()).into(),
            ],
        ))
        .await
        .map_err(|e| unique(e, "insert quiz"))?;
        for (position, q) in quiz.questions.iter().enumerate() {
            let body = serde_json::to_string(q).context("question JSON")?;
            tx.execute_raw(stmt(
                self.backend,
                "INSERT INTO quiz_questions (id, quiz_id, position, body) VALUES ($1, $2, $3, $4)",
                vec![
                    q.id.clone().into(),
                    quiz.id.clone().into(),
                    i32::try_from(position).unwrap_or(i32::MAX).into(),
                    body.into(),
                ],
            ))
            .await
            .map_err(|e| unique(e, "insert question"))?;
        }
        tx.commit().await.map_err(|e| unique(e, "commit quiz"))?;
        Ok(())
    }

    /// The quiz a creator made with an idempotency key, with its request hash.
    pub async fn quiz_by_key(
        &self,
        created_by: &str,
        key: &str,
    ) -> anyhow::Result<Option<(String, String)>> {
        let row = self
            .one(
                "SELECT id, request_hash FROM quizzes WHERE created_by = $1 AND idempotency_key = $2",
                vec![created_by.into(), key.into()],
            )
            .await
            .context("read quiz by key")?;
        row.map(|r| {
            Ok((
                r.try_get("", "id")?,
                r.try_get::<Option<String>>("", "request_hash")?.unwrap_or_default(),
            ))
        })
        .transpose()
        .map_err(|e: DbErr| anyhow::Error::new(e).context("read quiz by key"))
    }

    /// A quiz with its questions.
    pub async fn quiz(&self, id: &str) -> anyhow::Result<Option<QuizRow>> {
        let Some(row) = self
            .one(
                "SELECT id, title, employer_id, created_by, created_at FROM quizzes WHERE id = $1",
                vec![id.into()],
            )
            .await
            .context("read quiz")?
        else {
            return Ok(None);
        };
        let mut quiz = quiz_of(&row)?;
        let rows = self
            .all(
                "SELECT body FROM quiz_questions WHERE quiz_id = $1 ORDER BY position",
                vec![id.into()],
            )
            .await
            .context("read questions")?;
        for r in rows {
            let body: String = r.try_get("", "body")?;
            quiz.questions.push(serde_json::from_str(&body).context("question JSON")?);
        }
        Ok(Some(quiz))
    }

    /// Quizzes newest first (by id, a UUID v7), of `employer` (`None`: every quiz), before
    /// `before`.
    pub async fn quizzes(
        &self,
        employer: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> anyhow::Result<Vec<QuizRow>> {
        let rows = self
            .all(
                "SELECT id, title, employer_id, created_by, created_at FROM quizzes \
                 WHERE ($1 IS NULL OR employer_id = $1) AND ($2 IS NULL OR id < $2) \
                 ORDER BY id DESC LIMIT $3",
                vec![
                    employer.map(str::to_string).into(),
                    before.map(str::to_string).into(),
                    i64::from(limit).into(),
                ],
            )
            .await
            .context("list quizzes")?;
        rows.iter().map(quiz_of).collect()
    }

    // ---- sessions ----

    /// Inserts a session; [`Conflict::Exists`] when the host used the idempotency key before.
    pub async fn create_session(
        &self,
        s: &SessionRow,
        idempotency: Option<(&str, &str)>,
    ) -> Result<(), Conflict> {
        let scoring = serde_json::to_string(&s.scoring).context("scoring JSON")?;
        self.exec(
            "INSERT INTO quiz_sessions (id, quiz_id, title, employer_id, state, late_join, team_mode, scoring, \
               question_count, revealed_count, host, created_at, started_at, finished_at, idempotency_key, request_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11, NULL, NULL, $12, $13)",
            vec![
                s.id.clone().into(),
                s.quiz_id.clone().into(),
                s.title.clone().into(),
                s.employer_id.clone().into(),
                s.state.as_str().into(),
                s.late_join.into(),
                s.team_mode.into(),
                scoring.into(),
                s.question_count.into(),
                s.host.clone().into(),
                s.created_at.into(),
                idempotency.map(|(k, _)| k.to_string()).into(),
                idempotency.map(|(_, h)| h.to_string()).into(),
            ],
        )
        .await
        .map_err(|e| unique(e, "insert session"))?;
        Ok(())
    }

    /// The session a host made with an idempotency key, with its request hash.
    pub async fn session_by_key(
        &self,
        host: &str,
        key: &str,
    ) -> anyhow::Result<Option<(String, String)>> {
        let row = self
            .one(
                "SELECT id, request_hash FROM quiz_sessions WHERE host = $1 AND idempotency_key = $2",
                vec![host.into(), key.into()],
            )
            .await
            .context("read session by key")?;
        row.map(|r| {
            Ok((
                r.try_get("", "id")?,
                r.try_get::<Option<String>>("", "request_hash")?.unwrap_or_default(),
            ))
        })
        .transpose()
        .map_err(|e: DbErr| anyhow::Error::new(e).context("read session by key"))
    }

    /// A session.
    pub async fn session(&self, id: &str) -> anyhow::Result<Option<SessionRow>> {
        let row = self
            .one(
                &format!("SELECT {SESSION_COLUMNS} FROM quiz_sessions WHERE id = $1"),
                vec![id.into()],
            )
            .await
            .context("read session")?;
        row.as_ref().map(session_of).transpose()
    }

    /// Moves a session from one of `from` to `to`; whether it did.
    pub async fn transition(
        &self,
        id: &str,
        from: &[State],
        to: State,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let from: Vec<Value> = from.iter().map(|s| s.as_str().into()).collect();
        let mut values = vec![to.as_str().into(), now.into(), id.into()];
        let slots: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 4)).collect();
        values.extend(from);
        let started =
            if to == State::Running { "started_at = $2" } else { "started_at = started_at" };
        let finished =
            if to == State::Finished { "finished_at = $2" } else { "finished_at = finished_at" };
        let sql = format!(
            "UPDATE quiz_sessions SET state = $1, {started}, {finished} WHERE id = $3 AND state IN ({})",
            slots.join(", ")
        );
        let done = self.exec(&sql, values).await.context("change session state")? == 1;
        if done && to == State::Finished {
            self.exec(
                "UPDATE quiz_session_questions SET closed_at = $1 WHERE session_id = $2 AND closed_at IS NULL",
                vec![now.into(), id.into()],
            )
            .await
            .context("close questions")?;
        }
        Ok(done)
    }

    /// Reveals the question at `position` (the session's revealed count) when the session is
    /// running and still at that count, closing the previous one; whether it did.
    pub async fn reveal(
        &self,
        session_id: &str,
        position: i32,
        question_id: &str,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let tx = self.db.begin().await.context("begin reveal")?;
        let moved = tx
            .execute_raw(stmt(
                self.backend,
                "UPDATE quiz_sessions SET revealed_count = $1 \
                 WHERE id = $2 AND state = 'running' AND revealed_count = $3",
                vec![(position + 1).into(), session_id.into(), position.into()],
            ))
            .await
            .context("advance session")?
            .rows_affected();
        if moved != 1 {
            return Ok(false);
        }
        tx.execute_raw(stmt(
            self.backend,
            "UPDATE quiz_session_questions SET closed_at = $1 \
             WHERE session_id = $2 AND closed_at IS NULL",
            vec![now.into(), session_id.into()],
        ))
        .await
        .context("close previous question")?;
        tx.execute_raw(stmt(
            self.backend,
            "INSERT INTO quiz_session_questions (session_id, position, question_id, revealed_at, deadline, closed_at) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
            vec![
                session_id.into(),
                position.into(),
                question_id.into(),
                now.into(),
                deadline.into(),
            ],
        ))
        .await
        .context("reveal question")?;
        tx.commit().await.context("commit reveal")?;
        Ok(true)
    }

    /// Closes the session's open question at `position` (any open one when `None`); the
    /// position closed, if one was.
    pub async fn close_question(
        &self,
        session_id: &str,
        position: Option<i32>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<i32>> {
        let row = self
            .one(
                "UPDATE quiz_session_questions SET closed_at = $1 \
                 WHERE session_id = $2 AND closed_at IS NULL AND ($3 IS NULL OR position = $3) \
                 RETURNING position",
                vec![now.into(), session_id.into(), position.into()],
            )
            .await
            .context("close question")?;
        Ok(row.map(|r| r.try_get("", "position")).transpose()?)
    }

    /// The session's revealed questions, in order.
    pub async fn revealed(&self, session_id: &str) -> anyhow::Result<Vec<Revealed>> {
        let rows = self
            .all(
                "SELECT position, question_id, revealed_at, deadline, closed_at \
                 FROM quiz_session_questions WHERE session_id = $1 ORDER BY position",
                vec![session_id.into()],
            )
            .await
            .context("read revealed questions")?;
        rows.iter().map(|r| revealed_of(r, "")).collect()
    }

    /// Questions left open in running sessions (the closer's work list).
    pub async fn open_questions(&self) -> anyhow::Result<Vec<(String, Revealed)>> {
        let rows = self
            .all(
                "SELECT q.session_id, q.position, q.question_id, q.revealed_at, q.deadline, q.closed_at \
                 FROM quiz_session_questions q JOIN quiz_sessions s ON s.id = q.session_id \
                 WHERE q.closed_at IS NULL AND s.state = 'running'",
                vec![],
            )
            .await
            .context("read open questions")?;
        rows.iter().map(|r| Ok((r.try_get("", "session_id")?, revealed_of(r, "")?))).collect()
    }

    /// Of the participants present at `now_ms`: (present, those who answered `question_id`).
    pub async fn presence(
        &self,
        session_id: &str,
        question_id: &str,
        now_ms: i64,
    ) -> anyhow::Result<(i64, i64)> {
        let row = self
            .one(
                "SELECT COUNT(*) AS present, COUNT(a.id) AS answered FROM quiz_participants p \
                 LEFT JOIN quiz_answers a ON a.participant_id = p.id AND a.question_id = $2 \
                 WHERE p.session_id = $1 AND p.present_until > $3",
                vec![session_id.into(), question_id.into(), now_ms.into()],
            )
            .await
            .context("read presence")?
            .context("COUNT without a row")?;
        Ok((row.try_get("", "present")?, row.try_get("", "answered")?))
    }

    /// Marks participants present until `until_ms` (`None`: gone).
    pub async fn set_presence(&self, ids: &[String], until_ms: Option<i64>) -> anyhow::Result<()> {
        for chunk in ids.chunks(500) {
            let slots: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let mut values = vec![until_ms.into()];
            values.extend(chunk.iter().map(|id| Value::from(id.clone())));
            self.exec(
                &format!(
                    "UPDATE quiz_participants SET present_until = $1 WHERE id IN ({})",
                    slots.join(", ")
                ),
                values,
            )
            .await
            .context("mark presence")?;
        }
        Ok(())
    }

    /// Records when revealed questions reached participants' connections (first time only).
    pub async fn record_deliveries(
        &self,
        deliveries: &[(String, String, DateTime<Utc>)],
    ) -> anyhow::Result<()> {
        for chunk in deliveries.chunks(300) {
            let mut slots = Vec::with_capacity(chunk.len());
            let mut values = Vec::with_capacity(chunk.len() * 3);
            for (i, (participant, question, at)) in chunk.iter().enumerate() {
                slots.push(format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3));
                values.extend([participant.clone().into(), question.clone().into(), (*at).into()]);
            }
            self.exec(
                &format!(
                    "INSERT INTO quiz_deliveries (participant_id, question_id, delivered_at) VALUES {} \
                     ON CONFLICT DO NOTHING",
                    slots.join(", ")
                ),
                values,
            )
            .await
            .context("record deliveries")?;
        }
        Ok(())
    }

    // ---- participants ----

    /// Inserts a participant; [`Conflict::Exists`] when the user joined before.
    pub async fn join(&self, p: &ParticipantRow) -> Result<(), Conflict> {
        self.exec(
            "INSERT INTO quiz_participants (id, session_id, user_id, team, score, answered, correct, streak, \
               streak_position, joined_at, present_until) \
             VALUES ($1, $2, $3, $4, 0, 0, 0, 0, -1, $5, NULL)",
            vec![
                p.id.clone().into(),
                p.session_id.clone().into(),
                p.user_id.clone().into(),
                p.team.clone().into(),
                p.joined_at.into(),
            ],
        )
        .await
        .map_err(|e| unique(e, "insert participant"))?;
        Ok(())
    }

    /// A user's participation in a session.
    pub async fn participant(
        &self,
        session_id: &str,
        user_id: &str,
    ) -> anyhow::Result<Option<ParticipantRow>> {
        let row = self
            .one(
                &format!(
                    "SELECT {PARTICIPANT_COLUMNS} FROM quiz_participants p WHERE p.session_id = $1 AND p.user_id = $2"
                ),
                vec![session_id.into(), user_id.into()],
            )
            .await
            .context("read participant")?;
        row.as_ref().map(participant_of).transpose()
    }

    /// How many joined a session.
    pub async fn participant_count(&self, session_id: &str) -> anyhow::Result<i64> {
        let row = self
            .one(
                "SELECT COUNT(*) AS n FROM quiz_participants WHERE session_id = $1",
                vec![session_id.into()],
            )
            .await
            .context("count participants")?
            .context("COUNT without a row")?;
        Ok(row.try_get("", "n")?)
    }

    /// Participants by score (then correct answers, then join time), at most `limit`.
    pub async fn standings(
        &self,
        session_id: &str,
        limit: u32,
    ) -> anyhow::Result<Vec<ParticipantRow>> {
        let rows = self
            .all(
                &format!(
                    "SELECT {PARTICIPANT_COLUMNS} FROM quiz_participants p WHERE p.session_id = $1 \
                     ORDER BY p.score DESC, p.correct DESC, p.joined_at, p.user_id LIMIT $2"
                ),
                vec![session_id.into(), i64::from(limit).into()],
            )
            .await
            .context("read standings")?;
        rows.iter().map(participant_of).collect()
    }

    /// Teams (team mode): (team, average score, members), best first.
    pub async fn teams(&self, session_id: &str) -> anyhow::Result<Vec<(String, f64, i64)>> {
        let rows = self
            .all(
                "SELECT team, AVG(score) AS score, COUNT(*) AS members FROM quiz_participants \
                 WHERE session_id = $1 AND team IS NOT NULL GROUP BY team ORDER BY score DESC, team",
                vec![session_id.into()],
            )
            .await
            .context("read teams")?;
        rows.iter()
            .map(|r| {
                Ok((r.try_get("", "team")?, r.try_get("", "score")?, r.try_get("", "members")?))
            })
            .collect::<Result<_, DbErr>>()
            .context("read teams")
    }

    // ---- answers ----

    /// Everything an answer to `question_id` by `user_id` needs, in one statement.
    pub async fn answer_context(
        &self,
        session_id: &str,
        user_id: &str,
        question_id: &str,
    ) -> anyhow::Result<Option<AnswerContext>> {
        let row = self
            .one(
                &format!(
                    "SELECT {PARTICIPANT_COLUMNS}, s.quiz_id, s.state, s.scoring, \
                       q.position, q.question_id, q.revealed_at, q.deadline, q.closed_at, d.delivered_at \
                     FROM quiz_participants p JOIN quiz_sessions s ON s.id = p.session_id \
                     LEFT JOIN quiz_session_questions q ON q.session_id = p.session_id AND q.question_id = $3 \
                     LEFT JOIN quiz_deliveries d ON d.participant_id = p.id AND d.question_id = $3 \
                     WHERE p.session_id = $1 AND p.user_id = $2"
                ),
                vec![session_id.into(), user_id.into(), question_id.into()],
            )
            .await
            .context("read answer context")?;
        let Some(r) = row else { return Ok(None) };
        let scoring: String = r.try_get("", "scoring")?;
        let revealed = match r.try_get::<Option<i32>>("", "position")? {
            Some(_) => Some(revealed_of(&r, "")?),
            None => None,
        };
        Ok(Some(AnswerContext {
            participant: participant_of(&r)?,
            quiz_id: r.try_get("", "quiz_id")?,
            state: State::parse(&r.try_get::<String>("", "state")?)?,
            scoring: serde_json::from_str(&scoring).context("scoring JSON")?,
            revealed,
            delivered_at: r.try_get("", "delivered_at")?,
        }))
    }

    /// Stores answers (with `board`, the board of each one's session), their participants' new
    /// totals and the outbox rows of their score changes in one transaction of three
    /// statements whatever the count. Per answer: the participant's score after it, or `None`
    /// when the participant answered that question before (`UNIQUE(participant_id,
    /// question_id)`, concurrent answers included: the first one in wins).
    pub async fn answers(&self, batch: &[(NewAnswer, String)]) -> anyhow::Result<Vec<Option<f64>>> {
        let mut out = vec![None; batch.len()];
        if batch.is_empty() {
            return Ok(out);
        }
        let tx = self.db.begin().await.context("begin answers")?;
        // 1. The answers; those the unique constraint refuses are simply not returned.
        let mut slots = Vec::with_capacity(batch.len());
        let mut values = Vec::with_capacity(batch.len() * 10);
        for (i, (a, _)) in batch.iter().enumerate() {
            let n = i * 10;
            slots.push(format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6,
                n + 7,
                n + 8,
                n + 9,
                n + 10
            ));
            values.extend([
                a.id.clone().into(),
                a.participant_id.clone().into(),
                a.session_id.clone().into(),
                a.question_id.clone().into(),
                a.position.into(),
                a.answer.clone().into(),
                a.correct.into(),
                a.score.into(),
                a.elapsed_ms.into(),
                a.at.into(),
            ]);
        }
        let inserted = tx
            .query_all_raw(stmt(
                self.backend,
                &format!(
                    "INSERT INTO quiz_answers (id, participant_id, session_id, question_id, position, answer, correct, score, elapsed_ms, answered_at) \
                     VALUES {} ON CONFLICT DO NOTHING RETURNING id",
                    slots.join(", ")
                ),
                values,
            ))
            .await
            .context("insert answers")?;
        let inserted: std::collections::HashSet<String> = inserted
            .iter()
            .map(|r| r.try_get::<String>("", "id"))
            .collect::<Result<_, DbErr>>()
            .context("read inserted answers")?;
        let taken: Vec<usize> =
            (0..batch.len()).filter(|&i| inserted.contains(&batch[i].0.id)).collect();
        if taken.is_empty() {
            tx.commit().await.context("commit answers")?;
            return Ok(out);
        }
        // 2. The participants' totals: one UPDATE per round in which each participant appears
        //    once (a participant has one answer per batch unless a question closed and the
        //    next opened inside it).
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        for &i in &taken {
            let pid = &batch[i].0.participant_id;
            match rounds.iter_mut().find(|r| r.iter().all(|&j| &batch[j].0.participant_id != pid)) {
                Some(round) => round.push(i),
                None => rounds.push(vec![i]),
            }
        }
        for round in rounds {
            let mut rows = Vec::with_capacity(round.len());
            let mut values = Vec::with_capacity(round.len() * 5);
            for (k, &i) in round.iter().enumerate() {
                let a = &batch[i].0;
                let n = k * 5;
                rows.push(format!(
                    "SELECT ${} AS pid, ${} AS delta, ${} AS c, ${} AS streak, ${} AS pos",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5
                ));
                values.extend([
                    a.participant_id.clone().into(),
                    a.score.into(),
                    i32::from(a.correct == Some(true)).into(),
                    a.streak.into(),
                    a.position.into(),
                ]);
            }
            let updated = tx
                .query_all_raw(stmt(
                    self.backend,
                    &format!(
                        "UPDATE quiz_participants SET score = quiz_participants.score + v.delta, \
                           answered = quiz_participants.answered + 1, correct = quiz_participants.correct + v.c, \
                           streak = v.streak, \
                           streak_position = CASE WHEN v.c = 1 THEN v.pos ELSE quiz_participants.streak_position END \
                         FROM ({}) AS v WHERE quiz_participants.id = v.pid \
                         RETURNING id, score",
                        rows.join(" UNION ALL ")
                    ),
                    values,
                ))
                .await
                .context("update participants")?;
            let scores: HashMap<String, f64> = updated
                .iter()
                .map(|r| Ok((r.try_get("", "id")?, r.try_get("", "score")?)))
                .collect::<Result<_, DbErr>>()
                .context("read participant scores")?;
            for &i in &round {
                out[i] =
                    Some(*scores.get(&batch[i].0.participant_id).context("participant vanished")?);
            }
        }
        // 3. The outbox rows, in the order the answers came.
        let mut slots = Vec::with_capacity(taken.len());
        let mut values = Vec::with_capacity(taken.len() * 4);
        for (k, &i) in taken.iter().enumerate() {
            let (a, board) = &batch[i];
            let change = ScoreChange {
                board: board.clone(),
                member: a.user_id.clone(),
                delta: a.score,
                committed_unix_ms: a.at.timestamp_millis(),
            };
            let n = k * 4;
            slots.push(format!(
                "(${}, ${}, 'participant_score_change', 'ADD_ANSWER', ${}, ${}, NULL)",
                n + 1,
                n + 2,
                n + 3,
                n + 4
            ));
            values.extend([
                a.id.clone().into(),
                a.session_id.clone().into(),
                serde_json::to_string(&change).context("score change JSON")?.into(),
                a.at.into(),
            ]);
        }
        tx.execute_raw(stmt(
            self.backend,
            &format!(
                "INSERT INTO quiz_outbox (event_id, session_id, event_name, type, payload, created_at, published_at) VALUES {}",
                slots.join(", ")
            ),
            values,
        ))
        .await
        .context("insert outbox rows")?;
        tx.commit().await.context("commit answers")?;
        Ok(out)
    }

    /// A session's answers grouped by question and answer: one aggregate read for the
    /// results of every question (rows per distinct answer, not per participant).
    pub async fn answer_groups(&self, session_id: &str) -> anyhow::Result<Vec<AnswerGroup>> {
        let rows = self
            .all(
                "SELECT question_id, answer, COUNT(*) AS n, \
                   SUM(CASE WHEN correct THEN 1 ELSE 0 END) AS c, SUM(score) AS s \
                 FROM quiz_answers WHERE session_id = $1 GROUP BY question_id, answer",
                vec![session_id.into()],
            )
            .await
            .context("read answer groups")?;
        rows.iter()
            .map(|r| {
                Ok(AnswerGroup {
                    question_id: r.try_get("", "question_id")?,
                    answer: r.try_get("", "answer")?,
                    count: r.try_get("", "n")?,
                    correct: r.try_get("", "c")?,
                    score: r.try_get("", "s")?,
                })
            })
            .collect::<Result<_, DbErr>>()
            .context("read answer groups")
    }

    /// Every answer score of a session: (user, answer id, points), by user.
    pub async fn scores(&self, session_id: &str) -> anyhow::Result<Vec<(String, String, f64)>> {
        let rows = self
            .all(
                "SELECT p.user_id, a.id, a.score FROM quiz_answers a \
                 JOIN quiz_participants p ON p.id = a.participant_id \
                 WHERE a.session_id = $1 ORDER BY p.user_id, a.id",
                vec![session_id.into()],
            )
            .await
            .context("read scores")?;
        rows.iter()
            .map(|r| Ok((r.try_get("", "user_id")?, r.try_get("", "id")?, r.try_get("", "score")?)))
            .collect::<Result<_, DbErr>>()
            .context("read scores")
    }

    // ---- outbox ----

    /// Sessions with unpublished score changes, oldest change first.
    pub async fn pending_sessions(&self, limit: u32) -> anyhow::Result<Vec<String>> {
        let rows = self
            .all(
                "SELECT session_id FROM quiz_outbox WHERE published_at IS NULL \
                 GROUP BY session_id ORDER BY MIN(seq) LIMIT $1",
                vec![i64::from(limit).into()],
            )
            .await
            .context("read pending sessions")?;
        rows.iter()
            .map(|r| r.try_get("", "session_id"))
            .collect::<Result<_, DbErr>>()
            .context("read pending sessions")
    }

    /// Claims up to `limit` of a session's unpublished rows in order, hands them to `publish`,
    /// and marks them published once it succeeds; the number published. Only one relay works
    /// on a session at a time (a PostgreSQL advisory lock per session, and `FOR UPDATE SKIP
    /// LOCKED` on the rows; on SQLite, one relay of the process at a time), so a session's
    /// changes go out in order. `None` when another relay holds the session.
    pub async fn relay<F, Fut>(
        &self,
        session_id: &str,
        limit: u32,
        now: DateTime<Utc>,
        publish: F,
    ) -> anyhow::Result<Option<usize>>
    where
        F: FnOnce(Vec<OutboxRow>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let _turn = match self.backend {
            DbBackend::Postgres => None,
            _ => Some(self.relay_turn.lock().await),
        };
        let tx = self.db.begin().await.context("begin relay")?;
        let locking = if self.backend == DbBackend::Postgres {
            let got = tx
                .query_one_raw(stmt(
                    self.backend,
                    "SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS got",
                    vec![RELAY_LOCK_CLASS.into(), session_id.into()],
                ))
                .await
                .context("take session lock")?
                .context("no lock row")?;
            if !got.try_get::<bool>("", "got")? {
                return Ok(None);
            }
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let rows = tx
            .query_all_raw(stmt(
                self.backend,
                &format!(
                    "SELECT seq, event_id, payload FROM quiz_outbox \
                     WHERE session_id = $1 AND published_at IS NULL ORDER BY seq LIMIT $2{locking}"
                ),
                vec![session_id.into(), i64::from(limit).into()],
            ))
            .await
            .context("claim outbox rows")?;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in rows {
            let payload: String = r.try_get("", "payload")?;
            claimed.push(OutboxRow {
                seq: r.try_get("", "seq")?,
                event_id: r.try_get("", "event_id")?,
                change: serde_json::from_str(&payload).context("outbox payload")?,
            });
        }
        if claimed.is_empty() {
            return Ok(Some(0));
        }
        let seqs: Vec<i64> = claimed.iter().map(|r| r.seq).collect();
        publish(claimed).await?;
        let slots: Vec<String> = (0..seqs.len()).map(|i| format!("${}", i + 2)).collect();
        let mut values = vec![now.into()];
        values.extend(seqs.iter().map(|&s| Value::from(s)));
        tx.execute_raw(stmt(
            self.backend,
            &format!(
                "UPDATE quiz_outbox SET published_at = $1 WHERE seq IN ({})",
                slots.join(", ")
            ),
            values,
        ))
        .await
        .context("mark published")?;
        tx.commit().await.context("commit relay")?;
        Ok(Some(seqs.len()))
    }

    /// Unpublished rows (for metrics and tests).
    pub async fn outbox_backlog(&self) -> anyhow::Result<i64> {
        let row = self
            .one("SELECT COUNT(*) AS n FROM quiz_outbox WHERE published_at IS NULL", vec![])
            .await
            .context("count outbox")?
            .context("COUNT without a row")?;
        Ok(row.try_get("", "n")?)
    }

    /// Deletes rows published before `cutoff`; how many.
    pub async fn purge_outbox(&self, cutoff: DateTime<Utc>) -> anyhow::Result<u64> {
        self.exec(
            "DELETE FROM quiz_outbox WHERE published_at IS NOT NULL AND published_at < $1",
            vec![cutoff.into()],
        )
        .await
        .context("purge outbox")
    }
}

/// A statement for `backend` from SQL written with `$n` parameters.
fn stmt(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    ewpm_kit::db::statement(backend, sql, values)
}

const SESSION_COLUMNS: &str = "id, quiz_id, title, employer_id, state, late_join, team_mode, scoring, \
     question_count, revealed_count, host, created_at, started_at, finished_at";

const PARTICIPANT_COLUMNS: &str = "p.id, p.session_id, p.user_id, p.team, p.score, p.answered, \
     p.correct, p.streak, p.streak_position, p.joined_at";

fn quiz_of(r: &QueryResult) -> anyhow::Result<QuizRow> {
    Ok(QuizRow {
        id: r.try_get("", "id")?,
        title: r.try_get("", "title")?,
        employer_id: r.try_get("", "employer_id")?,
        created_by: r.try_get("", "created_by")?,
        created_at: r.try_get("", "created_at")?,
        questions: Vec::new(),
    })
}

fn session_of(r: &QueryResult) -> anyhow::Result<SessionRow> {
    let scoring: String = r.try_get("", "scoring")?;
    Ok(SessionRow {
        id: r.try_get("", "id")?,
        quiz_id: r.try_get("", "quiz_id")?,
        title: r.try_get("", "title")?,
        employer_id: r.try_get("", "employer_id")?,
        state: State::parse(&r.try_get::<String>("", "state")?)?,
        late_join: r.try_get("", "late_join")?,
        team_mode: r.try_get("", "team_mode")?,
        scoring: serde_json::from_str(&scoring).context("scoring JSON")?,
        question_count: r.try_get("", "question_count")?,
        revealed_count: r.try_get("", "revealed_count")?,
        host: r.try_get("", "host")?,
        created_at: r.try_get("", "created_at")?,
        started_at: r.try_get("", "started_at")?,
        finished_at: r.try_get("", "finished_at")?,
    })
}

fn revealed_of(r: &QueryResult, pre: &str) -> anyhow::Result<Revealed> {
    Ok(Revealed {
        position: r.try_get(pre, "position")?,
        question_id: r.try_get(pre, "question_id")?,
        revealed_at: r.try_get(pre, "revealed_at")?,
        deadline: r.try_get(pre, "deadline")?,
        closed_at: r.try_get(pre, "closed_at")?,
    })
}

fn participant_of(r: &QueryResult) -> anyhow::Result<ParticipantRow> {
    Ok(ParticipantRow {
        id: r.try_get("", "id")?,
        session_id: r.try_get("", "session_id")?,
        user_id: r.try_get("", "user_id")?,
        team: r.try_get("", "team")?,
        score: r.try_get("", "score")?,
        answered: r.try_get("", "answered")?,
        correct: r.try_get("", "correct")?,
        streak: r.try_get("", "streak")?,
        streak_position: r.try_get("", "streak_position")?,
        joined_at: r.try_get("", "joined_at")?,
    })
}
