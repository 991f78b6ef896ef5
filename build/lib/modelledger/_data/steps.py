"""Processing steps captured from fitted scikit-learn pipelines.

Walks ``Pipeline`` and ``ColumnTransformer`` objects and records every transformer
(imputation, encoding, scaling...) with its parameters, the columns it touched and a
summary of what it learned when fitting (imputation values, categories, means).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._domain import ProcessingStep

__all__ = ["sklearn_steps"]

_FITTED = (
    "statistics_",
    "categories_",
    "mean_",
    "scale_",
    "var_",
    "data_min_",
    "data_max_",
    "n_features_in_",
)
_MAX_FITTED_VALUES = 200


def _json(value: Any) -> Any:
    """A JSON-safe, size-bounded rendering of parameters and fitted attributes."""
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast

    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, np.generic):
        return _json(value.item())
    if isinstance(value, np.ndarray):
        if value.size > _MAX_FITTED_VALUES:
            return f"<array of {value.size} values>"
        return [_json(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        if len(value) > _MAX_FITTED_VALUES:
            return f"<{len(value)} values>"
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if hasattr(value, "get_params"):
        return type(value).__name__
    if isinstance(value, type):
        return value.__name__
    return repr(value)


def _columns(cols: Any, feature_names: Sequence[str] | None) -> tuple[str, ...]:
    if isinstance(cols, str):
        return (cols,)
    if callable(cols):
        return ()
    try:
        items = list(cols)
    except TypeError:
        return ()
    out = []
    for c in items:
        if isinstance(c, bool):
            continue
        if isinstance(c, (int,)) and feature_names is not None and 0 <= c < len(feature_names):
            out.append(str(feature_names[c]))
        else:
            out.append(str(c))
    if len(items) and all(isinstance(c, bool) for c in items) and feature_names is not None:
        out = [str(n) for n, keep in zip(feature_names, items, strict=False) if keep]
    return tuple(out)


def _identity(est: Any) -> bool:
    """A fitted ColumnTransformer stores "passthrough" as a FunctionTransformer without a function."""
    return (
        type(est).__name__ == "FunctionTransformer"
        and getattr(est, "func", None) is None
        and getattr(est, "inverse_func", None) is None
    )


def _leaf(
    name: str, est: Any, columns: tuple[str, ...], inputs: tuple[str, ...], code: Mapping[str, Any]
) -> ProcessingStep:
    params = {k: _json(v) for k, v in est.get_params(deep=False).items()}
    fitted = {a.rstrip("_"): _json(getattr(est, a)) for a in _FITTED if hasattr(est, a)}
    if fitted:
        params["fitted"] = fitted
    return ProcessingStep(
        name=name, kind=type(est).__name__, params=params, columns=columns, inputs=inputs, code=dict(code)
    )


def sklearn_steps(
    estimator: Any, *, inputs: Sequence[str] = (), code: Mapping[str, Any] | None = None
) -> list[ProcessingStep]:
    """The data processing steps inside a fitted estimator, in the order they run.

    The final estimator of a pipeline (the algorithm) is not a processing step and is
    left out; ``inputs`` are the data set versions the pipeline was fitted on.

    >>> [s.kind for s in sklearn_steps(pipeline)]  # doctest: +SKIP
    ['SimpleImputer', 'StandardScaler', 'OneHotEncoder']
    """
    refs = tuple(inputs)
    src = dict(code or {})
    names = getattr(estimator, "feature_names_in_", None)
    all_columns = tuple(str(n) for n in names) if names is not None else ()
    out: list[ProcessingStep] = []

    def walk(est: Any, path: str, columns: tuple[str, ...], final: bool) -> None:
        kind = type(est).__name__
        if hasattr(est, "steps") and isinstance(est.steps, list):  # Pipeline
            for i, (step_name, step) in enumerate(est.steps):
                if step is None or step == "passthrough":
                    continue
                last = i == len(est.steps) - 1
                walk(step, f"{path}/{step_name}" if path else step_name, columns, final and last)
            return
        if hasattr(est, "transformers_"):  # fitted ColumnTransformer
            feature_names = getattr(est, "feature_names_in_", None)
            for t_name, trans, cols in est.transformers_:
                if isinstance(trans, str) and trans == "drop":
                    continue
                cols_named = _columns(cols, list(feature_names) if feature_names is not None else None)
                sub = f"{path}/{t_name}" if path else t_name
                if (isinstance(trans, str) and trans == "passthrough") or _identity(trans):
                    if cols_named:
                        out.append(
                            ProcessingStep(
                                name=sub, kind="passthrough", columns=cols_named, inputs=refs, code=src
                            )
                        )
                    continue
                walk(trans, sub, cols_named, False)
            return
        if hasattr(est, "transformer_list"):  # FeatureUnion
            for t_name, trans in est.transformer_list:
                if trans not in (None, "drop"):
                    walk(trans, f"{path}/{t_name}" if path else t_name, columns, False)
            return
        if final and not hasattr(est, "transform"):
            return  # the algorithm itself
        if final and hasattr(est, "predict") and not hasattr(est, "fit_transform"):
            return
        if not hasattr(est, "get_params"):
            return
        out.append(_leaf(path or kind, est, columns, refs, src))

    walk(estimator, "", all_columns, True)
    return out
