"""The onnx flavor: hand-built ONNX graphs registered, then loaded in a fresh process."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pandas as pd
import pytest
from onnx import TensorProto, helper
from tests import nn_models as nm

from modelledger import InvalidInput, Registry, SchemaMismatch
from modelledger.flavors import flavor_for_object, get_flavor
from modelledger.flavors.onnx import graph_signature, probability_output


def nothing_registered(registry: Registry, tmp_path: Path) -> None:
    """No model, and no file under the registry fixture's artefact root."""
    assert list(registry.iter_models()) == []
    root = tmp_path / "artifacts"
    assert not root.exists() or not any(p.is_file() for p in root.rglob("*"))


def test_a_linear_graph_round_trips_through_a_fresh_process(registry: Registry, db_url: str) -> None:
    x, y, _ = nm.data()
    weights, intercept = nm.fitted_linear(x, y)
    mv = registry.register("onnx-linear", nm.onnx_regressor(weights, intercept))

    assert mv.flavor == "onnx"
    assert [f.path for f in mv.files] == ["model.onnx"]
    manifest = mv.manifest
    assert manifest["entry"] == "model.onnx"
    assert manifest["framework"] == "onnx"
    assert manifest["framework_version"] == (
        f"{onnx.__version__} (opset {nm.OPSET}, onnxruntime {onnxruntime.__version__})"
    )
    assert manifest["algorithm"] == "linear_regression (modelledger-tests 1.0)"
    assert manifest["runs_pickle"] is False
    # the graph's own signature, with no sample given: X float[N, 3] -> three columns
    assert manifest["signature"] == {
        "inputs": [{"name": str(i), "type": "float", "nullable": False} for i in range(3)],
        "outputs": [{"name": "variable", "type": "float", "nullable": False}],
    }

    here = registry.load(mv.uri)
    expected = np.asarray(here.predict(x[:5]))
    np.testing.assert_allclose(expected.ravel(), x[:5] @ weights + intercept, rtol=1e-5)
    assert type(here.native).__name__ == "InferenceSession"

    there = nm.load_elsewhere(db_url, registry.artifact_root, mv.uri, x[:5])
    assert there["predict"] == expected.tolist()
    assert there["native"] == "InferenceSession"
    assert "torch" not in there["modules"]  # loading an ONNX model needs no torch


def test_a_classifier_graph_has_predict_proba(registry: Registry, db_url: str) -> None:
    x, _, _ = nm.data()
    rng = np.random.default_rng(3)
    weights, bias = rng.normal(size=(3, 3)), rng.normal(size=3)
    mv = registry.register("onnx-classifier", nm.onnx_classifier(weights, bias))
    assert mv.manifest["signature"]["outputs"] == [
        {"name": "label", "type": "integer", "nullable": False},
        {"name": "probabilities", "type": "float", "nullable": False},
    ]

    there = nm.load_elsewhere(db_url, registry.artifact_root, mv.uri, x[:8])
    expected = nm.softmax_numpy(x[:8], weights, bias)
    np.testing.assert_allclose(there["predict_proba"], expected, rtol=1e-5, atol=1e-6)
    assert there["predict"] == expected.argmax(axis=1).tolist()

    here = registry.load(mv.uri)
    assert here.predict_proba(x[:8]).tolist() == there["predict_proba"]


def test_a_regressor_graph_has_no_predict_proba(registry: Registry) -> None:
    mv = registry.register("onnx-regressor", nm.onnx_regressor(np.ones(3, np.float32), 0.0))
    with pytest.raises(InvalidInput, match="no predict_proba"):
        registry.load(mv.uri).predict_proba(np.zeros((1, 3), np.float32))


def test_one_column_per_input_by_name_with_types_cast(registry: Registry, db_url: str) -> None:
    mv = registry.register("order-total", nm.onnx_two_inputs())
    assert mv.manifest["signature"]["inputs"] == [
        {"name": "price", "type": "float", "nullable": False},
        {"name": "quantity", "type": "integer", "nullable": False},
    ]
    orders = {"quantity": [2, 3], "price": [1.5, 2.25], "note": ["a", "b"]}  # extra column dropped
    there = nm.load_elsewhere(db_url, registry.artifact_root, mv.uri, orders)
    assert np.asarray(there["predict"]).ravel().tolist() == [3.0, 6.75]

    model = registry.load(mv.uri)
    with pytest.raises(SchemaMismatch, match="quantity"):
        model.predict(pd.DataFrame({"price": [1.0]}))
    # the raw wrapper takes a dict of arrays by input name too
    out = model.raw.predict({"price": np.array([[2.0]]), "quantity": np.array([[4]])})
    assert out.tolist() == [[8.0]]


def test_a_sample_input_names_the_columns(registry: Registry) -> None:
    x, y, _ = nm.data()
    weights, intercept = nm.fitted_linear(x, y)
    sample = pd.DataFrame(x[:4], columns=["age", "income", "debt"])
    mv = registry.register("named", nm.onnx_regressor(weights, intercept), sample_input=sample)
    assert [c["name"] for c in mv.manifest["signature"]["inputs"]] == ["age", "income", "debt"]
    model = registry.load(mv.uri)
    np.testing.assert_allclose(model.predict(sample).ravel(), x[:4] @ weights + intercept, rtol=1e-5)


