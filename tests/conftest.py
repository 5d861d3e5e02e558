"""Ray in tests writes under a temporary folder of its own, not the shared /tmp/ray."""

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _ray_tmpdir() -> Iterator[None]:
    if os.environ.get("RAY_TMPDIR"):
        yield
        return
    # Short: Ray's socket paths under it must stay within the OS's 107 bytes.
    folder = tempfile.mkdtemp(prefix="r.", dir="/tmp")
    os.environ["RAY_TMPDIR"] = folder
    yield
    del os.environ["RAY_TMPDIR"]
    shutil.rmtree(folder, ignore_errors=True)
