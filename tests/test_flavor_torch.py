"""The pytorch flavor: small modules trained for a few steps, registered, loaded in a fresh
process (which imports their class from tests/nn_models.py, or needs none for TorchScript)."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch
from tests import nn_models as nm
from tests.helpers import Tripwire
from torch import nn

from modelledger import InvalidInput, Registry, SchemaMismatch
from modelledger.flavors import flavor_for_object, get_flavor

# the tests script modules themselves; the flavor silences TorchScript's deprecation on save/load
script_is_deprecated = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


def nothing_registered(registry: Registry, tmp_path: Path) -> None:
    """No model, and no file under the registry fixture's artefact root."""
    assert list(registry.iter_models()) == []
    root = tmp_path / "artifacts"
    assert not root.exists() or not any(p.is_file() for p in root.rglob("*"))


def stored(registry: Registry, uri: str, path: str) -> bytes:
    _entry, fh = registry.open_file(uri, path)
    with fh:
        return fh.read()


def eager(module: nn.Module, x: np.ndarray) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        out: np.ndarray = module(torch.from_numpy(x)).numpy()
    return out


def test_a_trained_module_round_trips_through_a_fresh_process(registry: Registry, db_url: str) -> None:
    model = nm.trained_scorer()
    x, _, _ = nm.data(n=6, seed=5)
    mv = registry.register("scorer", model)

    assert mv.flavor == "pytorch"
    assert sorted(f.path for f in mv.files) == ["model.json", "model.safetensors"]
    manifest = mv.manifest
    assert (manifest["framework"], manifest["framework_version"]) == ("pytorch", torch.__version__)
    assert manifest["algorithm"] == "tests.nn_models:Scorer"
    assert (manifest["entry"], manifest["runs_pickle"]) == ("model.json", False)
    spec = json.loads(stored(registry, mv.uri, "model.json"))
    assert spec["class"] == "tests.nn_models:Scorer"
    assert spec["init_kwargs"] == {"n_features": 3, "hidden": 8}
    assert (spec["format"], spec["input_dtype"], spec["output"]) == ("state_dict", "float32", "values")
    weights = safetensors.torch.load(stored(registry, mv.uri, "model.safetensors"))
    assert torch.equal(weights["body.0.weight"], model.body[0].weight)

    expected = eager(model, x).ravel()  # one value per row, as a regressor's predict gives
    there = nm.load_elsewhere(db_url, registry.artifact_root, mv.uri, x)
    assert there["predict"] == expected.tolist()
    assert there["native"] == "Scorer"
    assert "predict_proba" not in there
    assert "onnxruntime" not in there["modules"]
    with pytest.raises(InvalidInput, match="no predict_proba"):
        registry.load(mv.uri).predict_proba(x)


def test_a_class_with_predict_and_predict_proba_uses_them(registry: Registry, db_url: str) -> None:
    model = nm.trained_classifier()
    x, _, labels = nm.data(n=10, seed=5)
    mv = registry.register("classifier", model)
    with torch.no_grad():
        proba = model.predict_proba(torch.from_numpy(x)).numpy()
    there = nm.load_elsewhere(db_url, registry.artifact_root, mv.uri, x)
    assert there["predict_proba"] == proba.tolist()
    assert there["predict"] == proba.argmax(axis=1).tolist()
    assert np.mean(np.asarray(there["predict"]) == labels) >= 0.6  # it did learn something

    loaded = registry.load(mv.uri)
    assert isinstance(loaded.native, nm.Classifier)
    assert not loaded.native.training  # eval mode
    assert loaded.predict_proba(x).tolist() == there["predict_proba"]


@script_is_deprecated
def test_a_class_defined_in_a_function_is_refused_and_its_torchscript_is_stored(
    registry: Registry, db_url: str, tmp_path: Path
) -> None:
    class Local(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.linear(x))

    torch.manual_seed(2)
    model = Local()
    with pytest.raises(InvalidInput, match=r"inside a function.*torch\.jit\.script\(model\)"):
        registry.register("local", model)
    nothing_registered(registry, tmp_path)

    mv = registry.register("local", torch.jit.script(model))
    assert sorted(f.path for f in mv.files) == ["model.json", "model.pt"]
    assert mv.manifest["algorithm"] == "torchscript:Local"
    assert mv.manifest["runs_pickle"] is False
    x, _, _ = nm.data(n=4, seed=9)
    there = nm.load_elsewhere(db_url, registry.artifact_root, mv.uri, x)
    assert there["predict"] == eager(model, x).tolist()
    assert there["native"] == "RecursiveScriptModule"


@script_is_deprecated
def test_a_scripted_softmax_sequential_predicts_classes_and_probabilities(registry: Registry) -> None:
    model = nm.softmax_sequential()
    with pytest.raises(InvalidInput, match=r"nn\.Sequential.*torch\.jit\.script"):
        registry.register("sequential", model)

    mv = registry.register("sequential", torch.jit.script(model))
    x, _, _ = nm.data(n=5, seed=1)
    loaded = registry.load(mv.uri)
    proba = eager(model, x)
    assert loaded.predict_proba(x).tolist() == proba.tolist()
    assert loaded.predict(x).tolist() == proba.argmax(axis=1).tolist()


