"""Relay throughput to Kafka next to a raw producer in the same run.

1. A backlog of N events (about 500 bytes each) is published to an eventbus on
   PostgreSQL while its Kafka broker is stopped; then the broker starts and the time
   from the relay's first confirmed batch to an empty outbox gives the relay's rate.
2. kcat (librdkafka) produces N messages of the same size to another topic with the
   same producer guarantees (acks=all, idempotence) from a file: the raw rate.
Prints both rates and their ratio (median of REPS runs).
usage: EVBUS_BIN_DIR=build python3 bench/kafka_relay.py [N] [REPS]
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "system"))
import harness  # noqa: E402

PAD = "x" * 330


def events(n, tag):
    return [{"specversion": "1.0", "id": f"{tag}-{i}", "source": "/bench", "type": "BenchRelayed",
             "subject": f"k{i % 100}", "data": {"n": i, "pad": PAD}} for i in range(n)]


def relay_rate(kafka, pg, work, n, tag):
    bus = harness.Service(f"eventbus-{tag}", "eventbus", work,
                          {"EVENTBUS_AUTH": "off", "EVENTBUS_DB": pg.url(pg.create_db("relay")),
                           "EVENTBUS_BROKER": f"kafka://{kafka.bootstrap}",
                           "EVENTBUS_KAFKA_RELAY_BATCH": os.environ.get("EVENTBUS_KAFKA_RELAY_BATCH", "1000")})
    bus.start()
    kafka.kill9()
    evs = events(n, tag)
    for i in range(0, n, 1000):
        r = bus.post("/api/events/publish", evs[i:i + 1000], headers={"Content-Type": "application/json"})
        assert r.status == 201, r.body
    pending = lambda: bus.get("/health/ready").json["outbox"]["pending"]  # noqa: E731
    assert pending() == n
    kafka.start()
    harness.wait_until(lambda: pending() < n, 60, 0.01, "the relay's first batch")
    t0 = time.monotonic()
    left = pending()
    harness.wait_until(lambda: pending() == 0, 600, 0.1, "the backlog drained")  # light polling: a count is not free
    rate = left / (time.monotonic() - t0)
    bus.stop()
    return rate


def raw_rate(kafka, work, n, tag):
    path = os.path.join(work, f"{tag}.jsonl")
    with open(path, "w") as f:
        for e in events(n, tag):
            f.write(json.dumps(e) + "\n")
    t0 = time.monotonic()
    subprocess.run(["kcat", "-P", "-b", kafka.bootstrap, "-t", f"RAW_{tag}", "-l", "-X", "acks=all",
                    "-X", "enable.idempotence=true", "-X", "linger.ms=2", path], check=True)
    return n / (time.monotonic() - t0)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = tempfile.mkdtemp(prefix="evbus-bench-")
    kdir = tempfile.mkdtemp(prefix="evbus-bench-kafka-")
    pgdir = tempfile.mkdtemp(prefix="evbus-bench-pg-")
    pg = harness.PgCluster(pgdir)
    pg.start()
    kafka = harness.KafkaBroker(kdir)
    kafka.start()
    relay, raw = [], []
    try:
        for rep in range(reps):
            raw.append(raw_rate(kafka, work, n, f"r{rep}"))
            relay.append(relay_rate(kafka, pg, work, n, f"e{rep}"))
    finally:
        kafka.stop()
        pg.stop("fast")
        for d in (work, kdir, pgdir):
            shutil.rmtree(d, ignore_errors=True)
    print(f"relay to Kafka, {n} events of ~500 bytes, median of {reps}:")
    print(f"  kcat (librdkafka) raw producer, acks=all:  {statistics.median(raw):9.0f} msg/s  "
          f"({', '.join(f'{v:.0f}' for v in raw)})")
    print(f"  eventbus outbox relay (PostgreSQL):        {statistics.median(relay):9.0f} msg/s  "
          f"({', '.join(f'{v:.0f}' for v in relay)})")
    print(f"  ratio relay / raw: {statistics.median(relay) / statistics.median(raw):.2f}")


if __name__ == "__main__":
    main()
