"""Login cost and throughput under the hash cap.

Starts the services (release build, SQLite), registers one user, then
1. times 30 sequential logins: each is one Argon2id verification (t=2, m=19 MiB by
   default), so the median is the hash time plus a few HTTP round trips;
2. runs CLIENTS threads logging in with the right password for SECONDS: with
   AUTH_HASH_CONCURRENCY=2 (the default) at most two hashes run at once, so the rate
   is bounded by 2 / hash time whatever the load.
Also prints the unknown-email / wrong-password medians (enumeration timing).

usage: EVBUS_BIN_DIR=build python3 bench/login.py [CLIENTS] [SECONDS]
"""
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "system"))
import harness  # noqa: E402
from harness import Stack  # noqa: E402

PW = "a long and unusual passphrase"


def timed(port, email, pw):
    t0 = time.perf_counter()
    r = harness.request(port, "POST", "/api/auth/login", {"email": email, "password": pw})
    return time.perf_counter() - t0, r.status


def main():
    clients = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10
    with tempfile.TemporaryDirectory() as tmp:
        s = Stack(tmp, users=False, env={"auth": {"AUTH_LOGIN_MAX_FAILURES": "1000",
                                                  "AUTH_LOGIN_MAX_FAILURES_IP": "100000"}})
        try:
            port = s.auth.port
            assert s.register(email="bench@example.com", password=PW).status == 201
            seq = [timed(port, "bench@example.com", PW) for _ in range(30)]
            assert all(st == 200 for _, st in seq)
            unknown = [timed(port, f"nobody{i}@example.com", PW)[0] for i in range(30)]
            wrong = [timed(port, "bench@example.com", "wrong password here")[0] for _ in range(30)]
            count = [0]
            lock = threading.Lock()
            stop = time.monotonic() + seconds

            def worker():
                while time.monotonic() < stop:
                    _, st = timed(port, "bench@example.com", PW)
                    assert st == 200, st
                    with lock:
                        count[0] += 1

            t0 = time.monotonic()
            ts = [threading.Thread(target=worker) for _ in range(clients)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            rate = count[0] / (time.monotonic() - t0)
        finally:
            s.stop()
    print("login (Argon2id t=2, m=19456 KiB, hash cap 2):")
    print(f"  sequential login p50 {statistics.median(t for t, _ in seq) * 1000:.1f} ms")
    print(f"  {clients} clients for {seconds:.0f} s: {rate:.1f} logins/s")
    mu, mw = statistics.median(unknown), statistics.median(wrong)
    print(f"  unknown email p50 {mu * 1000:.1f} ms, wrong password p50 {mw * 1000:.1f} ms, "
          f"difference {abs(mu - mw) / mw * 100:.1f} %")


if __name__ == "__main__":
    main()
