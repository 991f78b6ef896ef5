"""Model formats ("flavors"): how an object becomes files and comes back.

Each flavor writes its files into a local staging folder and loads from verified
bytes: the registry checks every digest before a flavor sees a byte.

The built-in flavors are :data:`BUILTIN`, most specific first, ``python`` (anything with
``predict``, or a callable) last. Other packages add flavors through the entry point group
``modelledger.flavors``: each entry point, named after its flavor, is a zero-argument
callable (or class) returning a :class:`Flavor`. Plugins are read only when needed: a name
that is not built in, or an object that no specific built-in flavor takes (they are tried
before ``python``, the catch-all). A plugin may not replace a built-in name.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import InvalidInput
from .catboost import CatBoostFlavor
from .lightgbm import LightGBMFlavor
from .mlflow import MlflowPyfuncFlavor
from .onnx import OnnxFlavor
from .python import PythonFlavor
from .pytorch import TorchFlavor
from .sklearn import SklearnFlavor
from .xgboost import XGBoostFlavor

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "Flavor", "flavor_for_object", "flavor_names", "get_flavor"]

ENTRY_POINT_GROUP = "modelledger.flavors"


class Flavor(Protocol):
    """How one kind of model is saved to files and loaded back.

    - ``name``: the manifest's ``flavor`` value.
    - ``entry``: the file :meth:`load` starts from when the manifest names none.
    - ``extra``: the pip extra that installs the framework (``modelledger[<extra>]``).
    - ``runs_pickle``: whether :meth:`load` unpickles anything (the manifest records it).
    - :meth:`matches` decides cheaply, by the object's type and module names, without
      importing a framework that is not imported already.
    - :meth:`save` writes the entry (and any other files) into a folder, in the framework's
      own format; :meth:`describe` gives ``algorithm``, ``framework``, ``framework_version``.
    - :meth:`load` gets ``read(relpath)``, the verified bytes of any file of the version, and
      the entry's path; it returns an object with ``predict`` (and ``predict_proba`` where the
      model has one); a wrapper exposes the framework's object as ``.native``. A framework
      that is not installed is :class:`~modelledger.errors.MissingDependency`.
    """

    name: str
    entry: str
    extra: str | None
    runs_pickle: bool

    def matches(self, obj: Any) -> bool: ...
    def save(self, obj: Any, folder: Path) -> None: ...
    def describe(self, obj: Any) -> dict[str, str | None]: ...
    def load(self, read: Callable[[str], bytes], entry: str) -> Any: ...


BUILTIN: tuple[type[Flavor], ...] = (
    MlflowPyfuncFlavor,
    # the frameworks' scikit-learn wrappers are scikit-learn estimators too: before sklearn
    XGBoostFlavor,
    LightGBMFlavor,
    CatBoostFlavor,
    OnnxFlavor,
    TorchFlavor,
    SklearnFlavor,
    PythonFlavor,  # last: it takes anything with predict, or any callable
)
"""The built-in flavors, most specific first."""

_BUILTIN_NAMES = frozenset(cls.name for cls in BUILTIN)


def _plugin_entry_points() -> list[EntryPoint]:
    return list(_entry_points_on(tuple(sys.path)))


@functools.lru_cache(maxsize=4)
def _entry_points_on(path: tuple[str, ...]) -> tuple[EntryPoint, ...]:
    # importlib.metadata scans every installed distribution (milliseconds with a few hundred):
    # once per import path, not once per registration of a plain Python model
    from importlib.metadata import entry_points

    return tuple(ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _BUILTIN_NAMES)


def _load_plugin(ep: EntryPoint) -> Flavor:
    try:
        flavor: Flavor = ep.load()()
    except Exception as exc:  # a plugin's import or constructor may raise anything
        raise InvalidInput(f"the flavor plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
    if getattr(flavor, "name", None) != ep.name:
        raise InvalidInput(
            f"the flavor plugin {ep.name!r} ({ep.value}) returned a flavor named "
            f"{getattr(flavor, 'name', None)!r}: the entry point's name must be the flavor's"
        )
    return flavor


def _plugins() -> Iterator[Flavor]:
    for ep in _plugin_entry_points():
        yield _load_plugin(ep)


def flavor_names() -> tuple[str, ...]:
    """Every flavor name a manifest may give: the built-ins, then installed plugins (by their
    entry point names, without importing them).

    >>> "sklearn" in flavor_names()
    True
    """
    return tuple(cls.name for cls in BUILTIN) + tuple(sorted({ep.name for ep in _plugin_entry_points()}))


def is_flavor_name(name: str) -> bool:
    """Whether ``name`` is in :func:`flavor_names` (plugins are looked at only if not built in)."""
    return name in _BUILTIN_NAMES or name in flavor_names()


def flavor_for_object(obj: Any) -> Flavor:
    """The flavor that saves ``obj``: the first specific built-in that matches it, else the
    first plugin that does, else ``python`` (or :class:`InvalidInput` if nothing does)."""
    *specific, fallback = (cls() for cls in BUILTIN)
    for flavor in specific:
        if flavor.matches(obj):
            return flavor
    for flavor in _plugins():
        if flavor.matches(obj):
            return flavor
    if fallback.matches(obj):
        return fallback
    raise InvalidInput(
        f"cannot register a {type(obj).__name__}: give a fitted scikit-learn estimator, "
        "an object with a predict method, a callable, or a folder of files"
    )


def get_flavor(name: str) -> Flavor:
    """The flavor called ``name``, built in or from a plugin; :class:`InvalidInput` if none is."""
    for cls in BUILTIN:
        if cls.name == name:
            return cls()
    for ep in _plugin_entry_points():
        if ep.name == name:
            return _load_plugin(ep)
    raise InvalidInput(f"unknown flavor {name!r}: use one of {', '.join(flavor_names())}")
