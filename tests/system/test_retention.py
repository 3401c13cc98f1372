"""Retention: old events leave the log and published outbox rows leave the outbox, in
bounded batches; a pending outbox row is never deleted, however old."""
from harness import Stack, make_event, wait_until

CE = {"Content-Type": "application/cloudevents+json"}


def test_log_retention(tmp_path):
    stack = Stack(str(tmp_path), users=False, auth=False, env={"eventbus": {"EVENTBUS_RETENTION_S": "1"}})
    try:
        bus = stack.eventbus
        batch = [make_event("Tick") for _ in range(2500)]
        for i in range(0, 2500, 500):
            assert bus.post("/api/events/publish", batch[i:i + 500], headers=CE).status == 201
        assert stack.count("eventbus", "SELECT count(*) FROM eb_events") == 2500
        wait_until(lambda: stack.count("eventbus", "SELECT count(*) FROM eb_events") == 0,
                   timeout=30, interval=0.1, what="expired events deleted")
        deletions = [l for l in bus.lines() if l.get("msg") == "retention: events deleted"]
        assert len(deletions) >= 3 and all(int(l["count"]) <= 1000 for l in deletions)
        # the log goes on: positions keep increasing after the deletion
        r = bus.post("/api/events/publish", make_event("Tick"), headers=CE)
        assert r.status == 201 and r.json["position"] == 2501
    finally:
        stack.stop()


def test_outbox_retention_keeps_pending_rows(tmp_path):
    stack = Stack(str(tmp_path), env={"auth": {"AUTH_OUTBOX_RETENTION_S": "1"}})
    try:
        first = stack.register()
        assert first.status == 201
        stack.wait_profile(first.json["userId"])
        wait_until(lambda: stack.count("auth", "SELECT count(*) FROM evbus_outbox") == 0,
                   timeout=20, what="published row expired")
        stack.eventbus.stop()
        second = stack.register()
        assert second.status == 201

        def old_enough():
            return stack.count("auth", "SELECT count(*) FROM evbus_outbox WHERE status = 'pending' AND"
                                       f" created_at < {__import__('time').time() * 1000 - 3000:.0f}")

        wait_until(old_enough, timeout=20, what="pending row three retentions old")
        assert stack.count("auth", "SELECT count(*) FROM evbus_outbox WHERE status = 'pending'") == 1
        stack.eventbus.restart()
        stack.wait_profile(second.json["userId"], timeout=20)
    finally:
        stack.stop()
