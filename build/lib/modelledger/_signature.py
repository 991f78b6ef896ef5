"""Input/output signatures: inferred from a sample at registration, enforced at predict."""

from __future__ import annotations

from typing import Any

from ._domain import ColumnSpec, Signature
from .errors import InvalidInput, SchemaMismatch

__all__ = ["enforce", "infer_signature"]


def _kind_of(dtype: Any) -> str:
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast
    import pandas as pd  # heavy: loaded on first use so `import modelledger` stays fast

    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_string_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return "string"
    if dtype == np.dtype("O"):
        return "object"
    return "object"


def _as_frame(data: Any) -> Any:
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast
    import pandas as pd  # heavy: loaded on first use so `import modelledger` stays fast

    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, pd.Series):
        return data.to_frame()
    if isinstance(data, dict):
        return pd.DataFrame(data)
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return pd.DataFrame(data)
    if isinstance(data, np.ndarray):
        arr = data if data.ndim == 2 else data.reshape(len(data), -1)
        return pd.DataFrame(arr, columns=[str(i) for i in range(arr.shape[1])])
    raise InvalidInput(
        f"cannot infer a signature from {type(data).__name__}: give a pandas DataFrame, "
        "a dict of columns, a list of records or a 2-D numpy array"
    )


def _columns(frame: Any) -> tuple[ColumnSpec, ...]:
    # One null check over the frame, not a Series built per column (most of the cost on the
    # few rows of a sample)
    nulls = frame.isna().to_numpy().any(axis=0)
    return tuple(
        ColumnSpec(name=str(col), type=_kind_of(dtype), nullable=bool(null))
        for col, dtype, null in zip(frame.columns, frame.dtypes, nulls, strict=True)
    )


def infer_signature(sample_input: Any, sample_output: Any = None) -> Signature:
    """Signature from a sample input (and optionally the model's output on it).

    >>> import pandas as pd
    >>> infer_signature(pd.DataFrame({"age": [30], "income": [1.5]})).inputs[0].type
    'integer'
    """
    inputs = _columns(_as_frame(sample_input))
    outputs: tuple[ColumnSpec, ...] = ()
    if sample_output is not None:
        import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast
        import pandas as pd  # heavy: loaded on first use so `import modelledger` stays fast

        if isinstance(sample_output, (pd.DataFrame, pd.Series)):
            outputs = _columns(_as_frame(sample_output))
        else:
            arr = np.asarray(sample_output)
            if arr.ndim <= 1:
                outputs = (ColumnSpec("prediction", _kind_of(arr.dtype)),)
            else:
                outputs = _columns(_as_frame(arr))
    return Signature(inputs=inputs, outputs=outputs)


# A column of the left kind may be fed where the signature says the right kind.
_COMPATIBLE = {
    ("integer", "float"),
    ("boolean", "integer"),
    ("boolean", "float"),
    ("object", "string"),
    ("string", "object"),
}


def enforce(signature: Signature, data: Any) -> Any:
    """Return ``data`` as a DataFrame with the signature's columns, in order, or raise.

    Extra columns are dropped, as MLflow does; a missing column or a column of an
    incompatible type raises :class:`SchemaMismatch` naming the column.
    """
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast

    expected = signature.inputs
    if isinstance(data, np.ndarray) and [c.name for c in expected] != [str(i) for i in range(len(expected))]:
        arr = data if data.ndim == 2 else data.reshape(len(data), -1)
        if arr.shape[1] != len(expected):
            raise SchemaMismatch(
                expected[min(arr.shape[1], len(expected) - 1)].name,
                f"is missing: the model expects {len(expected)} columns, the array has {arr.shape[1]}",
            )
        import pandas as pd  # heavy: loaded on first use so `import modelledger` stays fast

        frame = pd.DataFrame(arr, columns=[c.name for c in expected])
    else:
        frame = _as_frame(data)
    present = {str(c): c for c in frame.columns}
    dtypes = frame.dtypes
    kinds: dict[Any, str] = {}  # one dtype -> kind lookup per distinct dtype, not per column
    for spec in expected:
        if spec.name not in present:
            raise SchemaMismatch(spec.name, "is missing")
        label = present[spec.name]
        dtype = dtypes[label]
        got = kinds.get(dtype)
        if got is None:
            got = kinds[dtype] = _kind_of(dtype)
        # Fast path: the type matches and no null check is needed (floats may hold NaN by
        # contract; plain numpy integer and bool columns cannot hold missing values at all).
        if got == spec.type and (
            spec.nullable or got == "float" or (isinstance(dtype, np.dtype) and got in ("integer", "boolean"))
        ):
            continue
        col = frame[label]
        if got == spec.type or (got, spec.type) in _COMPATIBLE:
            pass
        elif got == "float" and spec.type == "integer" and bool((col.dropna() == col.dropna().round()).all()):
            pass  # whole numbers read back from CSV as float, with gaps
        elif got == "object" and spec.type in {"integer", "float", "boolean"}:
            raise SchemaMismatch(spec.name, f"must be {spec.type}, got text or mixed values")
        else:
            raise SchemaMismatch(spec.name, f"must be {spec.type}, got {got}")
        if not spec.nullable and spec.type != "float" and bool(col.isna().any()):
            raise SchemaMismatch(spec.name, "has missing values but the model was registered without any")
    names = [present[s.name] for s in expected]
    if list(frame.columns) == names:
        return frame
    return frame[names]
