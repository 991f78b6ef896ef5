"""scikit-learn estimators and pipelines, stored with pickle (protocol 5)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidInput


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
        return pickle.loads(read(entry))
