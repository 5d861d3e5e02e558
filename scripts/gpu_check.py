"""The GPU check's driver: gpu-marked tests, one short training of each architecture
through the trial runner (no Ray), and bench step for VMM in bf16; figures to a JSON file.

Run by scripts/gpu_check.sh, which makes the wheels in .whl/ importable first. Exits 2
with one line when torch sees no GPU, 1 when any part failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import json
import platform
import sys
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: Packages the trial path must not need. A missing one imported anyway is recorded with
#: its importer; those a synthetic trial imports but never calls get an empty stand-in.
WATCHED = ("ray", "optuna", "scipy")
STAND_INS = {
    "scipy": "study/data's on-disk formats read .mat files with it; synthetic scenes do not",
}

#: (architecture, method, precision on the GPU): a gradient-level method (MGDA's task
#: Gramian, loss-scaled under fp16) on one of them; not RCM, whose shared banks are frozen,
#: so it has no shared parameters to take it over. The convolutional ones train channels-last
#: on the GPU by default. ``--tiny`` (the CPU rehearsal) trains all in fp32.
TRAININGS = (
    ("hard_sharing", "mgda", "fp16"),
    ("vmm", "ew", "bf16"),
    ("rcm_resnet", "ew", "fp32"),
    ("vit_sharing", "ew", "bf16"),
)


class _StandIn(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(
            spec.name, f"empty stand-in: {STAND_INS[spec.name.split('.')[0]]}"
        )
        module.__path__ = []  # a package, so `from scipy import io` finds a stand-in too
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class ImportGuard(importlib.abc.MetaPathFinder):
    """Records which module first imports each watched package; a missing one gets a
    stand-in when :data:`STAND_INS` allows, or fails naming its importer."""

    def __init__(self, missing: set[str]) -> None:
        self.missing = missing
        self.importers: dict[str, str] = {}

    def find_spec(
        self, name: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        top = name.partition(".")[0]
        if top not in WATCHED:
            return None
        importer = self.importers.setdefault(top, _importer())
        if top not in self.missing:
            return None
        if top in STAND_INS:
            return importlib.machinery.ModuleSpec(name, _StandIn(), is_package=True)
        raise ImportError(f"{name} is not installed here; imported by {importer}")


def _importer() -> str:
    """The innermost frame outside the import machinery and this file."""
    for frame in reversed(traceback.extract_stack()):
        if frame.filename.startswith("<frozen") or frame.filename == __file__:
            continue
        path = Path(frame.filename)
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    return "?"


def install_guard(missing: set[str] | None = None) -> ImportGuard:
    """Watch imports from now on; ``missing`` defaults to the watched packages not
    installed (a test may pretend more are)."""
    if missing is None:
        missing = {name for name in WATCHED if importlib.util.find_spec(name) is None}
    guard = ImportGuard(missing)
    sys.meta_path.insert(0, guard)
    return guard


def _part(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One part's figures, or its error as one line; each part runs whatever the others do."""
    print(f"gpu-check: {name} …", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        figures = {"ok": True, **run()}
    except Exception as err:  # a failed part is reported; the others still run
        traceback.print_exc()
        message = str(err).strip().splitlines()
        figures = {"ok": False, "error": f"{type(err).__name__}: {message[0] if message else ''}"}
    figures["wall_s"] = round(time.perf_counter() - started, 2)
    print(f"gpu-check: {name}: {'ok' if figures['ok'] else figures['error']}", file=sys.stderr)
    return figures


def gpu_tests() -> dict[str, Any]:
    import pytest

    # Only the files with gpu marks: collecting all of tests/ imports Ray and Optuna.
    files = sorted(
        str(p) for p in (ROOT / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text()
    )
    if not files:
        raise RuntimeError("no gpu-marked tests under tests/")
    code = pytest.main(
        ["-m", "gpu", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT), *files]
    )
    if code != 0:
        raise RuntimeError(f"pytest -m gpu exited {int(code)}")
    return {"files": [str(Path(f).relative_to(ROOT)) for f in files]}


def train(architecture: str, method: str, precision: str, tiny: bool) -> dict[str, Any]:
    import math

    import torch

    from study.run import TrialRunner, TrialSetup
    from study.spec import DatasetSpec, DeepSpeedSpec, StudySpec

    samples = 4 if tiny else 64
    spec = StudySpec(
        name=f"gpu-check-{architecture}",
        tasks=["semseg", "depth", "normals"],
        architecture=architecture,
        dataset=DatasetSpec(image_size=64, train_samples=samples, val_samples=samples // 2),
        batch_size=2 if tiny else 16,
        epochs=1,
        deepspeed=DeepSpeedSpec(precision="fp32" if tiny else precision),
        gpus_per_worker=0 if tiny else 1,  # fp16 is refused without GPUs
    )
    runner = TrialRunner(TrialSetup(spec=spec, tasks=tuple(spec.tasks)), {"method": method})
    report = runner.run_epoch()
    losses = {k: v for k, v in report.items() if k.startswith("train_loss/")}
    if not all(math.isfinite(v) for v in losses.values()):
        raise FloatingPointError(f"non-finite training losses {losses}")
    weight = next(runner.engine.module.parameters())
    kernels = [k for k in runner.engine.module.parameters() if k.dim() == 4 and k.shape[-1] > 1]
    channels_last = bool(kernels) and all(
        k.is_contiguous(memory_format=torch.channels_last) for k in kernels
    )
    return {
        "method": method,
        "precision": str(weight.dtype),
        "channels_last": channels_last,
        "device": str(weight.device),
        "epoch_time_s": round(report["epoch_time_s"], 3),
        "val_loss": report["val_loss"],
        **losses,
        "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)
        if torch.cuda.is_available()
        else None,
    }


def bench_step(tiny: bool, precision: str) -> dict[str, Any]:
    from study.bench.step import measure_step

    if tiny:  # the CPU trains in fp32 only
        return measure_step("vmm", batch_size=2, image_size=32, steps=2, warmup=1)
    return measure_step(
        "vmm", batch_size=32, image_size=256, steps=30, warmup=5, precision=precision
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="gpu-check.json", help="the figures' JSON file")
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="without a GPU, run every part tiny on the CPU (to try the script; no figures)",
    )
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    guard = install_guard()
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(
            "gpu-check: no GPU visible to torch (torch.cuda.is_available() is False)",
            file=sys.stderr,
        )
        return 2
    tiny = not torch.cuda.is_available()
    figures: dict[str, Any] = {
        "ok": False,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "missing": sorted(guard.missing),
        "stand_ins": {n: STAND_INS[n] for n in sorted(guard.missing & set(STAND_INS))},
        "imported_by": {},
        "parts": {},
    }
    parts: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
        "gpu_tests": ("pytest -m gpu", gpu_tests)
    }
    for architecture, method, precision in TRAININGS:
        parts[f"train/{architecture}"] = (
            f"train {architecture} ({method}, {precision})",
            lambda a=architecture, m=method, p=precision: train(a, m, p, tiny),  # type: ignore[misc]
        )
    for precision in ("bf16", "fp16"):
        parts[f"bench_step/vmm/{precision}"] = (
            f"bench step vmm {precision}",
            lambda p=precision: bench_step(tiny, p),  # type: ignore[misc]
        )
    for key, (title, run) in parts.items():
        figures["parts"][key] = _part(title, run)
        # Who imported each watched package first ("" where nothing did).
        figures["imported_by"] = {n: guard.importers.get(n, "") for n in WATCHED}
        figures["ok"] = all(p["ok"] for p in figures["parts"].values()) and len(
            figures["parts"]
        ) == len(parts)
        # After every part, so a run stopped by the time limit leaves what it measured.
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    ok = figures["ok"]
    print(f"gpu-check: {'ok' if ok else 'FAILED'}; figures in {args.out}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
