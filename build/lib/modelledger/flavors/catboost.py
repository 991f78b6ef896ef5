"""CatBoost models in CatBoost's own binary format (``.cbm``), never pickled.

A model object is written as ``model.cbm`` with :data:`~._common.SIDECAR` naming its class
(``CatBoostClassifier``, ``CatBoostRegressor``, ``CatBoostRanker`` or ``CatBoost``); the
``.cbm`` file holds the class labels itself, so a classifier comes back with the same
``predict`` and ``predict_proba``. A folder's ``.cbm`` entry without a sidecar is rebuilt
from its loss function: a classification loss gives a ``CatBoostClassifier``, a ranking
loss a ``CatBoostRanker``, anything else a ``CatBoostRegressor``.

Before CatBoost sees a file, its header is checked (:func:`check_cbm`): CatBoost trusts the
length it records, and a file cut short can then be read past its end (seen as a truncated
file that loads in one process and is refused in another).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ._common import class_from, pick, read_sidecar, require, write_sidecar

ESTIMATORS = ("CatBoostClassifier", "CatBoostRegressor", "CatBoostRanker", "CatBoost")
_CLASSIFYING = ("Logloss", "CrossEntropy", "MultiClass", "MultiClassOneVsAll")
_RANKING = (
    "YetiRank",
    "PairLogit",
    "QueryRMSE",
    "QuerySoftMax",
    "QueryCrossEntropy",
    "StochasticRank",
    "LambdaMart",
)


class CatBoostFlavor:
    name = "catboost"
    entry = "model.cbm"
    extra: str | None = "catboost"
    runs_pickle = False

    def _cb(self) -> Any:
        return require("catboost", package="catboost", extra=self.extra)

    def matches(self, obj: Any) -> bool:
        return class_from(obj, "catboost", ESTIMATORS) is not None

    def save(self, obj: Any, folder: Path) -> None:
        cb = self._cb()
        kind = class_from(obj, "catboost", ESTIMATORS)
        if kind is None:
            raise InvalidInput(f"a {type(obj).__name__} is not a CatBoost model this flavor saves")
        if not obj.is_fitted():
            raise InvalidInput(f"the {type(obj).__name__} is not fitted: call fit() before registering")
        try:
            obj.save_model(str(folder / self.entry), format="cbm")
        except cb.CatBoostError as exc:
            raise InvalidInput(f"cannot save the {type(obj).__name__}: {exc}") from exc
        write_sidecar(folder, self.name, {"class": kind, "format": "cbm"})

    def describe(self, obj: Any) -> dict[str, str | None]:
        cb = self._cb()
        cls = type(obj)
        return {
            "algorithm": f"{cls.__module__}.{cls.__qualname__}",
            "framework": "catboost",
            "framework_version": cb.__version__,
        }

    def load(self, read: Callable[[str], bytes], entry: str) -> Any:
        cb = self._cb()
        data = read(entry)
        check_cbm(data, entry)
        facts = read_sidecar(read, self.name)
        try:
            if facts is not None:
                kind = pick(facts.get("class"), ESTIMATORS, "the sidecar")
            else:
                loss = str(cb.CatBoost().load_model(blob=data).get_all_params().get("loss_function", ""))
                loss = loss.split(":")[0]  # "Logloss:border=0.5" and the like
                kind = (
                    "CatBoostClassifier"
                    if loss in _CLASSIFYING
                    else "CatBoostRanker"
                    if loss in _RANKING
                    else "CatBoostRegressor"
                )
            return getattr(cb, kind)().load_model(blob=data)
        except cb.CatBoostError as exc:
            raise InvalidInput(f"CatBoost cannot read {entry}: {exc}") from exc


def check_cbm(data: bytes, entry: str = "the model") -> None:
    """Refuse what is not a whole ``.cbm`` file: the ``CBM1`` signature, then the length of the
    model core (4 bytes, little-endian), which the file must hold in full.

    >>> check_cbm(b"CBM1\\x10\\x00\\x00\\x00short")
    Traceback (most recent call last):
    ...
    modelledger.errors.InvalidInput: the model is cut short: its header gives the model 16 bytes, 5 follow
    """
    if len(data) < 8 or not data.startswith(b"CBM1"):
        raise InvalidInput(f"{entry} is not a CatBoost model (.cbm files start with CBM1)")
    core = int.from_bytes(data[4:8], "little")
    if len(data) - 8 < core:
        follow = len(data) - 8
        raise InvalidInput(f"{entry} is cut short: its header gives the model {core} bytes, {follow} follow")
