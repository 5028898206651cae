//! `ewpm.progress.v1.ProgressService`: converts requests to domain values, calls
//! [`Progress`] or the store, converts the result back. Proto types stop here.

use ewpm_kit::{
    auth::Caller,
    error::{FieldViolation, Violations},
    paging, timestamp,
};
use ewpm_proto::progress::v1::{self as pb, progress_service_server::ProgressService};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    activity::ActivityKind,
    domain::{
        ActivityValue, Entry, IdempotencyKey, LoggedActivity, Note, ProgressValue,
        parse_challenge_id,
    },
    error::ProgressError,
    service::{ActivityLog, Progress, Submission},
    store::ProgressStore,
};

/// Page cursor of `ListDeadLetters`: the last id returned.
#[derive(serde::Serialize, serde::Deserialize)]
struct DeadLetterCursor {
    after: uuid::Uuid,
}

/// Rows per chunk of `GetChallengeTotals`.
const TOTALS_CHUNK: u64 = 2000;

/// The gRPC face of the progress service.
#[derive(Clone)]
pub struct ProgressGrpc {
    progress: Progress,
    store: ProgressStore,
}

impl ProgressGrpc {
    /// Serves `progress` and totals from `store`.
    pub fn new(progress: Progress, store: ProgressStore) -> Self {
        Self { progress, store }
    }
}

/// Parses a `SubmitProgressRequest`, reporting every bad field at once.
pub fn parse_submit(request: pb::SubmitProgressRequest) -> Result<Submission, ProgressError> {
    let pb::SubmitProgressRequest { challenge_id, value, occurred_at, idempotency_key } = request;
    let mut v = Violations::new();
    let challenge_id = v.check(parse_challenge_id(&challenge_id));
    let value = v.check(ProgressValue::parse(value));
    let occurred_at = v.check(parse_occurred_at(occurred_at));
    let idempotency_key = v.check(IdempotencyKey::parse_optional(&idempotency_key));
    v.finish()?;
    match (challenge_id, value, occurred_at, idempotency_key) {
        (Some(challenge_id), Some(value), Some(occurred_at), Some(idempotency_key)) => {
            Ok(Submission { challenge_id, value, occurred_at, idempotency_key })
        }
        _ => Err(anyhow::anyhow!("violations were reported above").into()),
    }
}

/// Parses a `LogActivityRequest`, reporting every bad field at once.
pub fn parse_log(request: pb::LogActivityRequest) -> Result<ActivityLog, ProgressError> {
    let pb::LogActivityRequest { kind, value, note, occurred_at, idempotency_key } = request;
    let mut v = Violations::new();
    let kind = v.check(match ActivityKind::from_proto(kind) {
        None => Err(FieldViolation::new(
            "kind",
            "is required: one of mood, symptom, steps, sleep, weight, birth",
        )),
        Some(ActivityKind::ChallengeProgress) => {
            Err(FieldViolation::new("kind", "challenge progress is submitted with SubmitProgress"))
        }
        Some(kind) => Ok(kind),
    });
    let value = v.check(ActivityValue::parse(value));
    let note = v.check(Note::parse(&note));
    let occurred_at = v.check(parse_occurred_at(occurred_at));
    let idempotency_key = v.check(IdempotencyKey::parse_optional(&idempotency_key));
    v.finish()?;
    match (kind, value, note, occurred_at, idempotency_key) {
        (Some(kind), Some(value), Some(note), Some(occurred_at), Some(idempotency_key)) => {
            Ok(ActivityLog { kind, value, note, occurred_at, idempotency_key })
        }
        _ => Err(anyhow::anyhow!("violations were reported above").into()),
    }
}

