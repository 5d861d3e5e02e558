"""Declarative search spaces and the loader that turns one into Optuna's define-by-run."""

from search_spaces._space import SearchSpace, SearchSpaceError, builtin_space_path, load_space

__all__ = ["SearchSpace", "SearchSpaceError", "builtin_space_path", "load_space"]
