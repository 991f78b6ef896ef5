"""XGBoost models in XGBoost's own format (UBJSON), never pickled.

A model object is written as ``model.ubj`` with :data:`~._common.SIDECAR` naming its class
(``XGBClassifier``, ``XGBRegressor``, ``XGBRanker``, ``XGBRFClassifier``, ``XGBRFRegressor``,
``XGBModel`` or ``Booster``), so the same kind comes back: a classifier keeps
``predict_proba`` and its classes. A folder may hold any model file XGBoost reads (``.json``,
``.ubj``, or an older binary file that this XGBoost still reads) as its entry; without a
sidecar, the estimator type XGBoost's scikit-learn wrapper writes into the file decides,
else it loads as a ``Booster``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ._common import class_from, pick, read_sidecar, require, write_sidecar

ESTIMATORS = ("XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier", "XGBRFRegressor", "XGBModel")
_BY_TYPE = {"classifier": "XGBClassifier", "regressor": "XGBRegressor", "ranker": "XGBRanker"}


class BoosterModel:
    """A loaded ``xgboost.Booster``: ``predict`` takes what a ``DMatrix`` takes (or a
    ``DMatrix``), as ``Booster.predict(DMatrix(data))`` would; ``native`` is the Booster."""

    def __init__(self, booster: Any) -> None:
        self.native = booster

    def predict(self, data: Any) -> Any:
        # only called on a loaded Booster, so xgboost is imported already
        import xgboost

        matrix = data if isinstance(data, xgboost.DMatrix) else xgboost.DMatrix(data)
        return self.native.predict(matrix)


class XGBoostFlavor:
    name = "xgboost"
    entry = "model.ubj"
    extra: str | None = "xgboost"
    runs_pickle = False

    def _xgb(self) -> Any:
        return require("xgboost", package="xgboost", extra=self.extra)

    def matches(self, obj: Any) -> bool:
        return class_from(obj, "xgboost", (*ESTIMATORS, "Booster")) is not None

    def save(self, obj: Any, folder: Path) -> None:
        xgb = self._xgb()
        kind = class_from(obj, "xgboost", (*ESTIMATORS, "Booster"))
        if kind is None:
            raise InvalidInput(f"a {type(obj).__name__} is not an XGBoost model this flavor saves")
        if kind != "Booster":
            try:
                obj.get_booster()
            except Exception as exc:  # NotFittedError, or XGBoost's own error for an unfitted model
                raise InvalidInput(
                    f"the {type(obj).__name__} is not fitted: call fit() before registering"
                ) from exc
        try:
            obj.save_model(str(folder / self.entry))
        except xgb.core.XGBoostError as exc:
            raise InvalidInput(f"cannot save the {type(obj).__name__}: {_first_line(exc)}") from exc
        write_sidecar(folder, self.name, {"class": kind, "format": "ubj"})

    def describe(self, obj: Any) -> dict[str, str | None]:
        xgb = self._xgb()
        cls = type(obj)
        return {
            "algorithm": f"{cls.__module__}.{cls.__qualname__}",
            "framework": "xgboost",
            "framework_version": xgb.__version__,
        }

    def params(self, obj: Any) -> dict[str, Any]:
        """A Booster's training parameters, as XGBoost's configuration records them (an
        estimator's come from its ``get_params``)."""
        learner = json.loads(obj.save_config()).get("learner", {})
        booster = learner.get("gradient_booster", {})
        return {
            **learner.get("learner_train_param", {}),
            **learner.get("learner_model_param", {}),
            **booster.get("tree_train_param", {}),
        }

    def load(self, read: Callable[[str], bytes], entry: str) -> Any:
        xgb = self._xgb()
        data = bytearray(read(entry))
        facts = read_sidecar(read, self.name)
        try:
            if facts is not None:
                kind = pick(facts.get("class"), (*ESTIMATORS, "Booster"), "the sidecar")
            else:
                booster = xgb.Booster()
                booster.load_model(data)
                estimator_type = json.loads(booster.attr("scikit_learn") or "{}").get("_estimator_type")
                kind = _BY_TYPE.get(estimator_type, "Booster")
                if kind == "Booster":
                    return BoosterModel(booster)
            if kind == "Booster":
                booster = xgb.Booster()
                booster.load_model(data)
                return BoosterModel(booster)
            model = getattr(xgb, kind)()
            model.load_model(data)
            return model
        except xgb.core.XGBoostError as exc:
            raise InvalidInput(f"XGBoost cannot read {entry}: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    """XGBoost's message without the native stack trace it appends."""
    return str(exc).split("Stack trace:")[0].strip()
