"""The Parquet store: where a study's results live, how they are written, and how they
are read back as pandas DataFrames through pyarrow.

Under a results root (a folder, or an object-store URI mirrored locally by
:class:`RemoteRoot`)::

    <root>/<study>/trials/<trial_id>.parquet    one wide row per trial
    <root>/<study>/history/<trial_id>.parquet   tidy rows: trial_id, epoch, split, task,
                                                metric, value

:func:`load` reads one or several results roots and study folders as one
:mod:`pyarrow.dataset`. Files differ in their columns (trials with different
hyperparameters) and in their types (an int in one trial, a float in another), so the
dataset is given the unified schema of the files it reads: a missing column reads as null
and an int widens to float. ``columns`` (a projection) and ``where`` (a filter) are pushed
down to the scan, so only the columns asked for, and those the filter needs, are read.
Hidden files (the ``.<name>.<random>.tmp`` of a write in progress) are never read.

``where`` is a small, safe expression language (parsed with :mod:`ast`, never evaluated),
a subset of :meth:`pandas.DataFrame.query`:

- columns by name, or in backticks when the name is not an identifier:
  ``method``, ```final.semseg.miou```;
- literals: strings, numbers, ``True``/``False``, and lists or tuples after ``in``;
- comparisons ``== != < <= > >=`` (chained too: ``0.1 < `hp.optim.lr` <= 1``),
  ``in`` / ``not in``, ``col == None`` / ``col != None`` (also ``is None``, ``isna(col)``,
  ``notna(col)``);
- ``and``, ``or``, ``not`` (and pandas' ``&``, ``|``, ``~``); ``+ - * / // **``, ``abs()``.

A comparison with a missing value is false, except ``!=`` which is true, as in pandas.
"""

from study.store._atomic import TMP_SUFFIX, remove_leftovers, write_atomically
from study.store._compact import CompactResult, compact
from study.store._files import (
    HISTORY_DIR,
    KINDS,
    PARQUET_SUFFIX,
    TRIALS_DIR,
    Kind,
    PathLike,
    result_files,
    study_listings,
)
from study.store._load import load, load_history, load_table, load_trials
from study.store._remote import (
    DriverStore,
    RemoteRoot,
    absolute,
    bind_driver,
    driver_store,
    exists,
    holds_files,
    is_uri,
    join,
    local_copy,
    push_driver,
    readable,
    write_file,
)
from study.store._rows import TRIAL_COLUMNS, TrialRow, TrialStatus
from study.store._schema import (
    HISTORY_SCHEMA,
    SCHEMA_FILE,
    SCHEMA_VERSION,
    VERSIONED_PACKAGES,
    read_schema,
    trial_schema,
    write_schema,
)
from study.store._signing import (
    KEY_ENV,
    SECRET_DIR_ENV,
    SIGNED_STATE_DIR,
    CheckpointRefused,
    sign_checkpoint,
    sign_state,
    study_key,
    verify_checkpoint,
    verify_state,
)
from study.store._where import where_expression
from study.store._write import (
    HISTORY_COLUMNS,
    read_trial_history,
    read_trial_row,
    write_history,
    write_spec,
    write_trial,
)

__all__ = [
    "HISTORY_COLUMNS",
    "HISTORY_DIR",
    "KEY_ENV",
    "SECRET_DIR_ENV",
    "HISTORY_SCHEMA",
    "KINDS",
    "PARQUET_SUFFIX",
    "SCHEMA_FILE",
    "SCHEMA_VERSION",
    "TMP_SUFFIX",
    "TRIALS_DIR",
    "TRIAL_COLUMNS",
    "VERSIONED_PACKAGES",
    "CompactResult",
    "DriverStore",
    "Kind",
    "PathLike",
    "RemoteRoot",
    "CheckpointRefused",
    "SIGNED_STATE_DIR",
    "TrialRow",
    "TrialStatus",
    "absolute",
    "bind_driver",
    "compact",
    "driver_store",
    "exists",
    "holds_files",
    "is_uri",
    "join",
    "load",
    "load_history",
    "load_table",
    "load_trials",
    "local_copy",
    "push_driver",
    "read_trial_history",
    "read_trial_row",
    "read_schema",
    "readable",
    "remove_leftovers",
    "result_files",
    "sign_checkpoint",
    "sign_state",
    "study_key",
    "verify_checkpoint",
    "verify_state",
    "study_listings",
    "trial_schema",
    "where_expression",
    "write_atomically",
    "write_file",
    "write_history",
    "write_schema",
    "write_spec",
    "write_trial",
]
