"""MLflow models that only MLflow itself can load: the ``python_function`` (pyfunc) flavor.

A version of this flavor holds an MLflow model folder as MLflow wrote it (``MLmodel``,
``python_model.pkl``, ``code/``, ``artifacts/``...) plus one file of modelledger's own, the
entry :data:`INDEX` (``mlflow-files.json``): the list of the folder's files, so that
:meth:`MlflowPyfuncFlavor.load`, which can only read files it names, can lay the whole
folder out again (every byte verified by the registry) and hand it to
``mlflow.pyfunc.load_model``.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import InvalidInput
from ._common import require

__all__ = ["INDEX", "MlflowPyfuncFlavor", "write_index"]

INDEX = "mlflow-files.json"
"""The entry file: ``{"format": 1, "files": [<relative posix path>, ...]}``."""


def write_index(folder: Path, files: Sequence[str]) -> None:
    """Write :data:`INDEX` into ``folder`` listing ``files`` (relative posix paths)."""
    listed = sorted(f for f in files if f != INDEX)
    (folder / INDEX).write_text(json.dumps({"format": 1, "files": listed}, indent=1) + "\n")


def _listed(raw: bytes) -> list[str]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"{INDEX} is not JSON: {exc}") from exc
    files = doc.get("files") if isinstance(doc, dict) else None
    if doc.get("format") != 1 or not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise InvalidInput(f'{INDEX} must be {{"format": 1, "files": [paths]}}')
    for f in files:
        p = PurePosixPath(f)
        if p.is_absolute() or ".." in p.parts or not f:
            raise InvalidInput(f"{INDEX} lists an unsafe path {f!r}")
    return files


class MlflowPyfunc:
    """A loaded MLflow pyfunc model: ``predict(data)``, and the MLflow object as ``native``.

    The folder MLflow loaded from stays on disk while this object lives (a pyfunc model may
    read its artefacts lazily) and is removed when it is garbage collected.
    """

    def __init__(self, native: Any, folder: Path) -> None:
        import shutil  # shutil (with bz2, lzma): loaded with an MLflow model, not by `import modelledger`

        self.native = native
        self.folder = folder
        self._cleanup = weakref.finalize(self, shutil.rmtree, folder, True)

    def predict(self, data: Any) -> Any:
        return self.native.predict(data)


class MlflowPyfuncFlavor:
    """An MLflow model loaded through ``mlflow.pyfunc.load_model`` (extra ``mlflow``)."""

    name = "mlflow"
    entry = INDEX
    extra: str | None = "mlflow"
    runs_pickle = True  # a PythonModel is cloudpickled; most pyfunc loaders unpickle something

    def matches(self, obj: Any) -> bool:
        # Only an already loaded MLflow pyfunc model; never import mlflow to say no.
        return type(obj).__module__.startswith("mlflow.pyfunc") and type(obj).__name__ == "PyFuncModel"

    def save(self, obj: Any, folder: Path) -> None:
        raise InvalidInput(
            "an MLflow pyfunc model is registered from its MLflow model folder: "
            "use `modelledger import mlflow` or register the folder with flavor 'mlflow'"
        )

    def describe(self, obj: Any) -> dict[str, str | None]:
        return {
            "algorithm": type(obj).__name__,
            "framework": "mlflow",
            "framework_version": _mlflow_version(),
        }

    def load(self, read: Callable[[str], bytes], entry: str) -> Any:
        pyfunc = require("mlflow.pyfunc", package="mlflow", extra="mlflow")
        files = _listed(read(entry))
        import shutil  # with bz2 and lzma: loaded with an MLflow model, not by `import modelledger`
        import tempfile  # the same: only loading an MLflow model makes a folder for it

        folder = Path(tempfile.mkdtemp(prefix="modelledger-mlflow-"))
        try:
            for rel in files:
                target = folder / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(read(rel))
            native = pyfunc.load_model(str(folder))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return MlflowPyfunc(native, folder)


def _mlflow_version() -> str | None:
    try:
        from importlib.metadata import version  # light, but only needed here

        return version("mlflow")
    except Exception:  # not installed: the version is simply unknown
        return None
