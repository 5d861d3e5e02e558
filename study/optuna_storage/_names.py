"""The names of a study's Optuna storage that need no Optuna: what the spec checks and
what a study's phases are called in it."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from study.errors import UserError

__all__ = [
    "CONNECT_TIMEOUT",
    "JOURNAL",
    "REDIS_PASSWORD_ENV",
    "StorageUnreachable",
    "optuna_study_name",
    "storage_kind",
]

#: The environment variable a Redis password is read from (redis-py reads none itself).
REDIS_PASSWORD_ENV = "MTLSTUDY_REDIS_PASSWORD"
#: The journal's file name in a study folder.
JOURNAL = "optuna.journal"
#: Seconds to wait for a database server before saying it cannot be reached.
CONNECT_TIMEOUT = 10


class StorageUnreachable(UserError):
    """The spec's ``search_storage`` database cannot be opened."""


def storage_kind(storage: str) -> Literal["journal", "sql", "redis"]:
    """Which Optuna storage a valid ``search_storage`` names: the study's journal file, an
    SQL database (Optuna's ``RDBStorage``) or a journal in Redis."""
    if storage == "journal":
        return "journal"
    return "redis" if urlsplit(storage).scheme in ("redis", "rediss") else "sql"


def optuna_study_name(storage: str, study: str, phase: str) -> str:
    """The Optuna study of a search phase: the phase's name in the study's own journal,
    ``<study>/<phase>`` in a database that may hold other studies."""
    return phase if storage_kind(storage) == "journal" else f"{study}/{phase}"
