//! The incentive service: employers reward behaviour. A global catalog of incentives (a rule
//! and the activity kinds that trigger it), employers' links of them to their programs (with
//! a reward, a time zone, an active window, a repeat policy and stacked actions), and the
//! ledger of awards.
//!
//! Activity flows progress service → its batch writer → the [`visitor`] (cached look-ups of
//! each employer's links) → bus topic `incentive-events` → the [`processor`] pool (a consumer
//! group; any number of tasks and processes) → streaks and awards in SQL, each award exactly
//! once → [`notices`] → WatchAwards.
//!
//! # Layout
//! - [`domain`]: slugs, rules, trigger kinds, zones, periods, repeat policies, actions,
//!   links, events, awards (no I/O).
//! - [`streak`]: the consecutive-days rule as a pure state machine over calendar days.
//! - [`actions`]: the stacked actions (strategies): record the award, notify.
//! - [`processor`]: incentive events → streaks → actions, one transaction per batch.
//! - [`visitor`]: the progress service's activity visitor that publishes incentive events.
//! - [`notices`]: newly recorded awards to WatchAwards streams (memory or Redis pub/sub).
//! - [`store`]: the `incentives`, `employer_incentives`, `streaks` and `awards` tables.
//! - [`service`]: the operations and who may call them.
//! - [`grpc`]: the gRPC service `ewpm.incentive.v1.IncentiveService`.
//! - [`error`]: [`error::IncentiveError`] and its one mapping to `tonic::Status`.
//! - [`app`]: builds the service and the processors from settings.

pub mod actions;
pub mod app;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod notices;
pub mod processor;
pub mod service;
pub mod store;
pub mod streak;
pub mod visitor;

/// Bus topic of incentive events (from the activity visitor to the processors).
pub const INCENTIVE_TOPIC: &str = "incentive-events";
/// Consumer group of the processors.
pub const PROCESSOR_GROUP: &str = "incentive-processor";
