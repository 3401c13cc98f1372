"""The registration flow end to end: auth -> outbox -> relay -> eventbus -> user-service."""
import uuid

from harness import wait_until


def test_register_then_profile_with_one_correlation_id(stack):
    cid = f"flow-{uuid.uuid4().hex}"
    r = stack.register(email="Ada@Example.com", name="Ada", correlation=cid)
    assert r.status == 201, r.body
    assert r.header("X-Correlation-ID") == cid
    body = r.json
    assert body["correlationId"] == cid
    assert body["email"] == "ada@example.com"
    profile = stack.wait_profile(body["userId"])
    assert profile["id"] == body["userId"]
    assert profile["email"] == "ada@example.com"
    assert profile["displayName"] == "Ada"
    assert profile["status"] == "active"
    assert profile["role"] == "user"
    assert profile["isEmailVerified"] is False

    # the same correlation id names the event in every service's log
    for svc in (stack.auth, stack.eventbus, stack.users):
        lines = [l for l in svc.lines() if l.get("correlation_id") == cid]
        assert lines, f"{svc.name} logged nothing for {cid}"
        assert any(l.get("event_id") == body["eventId"] for l in lines), svc.name
        for l in lines:
            assert {"ts", "level", "service", "msg"} <= l.keys()


def test_correlation_id_generated_when_absent(stack):
    r = stack.register()
    assert r.status == 201
    cid = r.header("X-Correlation-ID")
    assert cid and r.json["correlationId"] == cid
    stack.wait_profile(r.json["userId"])
    wait_until(lambda: any(l.get("correlation_id") == cid and l.get("msg") == "profile created"
                           for l in stack.users.lines()), what="users log line")


def test_invalid_correlation_id_is_replaced(stack):
    r = stack.register(correlation="bad id with spaces")
    assert r.status == 201
    assert r.header("X-Correlation-ID") != "bad id with spaces"


def test_duplicate_email_is_409_and_stores_nothing(stack):
    r = stack.register(email="dup@example.com")
    assert r.status == 201
    r2 = stack.register(email="DUP@example.com")
    assert r2.status == 409
    assert r2.header("Content-Type") == "application/problem+json"
    assert r2.json["status"] == 409
    assert stack.count("auth", "SELECT count(*) FROM auth_users") == 1
    assert stack.count("auth", "SELECT count(*) FROM evbus_outbox") == 1


def test_health(stack):
    for svc in stack.services:
        assert svc.get("/health/live").status == 200
        r = svc.get("/health/ready")
        assert r.status == 200, (svc.name, r.body)
        assert r.json["status"] == "up"
    r = stack.auth.get("/health/ready")
    assert r.json["outbox"]["rejected"] == 0


def test_data_survives_restart(stack):
    first = stack.register()
    assert first.status == 201
    stack.wait_profile(first.json["userId"])
    for svc in reversed(stack.services):
        svc.stop()
    for svc in stack.services:
        svc.restart()
    assert stack.users.get(f"/api/users/{first.json['userId']}").status == 200
    assert stack.register(email=first.json["email"]).status == 409
    second = stack.register()
    assert second.status == 201
    stack.wait_profile(second.json["userId"])
    assert stack.count("users", "SELECT count(*) FROM users_profiles") == 2


def test_many_registrations_in_parallel(stack):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: stack.register(), range(40)))
    assert all(r.status == 201 for r in results)
    ids = {r.json["userId"] for r in results}
    wait_until(lambda: stack.count("users", "SELECT count(*) FROM users_profiles") == 40,
               timeout=30, what="40 profiles")
    assert {row[0] for row in stack.rows("users", "SELECT user_id FROM users_profiles")} == ids
