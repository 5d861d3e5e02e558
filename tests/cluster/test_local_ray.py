"""A local Ray started for a command listens on 127.0.0.1 only, says nothing about its
token, and no process of it outlives a SIGKILLed driver."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# What `mtlstudy run` does with a local Ray, in a driver the test can kill.
_DRIVER = """
import time
import ray
from cluster import ray_session

with ray_session(num_cpus=2):
    ray.get([ray.remote(lambda: time.sleep(1)).remote() for _ in range(2)])  # workers up
    print("ready", flush=True)
    time.sleep(600)
"""

_LOOPBACK = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, start time), from /proc."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            found[int(entry)] = (int(fields[1]), fields[19])
    return found


def _descendants(root: int) -> dict[int, str]:
    """``root`` and every process below it: pid -> start time."""
    table = _processes()
    tree = {root: table[root][1]}
    grew = True
    while grew:
        grew = False
        for pid, (parent, started) in table.items():
            if parent in tree and pid not in tree:
                tree[pid] = started
                grew = True
    return tree


def _alive(processes: dict[int, str]) -> list[int]:
    table = _processes()
    return [pid for pid, started in processes.items() if table.get(pid, (0, ""))[1] == started]


def _listening(pids: set[int]) -> list[str]:
    """The local address of each listening TCP socket of ``pids``."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return [
        line.split()[3] for line in out.splitlines() if any(f"pid={pid}," in line for pid in pids)
    ]


@pytest.mark.slow
def test_local_ray_is_loopback_only_and_dies_with_a_killed_driver(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER],
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "stderr", "w"),  # noqa: SIM115 - the child holds it
        text=True,
        env=env,
        start_new_session=True,  # so that only the driver is killed, not its group
    )
    try:
        assert driver.stdout.readline() == "ready\n", (tmp_path / "stderr").read_text()
        processes = _descendants(driver.pid)
        # GCS, raylet, the agents, workers: more than the driver and its Ray's top level.
        assert len(processes) >= 6, processes
        ports = _listening(set(processes))
        assert len(ports) >= 5, ports  # GCS, raylet, object manager, workers, agents
        exposed = [port for port in ports if not port.startswith(_LOOPBACK)]
        assert not exposed, f"listening beyond 127.0.0.1: {exposed} of {ports}"

        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 30
        while _alive(processes) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _alive(processes)
        names = [Path(f"/proc/{pid}/cmdline").read_bytes()[:60] for pid in left]
        assert not left, f"outlived the driver: {names}"
    finally:
        if driver.poll() is None:
            driver.kill()
    stderr = (tmp_path / "stderr").read_text()
    assert "auth" not in stderr.lower(), stderr  # Ray's token warning, on every run
