#!/usr/bin/env python3
"""Writes the Avro fingerprint test vectors the Rust codec is checked against.

The Parsing Canonical Form and the CRC-64-AVRO fingerprint are computed here by
fastavro (fastavro.schema.to_parsing_canonical_form and fingerprint), an
implementation independent of ours that follows the Avro specification, for:

  * cases: small schemas, one or more per rule of the specification's
    "Parsing Canonical Form for Schemas" section ([PRIMITIVES], [FULLNAMES],
    [STRIP], [ORDER], [STRINGS], [INTEGERS], [WHITESPACE]), logical types
    included (they are stripped: {"type":"long","logicalType":...} is "long");
  * schemas: every schemas/*.avsc and schemas/history/*.avsc file.

Fingerprints are written as the hex of the 8 bytes a single-object header
carries (little-endian), the form fastavro prints.

Run after changing a schema (the Rust test fails until you do):
    .stack/venv/bin/python tests/python/fingerprint_vectors.py
"""

import glob
import json
import os
import sys

from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "services/meter-model/tests/data/fingerprint_vectors.json")

# (rule, schema text). The texts are written with odd spacing and key order on
# purpose: the canonical form must not depend on them.
CASES = [
    ("PRIMITIVES", '"null"'),
    ("PRIMITIVES", '"boolean"'),
    ("PRIMITIVES", '"int"'),
    ("PRIMITIVES", '"long"'),
    ("PRIMITIVES", '"float"'),
    ("PRIMITIVES", '"double"'),
    ("PRIMITIVES", '"bytes"'),
    ("PRIMITIVES", '"string"'),
    ("PRIMITIVES", '{"type": "int"}'),
    ("PRIMITIVES", '{ "type" : "string" }'),
    ("PRIMITIVES", '{"type": "long", "logicalType": "timestamp-millis"}'),
    ("PRIMITIVES", '{"logicalType": "timestamp-micros", "type": "long"}'),
    ("PRIMITIVES", '{"type": "int", "logicalType": "date"}'),
    ("PRIMITIVES", '{"type": "bytes", "logicalType": "decimal", "precision": 28, "scale": 6}'),
    ("PRIMITIVES", '{"type": "string", "logicalType": "uuid"}'),
    ("PRIMITIVES", '[ "null" , {"type": "long", "logicalType": "timestamp-millis"} ]'),
    ("PRIMITIVES", '{"type": "array", "items": {"type": "int"}}'),
    ("PRIMITIVES", '{"values": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}, "type": "map"}'),
    ("FULLNAMES", '{"type": "record", "name": "Bill", "fields": []}'),
    ("FULLNAMES", '{"type": "record", "name": "Bill", "namespace": "io.meter", "fields": []}'),
    ("FULLNAMES", '{"type": "record", "name": "a.b.Bill", "namespace": "io.meter", "fields": []}'),
    ("FULLNAMES", '{"type": "enum", "namespace": "io.meter", "name": "Tier", "symbols": ["GOLD", "SILVER"]}'),
    ("FULLNAMES", '{"type": "fixed", "name": "Hash", "namespace": "io.meter", "size": 32}'),
    (
        "FULLNAMES",
        '{"type": "record", "name": "Outer", "namespace": "io.meter", "fields": ['
        '{"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [{"name": "n", "type": "int"}]}},'
        '{"name": "again", "type": "Inner"},'
        '{"name": "same", "type": "io.meter.Inner"},'
        '{"name": "other", "type": {"type": "enum", "name": "x.y.Kind", "symbols": ["A"]}},'
        '{"name": "kind2", "type": ["null", "x.y.Kind"]}]}',
    ),
    (
        "FULLNAMES",
        '{"type": "record", "name": "Node", "namespace": "io.meter", "fields": ['
        '{"name": "value", "type": "long"}, {"name": "next", "type": ["null", "Node"]}]}',
    ),
    (
        "STRIP",
        '{"type": "record", "name": "Bill", "namespace": "io.meter", "doc": "A bill.", "aliases": ["Invoice"],'
        ' "owner": "billing", "fields": ['
        '{"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 28, "scale": 6},'
        ' "doc": "EUR", "default": "\\u0000", "order": "descending", "aliases": ["total"]},'
        '{"name": "tier", "type": {"type": "enum", "name": "Tier", "symbols": ["GOLD", "SILVER"],'
        ' "default": "GOLD", "doc": "SLA"}},'
        '{"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 16, "logicalType": "decimal",'
        ' "precision": 20, "scale": 2}}]}',
    ),
    ("ORDER", '{"symbols": ["B", "A"], "name": "Order", "type": "enum"}'),
    ("ORDER", '{"fields": [{"type": "int", "name": "b"}, {"type": "int", "name": "a"}], "type": "record", "name": "R"}'),
    ("ORDER", '{"size": 4, "type": "fixed", "name": "F"}'),
    ("STRINGS", '{"type": "enum", "name": "\\u0045scaped", "symbols": ["\\u0041"]}'),
    ("STRINGS", '{"type": "record", "name": "R", "doc": "caf\\u00e9, Z\\u00fcrich", "fields": []}'),
    ("INTEGERS", '{"type": "fixed", "name": "F", "size": 16}'),
    ("WHITESPACE", ' {\n\t"type" :\r\n "record" , "name":"W",\n "fields" : [ ] }\n'),
    ("WHITESPACE", '[ ]'),
    ("WHITESPACE", '[ "int" , "string" ]'),
]


def vector(text):
    schema = parse_schema(json.loads(text), named_schemas={}, _write_hint=False)
    canonical = to_parsing_canonical_form(schema)
    return canonical, fingerprint(canonical, "CRC-64-AVRO")


def main():
    cases = []
    for rule, text in CASES:
        canonical, fp = vector(text)
        cases.append({"rule": rule, "schema": text, "canonical": canonical, "crc64_avro": fp})
    schemas = []
    paths = sorted(glob.glob(os.path.join(ROOT, "schemas/*.avsc")) + glob.glob(os.path.join(ROOT, "schemas/history/*.avsc")))
    for path in paths:
        with open(path, encoding="utf-8") as f:
            canonical, fp = vector(f.read())
        schemas.append({"file": os.path.relpath(path, ROOT), "canonical": canonical, "crc64_avro": fp})
    import fastavro

    out = {
        "generated_by": "tests/python/fingerprint_vectors.py with fastavro " + fastavro.__version__,
        "cases": cases,
        "schemas": schemas,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{OUT}: {len(cases)} cases, {len(schemas)} schemas", file=sys.stderr)


if __name__ == "__main__":
    main()
