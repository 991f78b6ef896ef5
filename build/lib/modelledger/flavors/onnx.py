"""ONNX models: stored as the ``.onnx`` protobuf itself, run with onnxruntime on the CPU.

Saving needs the ``onnx`` package (the object registered is an ``onnx.ModelProto``, checked
with ``onnx.checker``); loading needs only ``onnxruntime``. Nothing is unpickled: an ONNX file
is a protobuf message that onnxruntime parses into a graph of its own operators.

The version's signature comes from the graph itself (see :func:`graph_signature`), so a
registered ONNX model is checked at ``predict`` even when no ``sample_input`` was given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ._common import class_from, require

__all__ = ["OnnxClassifier", "OnnxFlavor", "OnnxModel", "graph_signature"]

# onnxruntime's element type names -> (numpy dtype name, signature column kind)
_ELEMENT_TYPES: dict[str, tuple[str, str]] = {
    "tensor(float)": ("float32", "float"),
    "tensor(double)": ("float64", "float"),
    "tensor(float16)": ("float16", "float"),
    "tensor(int8)": ("int8", "integer"),
    "tensor(int16)": ("int16", "integer"),
    "tensor(int32)": ("int32", "integer"),
    "tensor(int64)": ("int64", "integer"),
    "tensor(uint8)": ("uint8", "integer"),
    "tensor(uint16)": ("uint16", "integer"),
    "tensor(uint32)": ("uint32", "integer"),
    "tensor(uint64)": ("uint64", "integer"),
    "tensor(bool)": ("bool", "boolean"),
    "tensor(string)": ("object", "string"),
}

_EXTRA = "onnx"


def _kind(ort_type: str) -> str:
    return _ELEMENT_TYPES.get(ort_type, ("object", "object"))[1]


def graph_signature(inputs: Sequence[Any], outputs: Sequence[Any]) -> dict[str, Any]:
    """A signature (as ``Signature.to_dict()``) from a graph's inputs and outputs.

    Each of ``inputs``/``outputs`` has ``name``, ``type`` (onnxruntime's ``"tensor(float)"``)
    and ``shape`` (ints, or ``None``/a name for a free dimension). The columns are what
    ``predict`` takes as a table:

    - one input of shape ``[N, k]`` with ``k`` fixed: columns ``"0"`` .. ``"k-1"`` (as a 2-D
      numpy sample would give; a plain array of ``k`` columns is accepted as it is);
    - inputs of shape ``[N]`` or ``[N, 1]``: one column per input, named after it;
    - anything else (a free width, images, several wide inputs): no input columns, so nothing
      is enforced and ``predict`` takes a dict of arrays by input name.

    Each output is one column named after it (a non-tensor output, such as a sequence of
    maps of probabilities, is of kind ``object``).

    >>> class Arg:
    ...     def __init__(self, name, type, shape): self.name, self.type, self.shape = name, type, shape
    >>> graph_signature([Arg("X", "tensor(float)", [None, 2])], [Arg("Y", "tensor(float)", [None])])
    ... # doctest: +NORMALIZE_WHITESPACE
    {'inputs': [{'name': '0', 'type': 'float', 'nullable': False},
                {'name': '1', 'type': 'float', 'nullable': False}],
     'outputs': [{'name': 'Y', 'type': 'float', 'nullable': False}]}
    """

    def column(name: str, ort_type: str) -> dict[str, Any]:
        return {"name": name, "type": _kind(ort_type), "nullable": False}

    columns: list[dict[str, Any]] = []
    if len(inputs) == 1 and _width(inputs[0].shape) is not None and len(inputs[0].shape) == 2:
        width = _width(inputs[0].shape) or 0
        columns = [column(str(i), inputs[0].type) for i in range(width)]
    elif all(_is_column(arg.shape) for arg in inputs):
        columns = [column(arg.name, arg.type) for arg in inputs]
    return {"inputs": columns, "outputs": [column(arg.name, arg.type) for arg in outputs]}


def _width(shape: Sequence[Any] | None) -> int | None:
    """The fixed last dimension of a rank-2 shape, else ``None``."""
    if shape is None or len(shape) != 2 or not isinstance(shape[1], int):
        return None
    return shape[1]


def _is_column(shape: Sequence[Any] | None) -> bool:
    return shape is not None and (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))


class OnnxModel:
    """An ONNX graph loaded into an onnxruntime ``InferenceSession`` (``.native``).

    ``predict(data)`` feeds the session's inputs and returns its first output as a numpy
    array. ``data`` may be a dict of arrays by input name, a DataFrame (one input: the whole
    table as one matrix; several inputs: one column per input, by name) or an array (the
    graph's one input). Values are cast to each input's element type.
    """

    def __init__(self, session: Any, description: Mapping[str, str | None]) -> None:
        self.native = session
        self.inputs = list(session.get_inputs())
        self.outputs = list(session.get_outputs())
        self.signature = graph_signature(self.inputs, self.outputs)
        self._description = dict(description)

    def describe(self) -> dict[str, str | None]:
        """``algorithm``, ``framework``, ``framework_version`` as read from the loaded file."""
        return dict(self._description)

    def predict(self, data: Any) -> Any:
        return self._run(self.outputs[0].name, data)

    def _run(self, output: str, data: Any) -> Any:
        feeds = self._feeds(data)
        try:
            (result,) = self.native.run([output], feeds)
        except Exception as exc:  # onnxruntime reports bad input through its own exception types
            text = " ".join(str(exc).split())[:500]
            raise InvalidInput(f"the ONNX graph refused the input: {text}") from exc
        return result

    def _feeds(self, data: Any) -> dict[str, Any]:
        import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast
        import pandas as pd  # heavy: loaded on first use so `import modelledger` stays fast

        names = [arg.name for arg in self.inputs]
        if isinstance(data, Mapping):
            missing = [n for n in names if n not in data]
            if missing:
                raise InvalidInput(f"the ONNX graph needs the inputs {names}; missing: {missing}")
            return {arg.name: _as_input(arg, data[arg.name]) for arg in self.inputs}
        if isinstance(data, pd.DataFrame) and len(self.inputs) > 1:
            present = {str(c): c for c in data.columns}
            missing = [n for n in names if n not in present]
            if missing:
                raise InvalidInput(
                    f"the ONNX graph has {len(names)} inputs {names}: give one column per input; "
                    f"missing: {missing}"
                )
            return {arg.name: _as_input(arg, data[present[arg.name]].to_numpy()) for arg in self.inputs}
        if len(self.inputs) != 1:
            raise InvalidInput(
                f"the ONNX graph has {len(names)} inputs {names}: give a dict of arrays or a "
                "DataFrame with one column per input"
            )
        values = data.to_numpy() if isinstance(data, (pd.DataFrame, pd.Series)) else np.asarray(data)
        return {names[0]: _as_input(self.inputs[0], values)}


class OnnxClassifier(OnnxModel):
    """An ONNX graph with a probability output: ``predict_proba`` returns it as a matrix
    (rows, classes), from a tensor or from skl2onnx's sequence of ``{class: probability}``
    maps (columns in the order of the sorted class labels)."""

    def __init__(self, session: Any, description: Mapping[str, str | None], proba: str) -> None:
        super().__init__(session, description)
        self.proba_output = proba

    def predict_proba(self, data: Any) -> Any:
        import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast

        result = self._run(self.proba_output, data)
        if isinstance(result, list) and result and isinstance(result[0], dict):
            labels = sorted(result[0])
            return np.array([[row[k] for k in labels] for row in result], dtype=np.float64)
        return np.asarray(result)


def probability_output(outputs: Sequence[Any]) -> str | None:
    """The output holding class probabilities, or ``None``.

    An output whose name contains ``prob`` (skl2onnx's ``output_probability``, a hand-named
    ``probabilities``); else, in a graph whose first output is a label (an integer, string or
    boolean tensor), its second output.
    """
    for arg in outputs:
        if "prob" in arg.name.lower():
            return str(arg.name)
    if len(outputs) >= 2 and _kind(outputs[0].type) in {"integer", "string", "boolean"}:
        return str(outputs[1].name)
    return None


def _as_input(arg: Any, values: Any) -> Any:
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast

    dtype = _ELEMENT_TYPES.get(arg.type, ("object", ""))[0]
    arr = np.asarray(values)
    try:
        arr = arr.astype(dtype, copy=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"the ONNX input {arg.name!r} takes {arg.type}: {exc}") from exc
    rank = len(arg.shape) if arg.shape is not None else None
    if rank == 2 and arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    elif rank == 1 and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    return arr


class OnnxFlavor:
    """``onnx.ModelProto`` objects, and folders holding an ``.onnx`` file (entry ``model.onnx``)."""

    name = "onnx"
    entry = "model.onnx"
    extra: str | None = _EXTRA
    runs_pickle = False

    def matches(self, obj: Any) -> bool:
        return class_from(obj, "onnx", ("ModelProto",)) is not None

    def save(self, obj: Any, folder: Path) -> None:
        onnx = require("onnx", package="onnx", extra=_EXTRA, purpose="saving an onnx model")
        try:
            onnx.checker.check_model(obj)
        except Exception as exc:  # onnx.checker raises ValidationError, or ValueError for a >2 GB model
            text = " ".join(str(exc).split())[:500]
            raise InvalidInput(f"the ONNX model does not pass onnx.checker: {text}") from exc
        try:
            data = obj.SerializeToString()
        except Exception as exc:  # protobuf refuses messages over 2 GB
            raise InvalidInput(f"cannot serialise the ONNX model: {exc}") from exc
        (folder / self.entry).write_bytes(data)

    def describe(self, obj: Any) -> dict[str, str | None]:
        onnx = require("onnx", package="onnx", extra=_EXTRA, purpose="saving an onnx model")
        opset = _opset(obj)
        producer = " ".join(p for p in (obj.producer_name, obj.producer_version) if p)
        return {
            "algorithm": _algorithm(obj.graph.name, producer),
            "framework": "onnx",
            "framework_version": _version(onnx.__version__, opset, _installed("onnxruntime")),
        }

    def loaded_facts(self, loaded: OnnxModel) -> dict[str, Any]:
        """The graph's signature and what onnxruntime says of the file (for the manifest)."""
        return {"signature": loaded.signature, **loaded.describe()}

    def load(self, read: Callable[[str], bytes], entry: str) -> Any:
        ort = require("onnxruntime", package="onnxruntime", extra=_EXTRA)
        data = read(entry)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: onnxruntime's warnings would go to stderr
        session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta()
        # what onnxruntime reports: the opset would need a second parse of the file with onnx
        description = {
            "algorithm": _algorithm(meta.graph_name, meta.producer_name),
            "framework": "onnx",
            "framework_version": _version(_installed("onnx"), None, ort.__version__),
        }
        proba = probability_output(session.get_outputs())
        if proba is not None:
            return OnnxClassifier(session, description, proba)
        return OnnxModel(session, description)


def _algorithm(graph: str, producer: str) -> str:
    name = graph or "onnx graph"
    return f"{name} ({producer})" if producer else name


def _version(onnx_version: str | None, opset: int | None, ort_version: str | None) -> str:
    """E.g. ``1.17.0 (opset 17, onnxruntime 1.20.1)``: the onnx package, the graph's default
    opset, the runtime that loaded it."""
    details = ", ".join(
        part
        for part in (f"opset {opset}" if opset else "", f"onnxruntime {ort_version}" if ort_version else "")
        if part
    )
    head = onnx_version or "onnx"
    return f"{head} ({details})" if details else head


def _opset(model: Any) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def _installed(package: str) -> str | None:
    """``package``'s installed version, read from its metadata without importing it."""
    from importlib.metadata import PackageNotFoundError, version  # scans metadata: only when describing

    try:
        return version(package)
    except PackageNotFoundError:
        return None
