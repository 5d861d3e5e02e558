"""Hostile or mistyped specs: each is one short SpecError line naming the problem, at once."""

import os
import time
from pathlib import Path

import pytest
import torch

from search_spaces import MAX_MESSAGE
from study.spec import SpecError, load_spec

VALID = "name: s1\ntasks: [semseg, depth]\ntrials: 4\n"
VIT = (
    "name: s1\ntasks: [semseg, depth]\narchitecture: vit_sharing\nsearch_space: vit_sharing\n"
    "baselines: none\n"
)


def _refused(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "spec.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert time.perf_counter() - start < 2.0
    message = str(caught.value)
    assert "\n" not in message and len(message) <= MAX_MESSAGE, message
    return message


def _bomb(levels: int) -> str:
    lines = ['l0: &l0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nname: *l{levels - 1}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VALID + "model: {backbone: 5}\n", "field 'model.backbone': expected the name"),
        (VALID + "model: {backbone: [a]}\n", "field 'model.backbone': "),
        ((VALID + "# caf\xe9\n").encode("latin-1"), "not UTF-8 text (byte 0xe9"),
        (VALID + "model: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than"),
        (VALID + "model: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n", "nested more than"),
        (VALID.replace("trials: 4", "trials: " + "9" * 5000), "integer of 5000 digits"),
        (VALID + "search_space: " + "a" * 300 + "\n", "field 'search_space'"),
        (VALID + "search_space: " + "a" * 300 + ".yaml\n", "field 'search_space'"),
        (VIT + "model: {patch_size: 0}\n", "patch_size must be a positive integer"),
        (VIT + "model: {patch_size: -4}\n", "patch_size must be a positive integer"),
        (_bomb(9), "expands to more than"),
        (VALID + "x: &a [*a]\n", "recursive alias"),
        (
            VALID
            + "".join(f"k{i}: &k{i} 1\n" for i in range(150))
            + "ks: ["
            + ",".join(f"*k{i}" for i in range(150))
            + "]\n",
            "more than 100 aliases",
        ),
        (VALID + "seed: -1\n", "field 'seed'"),
        (VALID + "seed: 4294967296\n", "field 'seed'"),
        (VALID + "seed: 4294967295\nrepeats: 2\nscheduler: {name: fifo}\n", "seeds past"),
        (VALID + "cpus_per_trial: .inf\n", "field 'cpus_per_trial': expected a finite number"),
        (VALID + "cpus_per_trial: inf\n", "field 'cpus_per_trial'"),
        (VALID + "cpus_per_trial: 1.0e+999\n", "field 'cpus_per_trial': expected a finite"),
        (VALID + "model: {head_channels: .nan}\n", "'model.head_channels': expected a finite"),
        (VALID + "potentials: {semseg: .nan}\n", "field 'potentials.semseg'"),
        (VALID + "dataset: {train_samples: 1.0e29}\n", "field 'dataset.train_samples'"),
        (VALID + "dataset: {train_samples: 1e29}\n", "field 'dataset.train_samples'"),
        (VALID + "epochs: 10000000000\n", "field 'epochs'"),
        (VALID + "batch_size: 10000000\n", "field 'batch_size'"),
        (VALID + "concurrency: 100000000\n", "field 'concurrency'"),
        (VALID + "model: {head_channels: 1000000}\n", "parameters; expected at most"),
        (VALID + "name: " + "n" * 100_000 + "\n", "field 'name'"),
        (VALID + "results: ''\n", "field 'results'"),
        (VALID + 'results: "a\\nb"\n', "field 'results'"),
        (VALID + 'results: "a\\x07b"\n', "field 'results'"),
        (VALID + "results: /etc\n", "system folder"),
        (VALID + "results: /\n", "system folder"),
        (VALID + "results: /usr\n", "system folder"),
    ],
)
def test_bad_spec_is_one_line(tmp_path: Path, text: str | bytes, expected: str) -> None:
    assert expected in _refused(tmp_path, text)


def test_a_spec_over_a_megabyte_is_refused(tmp_path: Path) -> None:
    message = _refused(tmp_path, VALID + "#" + "x" * 1_000_001 + "\n")
    assert "at most 1000000" in message


def test_pretrained_path_must_be_weights(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00not weights at all")
    message = _refused(tmp_path, VALID + f"model: {{pretrained_path: {junk}}}\n")
    assert "field 'model.pretrained_path'" in message and "not a torch state dict" in message
    torch.save({"a": 1}, tmp_path / "plain.pt")
    message = _refused(tmp_path, VALID + f"model: {{pretrained_path: {tmp_path}/plain.pt}}\n")
    assert "holds no state dict" in message
    message = _refused(tmp_path, VALID + f"model: {{pretrained_path: {tmp_path}/none.pt}}\n")
    assert "not found" in message


def test_results_must_be_a_folder_the_user_can_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("x")
    assert "is a file" in _refused(tmp_path, VALID + f"results: {tmp_path}/file\n")
    assert "is a file" in _refused(tmp_path, VALID + f"results: {tmp_path}/file/sub\n")
    # Root may write anywhere, so the permission is what the check is told.
    with monkeypatch.context() as patch:
        patch.setattr(os, "access", lambda *args, **kwargs: False)
        assert "may not" in _refused(tmp_path, VALID + f"results: {tmp_path}/out\n")
    path = tmp_path / "spec.yaml"
    path.write_text(VALID + f"results: {tmp_path}/new/deeper\n")
    assert load_spec(path)[0].results == f"{tmp_path}/new/deeper"
    path.write_text(VALID + "results: s3://bucket/studies\n")
    assert load_spec(path)[0].results == "s3://bucket/studies"


def test_largest_seed_loads(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(VALID + "seed: 4294967295\n")
    assert load_spec(path)[0].seed == 2**32 - 1
