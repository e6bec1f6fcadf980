//! Avro schema fingerprints as the specification defines them: the
//! CRC-64-AVRO (Rabin) fingerprint of the schema's *Parsing Canonical Form*
//! (PCF), the form every other implementation (Java's `SchemaNormalization`
//! and `BinaryMessageDecoder`, fastavro, Flink, Spark) computes.
//!
//! apache-avro 0.21's `Schema::canonical_form` is not that form: it keeps
//! `precision` and `scale`, and writes `{"type":"long","logicalType":...}` as
//! `{"type":"long"}` instead of `"long"` (upstream AVRO-4004), so its
//! fingerprints (what `RabinFingerprintHeader` puts in a single-object header)
//! differ from everybody else's for any schema with a logical type. This module
//! computes the specification's form from the schema's JSON text; the old value
//! stays available as [`legacy_fingerprint`] so the codec can still read
//! messages written with it.
//!
//! The transformation, rule by rule (specification, "Parsing Canonical Form
//! for Schemas"):
//! - [PRIMITIVES] `{"type":"int"}` becomes `"int"`; a primitive with other
//!   attributes (`logicalType`, `precision`, ...) too.
//! - [FULLNAMES] names of records, enums and fixed, and references to them,
//!   become full names (namespace resolution as the specification defines it);
//!   `namespace` is dropped.
//! - [STRIP] only `type`, `name`, `fields`, `symbols`, `items`, `values` and
//!   `size` are kept (`doc`, `aliases`, `default`, `order`, `logicalType`,
//!   `precision`, `scale` and any other attribute go).
//! - [ORDER] keys in the order `name`, `type`, `fields`, `symbols`, `items`,
//!   `values`, `size`.
//! - [STRINGS] escapes are replaced by the characters (the JSON parser decodes
//!   them; only `"`, `\` and control characters are escaped on output).
//! - [INTEGERS] `size` is written as a plain integer (no quotes, no leading zeros).
//! - [WHITESPACE] no whitespace outside strings.
//!
//! As in the reference implementation, a named type that appears again after
//! its definition is written as its full name.

use std::collections::HashSet;

use serde_json::{Map, Value};

/// The specification's `EMPTY` constant: the fingerprint of no bytes, and the
/// polynomial of the CRC-64-AVRO table.
pub const CRC64_AVRO_EMPTY: u64 = 0xc15d_213a_a4d7_a795;

/// A schema text that is not a valid Avro schema for the canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema has no Parsing Canonical Form: {0}")]
pub struct SchemaFormError(String);

const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

fn crc64_table() -> &'static [u64; 256] {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [0u64; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (CRC64_AVRO_EMPTY & (fp & 1).wrapping_neg());
            }
            *slot = fp;
        }
        table
    })
}

/// CRC-64-AVRO of `bytes`, the 64-bit Rabin fingerprint of the specification.
pub fn crc64_avro(bytes: &[u8]) -> u64 {
    let table = crc64_table();
    bytes.iter().fold(CRC64_AVRO_EMPTY, |fp, &b| (fp >> 8) ^ table[((fp ^ u64::from(b)) & 0xff) as usize])
}

/// The specification's fingerprint of a schema text, as the 8 little-endian
/// bytes a single-object header carries after `C3 01`.
pub fn fingerprint(schema_text: &str) -> Result<[u8; 8], SchemaFormError> {
    Ok(crc64_avro(parsing_canonical_form(schema_text)?.as_bytes()).to_le_bytes())
}

/// The single-object header (`C3 01` + the specification's fingerprint).
pub fn single_object_header(schema_text: &str) -> Result<[u8; 10], SchemaFormError> {
    let mut header = [0xC3, 0x01, 0, 0, 0, 0, 0, 0, 0, 0];
    header[2..].copy_from_slice(&fingerprint(schema_text)?);
    Ok(header)
}

/// The fingerprint apache-avro 0.21 computes (`RabinFingerprintHeader`),
/// which this pipeline wrote in every header before it used the
/// specification's. Readers accept it (see the codec's migration rule);
/// writers never produce it. `services/meter-model/tests/fingerprint.rs` pins
/// its values, so an apache-avro upgrade that changes them is noticed.
pub fn legacy_fingerprint(schema: &apache_avro::Schema) -> [u8; 8] {
    use apache_avro::headers::{HeaderBuilder, RabinFingerprintHeader};
    let header = RabinFingerprintHeader::from_schema(schema).build_header();
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&header[2..10]);
    fp
}

/// The specification's Parsing Canonical Form of a schema text.
pub fn parsing_canonical_form(schema_text: &str) -> Result<String, SchemaFormError> {
    let json: Value = serde_json::from_str(schema_text).map_err(|e| SchemaFormError(format!("not JSON: {e}")))?;
    parsing_canonical_form_of(&json)
}

