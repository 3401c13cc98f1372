import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from harness import BIN_DIR, Stack  # noqa: E402


def pytest_sessionstart(session):
    for b in ("eventbus", "auth-service", "user-service"):
        path = os.path.join(BIN_DIR, b)
        if not os.access(path, os.X_OK):
            raise pytest.UsageError(f"{path} is missing: build first (make test does)")


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
