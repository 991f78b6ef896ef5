"""A tiny credit model for the refresh tests, trained through the entrypoint contract: it reads
its data with ``modelledger.inputs()`` and registers with ``Registry.open()``, so that the same
script runs again on other data. It learns a cut on income halfway between the mean income of
defaulters and of the others; its gate asks for 80% accuracy on the holdout."""

from __future__ import annotations

from typing import Any

import modelledger
from modelledger import Registry


class IncomeCut:
    def __init__(self, cut: float) -> None:
        self.cut = cut

    def predict(self, rows: Any) -> list[int]:
        return [int(x < self.cut) for x in rows["income"]]


frames = modelledger.inputs()
train, holdout = frames["train"], frames["holdout"]
defaulters = train.loc[train["defaulted"] == 1, "income"].mean()
others = train.loc[train["defaulted"] == 0, "income"].mean()
model = IncomeCut(float((defaulters + others) / 2))
hits = sum(int(p == y) for p, y in zip(model.predict(holdout), holdout["defaulted"], strict=True))
Registry.open().register(
    "credit",
    model,
    metrics={"accuracy": hits / len(holdout)},
    params={"cut": model.cut},
    sample_input=holdout[["income"]].head(5),
    manifest={
        "gates": ["accuracy >= 0.8"],
        "refresh": {"schedule": "0 3 * * MON", "on_data": ["apps-train"]},
    },
)
