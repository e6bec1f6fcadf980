//! The aggregator: event topics in, aggregate revisions out.
//!
//! `windows` cuts calendar windows in a tenant's zone, `pricing` holds the
//! price book, `engine` applies events deterministically to a partition's
//! state, `checkpoint` persists that state with its input offset, and
//! `runner` drives it all from Kafka; `internal_events` is what it reports
//! (log line and metric together).

pub mod checkpoint;
pub mod engine;
pub mod internal_events;
pub mod poison;
pub mod pricing;
pub mod reprocess;
pub mod runner;
pub mod windows;
