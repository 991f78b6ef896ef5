"""LightGBM models in LightGBM's own text format, never pickled.

A model object is written as ``model.txt`` (``Booster.model_to_string``: the best iteration
when early stopping found one, else every tree) with :data:`~._common.SIDECAR` naming its
class and, for a classifier, its classes (with their dtype), which the text file does not
hold. Loading gives back an object whose ``predict`` and ``predict_proba`` compute exactly
what ``LGBMClassifier``'s do (probabilities from the booster, the class of the largest one)
and whose ``native`` is the ``lightgbm.Booster``. A folder's entry without a sidecar loads
as a ``Booster``.

LightGBM's parser ends the whole process (C++ ``terminate``) on some malformed tree text
instead of raising, so the text is checked first (:func:`check_model_text`): the header's
tree sizes, each tree's arrays and the indices they hold. A truncated or damaged file is
refused with :class:`~modelledger.errors.InvalidInput` before LightGBM sees it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ._common import class_from, pick, read_sidecar, require, write_sidecar

ESTIMATORS = ("LGBMClassifier", "LGBMRegressor", "LGBMRanker", "LGBMModel")


class BoosterModel:
    """A loaded LightGBM model: ``predict`` is ``Booster.predict``; ``native`` the Booster."""

    def __init__(self, booster: Any) -> None:
        self.native = booster

    def predict(self, data: Any) -> Any:
        return self.native.predict(data)


class ClassifierModel(BoosterModel):
    """A loaded ``LGBMClassifier``: the same ``predict_proba`` and ``predict`` (original labels)."""

    def __init__(self, booster: Any, classes: Any) -> None:
        super().__init__(booster)
        self.classes_ = classes

    def predict_proba(self, data: Any) -> Any:
        # only called on a loaded model, so numpy (a core dependency) is cheap here
        import numpy as np

        result = self.native.predict(data)
        if result.ndim == 1:  # a binary model gives the positive class's probability
            return np.vstack((1.0 - result, result)).transpose()
        return result

    def predict(self, data: Any) -> Any:
        # only called on a loaded model, so numpy (a core dependency) is cheap here
        import numpy as np

        return self.classes_[np.argmax(self.predict_proba(data), axis=1)]


class LightGBMFlavor:
    name = "lightgbm"
    entry = "model.txt"
    extra: str | None = "lightgbm"
    runs_pickle = False

    def _lgb(self) -> Any:
        return require("lightgbm", package="lightgbm", extra=self.extra)

    def matches(self, obj: Any) -> bool:
        return class_from(obj, "lightgbm", (*ESTIMATORS, "Booster")) is not None

    def save(self, obj: Any, folder: Path) -> None:
        self._lgb()
        kind = class_from(obj, "lightgbm", (*ESTIMATORS, "Booster"))
        if kind is None:
            raise InvalidInput(f"a {type(obj).__name__} is not a LightGBM model this flavor saves")
        facts: dict[str, Any] = {"class": kind, "format": "text"}
        if kind == "Booster":
            booster = obj
        else:
            try:
                booster = obj.booster_
            except (AttributeError, ValueError) as exc:  # LightGBM's "not fitted" is both
                raise InvalidInput(
                    f"the {type(obj).__name__} is not fitted: call fit() before registering"
                ) from exc
            if kind == "LGBMClassifier":
                classes = obj.classes_
                facts["classes"] = classes.tolist()
                facts["classes_dtype"] = classes.dtype.str
        (folder / self.entry).write_text(booster.model_to_string(), encoding="utf-8")
        write_sidecar(folder, self.name, facts)

    def describe(self, obj: Any) -> dict[str, str | None]:
        lgb = self._lgb()
        cls = type(obj)
        return {
            "algorithm": f"{cls.__module__}.{cls.__qualname__}",
            "framework": "lightgbm",
            "framework_version": lgb.__version__,
        }

    def params(self, obj: Any) -> dict[str, Any]:
        """A Booster's parameters as given to ``lightgbm.train`` (an estimator's come from its
        ``get_params``)."""
        return dict(getattr(obj, "params", None) or {})

    def load(self, read: Callable[[str], bytes], entry: str) -> Any:
        lgb = self._lgb()
        try:
            text = read(entry).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{entry} is not a LightGBM text model (not UTF-8 text)") from exc
        check_model_text(text, entry)
        facts = read_sidecar(read, self.name) or {"class": "Booster"}
        kind = pick(facts.get("class"), (*ESTIMATORS, "Booster"), "the sidecar")
        try:
            booster = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as exc:
            raise InvalidInput(f"LightGBM cannot read {entry}: {exc}") from exc
        if kind != "LGBMClassifier":
            return BoosterModel(booster)
        return ClassifierModel(booster, _classes(facts))


def _classes(facts: dict[str, Any]) -> Any:
    # only when loading a classifier; numpy is a core dependency
    import numpy as np

    classes = facts.get("classes")
    if not isinstance(classes, list) or not classes:
        raise InvalidInput("the sidecar of a LightGBM classifier lists no classes")
    dtype = np.dtype(facts.get("classes_dtype", "O"))
    return np.array(classes, dtype=dtype if dtype.kind in "biufU" else object)


# ---------------------------------------------------------------- the text format, checked

# arrays of one value per internal node (num_leaves - 1) and per leaf (num_leaves)
_INTERNAL = (
    "split_feature",
    "split_gain",
    "threshold",
    "decision_type",
    "left_child",
    "right_child",
    "internal_value",
    "internal_weight",
    "internal_count",
)
_LEAF = ("leaf_value", "leaf_weight", "leaf_count")
_FIELD = re.compile(r"[a-z_]+=[^=]*|Tree=\d+")
_NEEDED_SPLIT = ("split_feature", "threshold", "decision_type", "left_child", "right_child")


def check_model_text(text: str, entry: str = "the model") -> None:
    """Refuse LightGBM model text that LightGBM could not parse safely.

    Checks that the header is there with ``tree_sizes`` that add up to the trees that follow,
    that the text goes on to ``end of trees``, and that every tree holds the arrays LightGBM
    reads, each of the right length, made of numbers, with child and feature indices in range.

    >>> check_model_text("tree\\nversion=v4\\n")
    Traceback (most recent call last):
    ...
    modelledger.errors.InvalidInput: the model is not a complete LightGBM model: it has no 'end of trees'
    """

    def bad(problem: str) -> InvalidInput:
        return InvalidInput(f"{entry} is not a complete LightGBM model: {problem}")

    if not text.startswith("tree\n"):
        raise bad("it does not start with LightGBM's 'tree' header")
    end = text.find("\nend of trees")
    if end < 0:
        raise bad("it has no 'end of trees'")
    first = text.find("\nTree=")
    header = _fields(text[: first if 0 <= first < end else end])
    max_feature = _int(header.get("max_feature_idx"), "max_feature_idx", bad)
    if first < 0 or first > end:
        blocks: list[str] = []
    elif "tree_sizes" in header:
        sizes = [_int(n, "tree_sizes", bad) for n in header["tree_sizes"].split()]
        start, blocks = first + 1, []
        for i, size in enumerate(sizes):
            block = text[start : start + size]
            if not block.startswith(f"Tree={i}\n") or start + size > end + 1:
                raise bad(f"tree {i} is not where the header's tree_sizes put it")
            blocks.append(block)
            start += size
        if text[start:end].strip():
            raise bad("there is text between the last tree and 'end of trees'")
    else:  # an older file without tree_sizes: trees are separated by blank lines
        blocks = [b for b in text[first + 1 : end].split("\n\n") if b.strip()]
    for i, block in enumerate(blocks):
        if "\n\n" in block.rstrip("\n"):  # LightGBM ends a tree at its first blank line
            raise bad(f"tree {i} has a blank line inside it")
        for line in block.splitlines():
            # LightGBM aborts on a tree line that is not key=value
            if line and not _FIELD.fullmatch(line):
                raise bad(f"tree {i} has the line {line[:40]!r}, not 'name=value'")
        _check_tree(_fields(block), i, max_feature, bad)
    # LightGBM reads the parameters back when loading and crashes on an unterminated section
    opened = text.find("\nparameters:\n", end)
    if opened >= 0:
        closed = text.find("\nend of parameters\n", opened)
        if closed < 0:
            raise bad("its parameters section has no 'end of parameters'")
        for line in text[opened + len("\nparameters:\n") : closed].splitlines():
            if line and not (line.startswith("[") and line.endswith("]") and ": " in line):
                raise bad(f"the parameter line {line[:40]!r} is not '[name: value]'")


def _check_tree(tree: dict[str, str], i: int, max_feature: int, bad: Callable[[str], InvalidInput]) -> None:
    leaves = _int(tree.get("num_leaves"), f"tree {i} num_leaves", bad)
    if leaves < 1:
        raise bad(f"tree {i} has {leaves} leaves")
    if "leaf_value" not in tree:
        raise bad(f"tree {i} has no leaf_value")
    arrays: dict[str, list[float]] = {}
    for key in (*_INTERNAL, *_LEAF):
        if key not in tree:
            if leaves > 1 and key in _NEEDED_SPLIT:
                raise bad(f"tree {i} has no {key}")
            continue
        want = leaves if key in _LEAF else leaves - 1
        values = _numbers(tree[key], f"tree {i} {key}", bad)
        if len(values) != want:
            raise bad(f"tree {i} {key} holds {len(values)} values, expected {want}")
        arrays[key] = values
    for key in ("left_child", "right_child"):
        for child in arrays.get(key, ()):
            # >= 0: an internal node; < 0: leaf ~child
            if child != int(child) or not -leaves <= child <= leaves - 2:
                raise bad(f"tree {i} {key} points at node {child:g}, outside the tree")
    if leaves > 1:
        # each node is reached once, an internal child always after its parent: no cycle, which
        # LightGBM would follow for ever when predicting
        seen: list[int] = []
        for parent, pair in enumerate(zip(arrays["left_child"], arrays["right_child"], strict=True)):
            for child in pair:
                if 0 <= child <= parent:
                    raise bad(f"tree {i} node {parent} points back at node {child:g}")
                seen.append(int(child))
        if sorted(seen) != sorted([*range(1, leaves - 1), *range(-leaves, 0)]):
            raise bad(f"tree {i} does not reach every node exactly once")
    for feature in arrays.get("split_feature", ()):
        if feature != int(feature) or not 0 <= feature <= max_feature:
            raise bad(f"tree {i} splits on feature {feature:g}, the model has {max_feature + 1}")
    cats = _int(tree.get("num_cat", "0"), f"tree {i} num_cat", bad)
    for kind, threshold in zip(arrays.get("decision_type", ()), arrays.get("threshold", ()), strict=False):
        # a categorical split's threshold is the index of its category set
        if int(kind) & 1 and not (threshold == int(threshold) and 0 <= threshold < cats):
            raise bad(f"tree {i} has a categorical split outside its {cats} category sets")
    if cats > 0:
        bounds = _numbers(tree.get("cat_boundaries", ""), f"tree {i} cat_boundaries", bad)
        words = _numbers(tree.get("cat_threshold", ""), f"tree {i} cat_threshold", bad)
        if len(bounds) != cats + 1 or bounds != sorted(bounds) or bounds[0] != 0 or bounds[-1] != len(words):
            raise bad(f"tree {i} has inconsistent categorical splits")


def _fields(block: str) -> dict[str, str]:
    out = {}
    for line in block.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _int(value: str | None, what: str, bad: Callable[[str], InvalidInput]) -> int:
    try:
        return int(value or "")
    except ValueError:
        raise bad(f"{what} is {value!r}, not a whole number") from None


def _numbers(value: str, what: str, bad: Callable[[str], InvalidInput]) -> list[float]:
    try:
        numbers = [float(v) for v in value.split()]
    except ValueError:
        raise bad(f"{what} holds something that is not a number") from None
    if any(math.isnan(n) for n in numbers) and not what.endswith(("leaf_value", "threshold")):
        raise bad(f"{what} holds NaN")
    return numbers
