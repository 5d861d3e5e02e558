"""Start-up cost of the command line: each verb run in a fresh process, as a user runs it,
with its wall time and peak memory (the process's maximum resident set; Linux only)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from study.bench.query import write_synthetic_store

__all__ = ["format_table", "measure_startup"]

#: The verbs timed, with ``{store}`` standing for a small synthetic results store.
VERBS: dict[str, tuple[str, ...]] = {
    "--help": ("--help",),
    "query --help": ("query", "--help"),
    "methods": ("methods",),
    "query": ("query", "{store}", "--format", "csv"),
    "report": ("report", "{store}", "--out", "{out}/report.html"),
}


#: ``python -c`` code running the CLI as ``python -m study.cli`` does, that writes the
#: process's peak RSS (Linux's VmHWM, KiB) to the file named by its first argument. The
#: parent's own peak cannot be used: a forked child's starts from the parent's memory.
_WITH_PEAK = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def _peak():
    with open("/proc/self/status") as status, open(out, "w") as f:
        f.write(next(line for line in status if line.startswith("VmHWM:")).split()[1])
atexit.register(_peak)
runpy.run_module("study.cli", run_name="__main__", alter_sys=True)
"""


def _run(argv: list[str], peak_file: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``mtlstudy ARGV`` in a fresh interpreter."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _WITH_PEAK, str(peak_file), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"mtlstudy {' '.join(argv)} failed: {done.stderr.strip()[-300:]}")
    return wall, int(peak_file.read_text()) / 1024


def measure_startup(rounds: int = 3, trials: int = 2_000) -> dict[str, Any]:
    """Median and best wall time and the peak memory of each verb in :data:`VERBS`, over
    ``rounds`` fresh processes; ``query`` and ``report`` read a store of ``trials`` rows."""
    if rounds < 1 or trials < 1:
        raise ValueError("expected rounds >= 1 and trials >= 1")
    load_before = os.getloadavg()[0]
    verbs: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="mtlstudy-bench-startup-") as tmp:
        store = Path(tmp) / "results"
        write_synthetic_store(store, trials=trials, history=trials, files=6)
        for name, template in VERBS.items():
            argv = [arg.format(store=store, out=tmp) for arg in template]
            runs = [_run(argv, Path(tmp) / "peak") for _ in range(rounds)]
            walls = [wall for wall, _ in runs]
            verbs[name] = {
                "median_s": statistics.median(walls),
                "min_s": min(walls),
                "peak_rss_mib": max(rss for _, rss in runs),
            }
    return {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}",
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
        "rounds": rounds,
        "store_trials": trials,
        "verbs": verbs,
    }


def format_table(figures: dict[str, Any]) -> str:
    """One row per verb: median and best wall time, and peak memory."""
    load = figures["load_average"]
    lines = [
        figures["machine"],
        f"load average {load['before']:.1f} before, {load['after']:.1f} after; "
        f"{figures['rounds']} fresh processes per verb; store of {figures['store_trials']:,} "
        "trials",
        f"{'verb':16s}{'median s':>10s}{'min s':>8s}{'peak MiB':>10s}",
    ]
    for name, cell in figures["verbs"].items():
        lines.append(
            f"{name:16s}{cell['median_s']:10.2f}{cell['min_s']:8.2f}{cell['peak_rss_mib']:10.0f}"
        )
    return "\n".join(lines)
