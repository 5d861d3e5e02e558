import socket
import subprocess
import sys

import pytest

from cluster import ClusterError, ray_session


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_cluster_is_one_clear_error() -> None:
    address = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(ClusterError, match=f"^cannot reach the Ray cluster at {address}: "):
        with ray_session(address=address):
            pass


def test_malformed_address() -> None:
    with pytest.raises(ClusterError, match="not host:port"):
        with ray_session(address="headnode"):
            pass


def test_cli_reports_unreachable_cluster_with_status_2(tmp_path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: x\ntasks: [depth]\nresults: {tmp_path / 'results'}\n")
    address = f"127.0.0.1:{_closed_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "study.cli", "run", str(spec), "--address", address],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"mtlstudy: error: cannot reach the Ray cluster at {address}: Connection refused"
    )
    assert "Traceback" not in done.stderr
