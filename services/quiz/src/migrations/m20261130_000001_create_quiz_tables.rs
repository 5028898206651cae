//! The quiz tables (ids are canonical UUID text, so SQLite and PostgreSQL store them alike).
//!
//! - `quizzes`, `quiz_questions` (the seed's `question_quiz`: a question belongs to one quiz,
//!   its body JSON holds the text, choices and answers);
//! - `quiz_sessions`, `quiz_session_questions` (one row per revealed question: when it was
//!   revealed, its deadline, when it closed);
//! - `quiz_participants` with `UNIQUE(session_id, user_id)`, `quiz_answers` with
//!   `UNIQUE(participant_id, question_id)` (the seed's constraints);
//! - `quiz_outbox`: the seed's `events` (event_name `participant_score_change`, type
//!   `ADD_ANSWER`, JSON payload), written in the answer's transaction and published by relays;
//! - `quiz_deliveries`: when a revealed question reached a participant's connection (fair
//!   speed scoring).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Quizzes {
    Table,
    Id,
    Title,
    EmployerId,
    CreatedBy,
    CreatedAt,
    IdempotencyKey,
    RequestHash,
}

#[derive(DeriveIden)]
enum QuizQuestions {
    Table,
    Id,
    QuizId,
    Position,
    Body,
}

#[derive(DeriveIden)]
enum QuizSessions {
    Table,
    Id,
    QuizId,
    Title,
    EmployerId,
    State,
    LateJoin,
    TeamMode,
    Scoring,
    QuestionCount,
    RevealedCount,
    Host,
    CreatedAt,
    StartedAt,
    FinishedAt,
    IdempotencyKey,
    RequestHash,
}

#[derive(DeriveIden)]
enum QuizSessionQuestions {
    Table,
    SessionId,
    Position,
    QuestionId,
    RevealedAt,
    Deadline,
    ClosedAt,
}

#[derive(DeriveIden)]
enum QuizParticipants {
    Table,
    Id,
    SessionId,
    UserId,
    Team,
    Score,
    Answered,
    Correct,
    Streak,
    StreakPosition,
    JoinedAt,
    PresentUntil,
}

#[derive(DeriveIden)]
enum QuizAnswers {
    Table,
    Id,
    ParticipantId,
    SessionId,
    QuestionId,
    Position,
    Answer,
    Correct,
    Score,
    ElapsedMs,
    AnsweredAt,
}

#[derive(DeriveIden)]
enum QuizOutbox {
    Table,
    Seq,
    EventId,
    SessionId,
    EventName,
    Type,
    Payload,
    CreatedAt,
    PublishedAt,
}