def test_constructor_arguments_come_from_init_kwargs(registry: Registry, tmp_path: Path) -> None:
    torch.manual_seed(4)
    model = nm.NeedsArguments(5)
    with pytest.raises(InvalidInput, match=r"needs width.*model\.init_kwargs = \{'width': \.\.\.\}"):
        registry.register("needs-arguments", model)
    nothing_registered(registry, tmp_path)

    model.init_kwargs = {"width": 4}  # wrong: the stored weights do not fit such a module
    with pytest.raises(
        InvalidInput, match=r"do not fit tests\.nn_models:NeedsArguments\(\*\*\{'width': 4\}\)"
    ):
        registry.register("needs-arguments", model)
    nothing_registered(registry, tmp_path)

    model.init_kwargs = {"width": 5}
    mv = registry.register("needs-arguments", model)
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    assert registry.load(mv.uri).predict(x).tolist() == eager(model, x).ravel().tolist()


def test_tied_weights_are_stored_once(registry: Registry) -> None:
    torch.manual_seed(6)
    model = nm.Tied()
    mv = registry.register("tied", model)
    spec = json.loads(stored(registry, mv.uri, "model.json"))
    assert spec["aliases"] == {"mirror.weight": "first.weight"}
    assert "mirror.weight" not in safetensors.torch.load(stored(registry, mv.uri, "model.safetensors"))
    x, _, _ = nm.data(n=4, seed=2)
    loaded = registry.load(mv.uri)
    assert loaded.predict(x).tolist() == eager(model, x).ravel().tolist()
    assert loaded.native.mirror.weight is loaded.native.first.weight


def test_a_saved_folder_registers_as_pytorch(registry: Registry, tmp_path: Path) -> None:
    model = nm.trained_scorer(steps=3)
    folder = tmp_path / "saved"
    folder.mkdir()
    get_flavor("pytorch").save(model, folder)
    mv = registry.register("from-folder", folder, manifest={"flavor": "pytorch"})
    assert (mv.flavor, mv.manifest["entry"], mv.manifest["runs_pickle"]) == ("pytorch", "model.json", False)
    described = (mv.manifest["algorithm"], mv.manifest["framework"], mv.manifest["framework_version"])
    assert described == ("tests.nn_models:Scorer", "pytorch", torch.__version__)  # from model.json
    x, _, _ = nm.data(n=3)
    assert registry.load(mv.uri).predict(x).tolist() == eager(model, x).ravel().tolist()


def test_a_pickle_declared_pytorch_is_refused_without_unpickling_it(
    registry: Registry, tmp_path: Path
) -> None:
    mark = tmp_path / "unpickled.txt"
    folder = tmp_path / "pickled"
    folder.mkdir()
    buffer = io.BytesIO()
    torch.save(Tripwire(str(mark)), buffer)  # a pickle inside torch's zip archive
    (folder / "model.pt").write_bytes(buffer.getvalue())
    with pytest.raises(InvalidInput, match="does not load as a pytorch model"):
        registry.register("wrong-flavor", folder, manifest={"flavor": "pytorch", "entry": "model.pt"})
    assert not mark.exists()

    (folder / "model.pt").unlink()
    (folder / "model.json").write_bytes(pickle.dumps(Tripwire(str(mark))))
    with pytest.raises(InvalidInput, match="does not load as a pytorch model"):
        registry.register("wrong-flavor", folder, manifest={"flavor": "pytorch"})
    assert not mark.exists()
    nothing_registered(registry, tmp_path)


def test_truncated_weights_are_refused_at_registration(registry: Registry, tmp_path: Path) -> None:
    folder = tmp_path / "truncated"
    folder.mkdir()
    get_flavor("pytorch").save(nm.trained_scorer(steps=1), folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) - 16])
    with pytest.raises(InvalidInput, match="does not load as a pytorch model"):
        registry.register("truncated", folder, manifest={"flavor": "pytorch"})
    nothing_registered(registry, tmp_path)


def test_loading_without_torch_names_the_extra(registry: Registry, db_url: str) -> None:
    mv = registry.register("no-torch", nm.trained_scorer(steps=1))
    there = nm.load_elsewhere(db_url, registry.artifact_root, mv.uri, [[1.0, 2.0, 3.0]], block="torch")
    assert there["error"] == (
        "modelledger.errors.MissingDependency: loading a torch model needs the torch package: "
        "pip install 'modelledger[torch]'"
    )


def test_a_module_is_the_pytorch_flavor() -> None:
    assert flavor_for_object(nn.Linear(2, 1)).name == "pytorch"
    flavor = get_flavor("pytorch")
    assert (flavor.entry, flavor.extra, flavor.runs_pickle) == ("model.json", "torch", False)


def test_a_sample_input_records_the_signature(registry: Registry) -> None:
    model = nm.trained_scorer(steps=1)
    x, _, _ = nm.data(n=4)
    sample = pd.DataFrame(x, columns=["age", "income", "debt"])
    mv = registry.register("sampled", model, sample_input=sample)
    signature = mv.manifest["signature"]
    assert [c["name"] for c in signature["inputs"]] == ["age", "income", "debt"]
    assert signature["outputs"] == [{"name": "prediction", "type": "float", "nullable": False}]
    loaded = registry.load(mv.uri)
    assert loaded.predict(sample).tolist() == eager(model, x).ravel().tolist()
    with pytest.raises(SchemaMismatch, match="debt"):
        loaded.predict(sample[["age", "income"]])
