//! The aggregator: event topics in, aggregate revisions out.
//!
//! `windows` cuts calendar windows in a tenant's zone, `pricing` holds the
//! price book, `engine` applies events deterministically to a partition's
//! state, `checkpoint` persists that state with its input offset, and
//! `runner` drives it all from Kafka.

pub mod checkpoint;
pub mod engine;
pub mod poison;
pub mod pricing;
pub mod reprocess;
pub mod runner;
pub mod windows;
