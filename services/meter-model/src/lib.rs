//! The shared vocabulary of the pipeline: the three event kinds, the aggregate
//! and the dead letter, their Avro schemas (`schemas/*.avsc` is the source of
//! truth, embedded at build time) and the Avro single-object codec used on
//! every topic.

pub mod codec;
pub mod events;
pub mod fast_decode;
pub mod fingerprint;
mod avro_value;

pub use codec::{AvroRecord, CodecError, EventCodec};
pub use events::*;
