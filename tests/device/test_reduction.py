"""Epoch sums across a trial's workers: NCCL reduces on the GPU and gloo where the tensor
is; either way the sum comes back on the tensor's own device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from study.run._engine import all_reduced, reduction_device


def test_nccl_reduces_on_the_gpu_and_gloo_where_the_tensor_is(stand_in: Any) -> None:
    cpu = torch.device("cpu")
    assert reduction_device("nccl", cpu) == torch.device("cuda")  # NCCL refuses CPU tensors
    assert reduction_device("nccl", torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert reduction_device("gloo", cpu) == cpu
    assert reduction_device("gloo", stand_in.device) == stand_in.device


def test_one_worker_gives_the_tensor_itself(stand_in: Any) -> None:
    total = stand_in.put(torch.tensor([1.0, 2.0]))
    assert all_reduced(total, mean=True) is total


def _worker(rank: int, store: str, out: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2
    )
    try:
        total = torch.tensor([1.0, 2.0], dtype=torch.float64) * (rank + 1)
        summed, mean = all_reduced(total), all_reduced(total, mean=True)
        torch.save({"total": total, "sum": summed, "mean": mean}, f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def test_gloo_sums_and_means_across_two_workers(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    # Spawned: a forked worker would inherit this process's group, if a test made one.
    mp.spawn(_worker, args=(str(tmp_path / "store"), out), nprocs=2)
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        assert got["total"].tolist() == [rank + 1.0, 2.0 * (rank + 1)]  # left as it was
        assert got["sum"].tolist() == [3.0, 6.0] and got["mean"].tolist() == [1.5, 3.0]
        assert got["sum"].device.type == "cpu" and got["sum"].dtype == torch.float64
