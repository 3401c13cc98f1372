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


@pytest.fixture(scope="session", autouse=True)
def backend():
    """On EVBUS_TEST_BACKEND=pg every test's services use a fresh PostgreSQL database on
    one throwaway cluster, removed at the end."""
    if BACKEND != "pg":
        yield None
        return
    import shutil
    import tempfile
    # directly under /tmp: the server runs as 'postgres' and must reach its directory
    workdir = tempfile.mkdtemp(prefix="evbus-pg-")
    cluster = harness.PgCluster(workdir)
    cluster.start()
    harness.PG = cluster
    try:
        yield cluster
    finally:
        harness.PG = None
        cluster.stop("immediate")
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def broker():
    """On EVBUS_TEST_BROKER=kafka a real Kafka broker runs for the session and every
    eventbus relays to it."""
    if BROKER != "kafka":
        yield None
        return
    import shutil
    import tempfile
    workdir = tempfile.mkdtemp(prefix="evbus-kafka-")
    kafka = harness.KafkaBroker(workdir)
    kafka.start()
    harness.KAFKA = kafka
    try:
        yield kafka
    finally:
        harness.KAFKA = None
        kafka.stop()
        shutil.rmtree(workdir, ignore_errors=True)


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
