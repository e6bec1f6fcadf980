//! Why a message could not be encoded or decoded.

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("message is {0} bytes, shorter than a single-object header (10 bytes)")]
    TooShort(usize),
    #[error("not Avro single-object encoding (expected marker C3 01, got {0:02X} {1:02X})")]
    BadMarker(u8, u8),
    #[error("unknown writer schema fingerprint {0}: the producer uses a schema this build does not know; add it to schemas/history/")]
    UnknownFingerprint(String),
    #[error("message written with schema {found}, expected {expected}")]
    WrongRecord { expected: String, found: String },
    #[error("Avro error: {0}")]
    Avro(String),
    #[error("record shape: {0}")]
    Shape(String),
    #[error("decimal: {0}")]
    Decimal(String),
    #[error("unknown enum symbol {symbol} for {field}")]
    Symbol { field: &'static str, symbol: String },
}

impl From<apache_avro::Error> for CodecError {
    fn from(e: apache_avro::Error) -> Self {
        CodecError::Avro(e.to_string())
    }
}
