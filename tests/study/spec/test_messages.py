"""Refusals a user can act on: the field, the nearest known name, the path looked at."""

from pathlib import Path

import pytest

from search_spaces import MAX_MESSAGE
from study.spec import SpecError, load_spec

VALID = "name: s1\ntasks: [semseg, depth]\ntrials: 4\n"


def _message(tmp_path: Path, text: str) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            VALID + "methods: [ew, dwaa]\n",
            "field 'methods': unknown method 'dwaa'; did you mean 'dwa'?",
        ),
        (
            "name: s1\ntasks: [semseg, dept]\n",
            "field 'tasks': unknown task 'dept'; did you mean 'depth'?",
        ),
        (
            VALID + "architecture: hard_sharin\n",
            "field 'architecture': unknown architecture 'hard_sharin'; "
            "did you mean 'hard_sharing'?",
        ),
        (
            VALID + "architectures: {vmn: {}}\n",
            "field 'architectures': unknown architecture 'vmn'; did you mean 'vmm'?",
        ),
        (VALID + "dataset: {name: nyd, root: x}\n", "did you mean 'nyud'?"),
    ],
)
def test_a_typo_names_the_field_and_the_nearest_name(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in _message(tmp_path, text)


def test_a_name_far_from_any_lists_the_choices(tmp_path: Path) -> None:
    message = _message(tmp_path, VALID + "methods: [zzzzzz]\n")
    assert "unknown method 'zzzzzz'; expected one of" in message and "dwa" in message


def test_a_missing_dataset_root_shows_its_path_and_the_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    monkeypatch.chdir(tmp_path)  # the root is read from the spec's folder, not from here
    text = (
        "name: s1\ntasks: [semseg, depth]\n"
        "dataset: {name: nyud, root: ../data/nyud, num_classes: 40}\n"
    )
    (spec_dir / "spec.yaml").write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(Path("specs/spec.yaml"))
    message = str(caught.value)
    assert f"dataset folder {tmp_path / 'data' / 'nyud'} not found" in message
    assert "mtlstudy data synth OUT --format nyud" in message
    assert "mtlstudy data check ROOT --format nyud" in message
    assert len(message) <= MAX_MESSAGE