#[derive(DeriveIden)]
enum QuizDeliveries {
    Table,
    ParticipantId,
    QuestionId,
    DeliveredAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Quizzes::Table)
                    .if_not_exists()
                    .col(string_len(Quizzes::Id, 36).primary_key())
                    .col(string_len(Quizzes::Title, 200))
                    .col(string_len_null(Quizzes::EmployerId, 64))
                    .col(string_len(Quizzes::CreatedBy, 128))
                    .col(timestamp_with_time_zone(Quizzes::CreatedAt))
                    .col(string_len_null(Quizzes::IdempotencyKey, 128))
                    .col(string_len_null(Quizzes::RequestHash, 64))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("quizzes_idempotency")
                    .table(Quizzes::Table)
                    .col(Quizzes::CreatedBy)
                    .col(Quizzes::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QuizQuestions::Table)
                    .if_not_exists()
                    .col(string_len(QuizQuestions::Id, 36).primary_key())
                    .col(string_len(QuizQuestions::QuizId, 36))
                    .col(integer(QuizQuestions::Position))
                    .col(text(QuizQuestions::Body))
                    .foreign_key(
                        ForeignKey::create()
                            .name("quiz_questions_quiz")
                            .from(QuizQuestions::Table, QuizQuestions::QuizId)
                            .to(Quizzes::Table, Quizzes::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("quiz_questions_order")
                    .table(QuizQuestions::Table)
                    .col(QuizQuestions::QuizId)
                    .col(QuizQuestions::Position)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QuizSessions::Table)
                    .if_not_exists()
                    .col(string_len(QuizSessions::Id, 36).primary_key())
                    .col(string_len(QuizSessions::QuizId, 36))
                    .col(string_len(QuizSessions::Title, 200))
                    .col(string_len_null(QuizSessions::EmployerId, 64))
                    .col(string_len(QuizSessions::State, 16))
                    .col(boolean(QuizSessions::LateJoin))
                    .col(boolean(QuizSessions::TeamMode))
                    .col(text(QuizSessions::Scoring))
                    .col(integer(QuizSessions::QuestionCount))
                    .col(integer(QuizSessions::RevealedCount))
                    .col(string_len(QuizSessions::Host, 128))
                    .col(timestamp_with_time_zone(QuizSessions::CreatedAt))
                    .col(timestamp_with_time_zone_null(QuizSessions::StartedAt))
                    .col(timestamp_with_time_zone_null(QuizSessions::FinishedAt))
                    .col(string_len_null(QuizSessions::IdempotencyKey, 128))
                    .col(string_len_null(QuizSessions::RequestHash, 64))
                    .foreign_key(
                        ForeignKey::create()
                            .name("quiz_sessions_quiz")
                            .from(QuizSessions::Table, QuizSessions::QuizId)
                            .to(Quizzes::Table, Quizzes::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("quiz_sessions_idempotency")
                    .table(QuizSessions::Table)
                    .col(QuizSessions::Host)
                    .col(QuizSessions::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("quiz_sessions_state")
                    .table(QuizSessions::Table)
                    .col(QuizSessions::State)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QuizSessionQuestions::Table)
                    .if_not_exists()
                    .col(string_len(QuizSessionQuestions::SessionId, 36))
                    .col(integer(QuizSessionQuestions::Position))
                    .col(string_len(QuizSessionQuestions::QuestionId, 36))
                    .col(timestamp_with_time_zone(QuizSessionQuestions::RevealedAt))
                    .col(timestamp_with_time_zone(QuizSessionQuestions::Deadline))
                    .col(timestamp_with_time_zone_null(QuizSessionQuestions::ClosedAt))
                    .primary_key(
                        Index::create()
                            .col(QuizSessionQuestions::SessionId)
                            .col(QuizSessionQuestions::Position),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("quiz_session_questions_session")
                            .from(QuizSessionQuestions::Table, QuizSessionQuestions::SessionId)
                            .to(QuizSessions::Table, QuizSessions::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QuizParticipants::Table)
                    .if_not_exists()
                    .col(string_len(QuizParticipants::Id, 36).primary_key())
                    .col(string_len(QuizParticipants::SessionId, 36))
                    .col(string_len(QuizParticipants::UserId, 128))
                    .col(string_len_null(QuizParticipants::Team, 64))
                    .col(double(QuizParticipants::Score))
                    .col(integer(QuizParticipants::Answered))
                    .col(integer(QuizParticipants::Correct))
                    .col(integer(QuizParticipants::Streak))
                    .col(integer(QuizParticipants::StreakPosition))
                    .col(timestamp_with_time_zone(QuizParticipants::JoinedAt))
                    // Unix milliseconds until which a connection of theirs counts as present.
                    .col(big_integer_null(QuizParticipants::PresentUntil))
                    .foreign_key(
                        ForeignKey::create()
                            .name("quiz_participants_session")
                            .from(QuizParticipants::Table, QuizParticipants::SessionId)
                            .to(QuizSessions::Table, QuizSessions::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("quiz_participants_once")
                    .table(QuizParticipants::Table)
                    .col(QuizParticipants::SessionId)
                    .col(QuizParticipants::UserId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QuizAnswers::Table)
                    .if_not_exists()
                    .col(string_len(QuizAnswers::Id, 36).primary_key())
                    .col(string_len(QuizAnswers::ParticipantId, 36))
                    .col(string_len(QuizAnswers::SessionId, 36))
                    .col(string_len(QuizAnswers::QuestionId, 36))
                    .col(integer(QuizAnswers::Position))
                    .col(string_len(QuizAnswers::Answer, 200))
                    .col(boolean_null(QuizAnswers::Correct))
                    .col(double(QuizAnswers::Score))
                    .col(big_integer(QuizAnswers::ElapsedMs))
                    .col(timestamp_with_time_zone(QuizAnswers::AnsweredAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("quiz_answers_participant")
                            .from(QuizAnswers::Table, QuizAnswers::ParticipantId)
                            .to(QuizParticipants::Table, QuizParticipants::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("quiz_answers_once")
                    .table(QuizAnswers::Table)
                    .col(QuizAnswers::ParticipantId)
                    .col(QuizAnswers::QuestionId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("quiz_answers_question")
                    .table(QuizAnswers::Table)
                    .col(QuizAnswers::SessionId)
                    .col(QuizAnswers::QuestionId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QuizOutbox::Table)
                    .if_not_exists()
                    .col(big_integer(QuizOutbox::Seq).auto_increment().primary_key())
                    .col(string_len(QuizOutbox::EventId, 36))
                    .col(string_len(QuizOutbox::SessionId, 36))
                    .col(string_len(QuizOutbox::EventName, 64))
                    .col(string_len(QuizOutbox::Type, 32))
                    .col(text(QuizOutbox::Payload))
                    .col(timestamp_with_time_zone(QuizOutbox::CreatedAt))
                    .col(timestamp_with_time_zone_null(QuizOutbox::PublishedAt))
                    .to_owned(),
            )
            .await?;
        // What relays look for: the unpublished rows, by session, in order. Partial, so it
        // stays as small as the backlog.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS quiz_outbox_pending ON quiz_outbox (session_id, seq) \
                 WHERE published_at IS NULL",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("quiz_outbox_published")
                    .table(QuizOutbox::Table)
                    .col(QuizOutbox::PublishedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QuizDeliveries::Table)
                    .if_not_exists()
                    .col(string_len(QuizDeliveries::ParticipantId, 36))
                    .col(string_len(QuizDeliveries::QuestionId, 36))
                    .col(timestamp_with_time_zone(QuizDeliveries::DeliveredAt))
                    .primary_key(
                        Index::create()
                            .col(QuizDeliveries::ParticipantId)
                            .col(QuizDeliveries::QuestionId),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            QuizDeliveries::Table.into_iden(),
            QuizOutbox::Table.into_iden(),
            QuizAnswers::Table.into_iden(),
            QuizParticipants::Table.into_iden(),
            QuizSessionQuestions::Table.into_iden(),
            QuizSessions::Table.into_iden(),
            QuizQuestions::Table.into_iden(),
            Quizzes::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}
