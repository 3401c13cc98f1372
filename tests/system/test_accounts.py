"""Accounts end to end: login with JWT access tokens, me, changes that publish
UserUpdated/UserDeactivated, the profile following them in order, token attacks,
enumeration, throttling, the password policy, and no secret in any log line."""
import json
import statistics
import time
import uuid

import pytest

import harness
from harness import Stack, make_event, make_jwt, request, wait_until

PASSWORD = "a long and unusual passphrase"
CE = {"Content-Type": "application/cloudevents+json"}


def register(stack, email=None, password=PASSWORD, name="Grace Hopper"):
    r = stack.register(email=email or f"g{uuid.uuid4().hex[:10]}@example.com", password=password, name=name)
    assert r.status == 201, r.body
    return r.json


def login(stack, email, password=PASSWORD, headers=None):
    return stack.auth.post("/api/auth/login", {"email": email, "password": password}, headers=headers or {})


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def profile(stack, uid, token=None):
    headers = bearer(token) if token is not None else None
    return stack.users.get(f"/api/users/{uid}", **({"headers": headers} if headers else {}))


@pytest.fixture
def accounts(tmp_path):
    s = Stack(str(tmp_path), env={"auth": {"AUTH_ADMIN_EMAILS": "root@example.com"}})
    yield s
    s.stop()


