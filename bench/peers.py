"""The side-by-side benchmark's Python parts (bench/run.sh runs them).

  events N TENANTS [PREFIX [START]]   N ticket-time JSON lines on stdout (meter collect file input),
                                      event ids PREFIX-START .. PREFIX-(START+N-1)
  raw BROKERS TOPIC N                 librdkafka (confluent-kafka) raw consume of N messages
  watch URL N PID                     polls the aggregator's /metrics until it consumed N
  quix BROKERS TOPIC N DIR            quixstreams: one tumbling 1-day sum of minutes per tenant
  clickhouse-ping URL                 the ClickHouse server's version, or a one-line error (exit 1)
  sink LOG CH_URL DATABASE N          the sink's rows/s from its JSON log, checked against ClickHouse
  latency BROKERS TOPIC CH_URL DATABASE SECONDS PER_S -- CMD...
                                      event to visible in `aggregates FINAL`: probe events at known
                                      instants while CMD (the steady background load) runs
  memory URL AGG_PID TANSU_PID DIR TENANTS THRESHOLDS -- CMD...
                                      publishes max(THRESHOLDS) events in chunks with CMD FILE and
                                      samples the aggregator's RSS as its consumed counter passes each
                                      million (and its checkpoints' size, METER_AGGREGATOR__STATE_DIR)
  summary DIR                         the markdown summary of every phase's DIR/*.json

Every rate is measured from the first record handled to the N-th, so group
joins and process start-up are outside every figure alike. Each measuring
command prints one JSON line: {"events_per_s": ...} or {"error": "..."}.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

PROBE_TENANT = "bench-probe"
MIB = 1024 * 1024


def iso(at):
    return at.isoformat().replace("+00:00", "Z")


def events(n, tenants, prefix="bench", start=0):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    month_start = now.replace(day=1, hour=0, minute=0, second=0)
    # Spread over the last 20 hours, inside the open month, never ahead of now.
    first = max(month_start, now - timedelta(hours=20))
    span = max(1, int((now - first).total_seconds()) - 60)
    profiles = ["ADMINISTRATOR", "ENGINEER", "CONSULTANT", "ARCHITECT"]
    out = sys.stdout
    for i in range(start, start + n):
        tenant = f"tenant-{i % tenants:02d}"
        at = first + timedelta(seconds=(i * 7919) % span)
        minutes = 1 + i % 90
        out.write(json.dumps({
            "event_id": f"{prefix}-{i}", "source": "bench", "tenant": tenant,
            "subsidiary": f"{tenant}-{'abc'[i % 3]}", "domain": "infrastructure",
            "event_time": iso(at),
            "ticket_id": f"T{i // 4}", "task_id": str(i),
            "ticket_type": "INCIDENT" if i % 2 else "REQUEST",
            "category_path": ["RUN", "MCO", "servers"],
            "requester": f"user{i % 10}", "technician": f"tech{i % 8}",
            "technician_profile": profiles[i % 8 % 4], "country": "FR",
            "minutes_worked": minutes,
            "start_time": iso(at - timedelta(minutes=minutes)),
        }) + "\n")


# Every consumer of the comparison fetches alike, as `meter aggregate` does by
# default: Tansu holds each fetch for fetch.wait.max.ms (librdkafka's 500 ms
# default would cap the reference rather than measure it), and a consumer
# slower than its fetches would otherwise wait fetch.queue.backoff.ms (1 s)
# once librdkafka's queue is full.
CONSUMER_TUNING = {"fetch.wait.max.ms": int(os.environ.get("BENCH_FETCH_WAIT_MAX_MS", "100")),
                   "fetch.queue.backoff.ms": 10}


def raw(brokers, topic, n):
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": brokers, "group.id": f"bench-raw-{uuid.uuid4()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, **CONSUMER_TUNING})
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


def metric_sum(url, name):
    """Sum of every series of one metric family on a /metrics page, None if unreachable."""
    try:
        text = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "))


def proc_status_kib(pid, field):
    """A /proc/PID/status field in KiB (VmRSS, VmHWM), None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def mem_available_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def watch(url, n, pid):
    first, count, deadline = None, 0, time.monotonic() + 600
    while time.monotonic() < deadline:
        value = metric_sum(url, "meter_aggregator_events_consumed_total")
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
                      "rss_mib": (proc_status_kib(pid, "VmRSS") or 0) / 1024}))


