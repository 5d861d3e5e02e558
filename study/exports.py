"""Lazy re-exports for ``study``'s packages: :func:`models.exports.lazy_exports`."""

from __future__ import annotations

from models.exports import lazy_exports

__all__ = ["lazy_exports"]
