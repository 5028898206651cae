//! The leaderboard service: named boards (`challenge:<id>`, `quiz:<id>`) of member scores,
//! fed by score deltas that apply at most once each.
//!
//! # Layout
//! - [`scores`]: the score store — Redis sorted sets in mesh mode, memory in embedded mode —
//!   with exactly-once deltas and competition ranking.
//!
//! Work in progress (issue #3): the gRPC service, the delta applier, watch streams and
//! rebuild build on [`scores`].

pub mod scores;
