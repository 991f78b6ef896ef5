"""Small model classes used by the tests (importable, so pickles can find them)."""

from __future__ import annotations

from typing import Any

import numpy as np


class Doubler:
    """A plain Python model: predicts twice the first column."""

    def predict(self, data: Any) -> Any:
        return np.asarray(data)[:, 0] * 2


class Tripwire:
    """Unpickling this object leaves a mark in the file it names."""

    def __init__(self, mark: str) -> None:
        self.mark = mark

    def predict(self, data: Any) -> Any:
        return np.zeros(len(data))

    def __setstate__(self, state: dict[str, Any]) -> None:
        with open(state["mark"], "a") as fh:
            fh.write("unpickled\n")
        self.__dict__.update(state)
