"""Optuna's storage of a study's search, opened: the study's journal file, an SQL database
or a journal in Redis (the spec's ``search_storage``)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

from study.errors import first_line
from study.optuna_storage._names import (
    CONNECT_TIMEOUT,
    JOURNAL,
    REDIS_PASSWORD_ENV,
    StorageUnreachable,
    storage_kind,
)

__all__ = ["RedisBackend", "journal_storage", "search_storage"]


def journal_storage(root: Path, study: str) -> JournalStorage:
    """``<root>/<study>/optuna.journal``: the Optuna studies of a study's search phases
    (``optuna-dashboard <path>`` reads it live)."""
    path = root / study / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _redis_client(url: str) -> Any:
    import redis

    # The password comes from the environment, so that neither the spec nor the pickled
    # searcher (which keeps the URL) holds it.
    return redis.Redis.from_url(
        url,
        password=os.environ.get(REDIS_PASSWORD_ENV) or None,
        socket_connect_timeout=CONNECT_TIMEOUT,
    )


class RedisBackend(JournalRedisBackend):
    """Optuna's Redis journal, its password read from :data:`REDIS_PASSWORD_ENV`."""

    def __init__(self, url: str, prefix: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(url, prefix=prefix)
        self._redis = _redis_client(url)

    def __setstate__(self, state: dict[Any, Any]) -> None:
        self.__dict__.update(state)
        self._redis = _redis_client(self._url)

    def ping(self) -> None:
        self._redis.ping()


def _unreachable(storage: str, err: BaseException) -> StorageUnreachable:
    # The URL holds no password (the spec refuses one), so it is safe to show.
    return StorageUnreachable(
        f"search_storage: cannot open {storage}: {first_line(err)}; check that the server "
        "runs and that the environment gives its credentials (PGPASSWORD or ~/.pgpass for "
        f"postgresql, {REDIS_PASSWORD_ENV} for redis)"
    )


def search_storage(root: Path, study: str, storage: str = "journal") -> BaseStorage:
    """The Optuna storage of a study's search phases, opened and reached: its journal file
    (:func:`journal_storage`), an SQL database (``RDBStorage``) or a journal in Redis whose
    keys start with the study's name. An unreachable database is one
    :class:`StorageUnreachable` line."""
    kind = storage_kind(storage)
    if kind == "journal":
        return journal_storage(root, study)
    try:
        if kind == "redis":
            backend = RedisBackend(storage, prefix=study)
            backend.ping()
            return JournalStorage(backend)
        # A long study outlives idle connections: check each before using it.
        engine: dict[str, Any] = {"pool_pre_ping": True}
        if storage.startswith("postgresql"):
            engine["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
        return RDBStorage(storage, engine_kwargs=engine)
    except ImportError as err:
        raise StorageUnreachable(
            f"search_storage: {storage.split(':', 1)[0]} needs a Python client that is not "
            f"installed ({first_line(err)}); pip install 'psycopg[binary]' (postgresql) or "
            "redis"
        ) from None
    except Exception as err:  # SQLAlchemy's, redis-py's and the OS's errors alike
        raise _unreachable(storage, err) from None