/// The Parsing Canonical Form of a schema already parsed as JSON.
pub fn parsing_canonical_form_of(schema: &Value) -> Result<String, SchemaFormError> {
    let mut out = String::new();
    Canonical { defined: HashSet::new(), out: &mut out }.schema(schema, "")?;
    Ok(out)
}

struct Canonical<'a> {
    /// Full names of the named types already written.
    defined: HashSet<String>,
    out: &'a mut String,
}

impl Canonical<'_> {
    fn string(&mut self, s: &str) {
        // serde_json escapes only '"', '\' and control characters ([STRINGS]).
        self.out.push_str(&Value::String(s.to_owned()).to_string());
    }

    fn key(&mut self, k: &str) {
        self.string(k);
        self.out.push(':');
    }

    /// Writes one schema; `namespace` is the enclosing one ("" for none).
    fn schema(&mut self, schema: &Value, namespace: &str) -> Result<(), SchemaFormError> {
        match schema {
            Value::String(name) => {
                if PRIMITIVES.contains(&name.as_str()) {
                    self.string(name);
                } else {
                    self.string(&fullname(name, None, namespace));
                }
                Ok(())
            }
            Value::Array(branches) => {
                self.out.push('[');
                for (i, branch) in branches.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.schema(branch, namespace)?;
                }
                self.out.push(']');
                Ok(())
            }
            Value::Object(object) => self.object(object, namespace),
            other => Err(SchemaFormError(format!("a schema is a string, an array or an object, not {other}"))),
        }
    }

    fn object(&mut self, object: &Map<String, Value>, namespace: &str) -> Result<(), SchemaFormError> {
        let kind = match object.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            // {"type": {...}} or {"type": [...]}: the attribute holds the schema.
            Some(nested @ (Value::Object(_) | Value::Array(_))) => return self.schema(nested, namespace),
            _ => return Err(SchemaFormError(format!("object without a string \"type\": {}", Value::Object(object.clone())))),
        };
        match kind {
            // [PRIMITIVES], whatever else the object says (logicalType, precision, ...).
            k if PRIMITIVES.contains(&k) => {
                self.string(k);
                Ok(())
            }
            "array" => {
                self.out.push('{');
                self.key("type");
                self.string("array");
                self.out.push(',');
                self.key("items");
                self.schema(required(object, "items")?, namespace)?;
                self.out.push('}');
                Ok(())
            }
            "map" => {
                self.out.push('{');
                self.key("type");
                self.string("map");
                self.out.push(',');
                self.key("values");
                self.schema(required(object, "values")?, namespace)?;
                self.out.push('}');
                Ok(())
            }
            "record" | "error" | "enum" | "fixed" => self.named(kind, object, namespace),
            // {"type": "some.Name"}: a reference to a named type.
            reference => {
                self.string(&fullname(reference, None, namespace));
                Ok(())
            }
        }
    }

    fn named(&mut self, kind: &str, object: &Map<String, Value>, namespace: &str) -> Result<(), SchemaFormError> {
        let name = required(object, "name")?.as_str().ok_or_else(|| SchemaFormError("\"name\" is not a string".into()))?;
        let own_namespace = match object.get("namespace") {
            None | Some(Value::Null) => None,
            Some(Value::String(ns)) => Some(ns.as_str()),
            Some(other) => return Err(SchemaFormError(format!("\"namespace\" is not a string: {other}"))),
        };
        let full = fullname(name, own_namespace, namespace);
        if !self.defined.insert(full.clone()) {
            // Already written once: later occurrences are references.
            self.string(&full);
            return Ok(());
        }
        let inner_namespace = full.rsplit_once('.').map(|(ns, _)| ns.to_owned()).unwrap_or_default();
        self.out.push('{');
        self.key("name");
        self.string(&full);
        self.out.push(',');
        self.key("type");
        self.string(kind);
        match kind {
            "enum" => {
                self.out.push(',');
                self.key("symbols");
                let symbols = required(object, "symbols")?
                    .as_array()
                    .ok_or_else(|| SchemaFormError(format!("symbols of {full} are not an array")))?;
                self.out.push('[');
                for (i, symbol) in symbols.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let symbol = symbol.as_str().ok_or_else(|| SchemaFormError(format!("a symbol of {full} is not a string")))?;
                    self.string(symbol);
                }
                self.out.push(']');
            }
            "fixed" => {
                self.out.push(',');
                self.key("size");
                // [INTEGERS]: a quoted size or one with leading zeros is written plainly.
                let size = match required(object, "size")? {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                }
                .ok_or_else(|| SchemaFormError(format!("size of {full} is not a non-negative integer")))?;
                self.out.push_str(&size.to_string());
            }
            _ => {
                self.out.push(',');
                self.key("fields");
                let fields = required(object, "fields")?
                    .as_array()
                    .ok_or_else(|| SchemaFormError(format!("fields of {full} are not an array")))?;
                self.out.push('[');
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let field = field.as_object().ok_or_else(|| SchemaFormError(format!("a field of {full} is not an object")))?;
                    let field_name = required(field, "name")?
                        .as_str()
                        .ok_or_else(|| SchemaFormError(format!("a field name of {full} is not a string")))?;
                    self.out.push('{');
                    self.key("name");
                    self.string(field_name);
                    self.out.push(',');
                    self.key("type");
                    self.schema(required(field, "type")?, &inner_namespace)?;
                    self.out.push('}');
                }
                self.out.push(']');
            }
        }
        self.out.push('}');
        Ok(())
    }
}

