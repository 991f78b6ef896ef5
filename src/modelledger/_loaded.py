"""A model loaded from the registry: verified, with its signature enforced."""

from __future__ import annotations

from typing import Any

from ._domain import ModelVersion, Signature
from ._signature import enforce

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

    def __repr__(self) -> str:
        return f"<LoadedModel {self.version.uri} {self.version.flavor}>"
