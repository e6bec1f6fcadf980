#!/usr/bin/env python3
"""A foreign consumer of the pipeline's topics: confluent-kafka + fastavro and
nothing but the schema files.

Every message is Avro single-object encoded (C3 01, the 8-byte CRC-64-AVRO
fingerprint of the writer schema's Parsing Canonical Form, little-endian, then
the binary datum). This script fingerprints every schemas/*.avsc and
schemas/history/*.avsc file the way the Avro specification says (fastavro's
to_parsing_canonical_form and fingerprint), reads each topic from its start to
its current end, finds each message's writer schema by the fingerprint in its
header and decodes the datum with it. No code, table or registry of the
pipeline is used: this is what a billing system in Python, Java or Spark does.

Prints one JSON document on stdout:
  {"schemas": {fingerprint: file}, "topics": {topic: {"messages": n,
   "decoded": n, "by_schema": {file: n}, "failures": [...], "records": [...]}},
   "messages": n, "decoded": n, "failures": n}
and exits 0 only if every message of every topic decoded (1 otherwise, 2 on a
usage or connection error).

    python3 tests/python/decode_topics.py --brokers 127.0.0.1:9092 \\
        --topics meter.aggregates meter.dead-letters
"""

import argparse
import base64
import datetime
import decimal
import glob
import io
import json
import os
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARKER = b"\xc3\x01"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def load_schemas(schema_dir):
    """{fingerprint hex (header byte order): (file, parsed schema)} for every .avsc file."""
    by_fingerprint = {}
    paths = sorted(glob.glob(os.path.join(schema_dir, "*.avsc"))) + sorted(
        glob.glob(os.path.join(schema_dir, "history", "*.avsc"))
    )
    for path in paths:
        with open(path, encoding="utf-8") as f:
            # A fresh name table per file: history versions reuse the current names.
            parsed = parse_schema(json.load(f), named_schemas={})
        fp = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
        name = os.path.relpath(path, schema_dir)
        if fp in by_fingerprint:
            # Same canonical form: either file decodes the datum.
            print(f"note: {name} has the fingerprint of {by_fingerprint[fp][0]} ({fp})", file=sys.stderr)
            continue
        by_fingerprint[fp] = (name, parsed)
    return by_fingerprint


def plain(value):
    """A decoded Avro value as JSON: decimals as strings, instants as epoch milliseconds."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return (value - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def decode(payload, schemas):
    """(schema file, record) or raises ValueError with the reason."""
    if payload is None or len(payload) < 10:
        raise ValueError(f"{0 if payload is None else len(payload)} bytes, shorter than a single-object header")
    if payload[:2] != MARKER:
        raise ValueError(f"not single-object encoding: marker {payload[:2].hex()}")
    fp = payload[2:10].hex()
    if fp not in schemas:
        raise ValueError(f"no schema in schemas/ has fingerprint {fp}")
    name, schema = schemas[fp]
    body = io.BytesIO(payload[10:])
    record = schemaless_reader(body, schema, None)
    rest = len(payload) - 10 - body.tell()
    if rest:
        raise ValueError(f"{rest} bytes left after the datum ({name})")
    return name, record


def read_topic(consumer, topic, schemas, deadline):
    result = {"messages": 0, "decoded": 0, "by_schema": {}, "failures": [], "records": []}
    metadata = consumer.list_topics(topic, timeout=10)
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        raise KafkaException(f"topic {topic}: {None if info is None else info.error}")
    assignment, remaining = [], {}
    for p in sorted(info.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if high > low:
            assignment.append(TopicPartition(topic, p, low))
            remaining[p] = high
    if not assignment:
        return result
    consumer.assign(assignment)
    while remaining and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            raise KafkaException(message.error())
        p, offset = message.partition(), message.offset()
        if p not in remaining or offset >= remaining[p]:
            continue
        if offset + 1 >= remaining[p]:
            del remaining[p]
        result["messages"] += 1
        headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (message.headers() or [])}
        key = message.key().decode("utf-8", "replace") if message.key() is not None else None
        try:
            name, record = decode(message.value(), schemas)
        except Exception as e:  # any decoding error is a finding, reported per message
            result["failures"].append({"partition": p, "offset": offset, "error": f"{type(e).__name__}: {e}"})
            continue
        result["decoded"] += 1
        result["by_schema"][name] = result["by_schema"].get(name, 0) + 1
        result["records"].append(
            {"partition": p, "offset": offset, "key": key, "headers": headers, "schema": name, "record": plain(record)}
        )
    consumer.unassign()
    if remaining:
        result["failures"].append({"error": f"timed out before the end of partitions {sorted(remaining)}"})
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", required=True, help="bootstrap servers, e.g. 127.0.0.1:9092")
    parser.add_argument("--topics", required=True, nargs="+", help="topics to read from the beginning")
    parser.add_argument("--schemas", default=os.path.join(ROOT, "schemas"), help="folder of the .avsc files")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to read all topics")
    parser.add_argument("--no-records", action="store_true", help="print counts only")
    args = parser.parse_args()

    schemas = load_schemas(args.schemas)
    if not schemas:
        print(f"no .avsc file in {args.schemas}", file=sys.stderr)
        return 2
    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": f"decode-topics.{os.getpid()}.{time.time_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            # Connection errors surface as exceptions (exit 2), not as log spam.
            "log_level": 0,
        }
    )
    deadline = time.monotonic() + args.timeout
    out = {"schemas": {fp: name for fp, (name, _) in sorted(schemas.items())}, "topics": {}}
    try:
        for topic in args.topics:
            out["topics"][topic] = read_topic(consumer, topic, schemas, deadline)
    except KafkaException as e:
        print(f"kafka error: {e}", file=sys.stderr)
        return 2
    finally:
        consumer.close()
    topics = out["topics"].values()
    out["messages"] = sum(t["messages"] for t in topics)
    out["decoded"] = sum(t["decoded"] for t in topics)
    out["failures"] = sum(len(t["failures"]) for t in topics)
    if args.no_records:
        for t in topics:
            del t["records"]
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    for topic, t in out["topics"].items():
        print(f"{topic}: {t['decoded']}/{t['messages']} decoded, {len(t['failures'])} failures {t['by_schema']}", file=sys.stderr)
    return 0 if out["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
