"""A study submitted to a real three-node Ray cluster, each node in its own network
namespace (cluster/namespace_cluster.sh), while one worker's raylet is killed and the other
worker's link is cut for 20 s.

Needs root and iproute2 (it skips, saying why, without them). Everything it makes (the
namespaces, the bridge with its veth pairs, the Ray processes, the cluster's folder) goes in
teardown, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from study.store import load_history, load_trials

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "cluster" / "namespace_cluster.sh"
VENV_BIN = Path(sys.executable).parent
CUT_S = 20

# Three one-CPU nodes: one trial on each. A trial takes minutes on a loaded 2-core
# machine, so the faults come while the trials train.
SPEC = """\
name: netns
seed: 4
dataset: {{image_size: 32, train_samples: 512, val_samples: 16}}
tasks: [semseg, depth]
model: {{backbone: regnetx_002}}
methods: [ew]
trials: 3
concurrency: 3
cpus_per_trial: 1
max_failures: 3
epochs: 3
batch_size: 16
scheduler: {{name: fifo}}
baselines: none
results: {results}
"""


def _why_no_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "creating network namespaces needs iproute2's 'ip'"
    probe = f"mtlprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


@dataclass(frozen=True)
class NamespaceCluster:
    prefix: str
    folder: Path
    address: str

    def namespace(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def pids(self, node: str) -> list[int]:
        listed = subprocess.run(
            ["ip", "netns", "pids", self.namespace(node)], capture_output=True, text=True
        )
        return [int(pid) for pid in listed.stdout.split()]

    def mtlstudy(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`mtlstudy` from the head's namespace, with the cluster's token."""
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MTLSTUDY_T"))},
            "RAY_AUTH_TOKEN_PATH": str(self.folder / "token"),
            "PYTHONPATH": str(REPO),
        }
        command = [sys.executable, "-m", "study.cli", *args, "--address", self.address]
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace("head"), *command, "--token-over-http"],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )


def _script(action: str, folder: Path, prefix: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PREFIX": prefix,
        "RAY": str(VENV_BIN / "ray"),
        # Keep /dev/shm small: three nodes share this machine's memory.
        "RAY_START_ARGS": "--object-store-memory 200000000",
    }
    return subprocess.run(
        ["bash", str(SCRIPT), action, str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
        check=False,
    )


@pytest.fixture
def namespace_cluster() -> Iterator[NamespaceCluster]:
    reason = _why_no_namespaces()
    if reason is not None:
        pytest.skip(reason)
    prefix = f"mtl{os.getpid()}"
    folder = Path(tempfile.mkdtemp(prefix="n", dir="/tmp"))  # Ray's socket paths are short
    try:
        started = _script("up", folder, prefix)
        assert started.returncode == 0, started.stderr[-3000:]
        yield NamespaceCluster(prefix, folder, started.stdout.strip().splitlines()[-1])
    finally:
        stopped = _script("down", folder, prefix)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert stopped.returncode == 0, stopped.stderr
        assert f"{prefix}-" not in left and not folder.exists()


def _running(study: Path) -> int:
    """How many trials have reported an epoch and are still running."""
    try:
        rows = load_trials(study)
    except (FileNotFoundError, ValueError):
        return 0
    return int(((rows["status"] == "running") & (rows["epochs"] >= 1)).sum())


def _kill_raylet(cluster: NamespaceCluster, node: str) -> None:
    for pid in cluster.pids(node):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                os.kill(pid, signal.SIGKILL)
                return
    pytest.fail(f"no raylet in {cluster.namespace(node)}")


def _link(cluster: NamespaceCluster, node: str, state: str) -> None:
    bridge = cluster.namespace("br")
    subprocess.run(["ip", "-n", bridge, "link", "set", f"v-{node}", state], check=True)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_submitted_study_survives_a_killed_node_and_a_cut_link(
    namespace_cluster: NamespaceCluster, tmp_path: Path
) -> None:
    cluster = namespace_cluster
    results = tmp_path / "results"  # every namespace sees this machine's filesystem
    spec = tmp_path / "netns.yaml"
    spec.write_text(SPEC.format(results=results))
    study = results / "netns"
    began = time.monotonic()
    submitted = cluster.mtlstudy("submit", str(spec))
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.splitlines()[0]

    timeline = []
    # The first study on a node builds DeepSpeed's op: minutes, more on a loaded machine.
    deadline = time.monotonic() + 1800
    while _running(study) < 1:  # the trials train: the op is built, the data made
        assert time.monotonic() < deadline, "no trial reported an epoch"
        time.sleep(1)
    timeline.append(f"{time.monotonic() - began:.0f} s: a trial reported its first epoch")
    _kill_raylet(cluster, "w1")
    timeline.append(f"{time.monotonic() - began:.0f} s: w1's raylet SIGKILLed")
    _link(cluster, "w2", "down")
    try:
        time.sleep(CUT_S)
    finally:
        _link(cluster, "w2", "up")
    timeline.append(f"{time.monotonic() - began:.0f} s: w2's link back after {CUT_S} s")

    follow = cluster.mtlstudy("jobs", "logs", job, "--follow", timeout=1200)
    status = cluster.mtlstudy("jobs", "status", job)
    timeline.append(f"{time.monotonic() - began:.0f} s: job ended")
    print("\n".join(timeline), follow.stdout[-3000:], status.stdout, sep="\n")
    assert status.returncode == 0, status.stderr
    outcome = status.stdout.splitlines()
    # Completed, or failed with one line saying why.
    assert outcome[0] == "SUCCEEDED" or (outcome[0] == "FAILED" and len(outcome) == 2), outcome

    # Each trial that finished is in the store once; no file is half-written.
    trials = load_trials(study)
    assert trials["trial_id"].is_unique
    finished = trials[trials["status"].isin(["completed", "stopped"])]
    if outcome[0] == "SUCCEEDED":
        assert len(finished) == 3 and set(finished["epochs"]) == {3}, trials
    parquet = [p for kind in ("trials", "history") for p in (study / kind).iterdir()]
    assert not [p for p in parquet if p.name.startswith(".")], parquet  # no write in progress
    for path in parquet:
        pq.read_table(path)  # a torn file fails here
    history = load_history(study)
    keys = ["trial_id", "epoch", "split", "task", "metric"]
    assert not history.duplicated(keys).any()
    assert set(history["trial_id"]) == set(trials["trial_id"])
    print(trials[["trial_id", "status", "epochs", "restored_from_epoch"]].to_string())
