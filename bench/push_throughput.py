"""Push delivery throughput to a fast local receiver (nginx answering 200).

A backlog of N events (on 1,000 keys, about 300 bytes each) is published to an eventbus
(release build, SQLite) with one push subscription, then with ten; every event is
signed (HMAC-SHA256) and POSTed to nginx on loopback. The rate is deliveries per second
from the first publish until every subscription's position reaches the log head.
Prints the median of REPS runs for each case.

usage: EVBUS_BIN_DIR=build python3 bench/push_throughput.py [N] [REPS] [CONCURRENCY]
"""
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "system"))
sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from publish_throughput import nginx  # noqa: E402


def run(work, port, n, subs, concurrency, tag):
    bus = harness.Service(f"eventbus-{tag}", "eventbus", work,
                          {"EVENTBUS_AUTH": "off", "EVENTBUS_DB": os.path.join(work, f"{tag}.db"), "EVENTBUS_PUSH_ALLOW": "127.0.0.1/32",
                           "EVENTBUS_ROUTES": "BenchPushed=BENCH"})
    bus.start()
    try:
        for i in range(subs):
            r = bus.post("/api/subscriptions", {"name": f"s{i}", "topic": "BENCH", "push": {
                "url": f"http://127.0.0.1:{port}/hook", "concurrency": concurrency}})
            assert r.status == 201, r.body
        events = [{"specversion": "1.0", "id": f"{tag}-{i}", "source": "/bench", "type": "BenchPushed",
                   "subject": f"k{i % 1000}", "data": {"n": i, "pad": "x" * 150}} for i in range(n)]
        t0 = time.monotonic()
        for i in range(0, n, 1000):
            r = bus.post("/api/events/publish", events[i:i + 1000],
                         headers={"Content-Type": "application/json"})
            assert r.status == 201, r.body

        def done():
            return all(bus.get(f"/api/subscriptions/s{i}").json["position"] >= n for i in range(subs))

        harness.wait_until(done, 600, 0.05, "every subscription delivered")
        return n * subs / (time.monotonic() - t0)
    finally:
        bus.stop()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    conc = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    work = tempfile.mkdtemp(prefix="evbus-bench-push-")
    proc, port = nginx(work)
    try:
        rates = {1: [], 10: []}
        for rep in range(reps):
            for subs in (1, 10):
                rates[subs].append(run(work, port, n if subs == 1 else n // 10, subs, conc, f"r{rep}s{subs}"))
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"push delivery to nginx (signed webhooks, concurrency {conc} per subscription), median of {reps}:")
    for subs, v in rates.items():
        print(f"  {subs:2d} subscription(s): {statistics.median(v):9.0f} deliveries/s  "
              f"({', '.join(f'{x:.0f}' for x in v)})")


if __name__ == "__main__":
    main()
