"""The spec's ``search_storage``: the journal by default, an SQL or Redis URL; a password in
the spec, or a scheme Optuna cannot keep a study in, is one line that never shows the URL."""

from pathlib import Path

import pytest

from study.spec import REDIS_PASSWORD_ENV, SpecError, load_spec, storage_kind

VALID = "name: s1\ntasks: [semseg, depth]\ntrials: 4\n"


def _load(tmp_path: Path, storage: str | None):
    path = tmp_path / "spec.yaml"
    path.write_text(VALID + ("" if storage is None else f"search_storage: '{storage}'\n"))
    return load_spec(path)[0]


@pytest.mark.parametrize(
    ("storage", "kind"),
    [
        (None, "journal"),
        ("sqlite:///studies/optuna.db", "sql"),
        ("postgresql://me@db.example:5432/studies", "sql"),
        ("postgresql+psycopg://me@db.example/studies?sslmode=require", "sql"),
        ("redis://cache.example:6379/2", "redis"),
        ("rediss://me@cache.example:6380/0", "redis"),
    ],
)
def test_the_storages_a_spec_may_name(tmp_path: Path, storage: str | None, kind: str) -> None:
    spec = _load(tmp_path, storage)
    assert spec.search_storage == (storage or "journal")
    assert storage_kind(spec.search_storage) == kind


@pytest.mark.parametrize(
    "storage",
    [
        "postgresql://me:s3cr3t-pw@db.example/studies",
        "redis://:s3cr3t-pw@cache.example:6379/0",
        "postgresql://me@db.example/studies?password=s3cr3t-pw",
    ],
)
def test_a_password_in_the_spec_is_refused_without_showing_it(tmp_path: Path, storage: str) -> None:
    with pytest.raises(SpecError) as caught:
        _load(tmp_path, storage)
    message = str(caught.value)
    assert "\n" not in message and "s3cr3t-pw" not in message
    assert "field 'search_storage': expected a URL without a password" in message
    assert "PGPASSWORD" in message and REDIS_PASSWORD_ENV in message


@pytest.mark.parametrize(
    ("storage", "got"),
    [
        ("mysql://me:s3cr3t-pw@db.example/studies", "got scheme 'mysql'"),
        ("optuna.journal", "got no scheme"),
        ("sqlite://", "got an in-memory sqlite database"),
    ],
)
def test_a_bad_storage_names_the_allowed_forms(tmp_path: Path, storage: str, got: str) -> None:
    with pytest.raises(SpecError) as caught:
        _load(tmp_path, storage)
    message = str(caught.value)
    assert "\n" not in message and "s3cr3t-pw" not in message
    assert message.endswith(
        "field 'search_storage': expected `journal`, `sqlite:///PATH`, "
        f"`postgresql://USER@HOST:PORT/DB` or `redis://HOST:PORT/N`, {got}"
    )
