"""Bad input to every endpoint: the right 4xx as problem+json, nothing stored, and the
service keeps serving."""
import json

import pytest

import harness
from harness import make_event, request

CE = {"Content-Type": "application/cloudevents+json"}


def assert_problem(r, status, field=None):
    assert r.status == status, (r.status, r.body)
    assert r.header("Content-Type") == "application/problem+json", r.headers
    p = r.json
    assert p["status"] == status
    assert p["type"].startswith("urn:evbus:problem:")
    assert p["title"] and p["detail"]
    assert p["correlationId"]
    if field is not None:
        assert any(e["field"] == field for e in p.get("errors", [])), p
    return p


def event_count(stack):
    return stack.count("eventbus", "SELECT count(*) FROM eb_events")


def ev_without(attr):
    ev = make_event()
    del ev[attr]
    return ev


BAD_EVENTS = [
    ("malformed", b'{"specversion":"1.0",', 400),
    ("not-an-object", b'"hello"', 400),
    ("missing-id", json.dumps(ev_without("id")).encode(), 400),
    ("missing-source", json.dumps(ev_without("source")).encode(), 400),
    ("missing-type", json.dumps(ev_without("type")).encode(), 400),
    ("missing-specversion", json.dumps(ev_without("specversion")).encode(), 400),
    ("wrong-specversion", json.dumps(make_event(specversion="0.3")).encode(), 400),
    ("id-not-string", json.dumps(make_event(id=42)).encode(), 400),
    ("type-empty", json.dumps(make_event(event_type="")).encode(), 400),
    ("time-not-rfc3339", json.dumps(make_event(time="last tuesday")).encode(), 400),
    ("extension-object", json.dumps(make_event(myext={"a": 1})).encode(), 400),
    ("bad-attribute-name", json.dumps(make_event(**{"Bad-Name": "x"})).encode(), 400),
    ("duplicate-keys", b'{"specversion":"1.0","id":"a","id":"b","source":"s","type":"T"}', 400),
    ("type-without-topic", json.dumps(make_event(event_type="!!!")).encode(), 400),
    ("empty-batch", b"[]", 400),
    ("bad-item-in-batch", json.dumps([make_event(), ev_without("id")]).encode(), 400),
    ("too-large-batch", json.dumps([make_event() for _ in range(1001)]).encode(), 413),
    ("oversized-body", json.dumps(make_event(data={"x": "y" * (1 << 20)})).encode(), 413),
]


@pytest.mark.parametrize("name,body,status", BAD_EVENTS, ids=[b[0] for b in BAD_EVENTS])
def test_publish_refuses_bad_events(bus_only, name, body, status):
    bus = bus_only.eventbus
    r = bus.post("/api/events/publish", raw=body, headers=CE)
    p = assert_problem(r, status)
    if name == "bad-item-in-batch":
        assert p["errors"][0]["field"] == "[1]"
    assert event_count(bus_only) == 0
    # still serving
    assert bus.post("/api/events/publish", make_event(), headers=CE).status == 201


def test_publish_wrong_content_type(bus_only):
    bus = bus_only.eventbus
    r = bus.post("/api/events/publish", raw=json.dumps(make_event()).encode(),
                 headers={"Content-Type": "text/plain"})
    assert_problem(r, 415)
    r = bus.post("/api/events/publish", raw=json.dumps(make_event()).encode())
    assert_problem(r, 415)
    assert event_count(bus_only) == 0


