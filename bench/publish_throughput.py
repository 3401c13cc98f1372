"""Durable single-event publish throughput at 64 connections, with its baselines
measured in the same run:

  - nginx answering a static 200 (the HTTP ceiling of this machine),
  - eventbus on SQLite (WAL, synchronous=FULL) and on PostgreSQL (synchronous commit),
  - pgbench committing the same single-row INSERT (about 500 bytes) from 64 clients.

Each figure is the median of REPS runs of SECONDS seconds (wrk -t1 -c64 for HTTP).
usage: EVBUS_BIN_DIR=build python3 bench/publish_throughput.py [SECONDS] [REPS]
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "system"))
import harness  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def wrk(port, seconds, script=None, prefix="x", key=""):
    cmd = ["wrk", "-t1", "-c64", f"-d{seconds}s", "--latency"]
    if script:
        cmd += ["-s", script]
    cmd.append(f"http://127.0.0.1:{port}/" if not script else f"http://127.0.0.1:{port}")
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, EVBUS_BENCH_PREFIX=prefix, EVBUS_BENCH_KEY=key),
                         check=True).stdout
    if "Non-2xx" in out or "errors" in out.lower() and "Socket errors" in out:
        raise RuntimeError(out)
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def nginx(workdir):
    port = harness.free_port()
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off; worker_processes auto; pid {workdir}/nginx.pid;
error_log {workdir}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok"; }} }} }}
""")
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", workdir], stderr=subprocess.DEVNULL)
    harness.wait_until(lambda: subprocess.run(["curl", "-fs", f"http://127.0.0.1:{port}/"],
                                              capture_output=True).returncode == 0, 10, 0.05, "nginx")
    return proc, port


def pgbench(pg, seconds):
    db = pg.create_db("pgbench")
    pg.psql(db, "CREATE TABLE bench_events (seq BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)")
    script = os.path.join(pg.dir, "insert.sql")
    with open(script, "w") as f:
        f.write("INSERT INTO bench_events (body) VALUES (repeat('x', 500));\n")
    os.chmod(pg.dir, 0o755)
    out = subprocess.run([f"{pg.bin}/pgbench", "-n", "-c", "64", "-j", "2", "-T", str(seconds), "-f", script,
                          "-h", "127.0.0.1", "-p", str(pg.port), "-U", "evbus", db],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = tempfile.mkdtemp(prefix="evbus-bench-")
    pgdir = tempfile.mkdtemp(prefix="evbus-bench-pg-")
    pg = harness.PgCluster(pgdir)
    pg.start()
    results = {k: [] for k in ("nginx", "sqlite", "postgres", "pgbench")}
    procs = []
    try:
        ng, ng_port = nginx(work)
        procs.append(ng)
        # each publish is authenticated with a scoped key, as in production
        sq_db, pg_db = os.path.join(work, "eventbus.db"), pg.url(pg.create_db("bench"))
        sq_key = harness.create_key(sq_db, "--name", "bench", "--types", "Bench*", "--sources", "/bench")
        pg_key = harness.create_key(pg_db, "--name", "bench", "--types", "Bench*", "--sources", "/bench")
        sq = harness.Service("eventbus-sqlite", "eventbus", work, {"EVENTBUS_DB": sq_db}).start()
        pgbus = harness.Service("eventbus-pg", "eventbus", work, {"EVENTBUS_DB": pg_db}).start()
        script = os.path.join(HERE, "publish.lua")
        for rep in range(reps):
            results["nginx"].append(wrk(ng_port, seconds))
            results["sqlite"].append(wrk(sq.port, seconds, script, f"s{rep}", sq_key))
            results["postgres"].append(wrk(pgbus.port, seconds, script, f"p{rep}", pg_key))
            results["pgbench"].append(pgbench(pg, seconds))
        sq.stop()
        pgbus.stop()
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        pg.stop("fast")
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(pgdir, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"durable single-event publish, 64 connections, median of {reps} x {seconds}s:")
    for k, label in (("nginx", "nginx static 200"), ("sqlite", "eventbus on SQLite"),
                     ("postgres", "eventbus on PostgreSQL"), ("pgbench", "pgbench INSERT commits (64 clients)")):
        runs = ", ".join(f"{v:.0f}" for v in results[k])
        print(f"  {label:38s} {med[k]:9.0f} /s   ({runs})")
    print(f"  ratio eventbus/SQLite to nginx:        {med['sqlite'] / med['nginx']:.2f}x")
    print(f"  ratio eventbus/PostgreSQL to nginx:    {med['postgres'] / med['nginx']:.2f}x")
    print(f"  ratio eventbus/PostgreSQL to pgbench:  {med['postgres'] / med['pgbench']:.2f}x")


if __name__ == "__main__":
    main()
