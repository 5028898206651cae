//! `board:` boards are their own owner: their facts, audience and voids are this service's
//! tables (see [`crate::store`]). Voids of every kind of board are kept here too.

use anyhow::Context;
use async_trait::async_trait;
use futures::StreamExt;

use crate::{
    access::{Audience, BoardAudience},
    definition::Definitions,
    domain::Board,
    ranking::version,
    rebuild::{BoardOwner, EntryStream, VoidSource},
    scores::{OwnedEntry, void_event, void_member},
    store::{FactRow, VoidTarget},
};

/// Facts per chunk of a rebuild.
const CHUNK: u32 = 2_000;

/// The owner of `board:` boards, and the keeper of every board's voids.
#[derive(Clone)]
pub struct OwnBoards {
    definitions: Definitions,
}

impl OwnBoards {
    /// Boards defined in `definitions`.
    pub fn new(definitions: Definitions) -> Self {
        Self { definitions }
    }
}

/// The score store's entry for a stored fact.
pub fn owned_entry(f: &FactRow) -> OwnedEntry {
    OwnedEntry {
        member: f.member.clone(),
        event_id: f.fact_id.clone(),
        value: f.score,
        subscore: f.subscore,
        version: version(f.occurred_at.timestamp_micros(), &f.fact_id),
    }
}

#[async_trait]
impl BoardOwner for OwnBoards {
    async fn entries(&self, board: &Board, period: &str) -> anyhow::Result<EntryStream> {
        let store = self.definitions.store().clone();
        let (board, period) = (board.to_string(), period.to_string());
        // Keyset pages of the period's facts, read as the rebuild consumes them.
        let pages = futures::stream::try_unfold(Some(None::<String>), move |after| {
            let (store, board, period) = (store.clone(), board.clone(), period.clone());
            async move {
                let Some(after) = after else { return Ok(None) };
                let facts = store
                    .facts(&board, &period, after.as_deref(), CHUNK)
                    .await
                    .context("read the board's facts")?;
                let next = (facts.len() == CHUNK as usize)
                    .then(|| facts.last().map(|f| f.fact_id.clone()))
                    .flatten();
                let chunk: Vec<OwnedEntry> = facts.iter().map(owned_entry).collect();
                Ok(Some((chunk, next.map(Some))))
            }
        });
        Ok(pages.boxed())
    }
}

#[async_trait]
impl BoardAudience for OwnBoards {
    async fn audience(&self, board: &Board) -> anyhow::Result<Option<Audience>> {
        Ok(self.definitions.get(board).await?.map(|d| d.audience()))
    }
}

#[async_trait]
impl VoidSource for OwnBoards {
    async fn voids(&self, board: &Board) -> anyhow::Result<Vec<String>> {
        let voids = self.definitions.store().voids(board.as_str()).await?;
        Ok(voids
            .iter()
            .map(|v| match v {
                VoidTarget::Member(m) => void_member(m),
                VoidTarget::Event(e) => void_event(e),
            })
            .collect())
    }
}