def ticket_schema():
    """(fingerprint bytes as on the wire, fastavro schema with instants as longs)."""
    import fastavro
    import fastavro.schema

    schema = json.load(open("schemas/ticket_time.avsc"))
    fingerprint = bytes.fromhex(fastavro.schema.fingerprint(
        fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(schema)), "CRC-64-AVRO"))
    for field in schema["fields"]:  # instants as the longs on the wire
        if isinstance(field["type"], dict) and field["type"].get("logicalType"):
            field["type"] = field["type"]["type"]
    return fingerprint, fastavro.parse_schema(schema)


def quix(brokers, topic_name, n, state_dir):
    import io

    import fastavro
    from quixstreams import Application
    from quixstreams.models.serializers import Deserializer

    fingerprint, parsed = ticket_schema()

    class TicketTime(Deserializer):
        def __call__(self, value, ctx):
            if value[2:10] != fingerprint:
                # The aggregator's clock records share the partitions.
                return {"other": True}
            buf = io.BytesIO(value)
            buf.seek(10)  # single-object header
            return fastavro.schemaless_reader(buf, parsed, None)

    app = Application(broker_address=brokers, consumer_group=f"bench-quix-{uuid.uuid4()}",
                      auto_offset_reset="earliest", state_dir=state_dir, use_changelog_topics=False,
                      consumer_extra_config=dict(CONSUMER_TUNING),
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


# ClickHouse over its HTTP interface (POST the query, 200 and the result, or
# an error code and the error text).

def ch_query(url, sql, timeout=10):
    params = {}
    if os.environ.get("METER_CLICKHOUSE__USER"):
        params["user"] = os.environ["METER_CLICKHOUSE__USER"]
    if os.environ.get("METER_CLICKHOUSE__PASSWORD"):
        params["password"] = os.environ["METER_CLICKHOUSE__PASSWORD"]
    full = url.rstrip("/") + "/" + (("?" + urllib.parse.urlencode(params)) if params else "")
    try:
        with urllib.request.urlopen(urllib.request.Request(full, data=sql.encode()), timeout=timeout) as r:
            return r.read().decode().strip()
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"ClickHouse refused `{sql[:80]}`: {e.read().decode(errors='replace').strip()[:300]}") from None


def clickhouse_ping(url):
    try:
        print(ch_query(url, "SELECT version()", timeout=5))
    except (OSError, RuntimeError) as e:
        print(f"ClickHouse not reachable at {url} ({e}): start the stack with scripts/stack.sh up")
        sys.exit(1)


def sink(log_path, ch_url, database, n):
    """Rows/s of `meter sink clickhouse` from the first insert's start to the last's end.

    Every `batch inserted` line of its JSON log carries the end instant
    (timestamp), the table, the rows and the INSERT's duration_ms: rows are
    the sum of those lines (meter_sink_rows_inserted_total), aggregate rows
    and detail rows apart. ClickHouse is then asked what it holds.
    """
    batches = []
    for line in open(log_path):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("message") == "batch inserted":
            end = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
            batches.append((end - record["duration_ms"] / 1000, end, record["table"], int(record["rows"])))
    if not batches:
        print(json.dumps({"error": "the sink logged no `batch inserted` line"}))
        return
    start, end = min(b[0] for b in batches), max(b[1] for b in batches)
    by_table = {}
    for b in batches:
        by_table[b[2]] = by_table.get(b[2], 0) + b[3]
    rows = sum(by_table.values())
    db = database
    details = int(ch_query(ch_url, f"SELECT count() FROM {db}.ticket_tasks FINAL"))
    counted = int(ch_query(ch_url, f"SELECT sum(event_count) FROM {db}.aggregates FINAL "
                                   f"WHERE period = 'YEAR' AND tenant != '{PROBE_TENANT}'") or 0)
    seconds = end - start
    print(json.dumps({"rows": rows, "by_table": by_table, "batches": len(batches), "seconds": seconds,
                      "rows_per_s": rows / seconds if seconds > 0 else 0,
                      "clickhouse_detail_rows": details, "clickhouse_year_event_count": counted, "events": n}))


