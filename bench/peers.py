"""The side-by-side benchmark's Python parts (bench/run.sh runs them).

  events N TENANTS          N ticket-time JSON lines on stdout (meter collect file input)
  raw BROKERS TOPIC N       librdkafka (confluent-kafka) raw consume of N messages
  watch URL N PID           polls the aggregator's /metrics until it consumed N
  quix BROKERS TOPIC N DIR  quixstreams: one tumbling 1-day sum of minutes per tenant

Every rate is measured from the first record handled to the N-th, so group
joins and process start-up are outside every figure alike. Each prints one
JSON line: {"events_per_s": ..., ...}.
"""

import json
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone


def events(n, tenants):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    month_start = now.replace(day=1, hour=0, minute=0, second=0)
    # Spread over the last 20 hours, inside the open month, never ahead of now.
    first = max(month_start, now - timedelta(hours=20))
    span = max(1, int((now - first).total_seconds()) - 60)
    profiles = ["ADMINISTRATOR", "ENGINEER", "CONSULTANT", "ARCHITECT"]
    out = sys.stdout
    for i in range(n):
        tenant = f"tenant-{i % tenants:02d}"
        at = first + timedelta(seconds=(i * 7919) % span)
        minutes = 1 + i % 90
        out.write(json.dumps({
            "event_id": f"bench-{i}", "source": "bench", "tenant": tenant,
            "subsidiary": f"{tenant}-{'abc'[i % 3]}", "domain": "infrastructure",
            "event_time": at.isoformat().replace("+00:00", "Z"),
            "ticket_id": f"T{i // 4}", "task_id": str(i),
            "ticket_type": "INCIDENT" if i % 2 else "REQUEST",
            "category_path": ["RUN", "MCO", "servers"],
            "requester": f"user{i % 10}", "technician": f"tech{i % 8}",
            "technician_profile": profiles[i % 8 % 4], "country": "FR",
            "minutes_worked": minutes,
            "start_time": (at - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
        }) + "\n")


def raw(brokers, topic, n):
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": brokers, "group.id": f"bench-raw-{uuid.uuid4()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    count, first, deadline = 0, None, time.monotonic() + 120
    while count < n and time.monotonic() < deadline:
        batch = c.consume(num_messages=10000, timeout=1.0)
        if batch and first is None:
            first = time.monotonic()
        count += sum(1 for m in batch if m.error() is None)
    elapsed = time.monotonic() - (first or time.monotonic())
    c.close()
    print(json.dumps({"events": count, "seconds": elapsed, "events_per_s": count / elapsed if elapsed else 0}))


def watch(url, n, pid):
    import urllib.request

    def consumed():
        try:
            text = urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            return None
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("meter_aggregator_events_consumed_total"))

    def rss_mib():
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    first, count, deadline = None, 0, time.monotonic() + 600
    while time.monotonic() < deadline:
        value = consumed()
        if value:
            if first is None:
                first, first_count = time.monotonic(), value
            count = value
            if value >= n:
                break
        time.sleep(0.05)
    elapsed = time.monotonic() - first if first else 0
    # Poll granularity: the first poll already saw first_count events.
    counted = count - first_count if first else 0
    print(json.dumps({"events": count, "seconds": elapsed, "events_per_s": counted / elapsed if elapsed else 0,
                      "rss_mib": rss_mib()}))


def quix(brokers, topic_name, n, state_dir):
    import fastavro
    import fastavro.schema
    from quixstreams import Application
    from quixstreams.models.serializers import Deserializer

    schema = json.load(open("schemas/ticket_time.avsc"))
    fingerprint = bytes.fromhex(fastavro.schema.fingerprint(
        fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(schema)), "CRC-64-AVRO"))
    for field in schema["fields"]:  # instants as the longs on the wire
        if isinstance(field["type"], dict) and field["type"].get("logicalType"):
            field["type"] = field["type"]["type"]
    parsed = fastavro.parse_schema(schema)

    class TicketTime(Deserializer):
        def __call__(self, value, ctx):
            import io
            if value[2:10] != fingerprint:
                # The aggregator's clock records share the partitions.
                return {"other": True}
            buf = io.BytesIO(value)
            buf.seek(10)  # single-object header
            return fastavro.schemaless_reader(buf, parsed, None)

    app = Application(broker_address=brokers, consumer_group=f"bench-quix-{uuid.uuid4()}",
                      auto_offset_reset="earliest", state_dir=state_dir, use_changelog_topics=False,
                      loglevel="WARNING")
    topic = app.topic(topic_name, value_deserializer=TicketTime(), key_deserializer="str",
                      timestamp_extractor=lambda value, headers, ts, kind: value.get("event_time", ts))
    progress = {"count": 0, "first": None, "last": None}

    def seen(_value):
        if progress["first"] is None:
            progress["first"] = time.monotonic()
        progress["count"] += 1
        if progress["count"] >= n:
            progress["last"] = time.monotonic()
            app.stop()

    sdf = app.dataframe(topic)
    sdf = sdf.filter(lambda v: "other" not in v)
    sdf = sdf.update(seen)
    sdf = sdf.apply(lambda v: v["minutes_worked"])
    # Grace as wide as the events' spread: every event counts, none is dropped
    # as late (the aggregator drops none either).
    sdf = sdf.tumbling_window(timedelta(days=1), grace_ms=timedelta(days=2)).sum().final()
    app.run()
    elapsed = (progress["last"] or time.monotonic()) - (progress["first"] or time.monotonic())
    print(json.dumps({"events": progress["count"], "seconds": elapsed,
                      "events_per_s": progress["count"] / elapsed if elapsed else 0}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "events":
        events(int(args[0]), int(args[1]))
    elif cmd == "raw":
        raw(args[0], args[1], int(args[2]))
    elif cmd == "watch":
        watch(args[0], int(args[1]), int(args[2]))
    elif cmd == "quix":
        quix(args[0], args[1], int(args[2]), args[3])
    else:
        sys.exit(f"unknown command {cmd}")
