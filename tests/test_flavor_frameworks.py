"""XGBoost, LightGBM and CatBoost models: registered in their own formats (no pickle), loaded
in a fresh process with the same predictions and probabilities, and refused at registration
when a folder's file is not the declared framework's or is damaged."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelledger import InvalidInput, ModelVersion, NotFound, Registry

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")
cb = pytest.importorskip("catboost")

FRESH = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from modelledger import Registry

    registry = Registry.open(sys.argv[1], artifacts=sys.argv[2])
    X = np.load(sys.argv[3])
    out = {}
    for uri in sys.argv[4:]:
        model = registry.load(uri)
        proba = getattr(model.raw, "predict_proba", None)
        out[uri] = {
            "predict": np.asarray(model.predict(X)).tolist(),
            "proba": model.predict_proba(X).tolist() if proba else None,
            "native": type(model.native).__name__,
        }
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """80 rows, 4 features; a 3-class target and its labels as strings."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    return X, y, np.array(["low", "mid", "high"])[y]


def _fresh(db_url: str, tmp_path: Path, X: np.ndarray, versions: list[ModelVersion]) -> dict[str, Any]:
    """Load every version in a new Python process and predict on ``X`` there."""
    np.save(tmp_path / "X.npy", X)
    args = [db_url, str(tmp_path / "artifacts"), str(tmp_path / "X.npy"), *(v.uri for v in versions)]
    out = subprocess.run([sys.executable, "-c", FRESH, *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _same(got: dict[str, Any], predict: Any, proba: Any = None) -> None:
    assert got["predict"] == np.asarray(predict).tolist()
    if proba is None:
        assert got["proba"] is None
    else:
        np.testing.assert_array_equal(np.array(got["proba"]), proba)


def _manifest(v: ModelVersion, flavor: str, module: Any) -> None:
    assert v.flavor == flavor
    assert v.manifest["framework"] == flavor
    assert v.manifest["framework_version"] == module.__version__
    assert v.manifest["runs_pickle"] is False
    assert not any(f.path.endswith((".pkl", ".joblib")) for f in v.files)


def _nothing_registered(registry: Registry, name: str, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        registry.list_versions(name)
    assert not (tmp_path / "artifacts" / "models").exists()


def _folder(tmp_path: Path, name: str, files: dict[str, bytes]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for rel, content in files.items():
        (folder / rel).write_bytes(content)
    return folder


# Each framework's cases: (version, expected predict, expected predict_proba or None, the
# class of `native`), checked in one fresh process per database (starting Python and importing
# the three frameworks and scikit-learn is most of this file's time).
Case = tuple[ModelVersion, Any, Any, str]


def _xgboost_cases(registry: Registry, tmp_path: Path, data: Any) -> list[Case]:
    X, y, _labels = data
    clf = xgb.XGBClassifier(n_estimators=4, max_depth=2).fit(X, y)
    reg = xgb.XGBRegressor(n_estimators=4, max_depth=2).fit(X, X[:, 0])
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2}, xgb.DMatrix(X, label=y > 0), 3)
    v_clf, v_reg, v_booster = (
        registry.register(f"xgb-{n}", m) for n, m in (("c", clf), ("r", reg), ("b", booster))
    )
    for v in (v_clf, v_reg, v_booster):
        _manifest(v, "xgboost", xgb)
    assert v_clf.manifest["algorithm"] == "xgboost.sklearn.XGBClassifier"
    assert v_clf.manifest["params"]["n_estimators"] == 4
    assert v_booster.manifest["params"]["objective"] == "binary:logistic"
    assert [f.path for f in v_clf.files] == ["model.ubj", "modelledger-flavor.json"]
    # a folder holding the JSON file XGBoost's scikit-learn wrapper writes, with no sidecar
    clf.save_model(tmp_path / "clf.json")
    folder = _folder(tmp_path, "xgb-src", {"model.json": (tmp_path / "clf.json").read_bytes()})
    v_json = registry.register("xgb-j", folder, manifest={"flavor": "xgboost", "entry": "model.json"})
    assert v_json.manifest["runs_pickle"] is False
    return [
        (v_clf, clf.predict(X), clf.predict_proba(X), "XGBClassifier"),
        (v_reg, reg.predict(X), None, "XGBRegressor"),
        (v_booster, booster.predict(xgb.DMatrix(X)), None, "Booster"),
        (v_json, clf.predict(X), clf.predict_proba(X), "XGBClassifier"),  # the same kind, from the file
    ]


def _lightgbm_cases(registry: Registry, tmp_path: Path, data: Any) -> list[Case]:
    X, y, labels = data
    clf = lgb.LGBMClassifier(n_estimators=5, num_leaves=4, min_child_samples=5, verbose=-1).fit(X, labels)
    reg = lgb.LGBMRegressor(n_estimators=5, num_leaves=4, min_child_samples=5, verbose=-1).fit(X, X[:, 0])
    params = {"objective": "binary", "num_leaves": 4, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(X, label=(y > 0).astype(int)), 3)
    v_clf, v_reg, v_booster = (
        registry.register(f"lgb-{n}", m) for n, m in (("c", clf), ("r", reg), ("b", booster))
    )
    for v in (v_clf, v_reg, v_booster):
        _manifest(v, "lightgbm", lgb)
    assert v_clf.manifest["params"]["num_leaves"] == 4
    assert v_booster.manifest["params"]["objective"] == "binary"
    assert set(clf.predict(X)) == {"low", "mid", "high"}  # string labels come back as labels
    folder = _folder(tmp_path, "lgb-src", {"booster.txt": booster.model_to_string().encode()})
    v_txt = registry.register("lgb-t", folder, manifest={"flavor": "lightgbm", "entry": "booster.txt"})
    return [
        (v_clf, clf.predict(X), clf.predict_proba(X), "Booster"),
        (v_reg, reg.predict(X), None, "Booster"),
        (v_booster, booster.predict(X), None, "Booster"),
        (v_txt, booster.predict(X), None, "Booster"),
    ]


def _catboost_cases(registry: Registry, tmp_path: Path, data: Any) -> list[Case]:
    X, _y, labels = data
    opts = {"iterations": 5, "depth": 2, "verbose": False, "thread_count": 1, "allow_writing_files": False}
    clf = cb.CatBoostClassifier(**opts).fit(X, labels)
    reg = cb.CatBoostRegressor(**opts).fit(X, X[:, 0])
    v_clf, v_reg = (registry.register(f"cb-{n}", m) for n, m in (("c", clf), ("r", reg)))
    for v in (v_clf, v_reg):
        _manifest(v, "catboost", cb)
    assert v_clf.manifest["params"]["depth"] == 2
    clf.save_model(str(tmp_path / "clf.cbm"))
    folder = _folder(tmp_path, "cb-src", {"clf.cbm": (tmp_path / "clf.cbm").read_bytes()})
    v_cbm = registry.register("cb-f", folder, manifest={"flavor": "catboost", "entry": "clf.cbm"})
    return [
        (v_clf, clf.predict(X), clf.predict_proba(X), "CatBoostClassifier"),
        (v_reg, reg.predict(X), None, "CatBoostRegressor"),
        (v_cbm, clf.predict(X), clf.predict_proba(X), "CatBoostClassifier"),  # a classifier by its loss
    ]


def test_models_load_in_a_fresh_process_with_the_same_predictions(
    registry: Registry, db_url: str, tmp_path: Path, data
) -> None:
    cases = [
        *_xgboost_cases(registry, tmp_path, data),
        *_lightgbm_cases(registry, tmp_path, data),
        *_catboost_cases(registry, tmp_path, data),
    ]
    got = _fresh(db_url, tmp_path, data[0], [v for v, *_ in cases])
    for v, predict, proba, native in cases:
        _same(got[v.uri], predict, proba)
        assert got[v.uri]["native"] == native, v.uri


def test_a_binary_lightgbm_classifier_keeps_its_labels(registry: Registry, data) -> None:
    X, y, _labels = data
    target = np.where(y > 0, 7, 3)
    clf = lgb.LGBMClassifier(n_estimators=3, num_leaves=4, min_child_samples=5, verbose=-1).fit(X, target)
    model = registry.load(registry.register("bin", clf).uri)
    np.testing.assert_array_equal(model.predict(X), clf.predict(X))
    np.testing.assert_array_equal(model.predict_proba(X), clf.predict_proba(X))


# ---------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def model_files(data, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, bytes]]:
    """flavor -> (file name, bytes) of a small model saved in that framework's own format."""
    X, y, _labels = data
    where = tmp_path_factory.mktemp("models")
    xgb.XGBClassifier(n_estimators=2, max_depth=2).fit(X, y).save_model(where / "m.ubj")
    text = lgb.train({"objective": "binary", "num_leaves": 4, "verbose": -1}, lgb.Dataset(X, label=y > 0), 2)
    cb.CatBoostRegressor(iterations=2, depth=2, verbose=False, allow_writing_files=False).fit(
        X, y
    ).save_model(str(where / "m.cbm"))
    return {
        "xgboost": ("m.ubj", (where / "m.ubj").read_bytes()),
        "lightgbm": ("m.txt", text.model_to_string().encode()),
        "catboost": ("m.cbm", (where / "m.cbm").read_bytes()),
    }


@pytest.mark.parametrize(
    ("written", "declared"),
    [("xgboost", "lightgbm"), ("lightgbm", "catboost"), ("catboost", "xgboost"), ("xgboost", "sklearn")],
)
def test_a_file_of_another_framework_is_refused(
    registry: Registry, tmp_path: Path, model_files, written: str, declared: str
) -> None:
    name, content = model_files[written]
    folder = _folder(tmp_path, "src", {name: content})
    with pytest.raises(InvalidInput, match=f"does not load as a {declared} model"):
        registry.register("wrong", folder, manifest={"flavor": declared, "entry": name})
    _nothing_registered(registry, "wrong", tmp_path)


@pytest.mark.parametrize("flavor", ["xgboost", "lightgbm", "catboost"])
@pytest.mark.parametrize("keep", [0.9, 0.5])
def test_a_truncated_model_file_is_refused_and_nothing_is_registered(
    registry: Registry, tmp_path: Path, model_files, flavor: str, keep: float
) -> None:
    name, content = model_files[flavor]
    folder = _folder(tmp_path, "src", {name: content[: int(len(content) * keep)]})
    with pytest.raises(InvalidInput, match=f"does not load as a {flavor} model"):
        registry.register("broken", folder, manifest={"flavor": flavor, "entry": name})
    _nothing_registered(registry, "broken", tmp_path)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        # each edit keeps the tree's length, so the header's tree_sizes still hold
        ("leaf_value=", "leaf_valuX=", "has no leaf_value"),  # LightGBM itself would end the process
        ("left_child=-1 ", "left_child=-9 ", "points at node -9"),
        ("split_feature=0", "split_feature=7", "splits on feature 7, the model has 4"),
        ("decision_type=2", "decision_type=3", "categorical split"),
        ("threshold=", "threshold=x", "tree 1 is not where the header's tree_sizes put it"),
        ("\nend of parameters", "", "no 'end of parameters'"),  # LightGBM would crash here too
    ],
)
def test_lightgbm_text_is_checked_before_lightgbm_parses_it(
    registry: Registry, tmp_path: Path, model_files, old: str, new: str, problem: str
) -> None:
    _name, content = model_files["lightgbm"]
    text = content.decode()
    assert old in text
    folder = _folder(tmp_path, "src", {"model.txt": text.replace(old, new, 1).encode()})
    with pytest.raises(InvalidInput, match=problem):
        registry.register("lgb", folder, manifest={"flavor": "lightgbm"})
    _nothing_registered(registry, "lgb", tmp_path)