class Probes:
    """Probe events of one tenant: Avro single-object, published at known instants."""

    def __init__(self, brokers, topic):
        import io

        import fastavro
        from confluent_kafka import Producer

        self.io, self.fastavro, self.topic = io, fastavro, topic
        self.fingerprint, self.schema = ticket_schema()
        self.producer = Producer({"bootstrap.servers": brokers, "linger.ms": 0, "acks": "all",
                                  "enable.idempotence": True})
        self.sent, self.acked = [], []

    def encode(self, k):
        now_ms = int(time.time() * 1000)
        buf = self.io.BytesIO()
        buf.write(b"\xc3\x01" + self.fingerprint)
        self.fastavro.schemaless_writer(buf, self.schema, {
            "event_id": f"probe-{k}-{uuid.uuid4().hex[:8]}", "source": "bench", "tenant": PROBE_TENANT,
            "subsidiary": f"{PROBE_TENANT}-a", "domain": "infrastructure", "event_time": now_ms,
            "ingest_time": now_ms, "ticket_id": f"P{k}", "task_id": str(k), "ticket_type": "REQUEST",
            "category_path": ["RUN", "MCO", "servers"], "in_scope": True, "requester": "probe",
            "technician": "probe", "technician_profile": "ENGINEER", "application": None, "country": "FR",
            "minutes_worked": 1, "start_time": now_ms - 60000, "version": 0, "deleted": False})
        return buf.getvalue()

    def publish(self):
        """Publishes the next probe; its instant is taken just before produce()."""
        payload = self.encode(len(self.sent))
        self.sent.append(time.monotonic())
        self.producer.produce(self.topic, key=PROBE_TENANT.encode(), value=payload)
        self.producer.flush(10)
        self.acked.append(time.monotonic())


