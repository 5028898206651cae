//! The quiz module's settings: the `[quiz]` section (`EWPM_QUIZ__…`).

use serde::{Deserialize, Serialize};

/// Quiz service settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuizSettings {
    /// Run the outbox relay inside `ewpm serve quiz` / `ewpm dev` (it also runs alone as
    /// `ewpm serve quiz-relay`; any number may run).
    pub relay_enabled: bool,
    /// Outbox rows a relay publishes at once (per session).
    pub relay_batch: u32,
    /// How long an idle relay waits before looking again, in milliseconds (an answer in the
    /// same process wakes it at once).
    pub relay_poll_ms: u64,
    /// How long published outbox rows are kept, in hours.
    pub outbox_retention_hours: u64,
    /// How often questions are checked for their time limit and for every connected
    /// participant having answered, in milliseconds.
    pub closer_interval_ms: u64,
    /// How long a participant's open WatchSession stream counts as presence after its last
    /// refresh, in seconds (refreshed every third of it).
    pub presence_ttl_secs: u64,
}

impl Default for QuizSettings {
    fn default() -> Self {
        Self {
            relay_enabled: true,
            relay_batch: 500,
            relay_poll_ms: 200,
            outbox_retention_hours: 24,
            closer_interval_ms: 250,
            presence_ttl_secs: 30,
        }
    }
}
