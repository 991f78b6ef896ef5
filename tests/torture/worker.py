"""A process that writes to a registry in a loop until it is killed (see test_crash.py).

Usage: python worker.py MODE DB_URL ARTIFACTS  with MODE one of register, govern, ingest, capture.
It prints "ready" once its setup is done, so the parent kills it only while it writes, and
"wrote" after each complete write.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from modelledger import Registry


class Affine:
    """A tiny model whose pickle needs nothing but numpy."""

    def predict(self, data: object) -> object:
        return np.asarray(data, dtype=float).sum(axis=1)


def main() -> None:
    mode, url, artifacts = sys.argv[1:4]
    reg = Registry.open(url, artifacts=artifacts, actor="worker@example.com")
    officer = Registry.open(url, artifacts=artifacts, actor="officer@example.com")
    frame = pd.DataFrame({"a": np.arange(50, dtype=float), "b": np.arange(50, dtype=float) * 2})
    if mode in ("govern", "capture"):
        uri = reg.register("crash", Affine(), sample_input=frame.head(3), capture=False).uri
        officer.approve(uri, reason="setup")
        officer.deploy(uri, reason="setup")
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        if mode == "register":
            reg.register(
                "crash", Affine(), sample_input=frame.head(3), capture=False, datasets={"train": frame + i}
            )
        elif mode == "govern":
            uri = reg.register("crash", Affine(), capture=False).uri
            officer.approve(uri, reason=f"round {i}")
            officer.deploy(uri, reason=f"round {i}")
            if i % 3 == 0:
                officer.rollback("crash", reason=f"round {i}")
        elif mode == "ingest":
            reg.datasets.register("crash-data", frame + i, capture=False)
        elif mode == "capture":
            with reg.load(
                "models:/crash@production", capture=True, flush_rows=20, flush_seconds=0.05
            ) as served:
                for _ in range(50):
                    served.predict(frame.head(7))
        else:
            raise SystemExit(f"unknown mode {mode}")
        print("wrote", flush=True)


if __name__ == "__main__":
    main()
