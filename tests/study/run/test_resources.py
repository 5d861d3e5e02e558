"""GPUs in the spec, in what trials ask Ray for, in the refusal of a cluster without
them, and in the device and process-group backend a trial's process picks."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import torch

from study.errors import UserError
from study.run import _engine
from study.run._engine import CPU_FALLBACK, process_group_backend, trial_device
from study.run._phases import ClusterTooSmall, _concurrency, check_gpus
from study.run._setup import TrialSetup
from study.run._trainable import trainable, worker_scaling
from study.spec import StudySpec, load_spec

ROOT = Path(__file__).resolve().parents[3]


def _spec(**fields: object) -> StudySpec:
    return StudySpec(name="gpus", tasks=["semseg", "depth"], **fields)


def test_gpus_per_worker_loads_from_a_spec_file_and_is_documented(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("name: g\ntasks: [semseg, depth]\ngpus_per_worker: 1\n")
    spec, _ = load_spec(path)
    assert spec.gpus_per_worker == 1.0
    assert _spec().gpus_per_worker == 0.0
    rows = [
        r for r in (ROOT / "docs" / "SPEC.md").read_text().splitlines() if "gpus_per_worker" in r
    ]
    assert rows and rows[0].startswith("| `gpus_per_worker` | float ≥ 0, ≤ 64 | `0.0` |")


@pytest.mark.parametrize("gpus", [0.25, 0.5, 1, 2, 8])
def test_shares_and_whole_gpus_validate(gpus: float) -> None:
    assert _spec(gpus_per_worker=gpus).gpus_per_worker == gpus


@pytest.mark.parametrize(
    ("gpus", "message"),
    [
        (-1, "greater than or equal to 0"),
        (65, "less than or equal to 64"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (1.5, "above 1, expected a whole number"),
        (0.00001, "at most 4 decimals"),
    ],
)
def test_gpus_ray_cannot_give_are_refused(gpus: float, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="gpus_per_worker") as err:
        _spec(gpus_per_worker=gpus)
    assert message in str(err.value)


def _bundle(function: object) -> dict[str, float]:
    (bundle,) = function._resources.bundles  # type: ignore[attr-defined]
    return bundle


def test_a_single_worker_trial_asks_tune_for_its_cpus_and_gpus() -> None:
    spec = _spec(cpus_per_trial=2, gpus_per_worker=0.5)
    assert _bundle(trainable(TrialSetup(spec=spec, tasks=("semseg", "depth")))) == {
        "CPU": 2.0,
        "GPU": 0.5,
    }
    cpu_only = trainable(TrialSetup(spec=_spec(), tasks=("semseg", "depth")))
    assert _bundle(cpu_only) == {"CPU": 1.0}


def test_a_multi_worker_trial_asks_ray_train_for_each_workers_gpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CPU_FALLBACK, raising=False)
    spec = _spec(workers_per_trial=2, cpus_per_trial=1, gpus_per_worker=1)
    # The trial's own process only waits for its workers: it asks for no GPU.
    assert "GPU" not in _bundle(trainable(TrialSetup(spec=spec, tasks=("semseg",))))
    scaling, torch_config = worker_scaling(spec)
    assert scaling.num_workers == 2 and scaling.use_gpu
    assert scaling.resources_per_worker == {"CPU": 1.0, "GPU": 1.0}
    assert torch_config.backend == "nccl"
    monkeypatch.setenv(CPU_FALLBACK, "1")
    assert worker_scaling(spec)[1].backend == "gloo"
    scaling, torch_config = worker_scaling(_spec(workers_per_trial=2))
    assert not scaling.use_gpu and scaling.resources_per_worker == {"CPU": 1.0}
    assert torch_config.backend == "gloo"


ONE_NODE = [{"CPU": 8.0, "GPU": 2.0}]


@pytest.mark.parametrize(
    ("fields", "total", "nodes", "message"),
    [
        (
            {"gpus_per_worker": 1},
            {"CPU": 8.0},
            [{"CPU": 8.0}],
            "field 'gpus_per_worker': the spec asks for 1 GPU per worker, but the cluster "
            "has none; set gpus_per_worker: 0 or use a cluster with GPUs",
        ),
        (
            {"gpus_per_worker": 2},
            {"CPU": 8.0, "GPU": 2.0},
            [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}],
            "field 'gpus_per_worker': the spec asks for 2 GPUs per worker, but no node has "
            "more than 1 GPU; lower gpus_per_worker or use larger nodes",
        ),
        (
            {"gpus_per_worker": 1, "workers_per_trial": 3},
            {"CPU": 8.0, "GPU": 2.0},
            ONE_NODE,
            "field 'gpus_per_worker': the spec asks for 1 GPU per worker and 3 workers per "
            "trial (3 GPUs), but the cluster has 2 GPUs; lower workers_per_trial or "
            "gpus_per_worker",
        ),
    ],
)
def test_a_cluster_short_of_gpus_is_refused_in_one_line(
    fields: dict[str, float], total: dict[str, float], nodes: list[dict[str, float]], message: str
) -> None:
    with pytest.raises(ClusterTooSmall) as err:
        check_gpus(_spec(**fields), total, nodes)
    assert str(err.value) == message
    assert isinstance(err.value, UserError)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"gpus_per_worker": 0.5},
        {"gpus_per_worker": 2},
        {"gpus_per_worker": 1, "workers_per_trial": 2},
    ],
)
def test_a_cluster_that_fits_a_trial_passes(fields: dict[str, float]) -> None:
    check_gpus(_spec(**fields), {"CPU": 8.0, "GPU": 2.0}, ONE_NODE)
    if not fields:  # asking for no GPU passes on a cluster without any
        check_gpus(_spec(), {"CPU": 8.0}, [{"CPU": 8.0}])


def _granted(monkeypatch: pytest.MonkeyPatch, ids: list[str] | None, cuda: bool) -> None:
    monkeypatch.setattr(_engine, "granted_gpus", lambda: ids)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)


def test_a_trial_granted_no_gpu_trains_on_the_cpu_even_where_cuda_is_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _granted(monkeypatch, [], cuda=True)
    assert trial_device() == torch.device("cpu")
    assert process_group_backend(trial_device()) == "gloo"


@pytest.mark.parametrize(
    ("granted", "visible", "device"),
    [
        ("3", "3", 0),  # a Tune trial: Ray made its GPU the only visible one
        ("5", "4,5", 1),  # the second of two Ray Train workers on a node
        ("2", None, 2),  # Ray told to leave CUDA_VISIBLE_DEVICES alone
    ],
)
def test_a_granted_gpu_is_its_cuda_device_with_nccl(
    monkeypatch: pytest.MonkeyPatch, granted: str, visible: str | None, device: int
) -> None:
    _granted(monkeypatch, [granted], cuda=True)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert trial_device() == torch.device("cuda", device)
    assert process_group_backend(trial_device()) == "nccl"


def test_a_granted_gpu_hidden_from_the_process_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    _granted(monkeypatch, ["1"], cuda=True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(RuntimeError, match="GPU 1, not in CUDA_VISIBLE_DEVICES='0'"):
        trial_device()


def test_a_granted_gpu_without_cuda_fails_unless_the_test_switch_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CPU_FALLBACK, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    _granted(monkeypatch, ["1"], cuda=False)
    with pytest.raises(RuntimeError, match=r"granted this trial GPU 1 but CUDA sees no device"):
        trial_device()
    monkeypatch.setenv(CPU_FALLBACK, "1")
    assert trial_device() == torch.device("cpu")


def test_outside_ray_a_visible_gpu_is_used_at_the_local_rank(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCAL_RANK", "1")
    _granted(monkeypatch, None, cuda=True)
    assert trial_device() == torch.device("cuda", 1)
    _granted(monkeypatch, None, cuda=False)
    assert trial_device() == torch.device("cpu")


def test_multi_worker_trials_at_a_time_fit_the_clusters_gpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("ray.cluster_resources", lambda: {"CPU": 16.0, "GPU": 4.0})
    spec = _spec(concurrency=8, workers_per_trial=2, gpus_per_worker=1)
    assert _concurrency(spec) == 2  # the CPUs alone would fit 8
    assert _concurrency(_spec(concurrency=8, workers_per_trial=2)) == 8
