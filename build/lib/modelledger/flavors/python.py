"""Any Python object with ``predict``, or a plain callable, stored with cloudpickle."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, MissingDependency


class CallableModel:
    """Wraps a plain function so it answers ``predict``."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def predict(self, data: Any) -> Any:
        return self.fn(data)


class PythonFlavor:
    name = "python"
    entry = "model.pkl"
    extra: str | None = None  # cloudpickle is a core dependency
    runs_pickle = True

    def matches(self, obj: Any) -> bool:
        return callable(getattr(obj, "predict", None)) or callable(obj)

    def save(self, obj: Any, folder: Path) -> None:
        import cloudpickle  # only saving or loading a python-flavor model needs it

        target = obj if callable(getattr(obj, "predict", None)) else CallableModel(obj)
        try:
            data = cloudpickle.dumps(target, protocol=5)
        except Exception as exc:  # pickling reports through many exception types
            raise InvalidInput(f"cannot serialise the {type(obj).__name__}: {exc}") from exc
        (folder / self.entry).write_bytes(data)

    def describe(self, obj: Any) -> dict[str, str | None]:
        import cloudpickle  # only saving or loading a python-flavor model needs it

        cls = type(obj)
        return {
            "algorithm": f"{cls.__module__}.{cls.__qualname__}",
            "framework": "python",
            "framework_version": f"cloudpickle {cloudpickle.__version__}",
        }

    def load(self, read: Callable[[str], bytes], entry: str) -> Any:
        try:
            return pickle.loads(read(entry))
        except ModuleNotFoundError as exc:
            # the pickled object's classes live in a package this environment lacks
            if not exc.name:
                raise
            package = exc.name.split(".")[0]
            raise MissingDependency(
                package=package, extra=None, purpose=f"loading this python model ({exc.name})"
            ) from exc
