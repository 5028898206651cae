//! The incentive service: employers reward behaviour. A global catalog of incentives (a rule
//! and the activity kinds that trigger it), employers' links of them to their programs (with
//! a reward, a time zone, an active window, a repeat policy and stacked actions), and the
//! ledger of awards.
//!
//! Activity flows progress service → its batch writers → bus topic `activity`
//! (`ActivityBatch` of `ActivityRecorded`s, proto contracts) → the [`processor`] pool (consumer group
//! `incentive-processor`; any number of tasks and processes), which finds the employer
//! incentives each activity triggers in this service's own tables → streaks and awards in SQL,
//! each award exactly once → [`notices`] → WatchAwards. The progress service never calls this
//! one: while it is down, activity waits on the topic and awards come late, never progress.
//!
//! # Layout
//! - [`domain`]: slugs, rules, trigger kinds, zones, periods, repeat policies, actions,
//!   links, events, awards (no I/O).
//! - [`streak`]: the consecutive-days rule as a pure state machine over calendar days.
//! - [`actions`]: the stacked actions (strategies): record the award, notify.
//! - [`activity`]: recorded activity from the bus, and the incentive events it makes.
//! - [`processor`]: activity → incentive events → streaks → actions, one transaction per batch.
//! - [`notices`]: newly recorded awards to WatchAwards streams (memory or Redis pub/sub).
//! - [`store`]: the `incentives`, `employer_incentives`, `streaks` and `awards` tables.
//! - [`service`]: the operations and who may call them.
//! - [`grpc`]: the gRPC service `ewpm.incentive.v1.IncentiveService`.
//! - [`error`]: [`error::IncentiveError`] and its one mapping to `tonic::Status`.
//! - [`app`]: builds the service and the processors from settings.
//! - [`settings`]: the `[incentive]` settings section.
//! - [`migrations`]: the incentive tables' migrations (history `seaql_migrations_incentive`).
//! - [`module`]: [`MODULE`], what the binary's registry runs.

pub mod actions;
pub mod activity;
pub mod app;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod migrations;
pub mod module;
pub mod notices;
pub mod processor;
pub mod service;
pub mod settings;
pub mod store;
pub mod streak;

pub use module::MODULE;

/// Consumer group of the processors on the `activity` topic
/// ([`ewpm_proto::progress::v1::ACTIVITY_TOPIC`]).
pub const PROCESSOR_GROUP: &str = "incentive-processor";
