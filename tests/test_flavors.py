"""The flavor core: which flavor takes an object, plugins through the ``modelledger.flavors``
entry point group, what the manifest records, ``predict_proba`` and ``native``, and a missing
framework reported as :class:`MissingDependency` naming the pip extra."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from tests.helpers import Doubler

from modelledger import InvalidInput, InvalidManifest, MissingDependency, NotFound, Registry, SchemaMismatch
from modelledger.flavors import BUILTIN, flavor_for_object, flavor_names, get_flavor

PLUGIN = '''
import pickle


class Toy:
    """A model kind no built-in flavor knows: it stores its one number as text."""

    def __init__(self, k):
        self.k = k

    def predict(self, data):
        return [row[0] * self.k for row in data]


class ToyFlavor:
    name = "toy"
    entry = "k.txt"
    extra = None
    runs_pickle = False

    def matches(self, obj):
        return isinstance(obj, Toy)

    def save(self, obj, folder):
        (folder / self.entry).write_text(str(obj.k))

    def describe(self, obj):
        return {"algorithm": "toy", "framework": "toy", "framework_version": "1"}

    def load(self, read, entry):
        return Toy(int(read(entry).decode()))


class Impostor(ToyFlavor):
    name = "sklearn"
'''


def _install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry_points: str) -> None:
    """A real distribution on ``sys.path``: a module and its dist-info with entry points."""
    site = tmp_path / "site"
    (site / "toy_flavor-1.0.dist-info").mkdir(parents=True)
    (site / "toy_flavor.py").write_text(PLUGIN)
    (site / "toy_flavor-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: toy-flavor\nVersion: 1.0\n"
    )
    (site / "toy_flavor-1.0.dist-info" / "entry_points.txt").write_text(
        f"[modelledger.flavors]\n{entry_points}\n"
    )
    monkeypatch.syspath_prepend(str(site))


# ---------------------------------------------------------------- detection


def test_python_is_the_last_built_in_and_every_flavor_says_if_it_unpickles() -> None:
    names = [cls.name for cls in BUILTIN]
    assert names[-1] == "python"
    assert names.index("xgboost") < names.index("sklearn")
    assert flavor_names()[: len(names)] == tuple(names)
    assert {cls.name: cls.runs_pickle for cls in BUILTIN} == {
        "mlflow": True,
        "xgboost": False,
        "lightgbm": False,
        "catboost": False,
        "onnx": False,
        "pytorch": False,
        "sklearn": True,
        "python": True,
    }


def test_objects_go_to_the_most_specific_flavor(fitted_pipeline: object) -> None:
    assert flavor_for_object(fitted_pipeline).name == "sklearn"
    assert flavor_for_object(Doubler()).name == "python"
    assert flavor_for_object(lambda rows: rows).name == "python"
    with pytest.raises(InvalidInput, match="cannot register a int"):
        flavor_for_object(3)


def test_deciding_the_flavor_imports_no_framework() -> None:
    code = (
        "import sys\n"
        "from modelledger.flavors import flavor_for_object\n"
        "class M:\n"
        "    def predict(self, rows): return rows\n"
        "assert flavor_for_object(M()).name == 'python'\n"
        "print(sorted(m for m in ('xgboost', 'lightgbm', 'catboost', 'sklearn') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unknown_flavor_is_refused_naming_the_known_ones(registry: Registry, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(b"x")
    with pytest.raises(
        InvalidManifest,
        match=r"must be one of mlflow, xgboost, lightgbm, catboost, onnx, pytorch, sklearn, python",
    ):
        registry.register("m", src, manifest={"flavor": "tensorflow", "entry": "model.bin"})
    with pytest.raises(InvalidInput, match="unknown flavor 'tensorflow'"):
        get_flavor("tensorflow")


# ---------------------------------------------------------------- plugins


def test_a_plugin_flavor_registers_and_loads_by_its_entry_point(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_plugin(tmp_path, monkeypatch, "toy = toy_flavor:ToyFlavor\nsklearn = toy_flavor:Impostor")
    assert "toy" in flavor_names()
    assert flavor_names().count("sklearn") == 1  # a plugin cannot take a built-in's name
    assert type(get_flavor("sklearn")).__module__ == "modelledger.flavors.sklearn"

    import toy_flavor

    v = registry.register("toy-model", toy_flavor.Toy(3))
    assert v.flavor == "toy"
    assert v.manifest["runs_pickle"] is False
    assert [f.path for f in v.files] == ["k.txt"]
    assert registry.load(v.uri).predict([[1], [2]]) == [3, 6]
    # a folder of the plugin's files, declared in a manifest, is checked by the plugin too
    src = tmp_path / "src"
    src.mkdir()
    (src / "k.txt").write_text("seven")
    with pytest.raises(InvalidInput, match="does not load as a toy model: ValueError"):
        registry.register("toy-folder", src, manifest={"flavor": "toy"})


def test_a_broken_plugin_is_named_when_it_is_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_plugin(tmp_path, monkeypatch, "ghost = toy_flavor_missing:Flavor")
    assert "ghost" in flavor_names()  # listed without importing it
    with pytest.raises(InvalidInput, match=r"flavor plugin 'ghost' \(toy_flavor_missing:Flavor\) failed"):
        get_flavor("ghost")


# ---------------------------------------------------------------- the manifest and the loaded model


def test_the_manifest_records_whether_loading_unpickles(registry: Registry, tmp_path: Path) -> None:
    assert registry.register("py", Doubler()).manifest["runs_pickle"] is True
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("just files")
    files = registry.register("files", src)
    assert files.flavor == "files"
    assert files.manifest["runs_pickle"] is False
    # what a manifest claims is not what is recorded: the flavor decides
    (src / "model.pkl").write_bytes(pickle.dumps(Doubler()))
    v = registry.register("claims", src, manifest={"flavor": "python", "runs_pickle": False})
    assert v.manifest["runs_pickle"] is True


def test_predict_proba_and_native(registry: Registry, credit_data, fitted_pipeline) -> None:
    from sklearn.linear_model import LinearRegression

    X, y = credit_data
    v = registry.register("clf", fitted_pipeline, sample_input=X.head(5))
    model = registry.load(v.uri)
    np.testing.assert_array_equal(model.predict_proba(X), fitted_pipeline.predict_proba(X))  # type: ignore[attr-defined]
    assert type(model.native).__name__ == "Pipeline"
    with pytest.raises(SchemaMismatch, match="income"):
        model.predict_proba(X.drop(columns=["income"]))

    reg = LinearRegression().fit(X[["age", "income"]], y)
    loaded = registry.load(registry.register("reg", reg).uri)
    with pytest.raises(
        InvalidInput, match=r"models:/reg/1 \(sklearn flavor, LinearRegression\) has no predict_proba"
    ):
        loaded.predict_proba(X[["age", "income"]])


# ---------------------------------------------------------------- scikit-learn: pickle or joblib


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("xz", 1)])
def test_a_joblib_file_registered_as_sklearn_loads(
    registry: Registry, tmp_path: Path, credit_data, fitted_pipeline, compress
) -> None:
    import joblib

    X, _y = credit_data
    src = tmp_path / "src"
    src.mkdir()
    joblib.dump(fitted_pipeline, src / "pipeline.joblib", compress=compress)
    v = registry.register("jl", src, manifest={"flavor": "sklearn", "entry": "pipeline.joblib"})
    assert v.manifest["runs_pickle"] is True
    model = registry.load(v.uri)
    np.testing.assert_array_equal(model.predict_proba(X), fitted_pipeline.predict_proba(X))  # type: ignore[attr-defined]


def test_a_joblib_file_under_a_pickle_name_is_told_by_its_content(
    registry: Registry, tmp_path: Path, credit_data, fitted_pipeline
) -> None:
    import joblib

    X, _y = credit_data
    src = tmp_path / "src"
    src.mkdir()
    joblib.dump(fitted_pipeline, src / "model.pkl")  # the default entry name, joblib's format
    v = registry.register("jl", src, manifest={"flavor": "sklearn"})
    assert v.manifest["entry"] == "model.pkl"
    np.testing.assert_array_equal(registry.load(v.uri).predict(X), fitted_pipeline.predict(X))  # type: ignore[attr-defined]


def test_a_file_that_is_neither_pickle_nor_joblib_is_refused(registry: Registry, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.joblib").write_text("not a model")
    with pytest.raises(InvalidInput, match=r"neither a pickle .* nor a joblib file"):
        registry.register("bad", src, manifest={"flavor": "sklearn", "entry": "model.joblib"})
    with pytest.raises(NotFound):
        registry.get_model("bad")
    assert not (tmp_path / "artifacts" / "models").exists()


def test_a_truncated_pickle_is_refused_and_nothing_is_registered(registry: Registry, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = pickle.dumps(Doubler(), protocol=5)
    (src / "model.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInput, match=r"model\.pkl does not load as a python model"):
        registry.register("cut", src, manifest={"flavor": "python"})
    with pytest.raises(NotFound):
        registry.get_model("cut")
    assert not (tmp_path / "artifacts" / "models").exists()


# ---------------------------------------------------------------- a framework that is not installed

BLOCKED = textwrap.dedent(
    """
    import json, sys
    for name in sys.argv[3].split(","):
        sys.modules[name] = None  # the framework cannot be imported in this process
    from modelledger import MissingDependency, Registry

    registry = Registry.open(sys.argv[1], artifacts=sys.argv[2])
    out = {}
    for uri in sys.argv[4:]:
        try:
            registry.load(uri)
            out[uri] = "loaded"
        except MissingDependency as exc:
            out[uri] = [exc.package, exc.extra, str(exc)]
    print(json.dumps(out))
    """
)


def test_a_missing_framework_is_missing_dependency_naming_the_extra(
    registry: Registry, db_url: str, tmp_path: Path, fitted_pipeline
) -> None:
    v = registry.register("clf", fitted_pipeline)
    py = registry.register("py", Doubler())
    args = [db_url, str(tmp_path / "artifacts"), "sklearn,joblib", v.uri, py.uri]
    out = subprocess.run(
        [sys.executable, "-c", BLOCKED, *args], capture_output=True, text=True, check=True, cwd=Path.cwd()
    )
    assert json.loads(out.stdout) == {
        v.uri: [
            "scikit-learn",
            "sklearn",
            "loading a sklearn model needs the scikit-learn package: pip install 'modelledger[sklearn]'",
        ],
        py.uri: "loaded",  # its pickle needs only numpy and the tests' own module
    }


def test_the_cli_says_where_to_install_a_missing_framework(tmp_path: Path) -> None:
    from modelledger.cli._common import fail

    @__import__("click").command()
    def cmd() -> None:
        fail(MissingDependency(package="xgboost", extra="xgboost"), show_traceback=False)

    result = CliRunner().invoke(cmd, [])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: loading a xgboost model needs the xgboost package: pip install 'modelledger[xgboost]' "
        f"(in the Python environment at {sys.prefix})"
    )


def test_the_server_answers_501_for_a_missing_framework() -> None:
    from modelledger.server.errors import status_for

    assert status_for(MissingDependency(package="catboost", extra="catboost")) == 501


def test_a_signature_checked_predict_proba_keeps_the_columns(registry: Registry, credit_data) -> None:
    from sklearn.tree import DecisionTreeClassifier

    X, y = credit_data
    numeric = X[["age", "income", "loan_amount"]]
    clf = DecisionTreeClassifier(max_depth=2, random_state=0).fit(numeric, y)
    model = registry.load(registry.register("tree", clf, sample_input=numeric.head(3)).uri)
    reordered = pd.DataFrame({c: numeric[c] for c in ["loan_amount", "age", "income"]})
    np.testing.assert_array_equal(model.predict_proba(reordered), clf.predict_proba(numeric))
