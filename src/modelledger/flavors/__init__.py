"""Model formats ("flavors"): how an object becomes files and comes back.

Each flavor writes its files into a local staging folder and loads from verified
bytes: the registry checks every digest before a flavor sees a byte.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..errors import InvalidInput
from .python import PythonFlavor
from .sklearn import SklearnFlavor

__all__ = ["Flavor", "flavor_for_object", "get_flavor"]


class Flavor(Protocol):
    name: str
    entry: str

    def matches(self, obj: Any) -> bool: ...
    def save(self, obj: Any, folder: Path) -> None: ...
    def describe(self, obj: Any) -> dict[str, str | None]: ...
    def load(self, read: Callable[[str], bytes], entry: str) -> Any: ...


def _all() -> list[Flavor]:
    return [SklearnFlavor(), PythonFlavor()]


def flavor_for_object(obj: Any) -> Flavor:
    for flavor in _all():
        if flavor.matches(obj):
            return flavor
    raise InvalidInput(
        f"cannot register a {type(obj).__name__}: give a fitted scikit-learn estimator, "
        "an object with a predict method, a callable, or a folder of files"
    )


def get_flavor(name: str) -> Flavor:
    for flavor in _all():
        if flavor.name == name:
            return flavor
    raise InvalidInput(f"unknown flavor {name!r}")
