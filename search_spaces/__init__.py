"""Declarative search spaces and the loader that turns one into Optuna's define-by-run."""

from search_spaces._space import (
    OPTIM_PARAMS,
    SearchSpace,
    SearchSpaceError,
    SpaceOverride,
    builtin_space_path,
    load_space,
)
from search_spaces._yaml import (
    MAX_MESSAGE,
    describe_validation_error,
    one_line,
    read_model,
    short_repr,
)

__all__ = [
    "MAX_MESSAGE",
    "OPTIM_PARAMS",
    "SearchSpace",
    "SearchSpaceError",
    "SpaceOverride",
    "builtin_space_path",
    "describe_validation_error",
    "load_space",
    "one_line",
    "read_model",
    "short_repr",
]
