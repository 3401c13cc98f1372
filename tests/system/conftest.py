import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402
from harness import BIN_DIR, Stack  # noqa: E402

BACKEND = os.environ.get("EVBUS_TEST_BACKEND", "sqlite")
BROKER = os.environ.get("EVBUS_TEST_BROKER", "embedded")


def pytest_sessionstart(session):
    for b in ("eventbus", "auth-service", "user-service"):
        path = os.path.join(BIN_DIR, b)
        if not os.access(path, os.X_OK):
            raise pytest.UsageError(f"{path} is missing: build first (make test does)")


def _throwaway(make, attr, prefix):
    """Runs a server made by make(workdir) in a temporary directory directly under /tmp
    (servers running as another user must reach it) for the session, exposed as
    harness.<attr>, and removes it afterwards."""
    import shutil
    import tempfile
    workdir = tempfile.mkdtemp(prefix=prefix)
    server = make(workdir)
    server.start()
    setattr(harness, attr, server)
    try:
        yield server
    finally:
        setattr(harness, attr, None)
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def backend():
    """On EVBUS_TEST_BACKEND=pg every test's services use a fresh PostgreSQL database on
    one throwaway cluster."""
    if BACKEND != "pg":
        yield None
        return
    yield from _throwaway(harness.PgCluster, "PG", "evbus-pg-")


@pytest.fixture(scope="session", autouse=True)
def broker():
    """On EVBUS_TEST_BROKER=kafka a real Kafka broker runs for the session and every
    eventbus relays to it."""
    if BROKER != "kafka":
        yield None
        return
    yield from _throwaway(harness.KafkaBroker, "KAFKA", "evbus-kafka-")


@pytest.fixture
def stack(tmp_path):
    s = Stack(str(tmp_path))
    yield s
    s.stop()


@pytest.fixture
def bus_only(tmp_path):
    s = Stack(str(tmp_path), users=False, auth=False)
    yield s
    s.stop()