def test_lightgbm_text_without_tree_sizes_is_checked_tree_by_tree(model_files) -> None:
    from modelledger.flavors.lightgbm import check_model_text

    text = re.sub(r"tree_sizes=.*\n", "", model_files["lightgbm"][1].decode())
    check_model_text(text)  # an older file: valid without the sizes
    with pytest.raises(InvalidInput, match=r"tree 0 split_feature holds (\d+) values, expected (?!\1)"):
        check_model_text(text.replace("split_feature=", "split_feature=1 ", 1))
    start = text.index("Tree=1\n")
    at = text.index("threshold=", start) + len("threshold=")
    with pytest.raises(InvalidInput, match="tree 1 threshold holds something that is not a number"):
        check_model_text(text[:at] + "abc " + text[at:])


def test_a_sidecar_cannot_name_any_class(registry: Registry, tmp_path: Path, model_files) -> None:
    name, content = model_files["xgboost"]
    sidecar = json.dumps({"flavor": "xgboost", "class": "DMatrix"}).encode()
    folder = _folder(tmp_path, "src", {name: content, "modelledger-flavor.json": sidecar})
    with pytest.raises(InvalidInput, match="names the class 'DMatrix'"):
        registry.register("x", folder, manifest={"flavor": "xgboost", "entry": name})


