//! Small helpers to build and read `apache_avro::types::Value` records.
//! The mapping is written by hand (not through serde) because decimals,
//! timestamps and unions need exact control.

use apache_avro::types::Value;
use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use std::collections::HashMap;

use crate::error::CodecError;

/// Scale of every decimal in the schemas (`"scale": 6`).
pub const DECIMAL_SCALE: u32 = 6;

pub fn ts(t: DateTime<Utc>) -> Value {
    Value::TimestampMillis(t.timestamp_millis())
}

pub fn opt_ts(t: Option<DateTime<Utc>>) -> Value {
    match t {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(t) => Value::Union(1, Box::new(ts(t))),
    }
}

pub fn opt_string(s: &Option<String>) -> Value {
    match s {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
    }
}

pub fn opt_long(v: Option<i64>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(Value::Long(v))),
    }
}

pub fn opt_int(v: Option<i32>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(Value::Int(v))),
    }
}

pub fn enum_value(symbols: &[&str], symbol: &str) -> Value {
    let index = symbols.iter().position(|s| *s == symbol).unwrap_or(0);
    Value::Enum(index as u32, symbol.to_string())
}

pub fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

/// Encodes an exact decimal at the schema's scale as Avro decimal bytes
/// (big-endian two's complement of the unscaled integer).
pub fn decimal(d: Decimal) -> Result<Value, CodecError> {
    let mut scaled = d;
    scaled.rescale(DECIMAL_SCALE);
    if scaled.scale() != DECIMAL_SCALE {
        return Err(CodecError::Decimal(format!("{d} does not fit scale {DECIMAL_SCALE}")));
    }
    let unscaled: i128 = scaled.mantissa();
    // Fixed 16 bytes: apache-avro checks that the length can hold the declared precision (28).
    Ok(Value::Decimal(apache_avro::Decimal::from(unscaled.to_be_bytes())))
}

/// Field access on a decoded record, with errors that name the field.
pub struct Fields {
    record: String,
    fields: HashMap<String, Value>,
}

impl Fields {
    pub fn of(record: &str, value: Value) -> Result<Fields, CodecError> {
        match value {
            Value::Record(fields) => Ok(Fields { record: record.to_string(), fields: fields.into_iter().collect() }),
            other => Err(CodecError::Shape(format!("{record}: expected a record, got {other:?}"))),
        }
    }

    fn take(&mut self, name: &str) -> Result<Value, CodecError> {
        match self.fields.remove(name) {
            Some(Value::Union(_, inner)) => Ok(*inner),
            Some(v) => Ok(v),
            None => Err(CodecError::Shape(format!("{}: missing field {name}", self.record))),
        }
    }

    fn wrong(&self, name: &str, want: &str, got: &Value) -> CodecError {
        CodecError::Shape(format!("{}.{name}: expected {want}, got {got:?}", self.record))
    }

    pub fn string(&mut self, name: &str) -> Result<String, CodecError> {
        match self.take(name)? {
            Value::String(s) => Ok(s),
            other => Err(self.wrong(name, "string", &other)),
        }
    }

    pub fn opt_string(&mut self, name: &str) -> Result<Option<String>, CodecError> {
        match self.take(name)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(self.wrong(name, "null or string", &other)),
        }
    }


    pub fn int(&mut self, name: &str) -> Result<i32, CodecError> {
        match self.take(name)? {
            Value::Int(v) => Ok(v),
            other => Err(self.wrong(name, "int", &other)),
        }
    }

    pub fn opt_int(&mut self, name: &str) -> Result<Option<i32>, CodecError> {
        match self.take(name)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(v)),
            other => Err(self.wrong(name, "null or int", &other)),
        }
    }

    pub fn long(&mut self, name: &str) -> Result<i64, CodecError> {
        match self.take(name)? {
            Value::Long(v) => Ok(v),
            other => Err(self.wrong(name, "long", &other)),
        }
    }

    pub fn opt_long(&mut self, name: &str) -> Result<Option<i64>, CodecError> {
        match self.take(name)? {
            Value::Null => Ok(None),
            Value::Long(v) => Ok(Some(v)),
            other => Err(self.wrong(name, "null or long", &other)),
        }
    }

    pub fn boolean(&mut self, name: &str) -> Result<bool, CodecError> {
        match self.take(name)? {
            Value::Boolean(v) => Ok(v),
            other => Err(self.wrong(name, "boolean", &other)),
        }
    }

    pub fn bytes(&mut self, name: &str) -> Result<Vec<u8>, CodecError> {
        match self.take(name)? {
            Value::Bytes(v) => Ok(v),
            other => Err(self.wrong(name, "bytes", &other)),
        }
    }

    pub fn timestamp(&mut self, name: &str) -> Result<DateTime<Utc>, CodecError> {
        match self.take(name)? {
            Value::TimestampMillis(ms) => millis(ms).ok_or_else(|| self.wrong(name, "a valid instant", &Value::Long(ms))),
            other => Err(self.wrong(name, "timestamp-millis", &other)),
        }
    }

    pub fn opt_timestamp(&mut self, name: &str) -> Result<Option<DateTime<Utc>>, CodecError> {
        match self.take(name)? {
            Value::Null => Ok(None),
            Value::TimestampMillis(ms) => {
                millis(ms).map(Some).ok_or_else(|| self.wrong(name, "a valid instant", &Value::Long(ms)))
            }
            other => Err(self.wrong(name, "null or timestamp-millis", &other)),
        }
    }

    pub fn symbol(&mut self, name: &str) -> Result<String, CodecError> {
        match self.take(name)? {
            Value::Enum(_, s) => Ok(s),
            other => Err(self.wrong(name, "enum", &other)),
        }
    }

    pub fn string_array(&mut self, name: &str) -> Result<Vec<String>, CodecError> {
        match self.take(name)? {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(self.wrong(name, "array of strings", &other)),
                })
                .collect(),
            other => Err(self.wrong(name, "array", &other)),
        }
    }

    pub fn string_map(&mut self, name: &str) -> Result<Vec<(String, String)>, CodecError> {
        match self.take(name)? {
            Value::Map(items) => items
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    other => Err(self.wrong(name, "map of strings", &other)),
                })
                .collect(),
            other => Err(self.wrong(name, "map", &other)),
        }
    }

    pub fn decimal(&mut self, name: &str) -> Result<Decimal, CodecError> {
        match self.take(name)? {
            Value::Decimal(d) => {
                let bytes = <Vec<u8>>::try_from(&d).map_err(|e| CodecError::Decimal(e.to_string()))?;
                if bytes.len() > 16 {
                    return Err(CodecError::Decimal(format!("{}.{name}: more than 16 bytes", self.record)));
                }
                let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) { 0xFF } else { 0x00 };
                let mut full = [fill; 16];
                full[16 - bytes.len()..].copy_from_slice(&bytes);
                let unscaled = i128::from_be_bytes(full);
                Decimal::try_from_i128_with_scale(unscaled, DECIMAL_SCALE)
                    .map_err(|e| CodecError::Decimal(format!("{}.{name}: {e}", self.record)))
            }
            other => Err(self.wrong(name, "decimal", &other)),
        }
    }
}

fn millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

pub fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}