def test_oversized_chunked_body(bus_only):
    """No Content-Length: the limit still holds while the body streams in."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", bus_only.eventbus.port, timeout=10)
    chunk = b"x" * 65536

    def body():
        for _ in range(40):
            yield chunk

    conn.request("POST", "/api/events/publish", body=body(), headers=CE, encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413
    conn.close()
    assert bus_only.eventbus.get("/health/ready").status == 200


def test_huge_declared_body_refused_before_reading(bus_only):
    """A Content-Length far over the limit is answered 413 without reading the body."""
    import socket
    with socket.create_connection(("127.0.0.1", bus_only.eventbus.port), timeout=10) as sock:
        sock.sendall(b"POST /api/events/publish HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/cloudevents+json\r\nContent-Length: 4000000000\r\n\r\n")
        head = sock.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head
    assert "application/problem+json" in head
    assert bus_only.eventbus.get("/health/ready").status == 200


def test_unknown_path_and_method(bus_only):
    bus = bus_only.eventbus
    assert_problem(bus.get("/api/nothing"), 404)
    r = bus.get("/api/events/publish")
    assert_problem(r, 405)
    assert "POST" in r.header("Allow")


BAD_SUBSCRIPTIONS = [
    ({}, "name"),
    ({"name": "ok", "topic": "T", "extra": 1}, "extra"),
    ({"name": "has space", "topic": "T"}, "name"),
    ({"name": "x" * 65, "topic": "T"}, "name"),
    ({"name": "ok"}, "topic"),
    ({"name": "ok", "topic": "bad topic"}, "topic"),
    ({"name": "ok", "topic": "T", "types": "UserRegistered"}, "types"),
    ({"name": "ok", "topic": "T", "types": []}, "types"),
    ({"name": "ok", "topic": "T", "types": [1]}, "types"),
    ({"name": "ok", "topic": "T", "mode": "carrier-pigeon"}, "mode"),
    ({"name": "ok", "topic": "T", "from": "yesterday"}, "from"),
    ({"name": 5, "topic": "T"}, "name"),
]


@pytest.mark.parametrize("body,field", BAD_SUBSCRIPTIONS)
def test_subscription_create_validation(bus_only, body, field):
    bus = bus_only.eventbus
    assert_problem(bus.post("/api/subscriptions", body), 400, field)
    assert bus.get("/api/subscriptions").json["subscriptions"] == []


def test_subscription_errors(bus_only):
    bus = bus_only.eventbus
    assert_problem(bus.post("/api/subscriptions", raw=b"{nope", headers={"Content-Type": "application/json"}), 400)
    assert_problem(bus.post("/api/subscriptions", raw=b"{}", headers={"Content-Type": "text/plain"}), 415)
    for method, path in [("GET", "/api/subscriptions/ghost"), ("DELETE", "/api/subscriptions/ghost"),
                         ("GET", "/api/subscriptions/ghost/events")]:
        assert_problem(request(bus.port, method, path), 404)
    assert_problem(bus.post("/api/subscriptions/ghost/ack", {"position": 0}), 404)
    ok = {"name": "s1", "topic": "T"}
    assert bus.post("/api/subscriptions", ok).status == 201
    assert bus.post("/api/subscriptions", ok).status == 200  # idempotent
    assert_problem(bus.post("/api/subscriptions", {"name": "s1", "topic": "OTHER"}), 409)
    for q in ["max=0", "max=1001", "max=abc", "wait=-1", "wait=100000", "max=1e3"]:
        assert_problem(bus.get(f"/api/subscriptions/s1/events?{q}"), 400)
    for body in [{}, {"position": -1}, {"position": "3"}, [1], {"position": 1.5}]:
        assert_problem(bus.post("/api/subscriptions/s1/ack", body), 400)
    # on Kafka, positions belong to the instance whose group member delivered them: one
    # this instance never handed out is refused as unknown, not taken as an ack
    assert_problem(bus.post("/api/subscriptions/s1/ack", {"position": 10**9}), 409 if harness.KAFKA else 400)
    nxt = bus.get("/api/subscriptions/s1/events?wait=0").json["next"]
    assert_problem(bus.post("/api/subscriptions/s1/ack", {"position": nxt + 1}), 400)
    assert bus.get("/api/subscriptions/s1").json["position"] == nxt  # nothing acknowledged
    assert bus.get("/health/ready").status == 200


def auth_counts(stack):
    return (stack.count("auth", "SELECT count(*) FROM auth_users"),
            stack.count("auth", "SELECT count(*) FROM evbus_outbox"))


GOOD = {"email": "grace@example.com", "password": "a long enough secret", "displayName": "Grace"}
BAD_REGISTRATIONS = [
    (dict(GOOD, email="not-an-email"), "email"),
    (dict(GOOD, email="a@b"), "email"),
    (dict(GOOD, email="two@@example.com"), "email"),
    (dict(GOOD, email="sp ace@example.com"), "email"),
    (dict(GOOD, email="x" * 250 + "@example.com"), "email"),
    (dict(GOOD, email=5), "email"),
    ({k: v for k, v in GOOD.items() if k != "email"}, "email"),
    (dict(GOOD, password="short"), "password"),
    (dict(GOOD, password="p" * 129), "password"),
    (dict(GOOD, password=12345678), "password"),
    ({k: v for k, v in GOOD.items() if k != "password"}, "password"),
    (dict(GOOD, displayName=""), "displayName"),
    (dict(GOOD, displayName="   "), "displayName"),
    (dict(GOOD, displayName="n" * 101), "displayName"),
    (dict(GOOD, displayName="bell\u0007"), "displayName"),
    (dict(GOOD, displayName=None), "displayName"),
    ([GOOD], ""),
]


@pytest.mark.parametrize("body,field", BAD_REGISTRATIONS)
def test_register_validation(stack, body, field):
    r = stack.auth.post("/api/auth/register", body)
    assert_problem(r, 400, field)
    assert auth_counts(stack) == (0, 0)


def test_register_transport_errors(stack):
    auth = stack.auth
    assert_problem(auth.post("/api/auth/register", raw=b'{"email":', headers={"Content-Type": "application/json"}), 400)
    assert_problem(auth.post("/api/auth/register", raw=json.dumps(GOOD).encode(),
                             headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)
    assert_problem(auth.post("/api/auth/register", raw=b"{" + b" " * 20000 + b"}",
                             headers={"Content-Type": "application/json"}), 413)
    assert_problem(auth.get("/api/auth/register"), 405)
    assert auth_counts(stack) == (0, 0)
    # a password at both bounds is fine, counted in characters, not bytes
    assert stack.register(password="\u00e9" * 8).status == 201
    assert stack.register(password="p" * 128).status == 201
    assert auth.get("/health/ready").status == 200


def test_users_bad_requests(stack):
    assert_problem(stack.users.get("/api/users/not-a-uuid"), 400, "id")
    assert_problem(stack.users.get("/api/users/01a2211e-24d9-7356-9e90-8764f66675a0"), 404)
    assert_problem(stack.users.post("/api/users/01a2211e-24d9-7356-9e90-8764f66675a0", {}), 405)
    assert stack.users.get("/health/ready").status == 200
