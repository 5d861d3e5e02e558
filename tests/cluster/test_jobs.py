"""Studies as Ray jobs: `mtlstudy submit` and `mtlstudy jobs` against a real local head.

The head is `ray start --head --block` with token authentication, its own temporary
folder and token file (``RAY_AUTH_TOKEN_PATH``, so ``~/.ray/auth_token`` is never touched)
and free ports, in its own process group; teardown ends that group only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from cluster import ClusterError, jobs_address
from cluster._client import _jobs_url
from cluster._upload import _copy_project, _place_spec, _project_root, _runtime_excludes

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CONFIGS = REPO / "cluster" / "configs"

SPEC = """\
name: {name}
tasks: [depth]
dataset: {{image_size: 32, train_samples: {train}, val_samples: 4}}
model: {{backbone: regnetx_002}}
methods: [ew]
trials: 1
epochs: {epochs}
batch_size: 4
baselines: none
concurrency: 1
results: {results}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env() -> dict[str, str]:
    """This environment without any Ray address or token source."""
    drop = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    return {k: v for k, v in os.environ.items() if k not in drop and k != "RAY_AUTH_MODE"}


def _mtlstudy(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "study.cli", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else _clean_env(),
        check=False,
        timeout=timeout,
    )


def _one_line_error(done: subprocess.CompletedProcess[str], expected: str) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("mtlstudy: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in done.stderr
    return lines[0]


# --- without a cluster -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("127.0.0.1:8265", "http://127.0.0.1:8265"),
        ("http://head.example:8265/", "http://head.example:8265"),
        ("https://ray.example.org", "https://ray.example.org"),
        (" 10.0.0.5:8265 ", "http://10.0.0.5:8265"),
    ],
)
def test_jobs_api_address_forms(given: str, url: str) -> None:
    assert _jobs_url(given) == url


@pytest.mark.parametrize(
    "given", ["auto", "ray://10.0.0.5:10001", "headnode", "http://h:8265/api", "h:port"]
)
def test_other_address_forms_are_one_error(given: str) -> None:
    with pytest.raises(ClusterError, match="expected the Jobs API of the head node"):
        _jobs_url(given)


def test_default_address_follows_rays_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert jobs_address() == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:8265")
    assert jobs_address() == "http://10.0.0.5:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://10.0.0.6:8265")
    assert jobs_address() == "http://10.0.0.6:8265"
    assert jobs_address("10.0.0.7:8265") == "http://10.0.0.7:8265"


def test_unreachable_address_is_one_line(tmp_path: Path) -> None:
    address = f"127.0.0.1:{_free_port()}"
    done = _mtlstudy("jobs", "list", "--address", address)
    line = _one_line_error(done, "")
    assert line.startswith(
        f"mtlstudy: error: cannot reach the Ray Jobs API at http://{address}: Connection refused;"
    )
    assert "--address" in line and "RAY_ADDRESS" in line
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(name="x", train=8, epochs=1, results=tmp_path / "results"))
    _one_line_error(_mtlstudy("submit", str(spec), "--address", address), "cannot reach")
    _one_line_error(
        _mtlstudy("jobs", "status", "x-1", "--address", "ray://h:10001"), "not a Jobs API address"
    )


def test_submit_checks_the_spec_and_paths_before_the_upload(tmp_path: Path) -> None:
    closed = f"127.0.0.1:{_free_port()}"  # every check below fails before any request
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntasks: [depth]\ntrials: -1\n")
    _one_line_error(_mtlstudy("submit", str(bad), "--address", closed), "field 'trials'")
    relative = tmp_path / "relative.yaml"
    relative.write_text(SPEC.format(name="x", train=8, epochs=1, results="results"))
    line = _one_line_error(_mtlstudy("submit", str(relative), "--address", closed), "'results'")
    assert "absolute path" in line
    done = _mtlstudy(
        "submit", str(relative), "--results", "out", "--address", closed
    )  # --results must be absolute too
    _one_line_error(done, "--results: 'out' is relative")
    uri = _mtlstudy("submit", str(relative), "--results", "s3://b/r", "--address", closed)
    _one_line_error(uri, "cannot reach")  # an object-store root passes the path checks
    data = tmp_path / "data.yaml"
    data.write_text(
        f"name: x\ntasks: [depth]\ndataset: {{name: nyud, root: NYUD_MT, num_classes: 40}}\n"
        f"results: {tmp_path / 'results'}\n"
    )
    _one_line_error(_mtlstudy("submit", str(data), "--address", closed), "'dataset.root'")


