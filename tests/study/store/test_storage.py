"""Results roots at a URI, against a real S3 endpoint on this machine."""

import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from study import store
from study.errors import UserError
from study.store import RemoteRoot, load_trials, write_history, write_spec, write_trial


def _root(bucket: str) -> str:
    return f"{bucket}/{uuid.uuid4().hex[:8]}/results"


def _remote_names(uri: str) -> set[str]:
    fs, path = pafs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return {i.path[len(path) + 1 :] for i in infos if i.type == pafs.FileType.File}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MTLSTUDY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_locations() -> None:
    assert store.is_uri("s3://b/r") and store.is_uri("gs://b")
    assert store.is_uri("file:///tmp/r") and not store.is_uri("results")
    assert store.join("s3://b/r/", "s", "tune") == "s3://b/r/s/tune"
    assert store.join("/tmp/r", "s", "tune") == "/tmp/r/s/tune"
    assert store.absolute("s3://b/r") == "s3://b/r"
    assert store.absolute("r") == str(Path("r").resolve())


@pytest.mark.parametrize("kind", ["s3", "file", "path"])
def test_write_file_exists_and_local_copy(s3_bucket: str, tmp_path: Path, kind: str) -> None:
    base = {
        "s3": _root(s3_bucket),
        "file": f"file://{tmp_path}/results",
        "path": str(tmp_path / "results"),
    }[kind]
    location = store.join(base, "study", "models", "t1.pt")
    assert not store.exists(location)
    assert store.write_file(location, lambda p: p.write_bytes(b"weights")) == location
    assert store.exists(location)
    with store.local_copy(location) as path:
        assert path.read_bytes() == b"weights"


def test_push_then_pull_on_another_machine(s3_bucket: str, tmp_path: Path, cache: Path) -> None:
    uri = _root(s3_bucket)
    writer = RemoteRoot.open(uri)
    mirror = writer.pull()
    assert mirror.is_relative_to(cache) and not any(mirror.iterdir())
    write_spec(mirror, "s", "name: s\n")
    write_trial(mirror, "s", {"trial_id": "t1", "status": "completed", "delta_m": 1.5})
    rows = [{"epoch": 1, "split": "val", "task": "depth", "metric": "rmse", "value": 0.5}]
    write_history(mirror, "s", "t1", rows)
    (mirror / "s" / "optuna.journal").write_text("{}\n")
    (mirror / "s" / "tune").mkdir()  # Tune writes to the URI itself, never through the mirror
    (mirror / "s" / "tune" / "state.json").write_text("{}")
    assert writer.push("s") == 4
    assert writer.push("s") == 0  # nothing changed since
    assert _remote_names(uri) == {
        "s/spec.yaml",
        "s/optuna.journal",
        "s/trials/t1.parquet",
        "s/history/t1.parquet",
    }

    # Another driver (or a reader) with an empty cache of its own; after the second in
    # which the objects were written, so its copies count as settled.
    time.sleep(2.1)
    other = RemoteRoot.open(uri)
    other.local = tmp_path / "other"
    local = other.pull()
    assert load_trials(local / "s")["delta_m"].tolist() == [1.5]
    assert (local / "s" / "optuna.journal").read_text() == "{}\n"
    assert not (local / "s" / "tune").exists()

    # A rewrite (the Pareto flag, a resumed trial) is pushed and pulled again; a file
    # gone from the store leaves the mirror; an unchanged one is not downloaded again.
    write_trial(mirror, "s", {"trial_id": "t1", "status": "completed", "delta_m": 2.5})
    write_trial(mirror, "s", {"trial_id": "t2", "status": "error", "delta_m": None})
    assert writer.push("s") == 2
    fs, path = pafs.FileSystem.from_uri(uri)
    fs.delete_file(f"{path}/s/history/t1.parquet")
    spec_inode = (local / "s" / "spec.yaml").stat().st_ino
    other.pull()
    assert sorted(load_trials(local / "s")["delta_m"].dropna()) == [2.5]
    assert not (local / "s" / "history" / "t1.parquet").exists()
    assert (local / "s" / "spec.yaml").stat().st_ino == spec_inode


def test_readable_pulls_a_uri(s3_bucket: str, cache: Path) -> None:
    uri = _root(s3_bucket)
    remote = RemoteRoot.open(uri)
    write_trial(remote.pull(), "s", {"trial_id": "t1", "status": "completed"})
    rows = [{"epoch": 1, "split": "val", "task": "depth", "metric": "rmse", "value": 0.5}]
    write_history(remote.local, "s", "t1", rows)
    remote.push("s")
    remote.local = cache / "elsewhere"  # the reader below has no mirror yet
    study = store.readable(f"{uri}/s")
    assert study.is_relative_to(cache)
    assert load_trials(study)["trial_id"].tolist() == ["t1"]
    assert store.readable("some/path") == Path("some/path")
    # A driver's mirror is its own: a reader's pull removes nothing it has not pushed yet.
    # Of another study, a driver pulls the trials (baselines), not the history.
    other = RemoteRoot.open(uri, study="other")
    pulled = other.pull()
    assert (pulled / "s" / "trials" / "t1.parquet").is_file()
    assert not (pulled / "s" / "history").exists()
    driver = RemoteRoot.open(uri, study="s")
    assert (driver.pull() / "s" / "history" / "t1.parquet").is_file()
    unpushed = driver.local / "s" / "trials" / "t2.parquet"
    write_trial(driver.local, "s", {"trial_id": "t2", "status": "running"})
    store.readable(uri)
    assert unpushed.is_file()


def test_bad_locations_are_one_line(
    s3_bucket: str, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UserError, match="without a query") as err:
        RemoteRoot.open("s3://b/r?endpoint_override=x")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="no bucket 'no-such-bucket-here'") as err:
        RemoteRoot.open("s3://no-such-bucket-here/r").pull()
    assert "\n" not in str(err.value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    start = time.monotonic()
    with pytest.raises(UserError, match="cannot list it") as err:
        RemoteRoot.open(f"{s3_bucket}/r").pull()
    assert "\n" not in str(err.value)
    print(f"unreachable store refused in {time.monotonic() - start:.1f} s")
    with pytest.raises(UserError, match="cannot open it"):
        RemoteRoot.open("nosuchscheme://b/r")


def test_a_file_uri_root_is_made_on_the_first_push(tmp_path: Path, cache: Path) -> None:
    root = RemoteRoot.open(f"file://{tmp_path}/new/results")
    write_trial(root.pull(), "s", {"trial_id": "t1", "status": "completed"})
    assert root.push("s") == 1
    assert load_trials(tmp_path / "new" / "results" / "s")["trial_id"].tolist() == ["t1"]