# ---------------------------------------------------------------- frameworks that are not installed

BLOCKED = textwrap.dedent(
    """
    import json, sys
    for name in ("xgboost", "lightgbm", "catboost"):
        sys.modules[name] = None  # not importable in this process
    from modelledger import MissingDependency, Registry

    registry = Registry.open(sys.argv[1], artifacts=sys.argv[2])
    out = {}
    for uri in sys.argv[3:]:
        try:
            registry.load(uri)
        except MissingDependency as exc:
            out[uri] = [exc.package, exc.extra, str(exc)]
    print(json.dumps(out))
    """
)


def test_loading_without_the_framework_names_the_extra(
    registry: Registry, db_url: str, tmp_path: Path, model_files
) -> None:
    versions = {}
    for flavor, (name, content) in model_files.items():
        folder = _folder(tmp_path, flavor, {name: content})
        versions[flavor] = registry.register(flavor, folder, manifest={"flavor": flavor, "entry": name})
    args = [db_url, str(tmp_path / "artifacts"), *(v.uri for v in versions.values())]
    out = subprocess.run([sys.executable, "-c", BLOCKED, *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        v.uri: [f, f, f"loading a {f} model needs the {f} package: pip install 'modelledger[{f}]'"]
        for f, v in versions.items()
    }
