"""Query the Parquet store: trials and history as pandas DataFrames, read through pyarrow.

The store (written by :mod:`study.store`) holds, under a results root::

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

from study.results._files import Kind, result_files
from study.results._load import load, load_history, load_table, load_trials
from study.results._where import where_expression

__all__ = [
    "Kind",
    "load",
    "load_history",
    "load_table",
    "load_trials",
    "result_files",
    "where_expression",
]
