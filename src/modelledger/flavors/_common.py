"""What the flavors share: importing a framework that may not be installed."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingDependency

__all__ = ["require"]


def require(module: str, *, package: str, extra: str | None, purpose: str | None = None) -> ModuleType:
    """``module`` imported, or :class:`MissingDependency` naming ``package`` and the pip ``extra``.

    >>> xgb = require("xgboost", package="xgboost", extra="xgboost")  # doctest: +SKIP
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(package=package, extra=extra, purpose=purpose) from exc
