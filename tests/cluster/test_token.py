"""A local Ray started by mtlstudy keeps its auth token private and does not warn about it."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

START = (
    "from cluster import ray_session\n"
    "import ray\n"
    "with ray_session(num_cpus=1):\n"
    "    assert ray.is_initialized()\n"
)


@pytest.mark.parametrize("existing", [False, True], ids=["new", "world-readable"])
def test_local_ray_token_is_private(tmp_path: Path, existing: bool) -> None:
    home = tmp_path / "home"
    token = home / ".ray" / "auth_token"
    if existing:
        token.parent.mkdir(parents=True)
        token.write_text("a" * 64)
        token.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(home)  # RAY_TMPDIR stays the session's short one (socket paths)
    done = subprocess.run(
        [sys.executable, "-c", START], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    text = token.read_text()
    assert len(text) == 64 and int(text, 16) >= 0
    assert (text == "a" * 64) is existing  # an existing token is kept, only made private
    assert "Token authentication is enabled" not in done.stderr + done.stdout