/// An optional `occurred_at`.
fn parse_occurred_at(
    raw: Option<prost_types::Timestamp>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, FieldViolation> {
    match raw {
        None => Ok(None),
        Some(ts) => timestamp::from_proto(&ts).map(Some).ok_or_else(|| {
            FieldViolation::new("occurred_at", "must be a valid time between 1970 and 9999")
        }),
    }
}

fn activity_to_proto(a: &LoggedActivity) -> pb::LogActivityResponse {
    pb::LogActivityResponse {
        activity_id: a.id.to_string(),
        kind: a.kind.to_proto(),
        user_id: a.user_id.clone(),
        value: a.value,
        note: a.note.clone(),
        occurred_at: Some(timestamp::to_proto(a.occurred_at)),
        accept_time: Some(timestamp::to_proto(a.accepted_at)),
    }
}

fn to_proto(e: &Entry) -> pb::SubmitProgressResponse {
    pb::SubmitProgressResponse {
        entry_id: e.id.to_string(),
        challenge_id: e.challenge_id.to_string(),
        user_id: e.user_id.clone(),
        value: e.value,
        occurred_at: Some(timestamp::to_proto(e.occurred_at)),
        accept_time: Some(timestamp::to_proto(e.accepted_at)),
    }
}

#[tonic::async_trait]
impl ProgressService for ProgressGrpc {
    async fn submit_progress(
        &self,
        request: Request<pb::SubmitProgressRequest>,
    ) -> Result<Response<pb::SubmitProgressResponse>, Status> {
        let caller = Caller::of(&request)?;
        let submission = parse_submit(request.into_inner())?;
        let accepted = self.progress.submit(&caller, submission).await?;
        Ok(Response::new(to_proto(&accepted)))
    }

    async fn log_activity(
        &self,
        request: Request<pb::LogActivityRequest>,
    ) -> Result<Response<pb::LogActivityResponse>, Status> {
        let caller = Caller::of(&request)?;
        let log = parse_log(request.into_inner())?;
        let logged = self.progress.log(&caller, log).await?;
        Ok(Response::new(activity_to_proto(&logged)))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let caller = Caller::of(&request)?;
        if !caller.is_admin() {
            return Err(ProgressError::Forbidden("only admins read the dead letters").into());
        }
        let pb::ListDeadLettersRequest { page_size, page_token } = request.into_inner();
        let mut v = Violations::new();
        let page_size = v.check(paging::page_size(page_size));
        let after = v.check(paging::decode_token::<DeadLetterCursor>(&page_token));
        v.finish().map_err(ProgressError::from)?;
        let (Some(page_size), Some(after)) = (page_size, after) else {
            return Err(
                ProgressError::from(anyhow::anyhow!("violations were reported above")).into()
            );
        };
        let mut rows = self
            .store
            .dead_letters(after.map(|c| c.after), u64::from(page_size) + 1)
            .await
            .map_err(ProgressError::from)?;
        let mut next_page_token = String::new();
        if rows.len() > page_size as usize {
            rows.truncate(page_size as usize);
            if let Some(last) = rows.last() {
                next_page_token = paging::encode_token(&DeadLetterCursor { after: last.id });
            }
        }
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: rows
                .into_iter()
                .map(|l| pb::DeadLetter {
                    id: l.id.to_string(),
                    payload: l.payload,
                    error: l.error,
                    fail_time: Some(timestamp::to_proto(l.failed_at)),
                })
                .collect(),
            next_page_token,
        }))
    }

    type GetChallengeTotalsStream = ReceiverStream<Result<pb::GetChallengeTotalsResponse, Status>>;

    async fn get_challenge_totals(
        &self,
        request: Request<pb::GetChallengeTotalsRequest>,
    ) -> Result<Response<Self::GetChallengeTotalsStream>, Status> {
        let caller = Caller::of(&request)?;
        if !caller.is_admin() {
            return Err(ProgressError::Forbidden(
                "only admins and services read a challenge's totals",
            )
            .into());
        }
        let pb::GetChallengeTotalsRequest { challenge_id, include_entries } = request.into_inner();
        let challenge_id = parse_challenge_id(&challenge_id).map_err(ProgressError::from)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let store = self.store.clone();
        tokio::spawn(async move {
            let result = if include_entries {
                stream_entries(&store, challenge_id, &tx).await
            } else {
                stream_totals(&store, challenge_id, &tx).await
            };
            if let Err(err) = result {
                tx.send(Err(ProgressError::Unexpected(err).into())).await.ok();
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type Sink = tokio::sync::mpsc::Sender<Result<pb::GetChallengeTotalsResponse, Status>>;

async fn stream_totals(
    store: &ProgressStore,
    challenge: uuid::Uuid,
    tx: &Sink,
) -> anyhow::Result<()> {
    let mut after = None;
    loop {
        let rows = store.totals(challenge, after.clone(), TOTALS_CHUNK).await?;
        let Some(last) = rows.last() else { return Ok(()) };
        after = Some(last.user_id.clone());
        let done = (rows.len() as u64) < TOTALS_CHUNK;
        let totals = rows
            .into_iter()
            .map(|r| pb::MemberTotal {
                user_id: r.user_id,
                total: r.total,
                entry_count: r.entries,
                entries: Vec::new(),
            })
            .collect();
        if tx.send(Ok(pb::GetChallengeTotalsResponse { totals })).await.is_err() || done {
            return Ok(());
        }
    }
}

/// Entries by (user, id), folded into per-user totals; a user's entries may span chunks (a
/// reader sums per user across chunks).
async fn stream_entries(
    store: &ProgressStore,
    challenge: uuid::Uuid,
    tx: &Sink,
) -> anyhow::Result<()> {
    let mut after = None;
    loop {
        let rows = store.entries(challenge, after.clone(), TOTALS_CHUNK).await?;
        let Some(last) = rows.last() else { return Ok(()) };
        after = Some((last.user_id.clone(), last.id));
        let done = (rows.len() as u64) < TOTALS_CHUNK;
        let mut totals: Vec<pb::MemberTotal> = Vec::new();
        for r in rows {
            match totals.last_mut() {
                Some(t) if t.user_id == r.user_id => {
                    t.total += r.value;
                    t.entry_count += 1;
                    t.entries.push(pb::EntryValue { entry_id: r.id.to_string(), value: r.value });
                }
                _ => totals.push(pb::MemberTotal {
                    user_id: r.user_id,
                    total: r.value,
                    entry_count: 1,
                    entries: vec![pb::EntryValue { entry_id: r.id.to_string(), value: r.value }],
                }),
            }
        }
        if tx.send(Ok(pb::GetChallengeTotalsResponse { totals })).await.is_err() || done {
            return Ok(());
        }
    }
}
