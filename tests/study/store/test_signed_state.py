"""Tune's experiment state, signed by the driver as Tune rewrites it: a resume puts back
what changed after the last signing and refuses what the study never signed."""

from pathlib import Path

import pytest

from study.store import (
    KEY_ENV,
    SECRET_DIR_ENV,
    SIGNED_STATE_DIR,
    CheckpointRefused,
    sign_state,
    study_key,
    verify_state,
)


@pytest.fixture(autouse=True)
def _own_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_DIR_ENV, str(tmp_path / "secret"))
    monkeypatch.delenv(KEY_ENV, raising=False)


def _experiment(folder: Path) -> Path:
    folder.mkdir()
    (folder / "tuner.pkl").write_bytes(b"tuner v1")
    (folder / "experiment_state-1.json").write_text('{"trials": 1}')
    (folder / ".validate_storage_marker").write_text("")  # Ray's, never read as state
    (folder / "trial_0").mkdir()  # trials' folders: their checkpoints are signed apart
    (folder / "trial_0" / "params.pkl").write_bytes(b"anything")
    sign_state(folder, study_key("s"))
    return folder


def test_a_signed_folder_verifies_unchanged(tmp_path: Path) -> None:
    folder = _experiment(tmp_path / "tune")
    assert verify_state(folder, study_key("s")) == []
    assert (folder / SIGNED_STATE_DIR / "tuner.pkl").read_bytes() == b"tuner v1"


def test_a_write_after_the_last_signing_is_put_back(tmp_path: Path) -> None:
    """A driver killed between Tune's write and the signing: the last signed state."""
    folder = _experiment(tmp_path / "tune")
    (folder / "experiment_state-1.json").write_text('{"trials": 2}')
    assert verify_state(folder, study_key("s")) == ["experiment_state-1.json"]
    assert (folder / "experiment_state-1.json").read_text() == '{"trials": 1}'
    # Deleted files come back too.
    (folder / "tuner.pkl").unlink()
    assert verify_state(folder, study_key("s")) == ["tuner.pkl"]


def test_signing_again_signs_what_changed(tmp_path: Path) -> None:
    folder = _experiment(tmp_path / "tune")
    seen: dict[str, tuple[int, int]] = {}
    sign_state(folder, study_key("s"), seen)
    (folder / "experiment_state-1.json").write_text('{"trials": 3, "more": true}')
    (folder / "searcher-state-1.pkl").write_bytes(b"searcher")
    sign_state(folder, study_key("s"), seen)
    assert verify_state(folder, study_key("s")) == []
    assert (folder / "experiment_state-1.json").read_text() == '{"trials": 3, "more": true}'


def test_an_unsigned_file_is_refused(tmp_path: Path) -> None:
    """Tune restores the newest searcher state: a planted one must not be read."""
    folder = _experiment(tmp_path / "tune")
    (folder / "searcher-state-9.pkl").write_bytes(b"planted")
    with pytest.raises(CheckpointRefused, match=r"searcher-state-9\.pkl carries no signature"):
        verify_state(folder, study_key("s"))


def test_a_changed_copy_or_another_key_is_refused(tmp_path: Path) -> None:
    folder = _experiment(tmp_path / "tune")
    with pytest.raises(CheckpointRefused, match="does not match"):
        verify_state(folder, study_key("another study"))
    (folder / "tuner.pkl").write_bytes(b"planted")
    (folder / SIGNED_STATE_DIR / "tuner.pkl").write_bytes(b"planted")
    with pytest.raises(CheckpointRefused, match=r"tuner\.pkl does not match"):
        verify_state(folder, study_key("s"))


def test_an_unsigned_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "tune"
    folder.mkdir()
    (folder / "tuner.pkl").write_bytes(b"from elsewhere")
    with pytest.raises(CheckpointRefused, match="delete .* to run that phase afresh"):
        verify_state(folder, study_key("s"))
