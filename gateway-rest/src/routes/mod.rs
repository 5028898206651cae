//! The REST routes, one file per resource: each maps its JSON shapes to the owning service's
//! RPCs and back, and documents itself for the OpenAPI page.
//!
//! - [`challenges`]: challenge routes and their JSON shapes.
//! - [`leaderboards`]: progress submission, leaderboard pages, "me", and the SSE stream.
//! - [`incentives`]: activity logging, the incentive catalog, employer incentives, awards
//!   and their SSE stream.
//! - [`scans`]: the Scan Event API feed and uploads, parcel states.

pub mod challenges;
pub mod incentives;
pub mod leaderboards;
pub mod scans;
