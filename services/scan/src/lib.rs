//! The scan service: devices upload parcel scans, the service keeps them as an ordered feed
//! (the Scan Event API), and a checkpointed projector folds a feed — its own or an external
//! one in the same format — into the latest state of every parcel.
//!
//! # Layout
//! - [`grpc`]: `ScanService` — request → domain call → response.
//! - [`domain`]: `Scan` (validated) and the fold of events into parcel deltas; no I/O.
//! - [`feed`]: tolerant reading of Scan Event API pages.
//! - [`store`]: the tables; ingest, feed reads, and the page apply with its checkpoint CAS.
//! - [`ingest`]: group commit of concurrent device uploads.
//! - [`projector`]: sources, the lease, the apply loop with retries, status and metrics.
//! - [`error`]: `ScanError` and its one mapping to `tonic::Status`.
//! - [`app`]: builds the service and its background tasks from settings.
//! - [`settings`]: the `[scan]` settings section.
//! - [`migrations`]: the scan tables' migrations (history `seaql_migrations_scan`).
//! - [`module`]: [`MODULE`], what the binary's registry runs.

pub mod app;
pub mod domain;
pub mod error;
pub mod feed;
pub mod grpc;
pub mod ingest;
pub mod migrations;
pub mod module;
pub mod projector;
pub mod settings;
pub mod store;

pub use module::MODULE;
