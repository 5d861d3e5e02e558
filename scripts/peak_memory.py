"""Run a command and report the peak memory of its whole process tree (Ray's GCS, raylet,
trial workers and their children included), sampled every ``--interval`` seconds.

    python scripts/peak_memory.py -- mtlstudy demo --results /tmp/demo

Two sums per sample: RSS (each process's resident pages, so libraries that processes
share are counted once per process) and PSS (shared pages split among the processes
sharing them: what the tree adds to the machine). The peaks of both sums, the largest
single process and the wall time are printed as JSON on stderr at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _sample(processes: list[psutil.Process]) -> tuple[int, int, tuple[int, str]]:
    rss = pss = 0
    largest = (0, "")
    for process in processes:
        try:
            info = process.memory_full_info()
            name = " ".join(process.cmdline()[:3])[:80]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        rss += info.rss
        pss += info.pss
        largest = max(largest, (info.rss, name))
    return rss, pss, largest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="after --: the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given; put it after --")
    started = time.perf_counter()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    peak_rss = peak_pss = 0
    largest = (0, "")
    processes = 0
    while child.poll() is None:
        tree = _tree(root)
        rss, pss, big = _sample(tree)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        largest = max(largest, big)
        processes = max(processes, len(tree))
        time.sleep(args.interval)
    gib = 2**30
    figures = {
        "command": " ".join(command),
        "exit_status": child.returncode,
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_sum_gib": round(peak_rss / gib, 2),
        "peak_pss_sum_gib": round(peak_pss / gib, 2),
        "largest_process_gib": round(largest[0] / gib, 2),
        "largest_process": largest[1],
        "most_processes": processes,
    }
    print(json.dumps(figures, indent=2), file=sys.stderr)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
