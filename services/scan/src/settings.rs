//! The scan module's settings: the `[scan]` section (`EWPM_SCAN__…`).

use serde::{Deserialize, Serialize};

/// Scan service settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSettings {
    /// The projector of parcel states.
    pub projector: ProjectorSettings,
}

/// The scan projector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectorSettings {
    /// Run the projector inside `ewpm serve scan` / `ewpm dev` (it also runs alone as
    /// `ewpm serve scan-projector`).
    pub enabled: bool,
    /// `own` (this service's feed) or the URL of an external Scan Event API, e.g.
    /// `https://feed.example/v1/scans/scanevents`.
    pub source: String,
    /// Bearer token sent to an external source.
    pub source_token: Option<String>,
    /// Events per page.
    pub page_size: u32,
    /// Wait between polls once caught up, in milliseconds.
    pub poll_interval_ms: u64,
    /// Health reports NOT_SERVING when the leading projector has not succeeded for this long.
    pub stale_after_secs: u64,
}

impl Default for ScanSettings {
    fn default() -> Self {
        Self {
            projector: ProjectorSettings {
                enabled: true,
                source: "own".into(),
                source_token: None,
                page_size: 1000,
                poll_interval_ms: 500,
                stale_after_secs: 60,
            },
        }
    }
}