def test_upload_is_the_project_without_environments_results_or_big_files(tmp_path: Path) -> None:
    root = tmp_path / "project"
    files = {
        "pyproject.toml": "x",
        "constraints.txt": "x",
        "study/cli/__init__.py": "x",
        "study/results/__init__.py": "x",  # code, though .gitignore says results/
        ".gitignore": "results/\n",
        "study/__pycache__/cli.cpython-311.pyc": "x",
        "study/specs/inside.yaml": "name: inside\n",
        ".venv/bin/python": "x",
        ".git/HEAD": "x",
        "results/demo/trials/a.parquet": "x",
        "mtlstudy.egg-info/PKG-INFO": "x",
        "shared/out/b.parquet": "x",
        "tests/data/c.json": "x",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    with (root / "tests/data/big.bin").open("wb") as big:
        big.truncate(9 * 2**20)
    stage = tmp_path / "stage"
    _copy_project(root, stage, keep_out=[root / "shared"])
    copied = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    assert copied == [
        "constraints.txt",
        "pyproject.toml",
        "study/cli/__init__.py",
        "study/results/__init__.py",
        "study/specs/inside.yaml",
        "tests/data/c.json",
    ]
    assert _runtime_excludes()[:3] == ["/.venv", "/.git", "/results"]
    assert {"__pycache__", "*.egg-info"} <= set(_runtime_excludes())

    # A spec in the project keeps its place; one from elsewhere goes to _submitted/,
    # with the search-space file it names.
    inside = root / "study/specs/inside.yaml"
    assert _place_spec(inside, {"name": "inside"}, root, stage) == Path("study/specs/inside.yaml")
    elsewhere = tmp_path / "mine"
    (elsewhere / "spaces").mkdir(parents=True)
    (elsewhere / "spaces/space.yaml").write_text("methods: {}\n")
    (elsewhere / "study.yaml").write_text("name: mine\n")
    data = {"name": "mine", "search_space": "spaces/space.yaml"}
    assert _place_spec(elsewhere / "study.yaml", data, root, stage) == Path("_submitted/study.yaml")
    assert (stage / "_submitted/spaces/space.yaml").read_text() == "methods: {}\n"
    with pytest.raises(ClusterError, match="'search_space'"):
        _place_spec(elsewhere / "study.yaml", {"search_space": "../x.yaml"}, root, stage)


def test_the_real_upload_is_small(tmp_path: Path) -> None:
    root = _project_root()
    assert (root / "pyproject.toml").is_file()
    _copy_project(root, tmp_path / "stage", keep_out=[])
    files = [p for p in (tmp_path / "stage").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 50 * 2**20
    assert (tmp_path / "stage/study/cli/__init__.py").is_file()
    assert not any(part in (".venv", ".git", "__pycache__") for p in files for part in p.parts)


def test_launcher_config_is_valid_for_rays_launcher() -> None:
    from ray.autoscaler._private.util import validate_config

    config = yaml.safe_load((CONFIGS / "launcher.yaml").read_text())
    validate_config(config)  # Ray's own schema: unknown fields are refused
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    assert config["head_node_type"] == "head" and "gpu_worker" in types
    assert types["gpu_worker"]["node_config"]["InstanceType"] == "g5.xlarge"
    head = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "--dashboard-host=127.0.0.1" in head
    assert "RAY_AUTH_MODE=token" in " ".join(config["worker_start_ray_commands"])
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("-c constraints.txt ." in command for command in config["setup_commands"])
    assert ".venv" in config["rsync_exclude"]


def test_kuberay_config_has_a_gpu_group_and_token_auth() -> None:
    config = yaml.safe_load((CONFIGS / "kuberay.yaml").read_text())
    assert (config["apiVersion"], config["kind"]) == ("ray.io/v1", "RayCluster")
    spec = config["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            secret = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert secret == {"name": "mtlstudy-ray-token", "key": "auth_token"}
    (gpu,) = spec["workerGroupSpecs"]
    (worker,) = gpu["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1


# --- against a local head with token authentication ------------------------------------


@dataclass(frozen=True)
class Head:
    address: str
    token: str
    token_path: Path

    def env(self, **extra: str) -> dict[str, str]:
        """A client environment whose token comes from Ray's RAY_AUTH_TOKEN_PATH."""
        return {**_clean_env(), "RAY_AUTH_TOKEN_PATH": str(self.token_path), **extra}

    def client(self) -> JobSubmissionClient:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers={"authorization": f"Bearer {self.token}"})


def _started_by(tmp: Path) -> list[int]:
    """Processes whose RAY_TMPDIR is ours: what the head started, wherever they went."""
    marker = f"RAY_TMPDIR={tmp}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


def _stop_head(proc: subprocess.Popen[bytes], tmp: Path) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group only; GCS may outlive `ray start`
    proc.wait(timeout=30)
    for pid in _started_by(tmp):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_for_jobs_api(url: str, token: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import requests

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            answer = requests.get(
                f"{url}/api/jobs/", headers={"authorization": f"Bearer {token}"}, timeout=5
            )
            if answer.status_code == 200:
                return
        time.sleep(1)
    pytest.fail(f"the Jobs API at {url} did not answer in 180 s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # Ray's socket paths must be short
    token = secrets.token_hex(32)
    token_path = tmp / "auth_token"
    token_path.write_text(token)
    token_path.chmod(0o600)
    env = {
        **_clean_env(),
        "RAY_TMPDIR": str(tmp),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
        # The job's entrypoint runs `python` from the head's PATH: this venv's.
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    dashboard = _free_port()
    command = [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--num-cpus",
        "2",
        "--include-dashboard",
        "true",
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dashboard),
        "--port",
        str(_free_port()),
        "--ray-client-server-port",
        str(_free_port()),
        "--dashboard-agent-listen-port",
        str(_free_port()),
        "--dashboard-agent-grpc-port",
        str(_free_port()),
        "--runtime-env-agent-port",
        str(_free_port()),
        "--metrics-export-port",
        str(_free_port()),
    ]
    log_path = tmp / "head.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_jobs_api(url, token, proc, log_path)
        yield Head(address=url, token=token, token_path=token_path)
    finally:
        _stop_head(proc, tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _no_token_in(head: Head, *done: subprocess.CompletedProcess[str]) -> None:
    for one in done:
        assert head.token not in one.stdout and head.token not in one.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_submit_runs_a_study_that_jobs_commands_follow(head: Head, tmp_path: Path) -> None:
    results = tmp_path / "results"
    spec = tmp_path / "jobtest.yaml"  # outside the project: shipped in _submitted/
    spec.write_text(SPEC.format(name="jobtest", train=8, epochs=1, results=results))
    submitted = _mtlstudy("submit", str(spec), "--address", head.address, env=head.env())
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.splitlines()[0]
    assert job_id.startswith("jobtest-")
    assert f"mtlstudy jobs logs {job_id} --follow --address {head.address}" in submitted.stdout
    assert submitted.stderr == ""

    follow = _mtlstudy(
        "jobs", "logs", job_id, "--follow", "--address", head.address, env=head.env(), timeout=600
    )
    assert follow.returncode == 0, follow.stderr
    assert "1 multi-task trials finished, 0 failed" in follow.stdout, follow.stdout[-3000:]
    status = _mtlstudy("jobs", "status", job_id, "--address", head.address, env=head.env())
    assert status.returncode == 0 and status.stdout.splitlines()[0] == "SUCCEEDED", status
    logs = _mtlstudy("jobs", "logs", job_id, "--address", head.address, env=head.env())
    assert "multi-task trials" in logs.stdout and "_submitted/jobtest.yaml" in logs.stdout
    listing = _mtlstudy("jobs", "list", "--address", head.address, env=head.env())
    (row,) = [line.split() for line in listing.stdout.splitlines() if line.startswith(job_id)]
    assert row[1:3] == ["SUCCEEDED", "jobtest"]

    trials = list((results / "jobtest" / "trials").glob("*.parquet"))
    assert len(trials) == 1

    # Submitted again under its name, the study resumes: its trial is not run twice.
    again = _mtlstudy("submit", str(spec), "--address", head.address, env=head.env())
    assert again.returncode == 0, again.stderr
    second = again.stdout.splitlines()[0]
    resumed = _mtlstudy(
        "jobs", "logs", second, "--follow", "--address", head.address, env=head.env(), timeout=600
    )
    assert "1 multi-task trials finished, 0 failed" in resumed.stdout, resumed.stdout[-3000:]
    assert sorted((results / "jobtest" / "trials").glob("*.parquet")) == sorted(trials)
    _no_token_in(head, submitted, follow, status, logs, listing, again, resumed)
    for path in results.rglob("*"):
        if path.is_file():
            assert head.token.encode() not in path.read_bytes(), path


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_jobs_stop_stops_a_running_study(head: Head, tmp_path: Path) -> None:
    spec = tmp_path / "jobstop.yaml"
    spec.write_text(SPEC.format(name="jobstop", train=64, epochs=200, results=tmp_path / "r"))
    submitted = _mtlstudy("submit", str(spec), "--address", head.address, env=head.env())
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.splitlines()[0]
    client = head.client()
    _wait_for(lambda: "searching" in client.get_job_logs(job_id), 300, "the study to start")

    stopped = _mtlstudy("jobs", "stop", job_id, "--address", head.address, env=head.env())
    assert stopped.returncode == 0 and f"stop requested for {job_id}" in stopped.stdout
    _wait_for(lambda: str(client.get_job_status(job_id).value) == "STOPPED", 120, "STOPPED")
    status = _mtlstudy("jobs", "status", job_id, "--address", head.address, env=head.env())
    assert status.stdout.splitlines()[0] == "STOPPED"
    again = _mtlstudy("jobs", "stop", job_id, "--address", head.address, env=head.env())
    assert again.returncode == 0 and "had already ended: STOPPED" in again.stdout
    assert head.token not in client.get_job_logs(job_id)
    _no_token_in(head, submitted, stopped, status, again)


@pytest.mark.slow
def test_wrong_or_missing_token_is_one_line_and_never_shown(head: Head, tmp_path: Path) -> None:
    before = len(head.client().list_jobs())
    wrong = head.env(RAY_AUTH_TOKEN=secrets.token_hex(32))  # RAY_AUTH_TOKEN wins over the path
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(name="x", train=8, epochs=1, results=tmp_path / "results"))
    runs = [
        _mtlstudy("jobs", "list", "--address", head.address, env=wrong),
        _mtlstudy("submit", str(spec), "--address", head.address, env=wrong),
    ]
    for done in runs:
        _one_line_error(done, f"the Ray cluster at {head.address} rejected the authentication")
    assert len(head.client().list_jobs()) == before  # nothing was submitted

    missing = {**_clean_env(), "HOME": str(tmp_path)}  # no RAY_AUTH_TOKEN(_PATH), no ~/.ray
    runs.append(_mtlstudy("jobs", "list", "--address", head.address, env=missing))
    _one_line_error(runs[-1], "requires an authentication token and none was found")
    unreadable = head.env(RAY_AUTH_TOKEN_PATH=str(tmp_path / "no-such-token"))
    runs.append(_mtlstudy("jobs", "list", "--address", head.address, env=unreadable))
    _one_line_error(runs[-1], "RAY_AUTH_TOKEN_PATH is set, but")
    runs.append(_mtlstudy("jobs", "status", "nosuch-1", "--address", head.address, env=head.env()))
    _one_line_error(runs[-1], f"no job 'nosuch-1' on the Ray cluster at {head.address}")
    _no_token_in(head, *runs)
