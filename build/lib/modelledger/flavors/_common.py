"""What the flavors share: importing a framework that may not be installed, telling a
framework's objects apart without importing it, and the small JSON file ("sidecar") that
records what a framework's own model file does not (which Python class to rebuild)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import InvalidInput, MissingDependency, NotFound

__all__ = ["SIDECAR", "class_from", "pick", "read_sidecar", "require", "write_sidecar"]

SIDECAR = "modelledger-flavor.json"
"""Beside a framework's model file: ``{"flavor": ..., "class": ...}`` and what else the
flavor needs to rebuild the object (a classifier's classes)."""


def require(module: str, *, package: str, extra: str | None, purpose: str | None = None) -> ModuleType:
    """``module`` imported, or :class:`MissingDependency` naming ``package`` and the pip ``extra``.

    >>> xgb = require("xgboost", package="xgboost", extra="xgboost")  # doctest: +SKIP
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(package=package, extra=extra, purpose=purpose) from exc


def class_from(obj: Any, package: str, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` that ``obj``'s class is, or derives from, in ``package``."""
    for cls in type(obj).__mro__:
        if cls.__module__.split(".")[0] == package and cls.__name__ in names:
            return cls.__name__
    return None


def write_sidecar(folder: Path, flavor: str, facts: dict[str, Any]) -> None:
    try:
        text = json.dumps({"flavor": flavor, **facts}, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"cannot record the {flavor} model's facts as JSON: {exc}") from exc
    (folder / SIDECAR).write_text(text + "\n", encoding="utf-8")


def read_sidecar(read: Callable[[str], bytes], flavor: str) -> dict[str, Any] | None:
    """The version's :data:`SIDECAR` for ``flavor``, or None when it has none (a folder of a
    framework's own files, registered as they are)."""
    try:
        raw = read(SIDECAR)
    except NotFound:
        return None
    try:
        facts = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"{SIDECAR} is not JSON: {exc}") from exc
    if not isinstance(facts, dict) or facts.get("flavor") != flavor:
        raise InvalidInput(f"{SIDECAR} does not describe a {flavor} model")
    return facts


def pick(kind: object, allowed: tuple[str, ...], source: str) -> str:
    """``kind`` if it is one of ``allowed`` (never an arbitrary attribute named by a file)."""
    if kind not in allowed:
        raise InvalidInput(f"{source} names the class {kind!r}: expected one of {', '.join(allowed)}")
    return str(kind)
