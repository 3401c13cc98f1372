"""End-to-end propagation latency: auth commit -> profile readable in user-service.

Starts the three services (release build) on free loopback ports in a temporary
directory, registers N users one after another and, for each, measures the time from
the register response (the auth transaction has committed; Argon2id is already behind
us) until GET /api/users/{id} answers 200. Prints p50/p90/p99/max in milliseconds.

usage: EVBUS_BIN_DIR=build python3 bench/e2e_latency.py [N] [--backend pg] [--broker kafka]

With --broker kafka (PostgreSQL implied) the path is auth outbox -> eventbus -> its
outbox -> Kafka (idempotent producer, acks=all) -> the subscription's consumer group ->
user-service, on a single-node broker started for the run.
"""
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "system"))
import harness  # noqa: E402
from harness import Stack  # noqa: E402


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main():
    import argparse
    ap = argparse.ArgumentParser(description="end-to-end propagation latency")
    ap.add_argument("n", type=int, nargs="?", default=1000, help="registrations")
    ap.add_argument("--backend", choices=["sqlite", "pg"], default="sqlite")
    ap.add_argument("--broker", choices=["embedded", "kafka"], default="embedded")
    opts = ap.parse_args()
    n = opts.n
    pg_dir = kafka_dir = None
    if opts.backend == "pg" or opts.broker == "kafka":
        pg_dir = tempfile.mkdtemp(prefix="evbus-bench-pg-")
        harness.PG = harness.PgCluster(pg_dir)
        harness.PG.start()
    try:
        if opts.broker == "kafka":
            kafka_dir = tempfile.mkdtemp(prefix="evbus-bench-kafka-")
            harness.KAFKA = harness.KafkaBroker(kafka_dir)
            harness.KAFKA.start()
        run(n)
    finally:
        if harness.KAFKA:
            harness.KAFKA.stop()
            shutil.rmtree(kafka_dir, ignore_errors=True)
        if pg_dir:
            harness.PG.stop("fast")
            shutil.rmtree(pg_dir, ignore_errors=True)


def run(n):
    backend = "PostgreSQL, synchronous commit" if harness.PG else "embedded default, SQLite synchronous=FULL"
    if harness.KAFKA:
        backend += ", Kafka (acks=all) and its consumer groups"
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(tmp)
        try:
            auth = http.client.HTTPConnection("127.0.0.1", stack.auth.port)
            users = http.client.HTTPConnection("127.0.0.1", stack.users.port)
            lat = []
            for i in range(n):
                body = json.dumps({"email": f"bench{i}@example.com", "password": "correct horse battery",
                                   "displayName": f"Bench {i}"})
                auth.request("POST", "/api/auth/register", body, {"Content-Type": "application/json"})
                r = auth.getresponse()
                data = r.read()
                t0 = time.perf_counter()
                assert r.status == 201, data
                uid = json.loads(data)["userId"]
                while True:
                    users.request("GET", f"/api/users/{uid}", headers=stack.users.headers)
                    g = users.getresponse()
                    g.read()
                    if g.status == 200:
                        break
                lat.append((time.perf_counter() - t0) * 1000)
            print(f"e2e propagation over {n} registrations ({backend}):")
            print(f"  p50 {pct(lat, 50):.2f} ms  p90 {pct(lat, 90):.2f} ms  p99 {pct(lat, 99):.2f} ms"
                  f"  max {max(lat):.2f} ms  mean {statistics.mean(lat):.2f} ms")
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
