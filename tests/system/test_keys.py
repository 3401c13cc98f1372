"""API keys on the eventbus: publishing needs a key scoped to the event's type and
source, subscriptions and their DLQ need a key for that subscription or an admin key,
keys are shown once, stored hashed, and revocable; nothing is stored on a refusal."""
import pytest

import harness
from harness import make_event, request, wait_until

CE = {"Content-Type": "application/cloudevents+json"}


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def events(stack):
    return stack.count("eventbus", "SELECT count(*) FROM eb_events")


def test_publish_needs_a_key_in_scope(bus_only):
    s, bus = bus_only, bus_only.eventbus
    ev = make_event("UserRegistered", subject="u1", source="/auth-service")
    before = events(s)
    for headers, status in [({"Authorization": ""}, 401),
                            (bearer("evb_0000000000000000_notthekeyatallnotthekey"), 401),
                            (bearer(s.keys["admin"][:-2] + "xx"), 401),
                            (bearer("not even the shape"), 401),
                            (bearer(s.keys["users"]), 403)]:  # a key without publish scope
        r = request(bus.port, "POST", "/api/events/publish", ev, headers=dict(CE, **headers))
        assert r.status == status, (headers, r.body)
    auth_key = bearer(s.keys["auth"])
    outside = [make_event("OrderPlaced", subject="o1", source="/auth-service"),  # type outside
               make_event("UserRegistered", subject="u2", source="/shop")]       # source outside
    for bad in outside:
        assert request(bus.port, "POST", "/api/events/publish", bad, headers=dict(CE, **auth_key)).status == 403
    # one event out of scope refuses the whole batch
    r = request(bus.port, "POST", "/api/events/publish", [ev, outside[0]], headers=dict(CE, **auth_key))
    assert r.status == 403
    assert events(s) == before  # nothing stored
    r = request(bus.port, "POST", "/api/events/publish", ev, headers=dict(CE, **auth_key))
    assert r.status == 201
    assert events(s) == before + 1
    assert bus.get("/health/ready", headers={"Authorization": ""}).status == 200  # health stays open


def test_subscription_endpoints_need_the_right_key(bus_only):
    s, bus = bus_only, bus_only.eventbus
    assert bus.post("/api/subscriptions", {"name": "other", "topic": "T"}).status == 201  # admin
    none = {"Authorization": ""}
    users = bearer(s.keys["users"])
    for method, path, body in [("GET", "/api/subscriptions", None), ("GET", "/api/subscriptions/other", None),
                               ("DELETE", "/api/subscriptions/other", None),
                               ("GET", "/api/subscriptions/other/events", None),
                               ("POST", "/api/subscriptions/other/ack", {"position": 0}),
                               ("POST", "/api/subscriptions/other/seek", {"position": 0}),
                               ("GET", "/api/subscriptions/other/dlq", None),
                               ("POST", "/api/subscriptions/other/dlq/redrive", {"all": True}),
                               ("GET", "/api/keys", None), ("POST", "/api/keys", {"name": "x"})]:
        assert request(bus.port, method, path, body, headers=none).status == 401, (method, path)
        assert request(bus.port, method, path, body, headers=users).status == 403, (method, path)
    # user-service's key manages and polls its own subscriptions only
    r = request(bus.port, "POST", "/api/subscriptions", {"name": "user-service.x", "topic": "T"}, headers=users)
    assert r.status == 201
    assert request(bus.port, "GET", "/api/subscriptions/user-service.x/events", headers=users).status == 200
    assert request(bus.port, "POST", "/api/subscriptions", {"name": "mine", "topic": "T"}, headers=users).status == 403
    assert bus.get("/api/subscriptions").json["subscriptions"][0]["name"] == "other"


def test_keys_are_made_shown_once_and_revoked(bus_only):
    s, bus = bus_only, bus_only.eventbus
    r = bus.post("/api/keys", {"name": "shop", "publish": {"types": ["Order*"], "sources": ["/shop"]}})
    assert r.status == 201, r.body
    key, kid = r.json["key"], r.json["id"]
    secret = key[len(f"evb_{kid}_"):]
    assert key.startswith(f"evb_{kid}_") and len(secret) >= 32  # base64 of 24 bytes: 192 random bits
    listed = bus.get("/api/keys").json["keys"]
    assert any(k["id"] == kid and k["types"] == ["Order*"] for k in listed)
    assert key not in bus.get("/api/keys").body.decode()  # never shown again
    stored = s.rows("eventbus", f"SELECT hash FROM eb_api_keys WHERE id = '{kid}'")[0][0]
    assert secret not in stored  # only a hash is kept
    order = make_event("OrderPlaced", subject="o", source="/shop")
    assert request(bus.port, "POST", "/api/events/publish", order, headers=dict(CE, **bearer(key))).status == 201
    assert bus.delete(f"/api/keys/{kid}").status == 204
    assert bus.delete(f"/api/keys/{kid}").status == 404
    again = make_event("OrderPlaced", subject="o", source="/shop")
    wait_until(lambda: request(bus.port, "POST", "/api/events/publish", again,
                               headers=dict(CE, **bearer(key))).status == 401, timeout=10, interval=0.5,
               what="the revoked key refused")
    for bad in [{}, {"name": ""}, {"name": "x", "admin": "yes"}, {"name": "x", "publish": {"types": "User*"}},
                {"name": "x", "subscriptions": [1]}]:
        assert bus.post("/api/keys", bad).status == 400, bad


def test_keys_cli(tmp_path):
    import subprocess
    import os
    db = str(tmp_path / "k.db")
    run = lambda *a: subprocess.run([os.path.join(harness.BIN_DIR, "eventbus"), "keys", *a],  # noqa: E731
                                    env=dict(os.environ, EVENTBUS_DB=db), capture_output=True, text=True)
    r = run("create", "--name", "ops", "--admin")
    assert r.returncode == 0 and r.stdout.startswith("evb_") and "shown only this once" in r.stderr
    kid = r.stdout.split("_")[1]
    assert kid in run("list").stdout and r.stdout.strip() not in run("list").stdout
    assert run("revoke", kid).returncode == 0
    assert run("revoke", kid).returncode != 0
    assert run("create").returncode == 2  # no name
    assert run("bogus").returncode == 2
