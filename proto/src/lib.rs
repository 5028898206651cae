//! EWPM protobuf contracts: the code prost and tonic generate from `proto/ewpm/**`, and the
//! encoded descriptor set that every server registers with gRPC reflection.
//!
//! Generated code is the one place lints are relaxed.

/// Encoded `FileDescriptorSet` of every EWPM proto file.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ewpm_descriptor.bin"));

/// Serde helpers of the messages that derive `serde::Serialize` with feature `rest` (the REST
/// edge answers with them as they are: `REST_MESSAGES` in `build.rs`).
#[cfg(feature = "rest")]
pub mod rest {
    use prost_types::Timestamp;

    /// A timestamp as proto JSON writes it: RFC 3339 in UTC with `Z` and 0, 3, 6 or 9
    /// fractional digits (`2026-01-31T00:00:00Z`, `2026-01-31T00:00:00.250Z`). An unset or
    /// out-of-range one is `""`, as the REST edge has always answered it (the services set
    /// every timestamp these messages carry).
    pub fn rfc3339(ts: Option<&Timestamp>) -> String {
        ts.and_then(|ts| {
            chrono::DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
        })
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
    }

    /// `serialize_with` of a Timestamp field: its [`rfc3339`] string.
    pub fn timestamp<S: serde::Serializer>(
        ts: &Option<Timestamp>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&rfc3339(ts.as_ref()))
    }
}

/// `ewpm.challenge.v1`: wellness challenges.
pub mod challenge {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("ewpm.challenge.v1");

        /// Fully qualified name of the service, as health checks and reflection know it.
        pub const SERVICE_NAME: &str = "ewpm.challenge.v1.ChallengeService";
    }
}

/// `ewpm.scan.v1`: parcel scan events and parcel states.
pub mod scan {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("ewpm.scan.v1");

        /// Fully qualified name of the service, as health checks and reflection know it.
        pub const SERVICE_NAME: &str = "ewpm.scan.v1.ScanService";
    }
}

/// `ewpm.activity.v1`: the activity vocabulary shared by progress and incentive.
pub mod activity {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("ewpm.activity.v1");
    }

    // The contract's kinds as services name and store them (`mood`, `challenge_progress`),
    // shared by every service that records or reacts to activity.
    /// What a user did.
    #[derive(
        Debug,
        Clone,
        Copy,
        PartialEq,
        Eq,
        Hash,
        PartialOrd,
        Ord,
        serde::Serialize,
        serde::Deserialize,
    )]
    #[serde(rename_all = "snake_case")]
    pub enum Kind {
        /// A mood entry.
        Mood,
        /// A symptom entry.
        Symptom,
        /// A step count.
        Steps,
        /// Hours of sleep.
        Sleep,
        /// A weight measurement.
        Weight,
        /// A reported birth.
        Birth,
        /// Accepted challenge progress.
        ChallengeProgress,
    }

    impl Kind {
        /// Every kind.
        pub const ALL: [Kind; 7] = [
            Self::Mood,
            Self::Symptom,
            Self::Steps,
            Self::Sleep,
            Self::Weight,
            Self::Birth,
            Self::ChallengeProgress,
        ];

        /// The kind's name as stored and shown (`mood`, `challenge_progress`).
        pub fn as_str(self) -> &'static str {
            match self {
                Self::Mood => "mood",
                Self::Symptom => "symptom",
                Self::Steps => "steps",
                Self::Sleep => "sleep",
                Self::Weight => "weight",
                Self::Birth => "birth",
                Self::ChallengeProgress => "challenge_progress",
            }
        }

        /// The kind named `name`.
        pub fn from_name(name: &str) -> Option<Self> {
            Self::ALL.into_iter().find(|k| k.as_str() == name)
        }

        /// The proto enum value.
        pub fn to_proto(self) -> i32 {
            use v1::ActivityKind as P;
            (match self {
                Self::Mood => P::Mood,
                Self::Symptom => P::Symptom,
                Self::Steps => P::Steps,
                Self::Sleep => P::Sleep,
                Self::Weight => P::Weight,
                Self::Birth => P::Birth,
                Self::ChallengeProgress => P::ChallengeProgress,
            }) as i32
        }

        /// The kind of a proto enum value; `None` for unspecified or unknown values.
        pub fn from_proto(raw: i32) -> Option<Self> {
            use v1::ActivityKind as P;
            Some(match P::try_from(raw).ok()? {
                P::Unspecified => return None,
                P::Mood => Self::Mood,
                P::Symptom => Self::Symptom,
                P::Steps => Self::Steps,
                P::Sleep => Self::Sleep,
                P::Weight => Self::Weight,
                P::Birth => Self::Birth,
                P::ChallengeProgress => Self::ChallengeProgress,
            })
        }
    }
}

