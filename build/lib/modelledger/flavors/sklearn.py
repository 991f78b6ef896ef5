"""scikit-learn estimators and pipelines, stored with pickle (protocol 5).

A folder registered with ``flavor: sklearn`` may hold a pickle or a joblib file
(``joblib.dump``, compressed or not) as its entry: which one is read from the file itself
(a ``.joblib`` name, a compressor's magic number, or joblib's array records inside the
pickle stream), so the stored bytes always say how they load. A file that is neither is
refused at registration.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ._common import require

# zlib, gzip, bz2, xz, lzma (legacy .lzma) and lz4 frames: joblib's compressors
_COMPRESSED = (b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x5d\x00\x00", b"\x04\x22\x4d\x18")
_JOBLIB_MARK = b"NumpyArrayWrapper"  # joblib's record for an array written beside the pickle stream


def entry_format(entry: str, data: bytes) -> str:
    """``"joblib"`` or ``"pickle"``: how the entry file ``data`` loads; :class:`InvalidInput`
    when it is neither.

    >>> entry_format("model.pkl", pickle.dumps({"a": 1}, protocol=5))
    'pickle'
    """
    if data.startswith(b"\x80"):  # a pickle stream (protocol 2 or later), maybe joblib's
        return "joblib" if entry.endswith(".joblib") or _JOBLIB_MARK in data else "pickle"
    if data.startswith(_COMPRESSED):
        return "joblib"
    raise InvalidInput(
        f"{entry} is neither a pickle (protocol 2 or later) nor a joblib file: "
        "save the estimator with pickle.dump or joblib.dump"
    )


class SklearnFlavor:
    name = "sklearn"
    entry = "model.pkl"
    extra: str | None = "sklearn"
    runs_pickle = True

    def matches(self, obj: Any) -> bool:
        module = type(obj).__module__
        if not module.startswith("sklearn.") and not hasattr(obj, "_sklearn_tags"):
            return False
        try:
            from sklearn.base import BaseEstimator  # optional extra: only scikit-learn models need it
        except ImportError:
            return False
        return isinstance(obj, BaseEstimator)

    def save(self, obj: Any, folder: Path) -> None:
        from sklearn.exceptions import NotFittedError  # optional extra: only scikit-learn models need it

        # optional extra: only scikit-learn models need it
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(obj)
        except NotFittedError as exc:
            raise InvalidInput(
                f"the {type(obj).__name__} is not fitted: call fit() before registering"
            ) from exc
        try:
            with (folder / self.entry).open("wb") as fh:
                pickle.dump(obj, fh, protocol=5)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"cannot serialise the {type(obj).__name__}: {exc}") from exc

    def describe(self, obj: Any) -> dict[str, str | None]:
        import sklearn  # optional extra: only scikit-learn models need it

        cls = type(obj)
        algorithm = f"{cls.__module__}.{cls.__qualname__}"
        steps = getattr(obj, "steps", None)
        if steps:
            final = type(steps[-1][1])
            algorithm = f"{algorithm}[{final.__module__}.{final.__qualname__}]"
        return {"algorithm": algorithm, "framework": "scikit-learn", "framework_version": sklearn.__version__}

    def load(self, read: Callable[[str], bytes], entry: str) -> Any:
        require("sklearn", package="scikit-learn", extra=self.extra)  # every estimator's pickle names it
        data = read(entry)
        if entry_format(entry, data) == "pickle":
            return pickle.loads(data)
        # scikit-learn depends on joblib: missing only where scikit-learn is too
        joblib = require("joblib", package="joblib", extra=self.extra)
        return joblib.load(io.BytesIO(data))