def percentile(sorted_values, q):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), -(-len(sorted_values) * q // 100)))
    return sorted_values[int(rank) - 1]


def latency(brokers, topic, ch_url, database, seconds, per_s, background, series=None):
    """Event to visible in `aggregates FINAL`, under the background load `background`.

    A warm-up probe is published and awaited first (group joins, first
    flushes). Then `background` starts and PER_S probes a second are
    published for SECONDS; a poller reads the probe tenant's YEAR event_count
    every 50 ms. Probe k is visible at the first poll (its send instant) that
    counted k probes: latency = that instant - probe k's publish instant.
    Each probe's latency goes to the TSV file `series` (env BENCH_LATENCY_SERIES).
    """
    query = (f"SELECT sum(event_count) FROM {database}.aggregates FINAL "
             f"WHERE tenant = '{PROBE_TENANT}' AND period = 'YEAR'")
    count = lambda: int(ch_query(ch_url, query) or 0)
    probes = Probes(brokers, topic)
    probes.publish()
    deadline = time.monotonic() + 120
    while count() < 1:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "the warm-up probe was not visible in ClickHouse within 120 s"}))
            return
        time.sleep(0.1)
    warmup = time.monotonic() - probes.sent[0]
    polls, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            asked = time.monotonic()
            try:
                seen = count()
                polls.append((asked, time.monotonic() - asked, seen))
            except (OSError, RuntimeError):
                pass
            time.sleep(max(0.0, 0.05 - (time.monotonic() - asked)))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    load = subprocess.Popen(background, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    load_start = time.monotonic()
    try:
        total = int(seconds * per_s)
        for k in range(total):
            time.sleep(max(0.0, load_start + k / per_s - time.monotonic()))
            probes.publish()
        out, _ = load.communicate(timeout=max(600, seconds * 10))
        load_seconds = time.monotonic() - load_start
        tail = time.monotonic() + 60
        while (not polls or polls[-1][2] < len(probes.sent)) and time.monotonic() < tail:
            time.sleep(0.1)
    finally:
        stop.set()
        if load.poll() is None:
            load.terminate()
            load.wait(10)
    poller.join(5)
    latencies, i = [], 0
    for k in range(1, len(probes.sent)):
        while i < len(polls) and polls[i][2] < k + 1:
            i += 1
        if i == len(polls):
            break
        latencies.append(polls[i][0] - probes.sent[k])
    if series:
        with open(series, "w") as f:
            f.write("probe\tpublished_s\tvisible_after_s\n")
            for k, lat in enumerate(latencies, start=1):
                f.write(f"{k}\t{probes.sent[k] - load_start:.3f}\t{lat:.3f}\n")
    thirds = [sorted(latencies[i * len(latencies) // 3:(i + 1) * len(latencies) // 3]) for i in range(3)]
    missing = len(probes.sent) - 1 - len(latencies)
    # A probe never seen counts as infinitely late: p99 is then unknown (None), not flattered.
    ordered = sorted(latencies) + [float("inf")] * missing
    finite = lambda v: v if v is not None and v != float("inf") else None
    ack = sorted(a - s for s, a in zip(probes.sent, probes.acked))
    print(json.dumps({
        "probes": len(probes.sent) - 1, "visible": len(latencies), "warmup_s": warmup,
        "p50_by_third_s": [percentile(t, 50) for t in thirds],
        "p50_s": finite(percentile(ordered, 50)), "p99_s": finite(percentile(ordered, 99)),
        "max_s": finite(ordered[-1] if ordered else None),
        "publish_ack_p50_s": percentile(ack, 50),
        "poll_query_p50_s": percentile(sorted(p[1] for p in polls), 50), "polls": len(polls),
        "background_exit": load.returncode, "background_seconds": load_seconds,
        "background_summary": (out or "").strip().splitlines()[-1] if (out or "").strip() else "",
        "per_s": per_s, "seconds": seconds}))


class ChunkPublisher(threading.Thread):
    """Generates and publishes `total` events in chunks of a million, one file on disk at a time.

    The next chunk is generated (another process) while the current one is
    published with `publish FILE`; stop() ends the publishing child.
    """

    CHUNK = 1_000_000

    def __init__(self, workdir, tenants, total, publish):
        super().__init__(daemon=True)
        self.workdir, self.tenants, self.total, self.publish = workdir, tenants, total, publish
        self.published, self.error, self.child, self.stopping = 0, None, None, False

    def generate(self, start):
        path = os.path.join(self.workdir, f"mem-{start}.jsonl")
        with open(path, "w") as f:
            gen = subprocess.Popen([sys.executable, os.path.abspath(__file__), "events",
                                    str(min(self.CHUNK, self.total - start)), str(self.tenants), "bench-mem",
                                    str(start)], stdout=f)
        return path, gen

    def run(self):
        current = self.generate(0)
        for start in range(0, self.total, self.CHUNK):
            path, gen = current
            gen.wait()
            current = self.generate(start + self.CHUNK) if start + self.CHUNK < self.total else None
            if not self.stopping:
                self.child = subprocess.Popen(self.publish + [path], stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True)
                out, _ = self.child.communicate()
                if self.child.returncode != 0 and not self.stopping:
                    self.error = f"publishing failed: {out.strip()[-300:]}"
                    self.stopping = True
                elif not self.stopping:
                    self.published = start + min(self.CHUNK, self.total - start)
            os.remove(path)
            if self.stopping:
                break
        if current:
            current[1].wait()
            os.remove(current[0])

    def stop(self):
        self.stopping = True
        if self.child and self.child.poll() is None:
            self.child.terminate()


def folder_mib(path):
    """Bytes of the files under `path` in MiB (the aggregator's checkpoints), None without a path."""
    if not path or not os.path.isdir(path):
        return None
    total = 0
    for entry in os.scandir(path):
        try:
            total += entry.stat().st_size if entry.is_file() else 0
        except OSError:
            pass
    return total / MIB


def memory_sample(url, agg_pid, tansu_pid, mark, consumed, seconds):
    kib = lambda pid, field: (proc_status_kib(pid, field) or 0) / 1024
    return {"events": mark, "consumed": consumed, "seconds": seconds,
            "checkpoints_mib": folder_mib(os.environ.get("METER_AGGREGATOR__STATE_DIR")),
            "rss_mib": kib(agg_pid, "VmRSS"), "hwm_mib": kib(agg_pid, "VmHWM"),
            "open_aggregates": metric_sum(url, "meter_aggregator_window_state_aggregates"),
            "tansu_rss_mib": kib(tansu_pid, "VmRSS"), "mem_available_mib": mem_available_kib() / 1024}


def memory(url, agg_pid, tansu_pid, workdir, tenants, thresholds, publish, timeout):
    """The aggregator's RSS as it consumes max(thresholds) fresh events.

    Every 0.2 s the aggregator's consumed counter is read; at each million
    passed, its VmRSS, VmHWM, open aggregates, checkpoint files, Tansu's
    VmRSS and the machine's MemAvailable are kept. Stops early, and says why,
    if the aggregator exits or consumes nothing for 10 minutes, MemAvailable
    falls under 2 GiB, or after `timeout` seconds (BENCH_MEMORY_TIMEOUT).
    """
    total = max(thresholds)
    # Measured (2026-12-04): about 1.3 GiB a million events for the aggregator
    # and 0.2 for Tansu's memory storage; leave the machine 2 GiB besides.
    need_mib = total / 1_000_000 * 1.6 * 1024 + 2048
    if mem_available_kib() / 1024 < need_mib:
        print(json.dumps({"thresholds": thresholds, "samples": [], "published": 0, "seconds": 0,
                          "error": f"{total:,} events need about {need_mib / 1024:.0f} GiB, the machine has "
                                   f"{mem_available_kib() / MIB:.1f} GiB available"}))
        return
    publisher = ChunkPublisher(workdir, tenants, total, publish)
    started = time.monotonic()
    publisher.start()
    samples, mark, error = [], ChunkPublisher.CHUNK, None
    last_value, last_change = 0, time.monotonic()
    try:
        while mark <= total and not error:
            value = metric_sum(url, "meter_aggregator_events_consumed_total") or last_value
            if value != last_value:
                last_value, last_change = value, time.monotonic()
            while value >= mark:
                samples.append(memory_sample(url, agg_pid, tansu_pid, mark, value, time.monotonic() - started))
                mark += ChunkPublisher.CHUNK
            if proc_status_kib(agg_pid, "VmRSS") is None:
                error = f"the aggregator exited after {value:,.0f} events"
            elif mem_available_kib() < 2 * MIB:
                error = f"stopped: the machine's available memory fell under 2 GiB at {value:,.0f} events"
            elif publisher.error:
                error = publisher.error
            elif time.monotonic() - last_change > 600:
                error = f"the aggregator consumed nothing for 10 minutes, at {value:,.0f} of {total:,} events"
            elif time.monotonic() - started > timeout:
                error = (f"stopped after {timeout:,.0f} s (BENCH_MEMORY_TIMEOUT) at {value:,.0f} of {total:,} events "
                         f"consumed")
            time.sleep(0.2)
    finally:
        publisher.stop()
        publisher.join(30)
    print(json.dumps({"thresholds": thresholds, "samples": samples, "published": publisher.published,
                      "seconds": time.monotonic() - started, "error": error}))


# The summary: one markdown table, every figure with its target, n/a and the
# reason for a phase that failed.

def load_phase(workdir, name):
    try:
        with open(os.path.join(workdir, f"{name}.json")) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"error": f"no result ({e.__class__.__name__})"}


def na(part):
    return f"n/a ({part.get('error') or 'not measured'})"


def figure(part, key, fmt):
    value = part.get(key) if isinstance(part, dict) else None
    return fmt(value) if value is not None and not part.get("error") else na(part or {})


def verdict(ok):
    return "met" if ok else "not met"


def ratio_line(a, b, target, label):
    if a.get("error") or b.get("error") or not b.get("events_per_s"):
        return f"{label} = n/a"
    r = a["events_per_s"] / b["events_per_s"]
    return f"{label} = {r:.2f} (target >= {target}, {verdict(r >= target)})"


def memory_rows(mem, thresholds):
    rows, by_events = [], {s["events"]: s for s in mem.get("samples", [])}
    for t in thresholds:
        s = by_events.get(t)
        value = (f"{s['rss_mib']:,.0f} MiB (peak VmHWM {s['hwm_mib']:,.0f} MiB, {s['open_aggregates'] or 0:,.0f} open aggregates)"
                 if s else na(mem if mem.get("error") else {"error": "not reached"}))
        rows.append((f"aggregator RSS after {t:,} events", value, "bounded by open windows and periods"))
    return rows


def memory_lines(mem, thresholds):
    samples = mem.get("samples", [])
    lines = []
    if len(samples) >= 2:
        a, b = samples[0], samples[-1]
        growth = (b["rss_mib"] - a["rss_mib"]) * MIB / (b["events"] - a["events"])
        flat = b["rss_mib"] <= a["rss_mib"] * 1.25
        lines.append(f"memory: {a['events']:,} -> {b['events']:,} events: RSS {a['rss_mib']:,.0f} -> {b['rss_mib']:,.0f} MiB "
                     f"({growth:+,.0f} bytes per event; design goal flat within 25 %: {verdict(flat)}); open aggregates "
                     f"{a['open_aggregates'] or 0:,.0f} -> {b['open_aggregates'] or 0:,.0f}")
    if samples:
        curve = ", ".join(f"{s['events'] // 1_000_000}M {s['rss_mib']:,.0f}/{s['hwm_mib']:,.0f}" for s in samples)
        rates, before = [], {"events": 0, "seconds": 0}
        for s in samples:
            rates.append(f"{s['events'] // 1_000_000}M {(s['events'] - before['events']) / max(s['seconds'] - before['seconds'], 1e-9):,.0f}")
            before = s
        lines.append(f"memory phase, aggregator events/s over each million (publishing ran alongside): {', '.join(rates)}")
        if samples[-1].get("checkpoints_mib") is not None:
            lines.append("memory phase, checkpoint files (state_dir) MiB: "
                         + ", ".join(f"{s['events'] // 1_000_000}M {s['checkpoints_mib']:,.0f}" for s in samples))
        last = samples[-1]
        lines.append(f"memory curve (events: aggregator VmRSS/VmHWM MiB): {curve}; Tansu VmRSS at {last['events']:,}: "
                     f"{last['tansu_rss_mib']:,.0f} MiB, MemAvailable {last['mem_available_mib']:,.0f} MiB; "
                     f"{mem.get('seconds', 0):,.0f} s")
    if mem.get("error"):
        lines.append(f"memory phase: {mem['error']}")
    return lines


def render(workdir):
    meta = load_phase(workdir, "meta")
    a, b, c, d = (load_phase(workdir, p) for p in "ABCD")
    raw, agg, quix = (a.get(k) or {"error": a.get("error", "not measured")} for k in ("raw", "aggregate", "quix"))
    thresholds = [int(t) for t in str(meta.get("memory_events", "")).split()]
    rate = lambda v: f"{v:,.0f} events/s"
    secs = lambda v: f"{v:.2f} s"
    rows = [
        ("raw consume (librdkafka via confluent-kafka, no processing)", figure(raw, "events_per_s", rate), "reference"),
        ("`meter aggregate` (release), end to end", figure(agg, "events_per_s", rate), ">= 0.8 x raw, >= 5 x quixstreams"),
        ("quixstreams 3.28.1, tumbling 1-day sum per tenant (fastavro)", figure(quix, "events_per_s", rate), "reference"),
        ("`meter collect file` (release, process start included)", figure(a, "collect_per_s", rate), ""),
        ("`meter sink clickhouse`, detail + aggregate rows into ClickHouse", figure(b, "rows_per_s", lambda v: f"{v:,.0f} rows/s"),
         ">= 100,000 rows/s"),
        (f"event to visible in `aggregates FINAL` at {meta.get('latency_rate', 0):,} events/s: **p99**",
         figure(c, "p99_s", secs) if c.get("p99_s") is not None or c.get("error")
         else f"unknown: {c['probes'] - c['visible']} of {c['probes']} probes never visible", "< 2 s"),
        ("same: p50 / max", figure(c, "p50_s", lambda v: f"{v:.2f} s / {c['max_s']:.2f} s" if c.get("max_s") is not None
                                   else f"{v:.2f} s / n/a"), ""),
    ] + memory_rows(d, thresholds)
    out = [f"side-by-side benchmark, {meta.get('date', '?')}, {meta.get('n', 0):,} ticket-time events, "
           f"{meta.get('tenants', '?')} tenants, Tansu memory storage, ClickHouse {meta.get('clickhouse', '?')}, "
           f"{os.cpu_count()} cores",
           f"load at the start: {meta.get('load_start', '?')}",
           f"load before the summary: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}",
           "phases: " + ", ".join(f"{k} {v:,.0f} s" for k, v in meta.get("durations", {}).items()),
           "", "| figure | measured | target |", "|---|---|---|"]
    out += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    out += ["", ratio_line(agg, raw, 0.8, "aggregate / raw") + "; " + ratio_line(agg, quix, 5, "aggregate / quixstreams")]
    if not agg.get("error"):
        out.append(f"aggregator RSS after {agg['events']:,.0f} records (phase A): {agg['rss_mib']:.0f} MiB")
    if not b.get("error"):
        tables = ", ".join(f"{t} {n:,}" for t, n in sorted(b["by_table"].items()))
        out.append(f"sink: {b['rows']:,} rows ({tables}) in {b['batches']} INSERTs, {b['seconds']:.2f} s from the first "
                   f"INSERT's start to the last's end (its JSON log); sink / target = {b['rows_per_s'] / 100000:.2f} "
                   f"({verdict(b['rows_per_s'] >= 100000)}); ClickHouse then held {b['clickhouse_detail_rows']:,} "
                   f"ticket_tasks rows and YEAR aggregates counting {b['clickhouse_year_event_count']:,} events "
                   f"(expected {b['events']:,} each)")
    if not c.get("error"):
        bg = meta.get("latency_events", 0)
        out.append(f"latency: {c['visible']:,} of {c['probes']:,} probes visible ({c['per_s']:.0f}/s for {c['seconds']:.0f} s) "
                   f"under {bg:,} background events in {c['background_seconds']:.1f} s "
                   f"({bg / c['background_seconds'] if c['background_seconds'] else 0:,.0f} events/s); p99 target < 2 s: "
                   f"{verdict(c['p99_s'] is not None and c['p99_s'] < 2)}; p50 by third of the run "
                   f"{' / '.join(f'{v:.2f}' if v is not None else 'n/a' for v in c.get('p50_by_third_s', []))} s; publish ack p50 {c['publish_ack_p50_s'] * 1000:.1f} ms, "
                   f"poll every 50 ms (query p50 {(c['poll_query_p50_s'] or 0) * 1000:.1f} ms), flush intervals: "
                   f"aggregator {meta.get('aggregator_flush_ms', '?')} ms, sink {meta.get('sink_flush_ms', '?')} ms; "
                   f"warm-up probe {c['warmup_s']:.1f} s; background: {c.get('background_summary') or '?'}")
    if thresholds:
        out += memory_lines(d, thresholds)
    return "\n".join(out)


def summary(workdir):
    print(render(workdir))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally:` blocks (child processes)
    cmd, args = sys.argv[1], sys.argv[2:]
    rest = args[args.index("--") + 1:] if "--" in args else []
    if cmd == "events":
        events(int(args[0]), int(args[1]), *(args[2:3] or ["bench"]), *map(int, args[3:4]))
    elif cmd == "raw":
        raw(args[0], args[1], int(args[2]))
    elif cmd == "watch":
        watch(args[0], int(args[1]), int(args[2]))
    elif cmd == "quix":
        quix(args[0], args[1], int(args[2]), args[3])
    elif cmd == "clickhouse-ping":
        clickhouse_ping(args[0])
    elif cmd == "sink":
        sink(args[0], args[1], args[2], int(args[3]))
    elif cmd == "latency":
        latency(args[0], args[1], args[2], args[3], float(args[4]), float(args[5]), rest,
                os.environ.get("BENCH_LATENCY_SERIES"))
    elif cmd == "memory":
        memory(args[0], int(args[1]), int(args[2]), args[3], int(args[4]),
               [int(t) for t in args[5].split()], rest, float(os.environ.get("BENCH_MEMORY_TIMEOUT") or 1800))
    elif cmd == "summary":
        summary(args[0])
    else:
        sys.exit(f"unknown command {cmd}")
