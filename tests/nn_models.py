"""Small neural models for the ONNX and PyTorch flavor tests.

The torch classes live here, in an importable module, because a registered module is built
again from its class in a fresh process. The ONNX graphs are built by hand with
``onnx.helper`` (nothing is downloaded). Importing this module imports torch and onnx: only
the flavor tests import it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

OPSET = 17  # an opset every onnxruntime of the last years runs
IR_VERSION = 8


class Scorer(nn.Module):
    """A two-layer regressor; its widths are constructor arguments, kept in ``init_kwargs``."""

    def __init__(self, n_features: int, hidden: int = 8) -> None:
        super().__init__()
        self.init_kwargs = {"n_features": n_features, "hidden": hidden}
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out


class Classifier(nn.Module):
    """Logits from ``forward``; ``predict_proba`` is the softmax, ``predict`` the argmax."""

    def __init__(self, n_features: int = 3, n_classes: int = 3) -> None:
        super().__init__()
        self.init_kwargs = {"n_features": n_features, "n_classes": n_classes}
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x)
        return out

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).argmax(dim=-1)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.forward(x), dim=-1)


class Tied(nn.Module):
    """Two layers sharing one weight (a tied weight, stored once)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 3)
        self.second = nn.Linear(3, 1)
        self.mirror = nn.Linear(3, 3)
        self.mirror.weight = self.first.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.second(torch.relu(self.mirror(torch.relu(self.first(x)))))
        return out


class NeedsArguments(nn.Module):
    """A module that cannot be built again without arguments it does not record."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x)
        return out


def data(n: int = 64, n_features: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, a regression target and class labels (3 classes), deterministic."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features)).astype(np.float32)
    y = (x @ np.array([1.5, -2.0, 0.5][:n_features], dtype=np.float32) + 0.25).astype(np.float32)
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3])).astype(np.int64)
    return x, y, labels


def trained_scorer(steps: int = 30) -> Scorer:
    torch.manual_seed(0)
    x, y, _ = data()
    model = Scorer(3, hidden=8)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).unsqueeze(1)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(model(xt), yt)
        loss.backward()
        optimiser.step()
    return model


def trained_classifier(steps: int = 30) -> Classifier:
    torch.manual_seed(0)
    x, _, labels = data()
    model = Classifier(3, 3)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    xt, lt = torch.from_numpy(x), torch.from_numpy(labels)
    for _ in range(steps):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(xt), lt).backward()
        optimiser.step()
    return model


def softmax_sequential() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3), nn.Softmax(dim=-1))


# ----------------------------------------------------------------------------- ONNX graphs


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        producer_name="modelledger-tests",
        producer_version="1.0",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def fitted_linear(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares weights and intercept for ``y ~ x``."""
    design = np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)])
    coef, *_ = np.linalg.lstsq(design.astype(np.float64), y.astype(np.float64), rcond=None)
    return coef[:-1].astype(np.float32), float(coef[-1])


def onnx_regressor(weights: np.ndarray, intercept: float) -> onnx.ModelProto:
    """``Y = X @ W + B``: X float[N, k], Y float[N, 1]."""
    k = len(weights)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["XW"]), helper.make_node("Add", ["XW", "B"], ["variable"])],
        "linear_regression",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])],
        [
            numpy_helper.from_array(weights.reshape(k, 1).astype(np.float32), "W"),
            numpy_helper.from_array(np.array([intercept], dtype=np.float32), "B"),
        ],
    )
    return _model(graph)


def onnx_classifier(weights: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """Softmax regression: outputs ``label`` int64[N] (argmax) and ``probabilities`` float[N, c]."""
    k, c = weights.shape
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["XW"]),
            helper.make_node("Add", ["XW", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "softmax_regression",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, k])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, c]),
        ],
        [
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "B"),
        ],
    )
    return _model(graph)


def onnx_two_inputs() -> onnx.ModelProto:
    """``total = price * quantity``: two column inputs, float[N, 1] and int64[N, 1]."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["quantity"], ["q"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["price", "q"], ["total"]),
        ],
        "order_total",
        [
            helper.make_tensor_value_info("price", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("quantity", TensorProto.INT64, [None, 1]),
        ],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [None, 1])],
    )
    return _model(graph)


def softmax_numpy(x: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    logits = x.astype(np.float64) @ weights + bias
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return out


def as_lists(value: Any) -> Any:
    return np.asarray(value).tolist()


# ----------------------------------------------------------------------------- a fresh process

ROOT = Path(__file__).resolve().parents[1]

LOAD_AND_PREDICT = """
import json, sys
import numpy as np
import pandas as pd
from modelledger import Registry

url, artifacts, uri, payload = sys.argv[1:5]
data = json.loads(payload)
data = pd.DataFrame(data) if isinstance(data, dict) else np.array(data, dtype=np.float32)
registry = Registry.open(url, artifacts=artifacts, actor="alice@example.com")
model = registry.load(uri)
out = {
    "predict": np.asarray(model.predict(data)).tolist(),
    "native": type(model.native).__name__,
    "modules": sorted(m for m in ("torch", "onnx", "onnxruntime") if m in sys.modules),
}
if callable(getattr(model.raw, "predict_proba", None)):
    out["predict_proba"] = np.asarray(model.predict_proba(data)).tolist()
print(json.dumps(out))
"""


def load_elsewhere(
    url: str, artifacts: str, uri: str, data: Any, *, block: str | None = None
) -> dict[str, Any]:
    """Load ``uri`` in a fresh Python process and predict on ``data`` (an array or a dict of
    columns); returns what it printed. ``block`` names a module made unimportable there."""
    payload = json.dumps(data.tolist() if isinstance(data, np.ndarray) else data)
    code = LOAD_AND_PREDICT
    if block:
        code = f"import sys; sys.modules[{block!r}] = None\n" + code
    run = subprocess.run(
        [sys.executable, "-c", code, url, artifacts, uri, payload],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        },
        timeout=120,
    )
    if run.returncode != 0:
        return {
            "error": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "",
            "stderr": run.stderr,
        }
    result: dict[str, Any] = json.loads(run.stdout)
    return result
