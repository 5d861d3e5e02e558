"""Optuna's storage of a study's search, opened in one place: the study's journal file, an
SQL database or a journal in Redis (the spec's ``search_storage``).

The driver opens it when a search starts and when a resumed driver rebinds its searcher;
the report opens it to read the hyperparameters' importance. Credentials come from the
environment, never from the URL. Neither Ray nor torch is imported, and Optuna only by
the names that open a storage: the spec and a trial process read the others without it.
"""

from typing import TYPE_CHECKING

from models.exports import lazy_exports

if TYPE_CHECKING:
    from study.optuna_storage._names import (
        CONNECT_TIMEOUT,
        JOURNAL,
        REDIS_PASSWORD_ENV,
        StorageUnreachable,
        optuna_study_name,
        storage_kind,
    )
    from study.optuna_storage._open import RedisBackend, journal_storage, search_storage

__all__, __getattr__, __dir__ = lazy_exports(__name__, __file__)
