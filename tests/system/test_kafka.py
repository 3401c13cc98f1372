"""Apache Kafka as the broker the eventbus relays to: the events arrive in Kafka,
readable by any Kafka client (kcat here), through broker crashes and relay crashes."""
import json
import threading
import uuid

import pytest

import harness
from harness import Service, make_event, request, wait_until

CE = {"Content-Type": "application/cloudevents+json"}

pytestmark = pytest.mark.skipif(harness.os.environ.get("EVBUS_TEST_BROKER") != "kafka",
                                reason="needs a Kafka broker")


def ids_in(stack, topic):
    return [json.loads(v)["id"] for _, v in stack.kafka_messages(topic)]


def outbox_pending(bus):
    return bus.get("/health/ready").json["outbox"]["pending"]


def test_kcat_reads_the_registration(stack):
    cid = f"kafka-{uuid.uuid4().hex}"
    r = stack.register(correlation=cid)
    assert r.status == 201
    user = r.json["userId"]

    def arrived():
        return [(k, json.loads(v)) for k, v in stack.kafka_messages("USER_REGISTERED")
                if json.loads(v)["id"] == r.json["eventId"]]

    (key, event), = wait_until(arrived, timeout=30, interval=0.2, what="the event in USER_REGISTERED")
    assert key == user  # keyed by subject: one user's events stay on one partition, in order
    assert event["type"] == "UserRegistered"
    assert event["correlationid"] == cid
    assert event["specversion"] == "1.0" and event["source"] == "/auth-service"
    assert event["data"]["userId"] == user
    ready = stack.eventbus.get("/health/ready").json
    assert ready["checks"]["kafka"] == "up" and ready["outbox"]["pending"] == 0


def publish_load(bus, total, accepted, failures, batch=50, threads=4):
    """Publishes total events in batches from several threads; records what was accepted."""
    lock = threading.Lock()
    per = total // threads

    def run(t):
        for start in range(0, per, batch):
            events = [make_event("OrderPlaced", subject=f"c{(t * per + start + i) % 37}") for i in range(batch)]
            r = request(bus.port, "POST", "/api/events/publish", events, headers=CE, timeout=30)
            with lock:
                if r.status in (200, 201):
                    accepted.extend(e["id"] for e in events)
                else:
                    failures.append((r.status, r.body[:200]))

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    return ts


def test_broker_killed_under_load(stack):
    kafka = harness.KAFKA
    bus = stack.eventbus
    accepted, failures = [], []
    threads = publish_load(bus, 5000, accepted, failures)
    wait_until(lambda: len(accepted) >= 1000, timeout=60, what="load before the crash")
    kafka.kill9()
    regs = [stack.register() for _ in range(5)]  # the rest of the system goes on
    wait_until(lambda: outbox_pending(bus) > 0, timeout=30, what="a backlog while Kafka is down")
    assert bus.get("/health/ready").status == 200  # publishing works, Kafka's state is reported
    kafka.start()
    for t in threads:
        t.join(120)
    assert failures == [], failures[:3]
    assert len(accepted) == 5000
    wait_until(lambda: outbox_pending(bus) == 0, timeout=120, interval=0.5, what="the backlog drained")
    in_topic = ids_in(stack, "ORDER_PLACED")
    missing = set(accepted) - set(in_topic)
    assert not missing, f"{len(missing)} accepted events never reached Kafka"
    print(f"ORDER_PLACED: {len(in_topic)} messages for {len(accepted)} events "
          f"({len(in_topic) - len(set(in_topic))} duplicates)")
    for r in regs:
        assert r.status == 201
        stack.wait_profile(r.json["userId"], timeout=30)
    assert stack.count("users", "SELECT count(*) FROM users_profiles") == \
        stack.count("users", "SELECT count(DISTINCT user_id) FROM users_profiles") == 5


def test_relay_killed_mid_batch(stack):
    """The eventbus dies while its relay has a batch in flight: the batch is sent again
    (duplicates in the topic are allowed and counted), nothing is lost, and user-service
    applies every registration once."""
    kafka = harness.KAFKA
    bus = stack.eventbus
    kafka.kill9()  # build a backlog, so the relay has full batches to send
    accepted, failures = [], []
    for t in publish_load(bus, 3000, accepted, failures):
        t.join(120)
    regs = [stack.register() for _ in range(10)]
    assert failures == [] and all(r.status == 201 for r in regs)
    kafka.start()
    wait_until(lambda: outbox_pending(bus) < 3000, timeout=60, interval=0.05, what="the relay sending")
    bus.kill9()
    bus.restart()
    wait_until(lambda: outbox_pending(bus) == 0, timeout=120, interval=0.5, what="the backlog drained")
    in_topic = ids_in(stack, "ORDER_PLACED")
    missing = set(accepted) - set(in_topic)
    if missing:
        some = sorted(missing)[:3]
        rows = stack.rows("eventbus", "SELECT event_id, status, claim_id, published_at FROM evbus_outbox WHERE event_id IN ("
                          + ",".join(f"'{m}'" for m in some) + ")")
        print("MISSING", len(missing), rows)
        print(bus.log_tail(60))
    assert not missing, f"{len(missing)} accepted events never reached Kafka"
    print(f"ORDER_PLACED after a relay crash: {len(in_topic) - len(set(in_topic))} duplicates "
          f"in {len(in_topic)} messages")
    for r in regs:
        stack.wait_profile(r.json["userId"], timeout=30)
    assert stack.count("users", "SELECT count(*) FROM users_profiles") == 10
    assert stack.count("users", "SELECT count(*) FROM evbus_inbox") == 10


