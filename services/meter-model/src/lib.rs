//! The shared vocabulary of the pipeline: the event kinds (one table of
//! what differs between them: `kinds`), the aggregate
//! and the dead letter, their Avro schemas (`schemas/*.avsc` is the source of
//! truth, embedded at build time) and the Avro single-object codec used on
//! every topic, with fast decoders for the hot paths (`fast_decode` for the
//! events, `aggregate_decode` for the aggregates).

pub mod aggregate_decode;
mod avro_value;
mod datum_reader;
pub mod codec;
mod error;
pub mod events;
pub mod fast_decode;
pub mod fingerprint;
pub mod kinds;

pub use codec::{AvroRecord, EventCodec};
pub use error::CodecError;
pub use kinds::{KindSpec, KINDS};
pub use events::*;
