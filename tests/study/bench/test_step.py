"""bench step times a trial's step and a plain loop's on the same model; on a GPU it also
reports the share of the device's peak."""

import json

import pytest
import torch

from study.bench.step import peak_tflops
from study.cli import main

TINY = ["--steps", "2", "--warmup", "1", "--batch-size", "2", "--image-size", "32"]


def _step(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["bench", "step", *TINY, *args, "--json"]) == 0
    out = capsys.readouterr().out
    # In-process, DeepSpeed's logger writes to pytest's stdout, above the figures; a real
    # run sends it to stderr.
    return json.loads(out[out.index("{\n") :])


def test_step_on_the_cpu(capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    if torch.cuda.is_available():
        pytest.skip("measures the CPU path; test_step_on_the_gpu covers a GPU")
    figures = _step(capsys)
    assert figures["device"] == "cpu" and figures["precision"] == "fp32"
    assert figures["images_per_s"] > 0 and figures["plain_images_per_s"] > 0
    assert figures["ratio"] > 0
    assert figures["ratio"] == pytest.approx(
        figures["images_per_s"] / figures["plain_images_per_s"], rel=0.01
    )
    assert figures["forward_gflops_per_image"] > 0
    assert figures["mfu"] is None and figures["peak_tflops"] is None


def test_table_without_json(capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    assert main(["bench", "step", *TINY, "--steps", "1", "--method", "mgda"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[2:4]] == ["trial", "plain"]
    assert lines[-1].startswith("ratio")


def test_unknown_architecture_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "step", "--architecture", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown architecture 'nope'" in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's refusal")
def test_fp16_without_a_gpu_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "step", "--precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fp16 needs a GPU" in err[0]


def test_peaks_by_device_name() -> None:
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("NVIDIA GeForce RTX 4090") is None


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_step_on_the_gpu(capsys: pytest.CaptureFixture[str], precision: str) -> None:
    figures = _step(capsys, "--architecture", "vmm", "--precision", precision)
    assert figures["precision"] == precision
    assert figures["device"] == torch.cuda.get_device_name()
    assert figures["ratio"] > 0
    if figures["peak_tflops"] is not None:
        assert 0 < figures["mfu"] < 1
