"""PostgreSQL only: several eventbus processes on one database, and the database going
away under load."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import harness
from harness import PublishLoad, Service, make_event, request, wait_until

CE = {"Content-Type": "application/cloudevents+json"}

pytestmark = pytest.mark.skipif(harness.os.environ.get("EVBUS_TEST_BACKEND") != "pg",
                                reason="needs the PostgreSQL backend")


def second_eventbus(stack):
    bus = Service("eventbus2", "eventbus", stack.workdir, dict(stack.bus_env))
    bus.start()
    stack.services.append(bus)
    return bus


def test_two_instances_deliver_everything_once_in_key_order(bus_only):
    a = bus_only.eventbus
    b = second_eventbus(bus_only)
    for name in ("pull-a", "pull-b"):
        r = a.post("/api/subscriptions", {"name": name, "topic": "STEP", "from": "earliest"})
        assert r.status == 201
    keys = [f"k{i}" for i in range(20)]
    sent = {k: [] for k in keys}
    lock = threading.Lock()

    def producer(idx):
        port = (a, b)[idx % 2].port
        key = keys[idx]
        for i in range(100):
            batch = [make_event("Step", subject=key, data={"i": i})]
            r = request(port, "POST", "/api/events/publish", batch[0], headers=CE)
            assert r.status == 201, r.body
            with lock:
                sent[key].append(batch[0]["id"])

    seen = {"pull-a": [], "pull-b": []}

    def consumer(name, ports):
        turn = 0
        while len(seen[name]) < 2000:
            port = ports[turn % len(ports)]  # alternate instances: acks and reads are shared
            turn += 1
            r = request(port, "GET", f"/api/subscriptions/{name}/events?max=200&wait=2")
            assert r.status == 200, r.body
            body = r.json
            seen[name].extend(e["event"]["id"] for e in body["events"])
            if body["events"]:
                ack = request(port, "POST", f"/api/subscriptions/{name}/ack", {"position": body["next"]})
                assert ack.status == 200

    consumers = [threading.Thread(target=consumer, args=("pull-a", [a.port])),
                 threading.Thread(target=consumer, args=("pull-b", [b.port, a.port]))]
    for t in consumers:
        t.start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(producer, range(20)))
    for t in consumers:
        t.join(120)
        assert not t.is_alive(), "consumer did not receive every event"
    all_ids = [i for k in keys for i in sent[k]]
    assert len(all_ids) == 2000
    for name, ids in seen.items():
        assert len(ids) == len(set(ids)) == 2000, f"{name}: duplicates or losses"
        assert set(ids) == set(all_ids)
        pos = {eid: n for n, eid in enumerate(ids)}
        for k in keys:
            assert [pos[e] for e in sent[k]] == sorted(pos[e] for e in sent[k]), f"{name}: order of {k}"
    assert bus_only.count("eventbus", "SELECT count(*) FROM eb_events") == 2000


def test_long_poll_on_one_instance_wakes_on_publish_to_the_other(bus_only):
    a = bus_only.eventbus
    b = second_eventbus(bus_only)
    assert a.post("/api/subscriptions", {"name": "x", "topic": "PING"}).status == 201
    result = {}

    def poll():
        r = request(b.port, "GET", "/api/subscriptions/x/events?wait=20")
        result["events"] = r.json["events"]
        result["at"] = time.monotonic()

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)  # the poll is parked on b; the bound below does not rely on this
    ev = make_event("Ping")
    sent_at = time.monotonic()
    assert a.post("/api/events/publish", ev, headers=CE).status == 201
    t.join(20)
    assert [e["event"]["id"] for e in result["events"]] == [ev["id"]]
    # LISTEN/NOTIFY, not the 2 s fallback poll
    assert result["at"] - sent_at < 1.0


def test_database_down_under_load(stack):
    pg = harness.PG
    bus = stack.eventbus
    assert bus.post("/api/subscriptions", {"name": "load", "topic": "ORDER_PLACED", "from": "earliest"}).status == 201
    load = PublishLoad(bus.port).start()
    try:
        wait_until(lambda: load.count("accepted") >= 200, timeout=30, what="load before the outage")
        pg.stop("immediate")
        wait_until(lambda: load.count("refused") >= 20, timeout=30, what="503s during the outage")
        assert bus.get("/health/ready").status == 503
        r = stack.register()
        assert r.status == 503 and r.header("Retry-After")
        assert stack.auth.get("/health/ready").status == 503
        before = load.count("accepted")
        pg.start()
        wait_until(lambda: load.count("accepted") >= before + 200, timeout=60,
                   what="publishes after the outage")
    finally:
        load.stop()
    assert load.errors == [], load.errors[:5]
    for r in load.refused:  # every request of the outage: a 503 problem to retry, never a 2xx
        assert r.status == 503, r.body
        assert r.header("Retry-After")
        assert r.header("Content-Type") == "application/problem+json"
    accepted = load.accepted
    stored = {r[0] for r in stack.rows("eventbus", "SELECT id FROM eb_events")}
    lost = [i for i in accepted if i not in stored]
    assert not lost, f"{len(lost)} events answered 2xx are missing"
    # everything comes back by itself: health, registration, delivery to user-service
    wait_until(lambda: bus.get("/health/ready").status == 200, timeout=30, what="eventbus ready")
    wait_until(lambda: stack.auth.get("/health/ready").status == 200, timeout=30, what="auth ready")
    reg = stack.register()
    assert reg.status == 201
    stack.wait_profile(reg.json["userId"], timeout=30)
    seen = set()

    def drained():
        r = bus.get("/api/subscriptions/load/events?max=1000")
        assert r.status == 200, r.body
        body = r.json
        seen.update(e["event"]["id"] for e in body["events"])
        if body["events"]:
            bus.post("/api/subscriptions/load/ack", {"position": body["next"]})
        return set(accepted) <= seen

    wait_until(drained, timeout=60, interval=0, what="every accepted event delivered")


def test_two_relays_share_one_outbox_in_key_order(tmp_path):
    """Two auth-service processes on one database: their relays claim outbox rows with
    SKIP LOCKED, one row in flight per key, so each key's events reach the eventbus in
    outbox order and every event arrives."""
    import json
    relay_env = {"AUTH_RELAY_BATCH": "7", "AUTH_LOG_LEVEL": "debug"}
    stack = harness.Stack(str(tmp_path), users=False, env={"auth": relay_env})
    try:
        auth2 = Service("auth2", "auth-service", stack.workdir,
                        dict(relay_env, AUTH_DB=stack.db["auth"], AUTH_JWT_KEY=stack.jwt_key,
                             AUTH_EVENTBUS_KEY=stack.keys["auth"],
                             AUTH_EVENTBUS_URL=f"http://127.0.0.1:{stack.eventbus.port}"))
        auth2.start()
        stack.services.append(auth2)
        bus = stack.eventbus
        assert bus.post("/api/subscriptions", {"name": "steps", "topic": "USER_STEPPED", "from": "earliest"}).status == 201
        keys = [f"key{i}" for i in range(10)]
        values, expected = [], {k: [] for k in keys}
        for i in range(400):
            key = keys[(i * 7) % 10 if i % 3 else i % 10]
            # within auth-service's key scope: User* events from /auth-service
            ev = make_event("UserStepped", subject=key, source="/auth-service", data={"i": i})
            expected[key].append(ev["id"])
            body = json.dumps(ev).replace("'", "''")
            values.append(f"('{ev['id']}', 'UserStepped', '{body}', 0, '{key}')")
        stack.execute("auth", "INSERT INTO evbus_outbox (event_id, type, payload, created_at, ordering_key)"
                              " VALUES " + ",".join(values))
        # a registration on each instance wakes both relays
        for svc in (stack.auth, auth2):
            r = svc.post("/api/auth/register", {"email": f"{svc.name}@example.com",
                                                "password": "correct horse battery", "displayName": "x"})
            assert r.status == 201
        seen = []

        def drained():
            r = bus.get("/api/subscriptions/steps/events?max=1000&wait=1")
            body = r.json
            seen.extend(e["event"]["id"] for e in body["events"])
            if body["events"]:
                bus.post("/api/subscriptions/steps/ack", {"position": body["next"]})
            return len(seen) >= 400

        wait_until(drained, timeout=60, interval=0, what="400 events relayed")
        assert len(seen) == len(set(seen)) == 400
        pos = {eid: n for n, eid in enumerate(seen)}
        for k in keys:
            assert [pos[e] for e in expected[k]] == sorted(pos[e] for e in expected[k]), k
        assert stack.count("auth", "SELECT count(*) FROM evbus_outbox WHERE status <> 'published'") == 0
        # both relays did part of the work
        for svc in (stack.auth, auth2):
            assert any(l["msg"].startswith("relay: published") for l in svc.lines()), svc.name
    finally:
        stack.stop()