fn required<'v>(object: &'v Map<String, Value>, key: &str) -> Result<&'v Value, SchemaFormError> {
    object.get(key).ok_or_else(|| SchemaFormError(format!("missing \"{key}\" in {}", Value::Object(object.clone()))))
}

/// The full name of `name` (specification, "Names"): a name with a dot is
/// already full; otherwise the type's own namespace, or else the enclosing
/// one, is prefixed ("" is the null namespace).
fn fullname(name: &str, own_namespace: Option<&str>, enclosing: &str) -> String {
    if name.contains('.') {
        return name.to_owned();
    }
    match own_namespace.unwrap_or(enclosing) {
        "" => name.to_owned(),
        ns => format!("{ns}.{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(fp: [u8; 8]) -> String {
        fp.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn crc64_avro_of_nothing_is_empty_and_of_int_is_the_specification_value() {
        assert_eq!(crc64_avro(b""), CRC64_AVRO_EMPTY);
        // The Java reference implementation's fingerprint64("\"int\""), as a signed long.
        assert_eq!(crc64_avro(b"\"int\"") as i64, 8247732601305521295);
        assert_eq!(crc64_avro(b"\"null\"") as i64, 7195948357588979594);
        assert_eq!(crc64_avro(b"[]") as i64, -1241056759729112623);
    }

    #[test]
    fn same_crc_as_the_rabin_digest_of_apache_avro() {
        // Only the canonical form differs from apache-avro, not the CRC.
        let schema = apache_avro::Schema::parse_str(r#"{"type":"enum","name":"E","symbols":["A"]}"#).unwrap();
        let theirs = schema.fingerprint::<apache_avro::rabin::Rabin>();
        let canonical = schema.canonical_form();
        assert_eq!(theirs.bytes, crc64_avro(canonical.as_bytes()).to_le_bytes().to_vec());
        assert_eq!(hex(fingerprint(&canonical).unwrap()), hex(crc64_avro(canonical.as_bytes()).to_le_bytes()));
    }

    #[test]
    fn logical_types_reduce_to_their_primitive() {
        for text in [
            r#"{"type":"long","logicalType":"timestamp-millis"}"#,
            r#"{"logicalType":"timestamp-micros","type":"long"}"#,
            r#"{"type":{"type":"long","logicalType":"timestamp-millis"}}"#,
        ] {
            assert_eq!(parsing_canonical_form(text).unwrap(), r#""long""#, "{text}");
        }
        assert_eq!(
            parsing_canonical_form(r#"{"type":"bytes","logicalType":"decimal","precision":28,"scale":6}"#).unwrap(),
            r#""bytes""#
        );
        assert_eq!(
            parsing_canonical_form(r#"{"type":"fixed","name":"M","namespace":"n","size":"016","logicalType":"decimal","precision":9,"scale":2}"#)
                .unwrap(),
            r#"{"name":"n.M","type":"fixed","size":16}"#
        );
    }

    #[test]
    fn names_resolve_against_the_enclosing_namespace_and_repeat_as_references() {
        let text = r#"{"type":"record","name":"Outer","namespace":"a.b","fields":[
            {"name":"x","type":{"type":"record","name":"Inner","fields":[]}},
            {"name":"y","type":"Inner"},
            {"name":"z","type":{"type":"record","name":"Top","namespace":"","fields":[{"name":"w","type":["null","Top"]}]}},
            {"name":"v","type":{"type":"enum","name":"c.Kind","symbols":["A"]}}]}"#;
        assert_eq!(
            parsing_canonical_form(text).unwrap(),
            concat!(
                r#"{"name":"a.b.Outer","type":"record","fields":["#,
                r#"{"name":"x","type":{"name":"a.b.Inner","type":"record","fields":[]}},"#,
                r#"{"name":"y","type":"a.b.Inner"},"#,
                r#"{"name":"z","type":{"name":"Top","type":"record","fields":[{"name":"w","type":["null","Top"]}]}},"#,
                r#"{"name":"v","type":{"name":"c.Kind","type":"enum","symbols":["A"]}}]}"#
            )
        );
    }

    #[test]
    fn invalid_schemas_are_errors_not_panics() {
        for text in ["", "3", r#"{"name":"x"}"#, r#"{"type":"record","fields":[]}"#, r#"{"type":"fixed","name":"F","size":-1}"#] {
            assert!(parsing_canonical_form(text).is_err(), "{text}");
        }
    }
}
