//! Quiz boards (`quiz:<session id>`): their owner is the quiz service.
//!
//! - Facts for rebuilds: `GetSessionScores`, every answer's points with its answer id (the
//!   deltas' event id), so a rebuild stays exact while new deltas arrive.
//! - Audience: the session's, from `GetSession` with the service's own token: everyone for a
//!   quiz with no employer, that employer's people otherwise.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use ewpm_kit::auth::ServiceToken;
use ewpm_proto::quiz::v1::{
    GetSessionRequest, GetSessionScoresRequest, quiz_service_client::QuizServiceClient,
};
use futures::StreamExt;
use tonic::{Code, Request, transport::Channel};

use crate::{
    access::{Audience, BoardAudience},
    domain::Board,
    rebuild::{BoardOwner, EntryStream},
    scores::OwnedEntry,
};

/// How long one look-up at the quiz service may take.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The quiz service as the owner of quiz boards.
#[derive(Clone)]
pub struct QuizBoards {
    client: QuizServiceClient<Channel>,
    token: Arc<ServiceToken>,
}

impl QuizBoards {
    /// Asks the quiz service at `uri` (connected lazily, so it need not be up yet).
    pub fn new(uri: &str, token: Arc<ServiceToken>) -> anyhow::Result<Self> {
        let channel = ewpm_kit::client::channel(uri).context("quiz service")?;
        Ok(Self { client: QuizServiceClient::new(channel), token })
    }

    /// Whether `board`'s id is a canonical session id (anything else names no session).
    fn session_id(board: &Board) -> Option<String> {
        let id = uuid::Uuid::try_parse(board.id()).ok()?.to_string();
        (id == board.id()).then_some(id)
    }
}

#[async_trait]
impl BoardOwner for QuizBoards {
    async fn entries(&self, board: &Board, _period: &str) -> anyhow::Result<EntryStream> {
        let Some(session_id) = Self::session_id(board) else {
            return Ok(futures::stream::empty().boxed());
        };
        let request = self.token.authorize(Request::new(GetSessionScoresRequest { session_id }));
        let stream = match self.client.clone().get_session_scores(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::NotFound => {
                return Ok(futures::stream::empty().boxed());
            }
            Err(status) => return Err(anyhow::Error::new(status).context("GetSessionScores")),
        };
        Ok(stream
            .map(|chunk| {
                let chunk = chunk.context("GetSessionScores stream")?;
                Ok(chunk
                    .participants
                    .into_iter()
                    .flat_map(|p| {
                        let member = p.user_id;
                        p.answers.into_iter().map(move |a| OwnedEntry {
                            member: member.clone(),
                            event_id: a.answer_id,
                            value: a.points,
                            ..OwnedEntry::default()
                        })
                    })
                    .collect())
            })
            .boxed())
    }
}

#[async_trait]
impl BoardAudience for QuizBoards {
    async fn audience(&self, board: &Board) -> anyhow::Result<Option<Audience>> {
        let Some(session_id) = Self::session_id(board) else { return Ok(None) };
        let mut request = self.token.authorize(Request::new(GetSessionRequest { session_id }));
        request.set_timeout(LOOKUP_TIMEOUT);
        match self.client.clone().get_session(request).await {
            Ok(response) => {
                let s = response.into_inner().session.context("GetSession without a session")?;
                Ok(Some(if s.employer_id.is_empty() {
                    Audience::Everyone
                } else {
                    Audience::Employer(s.employer_id)
                }))
            }
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                Ok(None)
            }
            Err(status) => Err(anyhow::Error::new(status).context("GetSession")),
        }
    }
}
