"""A model loaded from the registry: verified, with its signature enforced."""

from __future__ import annotations

from typing import Any

from ._domain import ModelVersion, Signature
from ._signature import enforce
from .errors import InvalidInput

__all__ = ["LoadedModel"]


class LoadedModel:
    """What ``Registry.load`` returns: ``predict`` plus the version it came from."""

    def __init__(self, model: Any, version: ModelVersion) -> None:
        self.raw = model
        self.version = version
        self.signature: Signature | None = version.signature

    def predict(self, data: Any) -> Any:
        """Predict, after checking ``data`` against the registered input signature.

        >>> model = registry.load("models:/credit-risk@production")  # doctest: +SKIP
        >>> model.predict(applications)  # doctest: +SKIP
        """
        if self.signature is not None and self.signature.inputs:
            data = enforce(self.signature, data)
        return self.raw.predict(data)

    def predict_proba(self, data: Any) -> Any:
        """Class probabilities, after the same signature check as :meth:`predict`;
        :class:`~modelledger.errors.InvalidInput` when the model has none (a regressor).

        >>> model = registry.load("models:/credit-risk@production")  # doctest: +SKIP
        >>> model.predict_proba(applications)[:, 1]  # doctest: +SKIP
        """
        proba = getattr(self.raw, "predict_proba", None)
        if not callable(proba):
            raise InvalidInput(
                f"{self.version.uri} ({self.version.flavor} flavor, {type(self.native).__name__}) "
                "has no predict_proba: it is not a probabilistic classifier; use predict"
            )
        if self.signature is not None and self.signature.inputs:
            data = enforce(self.signature, data)
        return proba(data)

    @property
    def native(self) -> Any:
        """The framework's own model object (an ``XGBClassifier``, a ``Booster``, a pipeline...),
        for what ``predict`` does not cover; no signature is enforced on it.

        >>> registry.load("models:/credit-risk/3").native.feature_importances_  # doctest: +SKIP
        """
        return getattr(self.raw, "native", self.raw)

    def __repr__(self) -> str:
        return f"<LoadedModel {self.version.uri} {self.version.flavor}>"
