"""Each binary runs on its own: --help documents every setting, bad settings stop it
with a clear message and exit code 2."""
import os
import subprocess

import pytest

from harness import BIN_DIR

BINARIES = {
    "eventbus": ["EVENTBUS_PORT", "EVENTBUS_DB", "EVENTBUS_MAX_BODY_BYTES", "EVENTBUS_MAX_BATCH", "EVENTBUS_ROUTES"],
    "auth-service": ["AUTH_PORT", "AUTH_DB", "AUTH_EVENTBUS_URL", "AUTH_ARGON2_MEMLIMIT_KIB"],
    "user-service": ["USERS_PORT", "USERS_DB", "USERS_EVENTBUS_URL", "USERS_SUBSCRIPTION"],
}


def run(binary, *args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([os.path.join(BIN_DIR, binary), *args], capture_output=True, text=True,
                          timeout=30, env=e)


@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_help_lists_every_setting(binary):
    r = run(binary, "--help")
    assert r.returncode == 0
    for var in BINARIES[binary]:
        assert var in r.stdout


@pytest.mark.parametrize("binary,args,env,message", [
    ("eventbus", ["--port=99999"], {}, "EVENTBUS_PORT"),
    ("eventbus", ["--bogus=1"], {}, "unknown flag"),
    ("eventbus", [], {"EVENTBUS_MAX_BATCH": "0"}, "EVENTBUS_MAX_BATCH"),
    ("eventbus", [], {"EVENTBUS_LOG_LEVEL": "loud"}, "EVENTBUS_LOG_LEVEL"),
    ("eventbus", ["--routes=NoEquals"], {}, "EVENTBUS_ROUTES"),
    ("eventbus", [], {"EVENTBUS_BROKER": "rabbitmq://127.0.0.1:5672"}, "EVENTBUS_BROKER"),
    ("auth-service", [], {"AUTH_ARGON2_MEMLIMIT_KIB": "1024"}, "AUTH_ARGON2_MEMLIMIT_KIB"),
    ("auth-service", ["--argon2-ops=1"], {}, "AUTH_ARGON2_OPSLIMIT"),
    ("user-service", ["--poll-wait=0"], {}, "USERS_POLL_WAIT_S"),
    # token keys: required, at least 256 bits, never taken from a flag
    ("auth-service", [], {}, "AUTH_JWT_KEY"),
    ("auth-service", [], {"AUTH_JWT_KEY": "c2hvcnQ="}, "AUTH_JWT_KEY"),
    ("auth-service", ["--jwt-key=c2hvcnQ="], {}, "secret"),
    ("user-service", [], {}, "USERS_JWT_KEY"),
])
def test_bad_settings_refused(tmp_path, binary, args, env, message):
    r = run(binary, f"--db={tmp_path}/x.db", *args, env=env)
    assert r.returncode != 0
    assert message in r.stderr
