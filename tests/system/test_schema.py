"""Schema migrations: a fresh database, a database of the previous schema version with
data in it, and a database newer than the binary."""
import json
import time

import harness
from harness import Stack, make_event

CE = {"Content-Type": "application/cloudevents+json"}


def test_fresh_databases_reach_the_current_versions(stack):
    def versions(name):
        return dict(stack.rows(name, "SELECT component, version FROM evbus_schema"))

    assert versions("eventbus") == {"eventbus": 5, "outbox": 4}  # the outbox feeds Kafka
    assert versions("auth") == {"auth": 2, "outbox": 4}
    assert versions("users") == {"users": 2, "inbox": 1}


def eventbus_v1(stack):
    """The eventbus schema as version 1 created it, with two events and a subscription."""
    seq = "BIGSERIAL PRIMARY KEY" if harness.PG else "INTEGER PRIMARY KEY AUTOINCREMENT"
    now = int(time.time() * 1000)
    events = [make_event("UserRegistered", subject=f"u{i}", id=f"old-{i}") for i in (1, 2)]
    rows = ",".join(
        f"({i + 1}, '{e['id']}', 'USER_REGISTERED', 'UserRegistered', '/tests', '{e['subject']}', NULL, {now},"
        f" '{json.dumps(e)}')" for i, e in enumerate(events))
    sql = f"""
        CREATE TABLE evbus_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
        INSERT INTO evbus_schema VALUES ('eventbus', 1);
        CREATE TABLE eb_events (seq {seq}, id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL,
            type TEXT NOT NULL, source TEXT NOT NULL, subject TEXT, correlation_id TEXT,
            received_at BIGINT NOT NULL, body TEXT NOT NULL);
        CREATE INDEX eb_events_topic ON eb_events (topic, seq);
        CREATE TABLE eb_subscriptions (name TEXT PRIMARY KEY, topic TEXT NOT NULL, types TEXT,
            mode TEXT NOT NULL, cursor BIGINT NOT NULL, created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL);
        INSERT INTO eb_events (seq, id, topic, type, source, subject, correlation_id, received_at, body)
            VALUES {rows};
        INSERT INTO eb_subscriptions VALUES ('legacy', 'USER_REGISTERED', NULL, 'pull', 0, {now}, {now});
    """
    if harness.PG:
        sql += "SELECT setval('eb_events_seq_seq', 2);"
    stack.execute("eventbus", sql)
    return events


def test_previous_version_upgrades_with_its_data(tmp_path):
    made = {}
    stack = Stack(str(tmp_path), users=False, auth=False,
                  prepare=lambda s: made.update(events=eventbus_v1(s)))
    try:
        bus = stack.eventbus
        assert stack.rows("eventbus", "SELECT version FROM evbus_schema WHERE component = 'eventbus'") == [(5,)]
        if not harness.KAFKA:
            r = bus.get("/api/subscriptions/legacy/events?max=10")
            assert r.status == 200
            assert [e["event"]["id"] for e in r.json["events"]] == ["old-1", "old-2"]
        new = make_event("UserRegistered", subject="u3")
        p = bus.post("/api/events/publish", new, headers=CE)
        assert p.status == 201 and p.json["position"] == 3
        # an old id is still known: a duplicate, not a new event
        assert bus.post("/api/events/publish", made["events"][0], headers=CE).status == 200
        if harness.KAFKA:
            # events stored before the eventbus relayed to Kafka stay in its own log; the
            # subscription (now a consumer group) gets what was published since
            r = bus.get("/api/subscriptions/legacy/events?max=10&wait=30")
            assert [e["event"]["id"] for e in r.json["events"]] == [new["id"]]
        else:
            r = bus.get("/api/subscriptions/legacy/events?max=10")
            assert [e["event"]["id"] for e in r.json["events"]] == ["old-1", "old-2", new["id"]]
    finally:
        stack.stop()


def test_newer_schema_is_refused(tmp_path):
    stack = Stack(str(tmp_path), users=False, auth=False)
    bus = stack.eventbus
    bus.stop()
    stack.execute("eventbus", "UPDATE evbus_schema SET version = 99 WHERE component = 'eventbus'")
    try:
        bus.start(timeout=5)
        raise AssertionError("an eventbus started on a schema newer than it knows")
    except AssertionError as e:
        assert "exited with 1" in str(e), e
    assert "newer than this binary" in bus.log_text()
    assert stack.rows("eventbus", "SELECT version FROM evbus_schema WHERE component = 'eventbus'") == [(99,)]