def test_login_me_update_deactivate_and_the_profile_follows(accounts):
    s = accounts
    u = register(s)
    uid = u["userId"]
    s.wait_profile(uid)
    r = login(s, u["email"].upper())  # emails are case-insensitive
    assert r.status == 200, r.body
    token = r.json["accessToken"]
    assert r.json["tokenType"] == "Bearer" and r.json["expiresIn"] == 900 and r.json["userId"] == uid
    header, claims = [json.loads(harness.base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
                      for p in token.split(".")[:2]]
    assert header["alg"] == "HS256"
    assert claims["sub"] == uid and claims["iss"] == "evbus-auth" and claims["aud"] == "evbus"
    assert claims["exp"] - claims["iat"] == 900 and claims["role"] == "user"
    me = s.auth.get("/api/auth/me", headers=bearer(token))
    assert me.status == 200 and me.json["userId"] == uid and me.json["version"] == 1

    # the owner reads and edits their own profile in user-service
    own = profile(s, uid, token)
    assert own.status == 200 and own.json["email"] == u["email"]
    put = s.users.put(f"/api/users/{uid}/profile", {"bio": "compilers"}, headers=bearer(token))
    assert put.status == 200 and put.json["bio"] == "compilers"

    # a change publishes UserUpdated; the profile follows
    r = s.auth.patch(f"/api/auth/users/{uid}", {"displayName": "Rear Admiral Hopper",
                                                "email": "grace.h@example.com"}, headers=bearer(token))
    assert r.status == 200, r.body
    assert r.json["version"] == 2
    wait_until(lambda: profile(s, uid, token).json.get("version") == 2, timeout=20, what="the update applied")
    p = profile(s, uid, token).json
    assert p["displayName"] == "Rear Admiral Hopper" and p["email"] == "grace.h@example.com"
    assert p["bio"] == "compilers"  # user-service's own part stays
    assert login(s, "grace.h@example.com").status == 200

    # an older state arriving late (a redrive, a replay) never overwrites a newer one
    stale = make_event("UserUpdated", subject=uid, source="/auth-service",
                       data={"userId": uid, "email": "old@example.com", "displayName": "Old",
                             "status": "active", "role": "user", "version": 1})
    assert s.eventbus.post("/api/events/publish", stale, headers=CE).status == 201
    wait_until(lambda: any(l.get("msg") == "older account state ignored" for l in s.users.lines()),
               timeout=20, what="the stale update ignored")
    assert profile(s, uid, token).json["displayName"] == "Rear Admiral Hopper"

    # deactivation publishes UserDeactivated; the account can no longer log in
    r = s.auth.post(f"/api/auth/users/{uid}/deactivate", headers=bearer(token))
    assert r.status == 200 and r.json["status"] == "deactivated" and r.json["version"] == 3
    wait_until(lambda: profile(s, uid).json.get("status") == "deactivated", timeout=20,
               what="the deactivation applied")
    bad = login(s, "grace.h@example.com")
    assert bad.status == 401
    assert s.auth.get("/api/auth/me", headers=bearer(token)).status == 401
    assert s.auth.post(f"/api/auth/users/{uid}/deactivate", headers=bearer(token)).status == 401
    # every event reached user-service once
    assert s.count("users", "SELECT count(*) FROM evbus_inbox") == 4


def test_only_the_owner_or_an_admin(accounts):
    s = accounts
    a, b = register(s), register(s)
    root = register(s, email="root@example.com")
    ta = login(s, a["email"]).json["accessToken"]
    tb = login(s, b["email"]).json["accessToken"]
    troot = login(s, "root@example.com").json["accessToken"]
    s.wait_profile(a["userId"])
    assert profile(s, a["userId"], tb).status == 403
    assert profile(s, a["userId"], troot).status == 200
    assert s.users.put(f"/api/users/{a['userId']}/profile", {"bio": "x"}, headers=bearer(tb)).status == 403
    assert s.users.put(f"/api/users/{a['userId']}/profile", {"bio": "x"}, headers=bearer(troot)).status == 200
    assert s.users.put(f"/api/users/{a['userId']}/profile", {"bio": 7}, headers=bearer(ta)).status == 400
    assert s.auth.patch(f"/api/auth/users/{a['userId']}", {"displayName": "B was here"},
                        headers=bearer(tb)).status == 403
    r = s.auth.patch(f"/api/auth/users/{a['userId']}", {"displayName": "Renamed by admin"}, headers=bearer(troot))
    assert r.status == 200
    assert s.auth.patch(f"/api/auth/users/{a['userId']}", {"email": b["email"]}, headers=bearer(ta)).status == 409
    assert s.auth.patch(f"/api/auth/users/{a['userId']}", {"role": "admin"}, headers=bearer(ta)).status == 400
    assert root["userId"]
    for path in ("/api/auth/me",):
        assert s.auth.get(path, headers={"Authorization": ""}).status == 401
    assert request(s.users.port, "GET", f"/api/users/{a['userId']}").status == 401


def test_token_attacks_are_refused(accounts):
    s = accounts
    u = register(s)
    uid = u["userId"]
    s.wait_profile(uid)
    now = int(time.time())
    good = {"iss": "evbus-auth", "aud": "evbus", "sub": uid, "role": "admin", "iat": now, "exp": now + 600}
    key = s.jwt_key
    valid = make_jwt(key, good)
    assert s.auth.get("/api/auth/me", headers=bearer(valid)).status == 200  # the minting is right
    attacks = {
        "alg none": make_jwt(key, good, header={"alg": "none", "typ": "JWT"}),
        "RS256 header (HS/RS swap)": make_jwt(key, good, header={"alg": "RS256", "typ": "JWT"}),
        "HS512": make_jwt(key, good, header={"alg": "HS512", "typ": "JWT"}),
        "wrong key": make_jwt(key, good, key=b"k" * 32),
        "expired": make_jwt(key, dict(good, iat=now - 1200, exp=now - 600)),
        "wrong aud": make_jwt(key, dict(good, aud="someone-else")),
        "wrong iss": make_jwt(key, dict(good, iss="evil")),
        "no sub": make_jwt(key, {k: v for k, v in good.items() if k != "sub"}),
        "no exp": make_jwt(key, {k: v for k, v in good.items() if k != "exp"}),
        "garbage": "not.a.token",
        "empty": "",
    }
    p1, p2, sig = valid.split(".")
    forged = json.loads(harness.base64.urlsafe_b64decode(p2 + "=" * (-len(p2) % 4)))
    forged["sub"] = str(uuid.uuid4())
    attacks["tampered payload"] = p1 + "." + harness.b64url(json.dumps(forged).encode()) + "." + sig
    for name, token in attacks.items():
        assert s.auth.get("/api/auth/me", headers=bearer(token)).status == 401, name
        assert profile(s, uid, token).status == 401, name


def timed_login(stack, email, password, cid):
    t0 = time.perf_counter()
    r = login(stack, email, password, headers={"X-Correlation-ID": cid})
    return time.perf_counter() - t0, r


def test_no_account_enumeration(tmp_path):
    s = Stack(str(tmp_path), users=False,
              env={"auth": {"AUTH_LOGIN_MAX_FAILURES": "1000", "AUTH_LOGIN_MAX_FAILURES_IP": "1000"}})
    try:
        u = register(s)
        unknown, wrong = [], []
        for i in range(30):  # interleaved, so machine noise hits both alike
            t, r1 = timed_login(s, f"nobody{i}@example.com", PASSWORD, "enum")
            unknown.append(t)
            t, r2 = timed_login(s, u["email"], "not the password at all", "enum")
            wrong.append(t)
            assert r1.status == r2.status == 401
            b1, b2 = r1.json, r2.json
            assert b1 == b2, (b1, b2)  # the same status, the same body
        mu, mw = statistics.median(unknown), statistics.median(wrong)
        print(f"login timing, median of 30: unknown email {mu * 1000:.1f} ms, wrong password {mw * 1000:.1f} ms "
              f"(ratio {mu / mw:.2f})")
        assert mu >= 0.5 * mw, "the unknown-email path does not run a hash"
    finally:
        s.stop()


def test_throttling_slows_an_attacker_without_locking_the_owner_out(tmp_path):
    s = Stack(str(tmp_path), users=False,
              env={"auth": {"AUTH_LOGIN_WINDOW_S": "3", "AUTH_TRUST_FORWARDED": "yes"}})
    try:
        u = register(s)
        attacker, owner = {"X-Forwarded-For": "203.0.113.9"}, {"X-Forwarded-For": "198.51.100.7"}
        statuses = [login(s, u["email"], f"guess {i}", headers=attacker).status for i in range(8)]
        assert statuses[:5] == [401] * 5 and statuses[5:] == [429] * 3, statuses
        r = login(s, u["email"], PASSWORD, headers=attacker)
        assert r.status == 429 and 1 <= int(r.header("Retry-After")) <= 3  # even the right password waits
        assert login(s, u["email"], PASSWORD, headers=owner).status == 200  # the owner is not locked out
        wait_until(lambda: login(s, u["email"], PASSWORD, headers=attacker).status == 200, timeout=10,
                   interval=0.5, what="the window to pass")
    finally:
        s.stop()


def test_password_policy_and_change(accounts):
    s = accounts
    for pw in ["password123", "Qwertyuiop", "12345678"]:
        r = s.register(password=pw)
        assert r.status == 400 and r.json["errors"][0]["field"] == "password", pw
    u = register(s)
    token = login(s, u["email"]).json["accessToken"]
    bad = [({"currentPassword": PASSWORD, "newPassword": "short"}, 400),
           ({"currentPassword": PASSWORD, "newPassword": "iloveyou1"}, 400),
           ({"currentPassword": "wrong wrong wrong", "newPassword": "another long passphrase"}, 403),
           ({"newPassword": "another long passphrase"}, 400)]
    for body, status in bad:
        assert s.auth.post("/api/auth/password", body, headers=bearer(token)).status == status, body
    r = s.auth.post("/api/auth/password", {"currentPassword": PASSWORD, "newPassword": "another long passphrase"},
                    headers=bearer(token))
    assert r.status == 204
    assert login(s, u["email"]).status == 401
    assert login(s, u["email"], "another long passphrase").status == 200
    assert s.auth.post("/api/auth/password", {"currentPassword": "x", "newPassword": "y" * 10}).status == 401


def test_no_secret_in_any_log_line(accounts):
    s = accounts
    u = register(s, password="a secret nobody should log")
    token = login(s, u["email"], "a secret nobody should log").json["accessToken"]
    assert login(s, u["email"], "a wrong guess to be kept quiet").status == 401
    s.auth.post("/api/auth/password", {"currentPassword": "a secret nobody should log",
                                       "newPassword": "the next secret to keep"}, headers=bearer(token))
    s.wait_profile(u["userId"])
    secrets = ["a secret nobody should log", "a wrong guess to be kept quiet", "the next secret to keep",
               token, token.split(".")[2], s.jwt_key, s.webhook_secret,
               s.users.headers["Authorization"].split()[1]] + list(s.keys.values())
    for svc in s.services:
        text = svc.log_text()
        for secret in secrets:
            assert secret not in text, f"{svc.name} logged a secret"
