"""A resume unpickles only checkpoints this study signed: a changed file, an unsigned one
and a pickle that runs code are refused before anything is loaded; an honest one resumes."""

from pathlib import Path

import pytest
import torch

from search_spaces import load_space
from study.run import TrialRunner, TrialSetup
from study.spec import DatasetSpec, StudySpec
from study.store import (
    KEY_ENV,
    SECRET_DIR_ENV,
    CheckpointRefused,
    sign_checkpoint,
    study_key,
    verify_checkpoint,
)


class _Payload:
    """Unpickled, it writes a marker file: what an attacker's checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _malicious(path: Path, marker: Path) -> None:
    torch.save({"epoch": 1, "balancer": _Payload(marker)}, path)


@pytest.fixture(autouse=True)
def _own_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_DIR_ENV, str(tmp_path / "secret"))
    monkeypatch.delenv(KEY_ENV, raising=False)


def test_the_payload_is_real(tmp_path: Path) -> None:
    # The attack the checks below stop: an unchecked, unrestricted load runs the payload.
    marker = tmp_path / "marker"
    _malicious(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.read_text() == "ran"


def test_secret_is_private_and_keys_differ_per_study(tmp_path: Path) -> None:
    first = study_key("a")
    secret = tmp_path / "secret" / "checkpoint.key"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o700
    assert study_key("a") == first != study_key("b")


def _checkpoint(folder: Path) -> Path:
    (folder / "engine").mkdir(parents=True)
    torch.save({"w": torch.ones(3)}, folder / "engine" / "model.pt")
    torch.save({"epoch": 2}, folder / "trial_state.pt")
    (folder / ".metadata.json").write_text("{}")  # Ray's own, never unpickled by a resume
    sign_checkpoint(folder, study_key("s"), writer=0)
    return folder


def test_signed_checkpoint_verifies(tmp_path: Path) -> None:
    verify_checkpoint(_checkpoint(tmp_path / "ckpt"), study_key("s"))


def test_changed_added_or_unsigned_files_are_refused(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path / "ckpt")
    with pytest.raises(CheckpointRefused, match="signature does not match"):
        verify_checkpoint(folder, study_key("another study"))
    model = folder / "engine" / "model.pt"
    data = bytearray(model.read_bytes())
    data[-30] ^= 1
    model.write_bytes(bytes(data))
    with pytest.raises(CheckpointRefused, match=f"^refusing to resume from {model}: its sign"):
        verify_checkpoint(folder, study_key("s"))

    folder = _checkpoint(tmp_path / "added")
    (folder / "engine" / "extra.pt").write_bytes(b"x")
    with pytest.raises(CheckpointRefused, match="extra.pt: it carries no signature"):
        verify_checkpoint(folder, study_key("s"))

    folder = _checkpoint(tmp_path / "unsigned")
    for signatures in folder.glob("mtlstudy-signatures.*"):
        signatures.unlink()
    with pytest.raises(CheckpointRefused, match="no signature"):
        verify_checkpoint(folder, study_key("s"))


def test_a_rank_signs_its_own_files(tmp_path: Path) -> None:
    # Ranks of one trial write into one checkpoint; each file is signed by the rank that wrote it.
    folder = _checkpoint(tmp_path / "ckpt")
    (folder / "engine" / "rank1.pt").write_bytes(b"rank one")
    sign_checkpoint(folder, study_key("s"), writer=1)
    verify_checkpoint(folder, study_key("s"))


# ------------------------------------------------------------------ a real trial's resume


@pytest.fixture(scope="module")
def setup() -> TrialSetup:
    spec = StudySpec(
        name="signed",
        tasks=["semseg", "depth"],
        dataset=DatasetSpec(image_size=32, train_samples=16, val_samples=16),
        model={"backbone": "regnetx_002"},
        batch_size=16,
        epochs=2,
        baselines="none",
    )
    return TrialSetup(spec=spec, tasks=tuple(spec.tasks))


def _config() -> dict:
    config = load_space("default").default_config("dwa")
    config["model"]["head_channels"] = 8
    return config


def test_a_trial_resumes_only_from_its_own_checkpoint(
    setup: TrialSetup, tmp_path: Path, one_thread: None
) -> None:
    runner = TrialRunner(setup, _config())
    runner.run_epoch()
    honest = tmp_path / "honest"
    runner.save(honest)
    resumed = TrialRunner(setup, _config())
    resumed.restore(honest)  # an honest resume still works
    assert resumed.epoch == 1

    # A file changed after saving: DeepSpeed's part is refused before it is read.
    changed = tmp_path / "changed"
    runner.save(changed)
    engine_file = sorted((changed / "engine").glob("*.pt"))[0]
    engine_file.write_bytes(engine_file.read_bytes() + b"\0")
    with pytest.raises(CheckpointRefused, match=f"refusing to resume from {engine_file}"):
        TrialRunner(setup, _config()).restore(changed)

    # A pickle that runs code when loaded, in place of the trial's state: never unpickled.
    marker = tmp_path / "marker"
    evil = tmp_path / "evil"
    runner.save(evil)
    _malicious(evil / "trial_state.pt", marker)
    with pytest.raises(CheckpointRefused, match="trial_state.pt: its signature does not match"):
        TrialRunner(setup, _config()).restore(evil)
    assert not marker.exists()

    # Even signed with the study's key, the trial's state loads as tensors and containers only.
    sign_checkpoint(evil, study_key(setup.spec.name), writer=0)
    with pytest.raises(Exception, match="Weights only load failed"):
        TrialRunner(setup, _config()).restore(evil)
    assert not marker.exists()