/// `ewpm.progress.v1`: challenge progress entries and per-challenge totals, the
/// `QueuedEntry` queue item and the `ActivityRecorded` events (published in `ActivityBatch`es).
pub mod progress {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("ewpm.progress.v1");

        /// Bus topic of recorded activity: one [`ActivityBatch`] message (its
        /// [`ActivityRecorded`] events) per batch the progress batch writers committed,
        /// published after their commit, consumed by the incentive processors (group
        /// `incentive-processor`), which for one release also accept a lone
        /// [`ActivityRecorded`] per message (what earlier writers published).
        pub const ACTIVITY_TOPIC: &str = "activity";

        /// Bus topic of [`QueuedEntry`] items: published by SubmitProgress and LogActivity,
        /// consumed by the progress batch writers (group `progress-writer`).
        pub const PROGRESS_TOPIC: &str = "progress";

        /// Fully qualified name of the service, as health checks and reflection know it.
        pub const SERVICE_NAME: &str = "ewpm.progress.v1.ProgressService";
    }
}

/// `ewpm.leaderboard.v1`: named boards, score deltas, live snapshots.
pub mod leaderboard {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("ewpm.leaderboard.v1");

        /// Bus topic of [`ScoreDelta`] events: published by every board's producer (the
        /// progress batch writers), consumed by the leaderboard's delta applier (group
        /// `leaderboard-applier`).
        pub const SCORE_DELTAS_TOPIC: &str = "score-deltas";

        /// Fully qualified name of the service, as health checks and reflection know it.
        pub const SERVICE_NAME: &str = "ewpm.leaderboard.v1.LeaderboardService";
    }
}

/// `ewpm.incentive.v1`: the incentive catalog, employer incentives, the awards ledger.
pub mod incentive {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("ewpm.incentive.v1");

        /// Pub/sub channel (after the deployment's key prefix) of [`AwardRecorded`] notices:
        /// published by the incentive processors, received by every process serving
        /// WatchAwards.
        pub const AWARDS_CHANNEL: &str = "incentive:awards";

        /// Pub/sub channel (after the deployment's key prefix) of [`EmployerLinksChanged`]
        /// notices: published by the incentive service, received by every processor's link
        /// cache.
        pub const LINKS_CHANNEL: &str = "incentive:links";

        /// Fully qualified name of the service, as health checks and reflection know it.
        pub const SERVICE_NAME: &str = "ewpm.incentive.v1.IncentiveService";
    }
}

/// `ewpm.engagement.v1`: fan engagement: match events and live match metrics.
pub mod engagement {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("ewpm.engagement.v1");

        /// Fully qualified name of the service, as health checks and reflection know it.
        pub const SERVICE_NAME: &str = "ewpm.engagement.v1.EngagementService";

        /// The bus topic of accepted match events (`QueuedEvents` payloads).
        pub const MATCH_EVENTS_TOPIC: &str = "match-events";
    }
}

pub mod quiz {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("ewpm.quiz.v1");

        /// Fully qualified name of the service, as health checks and reflection know it.
        pub const SERVICE_NAME: &str = "ewpm.quiz.v1.QuizService";

        /// The leaderboard board of a session: `quiz:<session id>`.
        pub fn board(session_id: &str) -> String {
            format!("quiz:{session_id}")
        }
    }
}