def user_registered(uid):
    return make_event("UserRegistered", subject=uid, source="/auth-service",
                      data={"userId": uid, "email": f"{uid}@example.com", "displayName": "Load",
                            "registeredAt": "2026-11-28T10:00:00Z"})


def partitions(bus):
    r = bus.get("/api/subscriptions/user-service")
    return r.json["kafka"]["partitions"] if r.status == 200 else []


def test_two_instances_share_one_consumer_group(tmp_path):
    """Two eventbus instances serve user-service's subscription as one Kafka consumer
    group, each polled by its own user-service on one users database: the partitions are
    split between them, and every event is applied once, also when one instance is
    killed with kill -9 mid-stream and its partitions move to the other. (Pull, so each
    user-service is bound to one instance; push subscriptions use the same groups.)"""
    stack = harness.Stack(str(tmp_path), env={"users": {"USERS_DELIVERY": "pull"}})
    try:
        shared_group(stack)
    finally:
        stack.stop()


def shared_group(stack):
    a = stack.eventbus
    b = Service("eventbus2", "eventbus", stack.workdir, dict(stack.bus_env))
    b.start()
    stack.services.append(b)
    users2 = Service("users2", "user-service", stack.workdir,
                     dict(USERS_DB=stack.db["users"], USERS_EVENTBUS_URL=f"http://127.0.0.1:{b.port}",
                          USERS_POLL_WAIT_S="5", USERS_DELIVERY="pull", USERS_JWT_KEY=stack.jwt_key,
                          USERS_EVENTBUS_KEY=stack.keys["users"]))
    users2.start()
    stack.services.append(users2)
    wait_until(lambda: partitions(a) and partitions(b) and sorted(partitions(a) + partitions(b)) == [0, 1, 2],
               timeout=60, interval=0.2, what="the partitions split between the two instances")
    group = a.get("/api/subscriptions/user-service").json["kafka"]["group"]
    assert group == b.get("/api/subscriptions/user-service").json["kafka"]["group"]

    uids = [str(uuid.uuid4()) for _ in range(600)]
    for n, start in enumerate(range(0, 300, 25)):  # the first half through both instances
        bus = (a, b)[n % 2]
        r = bus.post("/api/events/publish", [user_registered(u) for u in uids[start:start + 25]], headers=CE)
        assert r.status == 201, r.body

    def profiles():
        return stack.count("users", "SELECT count(*) FROM users_profiles")

    wait_until(lambda: profiles() >= 100, timeout=60, what="deliveries under way")
    b.kill9()  # its partitions, with whatever it had buffered, go to a after the session timeout
    for start in range(300, 600, 25):
        r = a.post("/api/events/publish", [user_registered(u) for u in uids[start:start + 25]], headers=CE)
        assert r.status == 201, r.body
    wait_until(lambda: partitions(a) == [0, 1, 2], timeout=60, interval=0.2,
               what="the surviving instance to take every partition")
    wait_until(lambda: profiles() == 600, timeout=120, interval=0.5, what="600 profiles")
    b.restart()  # and it rejoins when users2 polls it again
    wait_until(lambda: partitions(b), timeout=60, interval=0.2, what="the restarted instance to rejoin")
    extra = user_registered(str(uuid.uuid4()))
    assert a.post("/api/events/publish", extra, headers=CE).status == 201
    wait_until(lambda: profiles() == 601, timeout=60, interval=0.2, what="an event after the rejoin")

    assert stack.count("users", "SELECT count(DISTINCT user_id) FROM users_profiles") == 601
    assert stack.count("users", "SELECT count(*) FROM evbus_inbox") == 601
    applied = [l for svc in (stack.users, users2) for l in svc.lines() if l.get("msg") == "profile created"]
    skipped = [l for svc in (stack.users, users2) for l in svc.lines() if l.get("msg") == "duplicate event skipped"]
    assert len(applied) == 601, "an event was applied twice"
    print(f"two instances, one group: 601 applied once, {len(skipped)} redeliveries skipped by the inbox")