def test_a_folder_with_an_onnx_file_registers_as_onnx(
    registry: Registry, db_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "exported"
    folder.mkdir()
    onnx.save(nm.onnx_regressor(np.array([1.0, 2.0, 3.0], np.float32), 1.0), folder / "regressor.onnx")
    (folder / "README.txt").write_text("exported by the training job\n")
    mv = registry.register("from-folder", folder, manifest={"flavor": "onnx", "entry": "regressor.onnx"})
    assert mv.flavor == "onnx"
    assert mv.manifest["runs_pickle"] is False
    assert [c["name"] for c in mv.manifest["signature"]["inputs"]] == ["0", "1", "2"]
    # no object to describe: what onnxruntime reads from the file (it does not give the opset)
    assert mv.manifest["algorithm"] == "linear_regression (modelledger-tests)"
    assert mv.manifest["framework"] == "onnx"
    assert mv.manifest["framework_version"] == f"{onnx.__version__} (onnxruntime {onnxruntime.__version__})"
    there = nm.load_elsewhere(db_url, registry.artifact_root, mv.uri, [[1.0, 1.0, 1.0]])
    assert there["predict"] == [[7.0]]


def test_a_pickle_declared_onnx_is_refused_at_registration(registry: Registry, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(InvalidInput, match="does not load as a onnx model"):
        registry.register("wrong-flavor", folder, manifest={"flavor": "onnx"})
    nothing_registered(registry, tmp_path)


def test_a_truncated_onnx_file_is_refused_at_registration(registry: Registry, tmp_path: Path) -> None:
    folder = tmp_path / "truncated"
    folder.mkdir()
    data = nm.onnx_regressor(np.ones(3, np.float32), 0.0).SerializeToString()
    (folder / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInput, match="does not load as a onnx model"):
        registry.register("truncated", folder, manifest={"flavor": "onnx"})
    nothing_registered(registry, tmp_path)


def test_a_graph_that_fails_the_checker_is_refused(registry: Registry, tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "missing"], ["Y"])],
        "broken",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", nm.OPSET)])
    model.ir_version = nm.IR_VERSION
    with pytest.raises(InvalidInput, match=r"onnx\.checker"):
        registry.register("broken", model)
    nothing_registered(registry, tmp_path)


def test_loading_without_onnxruntime_names_the_extra(registry: Registry, db_url: str) -> None:
    mv = registry.register("no-runtime", nm.onnx_regressor(np.ones(3, np.float32), 0.0))
    there = nm.load_elsewhere(db_url, registry.artifact_root, mv.uri, [[1.0, 2.0, 3.0]], block="onnxruntime")
    assert there["error"] == (
        "modelledger.errors.MissingDependency: loading a onnx model needs the onnxruntime package: "
        "pip install 'modelledger[onnx]'"
    )


def test_the_flavor_is_chosen_without_importing_onnx() -> None:
    code = (
        "import sys\n"
        "from modelledger.flavors import flavor_for_object, get_flavor\n"
        "from tests.helpers import Doubler\n"
        "assert not get_flavor('onnx').matches(Doubler())\n"
        "assert flavor_for_object(Doubler()).name == 'python'\n"
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'torch') if m in sys.modules))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=nm.ROOT, check=True
    )
    assert run.stdout.strip() == "[]"


def test_a_model_proto_is_the_onnx_flavor() -> None:
    model = nm.onnx_regressor(np.ones(3, np.float32), 0.0)
    assert flavor_for_object(model).name == "onnx"
    flavor = get_flavor("onnx")
    assert (flavor.entry, flavor.extra, flavor.runs_pickle) == ("model.onnx", "onnx", False)


class Arg:
    """What onnxruntime's NodeArg gives: a name, an element type and a shape."""

    def __init__(self, name: str, type: str, shape: list[int | str | None] | None) -> None:
        self.name, self.type, self.shape = name, type, shape


@pytest.mark.parametrize(
    ("inputs", "columns"),
    [
        ([Arg("X", "tensor(double)", ["batch", 2])], [("0", "float"), ("1", "float")]),
        ([Arg("ids", "tensor(int64)", [None])], [("ids", "integer")]),
        (
            [Arg("flag", "tensor(bool)", [None, 1]), Arg("city", "tensor(string)", [None, 1])],
            [("flag", "boolean"), ("city", "string")],
        ),
        ([Arg("X", "tensor(float)", [None, None])], []),  # a free width: nothing to enforce
        ([Arg("image", "tensor(float)", [None, 3, 32, 32])], []),
        ([Arg("a", "tensor(float)", [None, 4]), Arg("b", "tensor(float)", [None, 1])], []),
    ],
)
def test_graph_inputs_become_signature_columns(inputs: list[Arg], columns: list[tuple[str, str]]) -> None:
    zipmap = "seq(map(int64,tensor(float)))"  # skl2onnx's probabilities, one map per row
    outputs = [Arg("label", "tensor(int64)", [None]), Arg("output_probability", zipmap, [])]
    signature = graph_signature(inputs, outputs)
    assert [(c["name"], c["type"]) for c in signature["inputs"]] == columns
    assert [(c["name"], c["type"]) for c in signature["outputs"]] == [
        ("label", "integer"),
        ("output_probability", "object"),
    ]
    assert probability_output(outputs) == "output_probability"


def test_a_second_output_is_a_probability_only_after_a_label() -> None:
    label, scores = Arg("label", "tensor(string)", [None]), Arg("scores", "tensor(float)", [None, 2])
    assert probability_output([label, scores]) == "scores"
    mean, std = Arg("mean", "tensor(float)", [None]), Arg("std", "tensor(float)", [None])
    assert probability_output([mean, std]) is None
