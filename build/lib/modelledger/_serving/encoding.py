"""The canonical encoding of rows and outputs, and the digests built from it.

Shared by receipts and capture: a receipt signs these texts' digests, a capture file
stores the texts themselves, and both must be the same bytes whichever path made them.

**Canonical input.** The input digest of a row is ``"sha256:" + sha256(text)`` of the
row's canonical JSON text (:func:`canonical_row`): an RFC 8785 (JCS) object that maps
each column name (as ``str``) to the row's value, where

* integers are numbers (outside ``±(2**53 - 1)`` they are decimal strings);
* floats are JCS numbers: the shortest round-trip digits, so ``3.0`` and ``3`` are both ``3``;
* ``NaN``, ``None``, ``pandas.NA`` and ``NaT`` are ``null`` (so a missing value hashes the
  same however it is spelled); ``+inf``/``-inf`` are the strings ``"Infinity"``/``"-Infinity"``;
* booleans are ``true``/``false``, strings are strings;
* datetimes are their ISO 8601 text with the fraction of a second in as few digits as
  needed (none for a whole second, whatever the unit they are stored in) and their UTC
  offset if they carry one; dates are ``YYYY-MM-DD``; bytes are standard base64 text;
  numpy scalars are their Python value; lists/tuples/arrays are arrays, mappings are
  objects; anything else is ``str(value)``.

Outputs follow the same rules (a 1-D array gives one value per row, a 2-D array a list
per row, a DataFrame an object per row).

A whole ``predict`` call is encoded column by column (:func:`row_texts`), and from
:data:`ARROW_MIN_ROWS` rows on through Arrow's vectorised string kernels
(:func:`arrow_row_texts`): the same bytes at a fraction of the per-row cost.
:func:`encode_rows` picks the path; :func:`leaf_hashes` hashes the receipts' leaves
(see :mod:`modelledger._serving.receipts`) from the per-row texts.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from json.encoder import encode_basestring as _json_string
from typing import Any, Final

from .._canonical import MAX_SAFE_INTEGER, canonicalize_str
from ..errors import InvalidInput

__all__ = [
    "ARROW_MIN_ROWS",
    "arrow_row_texts",
    "arrow_tokens",
    "canonical_row",
    "column_tokens",
    "encode_rows",
    "input_digest",
    "leaf_hashes",
    "leaf_parts",
    "row_texts",
    "table_columns",
]

# --------------------------------------------------------------------------- canonical values

_NULL_TYPES: Final = frozenset({"NAType", "NaTType"})
_int_repr = int.__repr__


def _float_token(value: float) -> str:
    """The JCS text of a float; NaN is null, infinities are strings (see the module docstring)."""
    text = repr(value)
    if "e" in text or "n" in text:  # exponent, nan, inf
        if value != value:
            return "null"
        if value in (math.inf, -math.inf):
            return '"Infinity"' if value > 0 else '"-Infinity"'
        return canonicalize_str(value)
    if text[-2:] == ".0":
        text = text[:-2]
        return "0" if text == "-0" else text
    return text


_FRACTION = re.compile(r"(\d\d:\d\d:\d\d)\.(\d+)")


def _trim_fraction(text: str) -> str:
    """An ISO 8601 time with its fraction of a second in as few digits as needed (none if whole)."""

    def trim(match: re.Match[str]) -> str:
        digits = match.group(2).rstrip("0")
        return match.group(1) + ("." + digits if digits else "")

    return _FRACTION.sub(trim, text, count=1)


def _datetime64_texts(values: Any) -> list[str | None]:
    """ISO 8601 texts of a datetime64 array whatever its unit (None for NaT)."""
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast

    try:
        exact = values.astype("datetime64[ns]")
        if not np.array_equal(exact.astype(values.dtype), values, equal_nan=True):
            raise OverflowError
    except (OverflowError, ValueError):
        exact = values.astype("datetime64[us]")  # outside years 1678..2262
    return [None if t == "NaT" else _trim_fraction(t) for t in np.datetime_as_string(exact).tolist()]


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data by the canonical-input rules."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return int(value) if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(int(value))
    if isinstance(value, float):
        if value != value:
            return None
        if value in (math.inf, -math.inf):
            return "Infinity" if value > 0 else "-Infinity"
        return float(value)
    if type(value).__name__ in _NULL_TYPES:
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return _trim_fraction(value.isoformat())
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    module = type(value).__module__
    if module == "numpy":
        import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast

        if isinstance(value, np.ndarray):
            return [_jsonable(v) for v in value.tolist()]
        if isinstance(value, np.datetime64):
            return None if np.isnat(value) else _datetime64_texts(np.asarray([value]))[0]
        if isinstance(value, np.generic):
            return _jsonable(value.item())
    return str(value)


def _token(value: Any) -> str:
    """The canonical JSON text of one value."""
    if type(value) is str:
        return _json_string(value)
    if type(value) is float:
        return _float_token(value)
    return canonicalize_str(_jsonable(value))


def _float_tokens(values: Any) -> list[str]:
    """:func:`_float_token` of each value of a float array, vectorised for long arrays.

    Arrow's float-to-string cast writes the same shortest round-trip digits as ``repr``
    (and ``3`` for ``3.0``) at a third of the cost, but switches to exponent notation
    earlier than JCS and writes ``nan``, ``inf`` and ``-0``: every token holding an
    ``e`` or an ``n``, and ``-0``, is redone by the scalar encoder.
    """
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast

    as_float = values.astype(np.float64, copy=False)
    if len(as_float) < 64:
        return [_float_token(v) for v in as_float.tolist()]
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast
    import pyarrow.compute as pc  # heavy: loaded on first use so `import modelledger` stays fast

    texts = pa.array(as_float).cast(pa.string())
    redo = pc.or_(
        pc.or_(pc.match_substring(texts, "e"), pc.match_substring(texts, "n")), pc.equal(texts, "-0")
    )
    out: list[str] = texts.to_pylist()
    if pc.any(redo).as_py():
        for i in np.flatnonzero(redo.to_numpy(zero_copy_only=False)).tolist():
            out[i] = _float_token(float(as_float[i]))
    return out


def column_tokens(values: Any) -> list[str]:
    """Canonical JSON texts of a column of values (a numpy array, pandas array or sequence)."""
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast

    if not isinstance(values, np.ndarray):
        if isinstance(values, (list, tuple)):
            return [_token(v) for v in values]
        arrow = getattr(values, "_pa_array", None)  # pandas' Arrow-backed strings: 10x faster than asarray
        if arrow is not None and hasattr(arrow, "to_pylist"):
            return [_json_string(v) if type(v) is str else _token(v) for v in arrow.to_pylist()]
        values = np.asarray(values, dtype=object)  # other pandas arrays: NA becomes NA/nan
    kind = values.dtype.kind
    if values.ndim != 1:
        return [_token(v) for v in values.tolist()]
    if kind == "f":
        return _float_tokens(values)
    if kind in "iu":
        ints = values.tolist()
        if len(ints) < 64:
            return [_int_repr(v) if -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER else _token(v) for v in ints]
        if values.max() > MAX_SAFE_INTEGER or values.min() < -MAX_SAFE_INTEGER:
            return [_token(v) for v in ints]
        return list(map(_int_repr, ints))
    if kind == "b":
        return ["true" if v else "false" for v in values.tolist()]
    if kind == "U":
        return list(map(_json_string, values.tolist()))
    if kind == "M":
        return ["null" if t is None else '"' + t + '"' for t in _datetime64_texts(values)]
    return [_token(v) for v in values.tolist()]


@functools.lru_cache(maxsize=256)
def _object_template(names: tuple[str, ...]) -> tuple[str, tuple[int, ...]]:
    """A ``%``-template for a JCS object with these member names, and the column order it takes."""
    if len(set(names)) != len(names):
        raise InvalidInput(f"column names must be unique to build a canonical row, got {list(names)}")
    order = tuple(sorted(range(len(names)), key=lambda i: names[i].encode("utf-16-be", "surrogatepass")))
    parts = [_json_string(names[i]).replace("%", "%%") + ":%s" for i in order]
    return "{" + ",".join(parts) + "}", order


def row_texts(names: Sequence[str], columns: Sequence[Any], count: int) -> list[str]:
    """The canonical JSON text of each row of a table given as columns."""
    template, order = _object_template(tuple(names))
    tokens = [column_tokens(columns[i]) for i in order]
    if any(len(t) != count for t in tokens):
        raise InvalidInput("the input's columns do not all have the same number of rows")
    if not tokens:
        return ["{}"] * count
    return [template % row for row in zip(*tokens, strict=True)]


# Long batches go through Arrow's vectorised string kernels: the texts are the same bytes
# (tests compare both paths), at a fraction of the per-row cost of Python formatting.
ARROW_MIN_ROWS: Final = 64


def _arrow_string_tokens(strings: Any) -> Any:
    """JSON string tokens of an Arrow string array (null for nulls)."""
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast
    import pyarrow.compute as pc  # heavy: loaded on first use so `import modelledger` stays fast

    if pa.types.is_large_string(strings.type):
        strings = strings.cast(pa.string())
    if pc.any(pc.match_substring_regex(strings, r'["\\\x00-\x1f]')).as_py():
        return pa.array(
            [_json_string(v) if v is not None else "null" for v in strings.to_pylist()], pa.string()
        )
    return pc.fill_null(pc.binary_join_element_wise('"', strings, '"', ""), "null")


def _arrow_float_tokens(values: Any) -> Any:
    """:func:`_float_tokens` as an Arrow string array."""
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast
    import pyarrow.compute as pc  # heavy: loaded on first use so `import modelledger` stays fast

    as_float = values.astype(np.float64, copy=False)
    texts = pa.array(as_float).cast(pa.string())
    redo = pc.or_(
        pc.or_(pc.match_substring(texts, "e"), pc.match_substring(texts, "n")), pc.equal(texts, "-0")
    )
    if not pc.any(redo).as_py():
        return texts
    out = texts.to_pylist()
    for i in np.flatnonzero(redo.to_numpy(zero_copy_only=False)).tolist():
        out[i] = _float_token(float(as_float[i]))
    return pa.array(out, pa.string())


def arrow_tokens(values: Any) -> Any:
    """Canonical JSON texts of a column, as an Arrow string array."""
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast
    import pyarrow.compute as pc  # heavy: loaded on first use so `import modelledger` stays fast

    if isinstance(values, np.ndarray) and values.ndim == 1:
        kind = values.dtype.kind
        if kind == "f":
            return _arrow_float_tokens(values)
        if (
            kind in "iu"
            and values.size
            and values.min() >= -MAX_SAFE_INTEGER
            and values.max() <= MAX_SAFE_INTEGER
        ):
            return pa.array(values.astype(np.int64, copy=False)).cast(pa.string())
        if kind == "b":
            return pc.if_else(pa.array(values), "true", "false")
        if kind == "U":
            return _arrow_string_tokens(pa.array(values, pa.string()))
    arrow = getattr(values, "_pa_array", None)  # pandas' Arrow-backed strings
    if (
        arrow is not None
        and hasattr(arrow, "combine_chunks")
        and (pa.types.is_string(arrow.type) or pa.types.is_large_string(arrow.type))
    ):
        return _arrow_string_tokens(arrow.combine_chunks())
    return pa.array(column_tokens(values), pa.string())


def arrow_row_texts(names: Sequence[str], columns: Sequence[Any], count: int) -> Any:
    """:func:`row_texts` as an Arrow string array."""
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast
    import pyarrow.compute as pc  # heavy: loaded on first use so `import modelledger` stays fast

    _template, order = _object_template(tuple(names))
    if not order:
        return pa.array(["{}"] * count, pa.string())
    pieces: list[Any] = []
    for position, i in enumerate(order):
        tokens = arrow_tokens(columns[i])
        if len(tokens) != count:
            raise InvalidInput("the input's columns do not all have the same number of rows")
        pieces += [("{" if position == 0 else ",") + _json_string(names[i]) + ":", tokens]
    pieces.append("}")
    return pc.binary_join_element_wise(*pieces, "")


def _arrow_hex_digests(texts: Any) -> Any:
    """sha256 hex of each value of an Arrow string array, as an Arrow string array."""
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast

    sha = hashlib.sha256
    return pa.array([sha(b).hexdigest() for b in texts.cast(pa.binary()).to_pylist()], pa.string())


def canonical_row(row: Mapping[str, Any]) -> str:
    """The canonical JSON text of one input row, whose sha256 is its input digest.

    >>> canonical_row({"income": 52000.0, "age": 41, "employment": "salaried", "debt": float("nan")})
    '{"age":41,"debt":null,"employment":"salaried","income":52000}'
    """
    names = tuple(str(k) for k in row)
    template, order = _object_template(names)
    values = list(row.values())
    return template % tuple(_token(values[i]) for i in order)


def _sha256_text(text: str) -> str:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: still hash it deterministically
        data = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def input_digest(row: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of :func:`canonical_row` (``row``): what a receipt's input_digest holds.

    Compute it on your copy of the input to show a receipt is about that row.

    >>> input_digest({"age": 41, "income": 52000}) == input_digest({"income": 52000.0, "age": 41})
    True
    """
    return "sha256:" + _sha256_text(canonical_row(row))


# --------------------------------------------------------------------------- input and output shapes


def _labels(index: Any) -> list[str]:
    """An Index's labels as str; reading pandas' Arrow-backed labels directly is ~10x faster."""
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast

    data = getattr(index, "_data", None)
    arrow = getattr(data, "_pa_array", None)
    if arrow is not None and hasattr(arrow, "to_pylist"):
        labels = arrow.to_pylist()
    elif isinstance(data, np.ndarray):
        labels = data.tolist()
    else:
        labels = list(index)
    return [label if type(label) is str else str(label) for label in labels]


def table_columns(data: Any, known: list[str] | None = None) -> tuple[list[str], list[Any], int]:
    """(column names, column values, row count) of a predict input.

    ``known`` gives the names of a DataFrame's columns when they are known already (the
    signature's, after enforcement): reading them from the frame costs ~6 µs.
    """
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast

    module = type(data).__module__
    if module.startswith("pandas"):
        import pandas as pd  # heavy: loaded on first use so `import modelledger` stays fast

        if isinstance(data, pd.DataFrame):
            names = known if known is not None else _labels(data.columns)
            get = getattr(data, "_get_column_array", None)  # ~1 µs a column; iloc costs ~20 µs
            if get is not None:
                columns = [get(i) for i in range(len(names))]
            else:  # pragma: no cover - other pandas versions
                columns = [data.iloc[:, i].to_numpy() for i in range(len(names))]
            return names, columns, len(data)
        if isinstance(data, pd.Series):
            return ["0" if data.name is None else str(data.name)], [data.array], len(data)
    if isinstance(data, np.ndarray):
        if data.ndim == 1:
            return ["0"], [data], len(data)
        if data.ndim == 2:
            return (
                [str(i) for i in range(data.shape[1])],
                [data[:, i] for i in range(data.shape[1])],
                len(data),
            )
        raise InvalidInput(f"cannot build receipts for a {data.ndim}-D array input: give rows of columns")
    if isinstance(data, Mapping):
        names = [str(k) for k in data]
        values = list(data.values())
        if all(np.ndim(v) == 0 for v in values):
            return names, [[v] for v in values], 1
        lengths = {len(v) for v in values}
        if len(lengths) != 1:
            raise InvalidInput("the input's columns do not all have the same number of rows")
        return names, values, lengths.pop()
    if isinstance(data, (list, tuple)):
        if not data:
            return [], [], 0
        if all(isinstance(r, Mapping) for r in data):
            seen: dict[str, Any] = {}
            for record in data:
                for key in record:
                    seen.setdefault(key, None)
            return (
                [str(k) for k in seen],
                [[record.get(k) for record in data] for k in seen],
                len(data),
            )
        return table_columns(np.asarray(data, dtype=object))
    raise InvalidInput(
        f"cannot build receipts for a {type(data).__name__} input: give a DataFrame, a dict of "
        "columns, a list of records or a 2-D array"
    )


def _output_tokens(output: Any, count: int) -> list[str]:
    """The canonical JSON text of each row's output."""
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast

    module = type(output).__module__
    if module.startswith("pandas"):
        import pandas as pd  # heavy: loaded on first use so `import modelledger` stays fast

        if isinstance(output, pd.DataFrame):
            names, columns, n = table_columns(output)
            return _checked(row_texts(names, columns, n), count)
        if isinstance(output, (pd.Series, pd.Index)):
            return _checked(column_tokens(output.array), count)
    if isinstance(output, np.ndarray):
        if output.ndim == 1:
            return _checked(column_tokens(output), count)
        if output.ndim == 0 and count == 1:
            return [_token(output.item())]
        if output.ndim == 2 and output.shape[0] == count:
            width = output.shape[1]
            flat = column_tokens(output.reshape(-1))
            return ["[" + ",".join(flat[i : i + width]) + "]" for i in range(0, len(flat), width)]
        return _checked([_token(_jsonable(row)) for row in output], count)
    if isinstance(output, (list, tuple)):
        return _checked([_token(v) for v in output], count)
    if count == 1:
        return [_token(output)]
    raise InvalidInput(
        f"the model returned a {type(output).__name__} for {count} rows: receipts need one output per row"
    )


def _checked(tokens: list[str], count: int, *, got: int | None = None) -> list[str]:
    if got is not None or len(tokens) != count:
        raise InvalidInput(
            f"the model returned {len(tokens) if got is None else got} outputs for {count} input rows: "
            "receipts need one output per row"
        )
    return tokens


def _arrow_output_tokens(output: Any, count: int) -> Any:
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast

    if type(output).__module__.startswith("pandas") and hasattr(output, "dtype") and output.ndim == 1:
        values = np.asarray(output) if output.dtype.kind in "fiub" else None
    else:
        values = output if isinstance(output, np.ndarray) and output.ndim == 1 else None
    if values is not None and values.dtype.kind in "fiub":
        if len(values) != count:
            _checked([], count, got=len(values))
        return arrow_tokens(values)
    return pa.array(_output_tokens(output, count), pa.string())


def encode_rows(names: list[str], columns: list[Any], count: int, output: Any) -> tuple[Any, Any, Any]:
    """(input texts, output texts, input digest hexes) of a call: lists, or Arrow arrays for long calls."""
    if count >= ARROW_MIN_ROWS:
        try:
            texts = arrow_row_texts(names, columns, count)
            outputs = _arrow_output_tokens(output, count)
            return texts, outputs, _arrow_hex_digests(texts)
        except (ValueError, TypeError, UnicodeError):  # what Arrow cannot hold (lone surrogates...)
            pass
    texts = row_texts(names, columns, count)
    return texts, _output_tokens(output, count), _hex_digests(texts)


def _hex_digests(texts: list[str]) -> list[str]:
    sha = hashlib.sha256
    try:
        return [sha(t.encode()).hexdigest() for t in texts]
    except UnicodeEncodeError:
        return [_sha256_text(t) for t in texts]


# --------------------------------------------------------------------------- receipt leaves


def leaf_parts(model: str, version: int, digest: str, time: str, kid: str) -> tuple[str, str, str, str]:
    """``"\x00" + JCS(body)`` of a receipt (:meth:`~modelledger._serving.receipts.Receipt.body`)
    cut around its three per-row values: input digest hex, output, id."""
    lit = _json_string
    return (
        f'\x00{{"digest":{lit(digest)},"input_digest":"sha256:',
        f'","key_id":{lit(kid)},"model":{lit(model)},"output":',
        ',"prediction_id":"',
        f'","time":{lit(time)},"version":{int(version)}}}',
    )


def leaf_hashes(
    parts: tuple[str, str, str, str], input_hex: Any, outputs: Any, ids: list[str]
) -> list[bytes]:
    """The leaf hash of each row's receipt, ``sha256(0x00 || JCS(body))``, from the texts of
    :func:`encode_rows` (lists, or Arrow arrays for long calls) and the rows' prediction ids.

    ``parts`` is :func:`leaf_parts` of the call: the body members every row shares.
    """
    if not isinstance(outputs, list):
        return _arrow_leaf_hashes(parts, input_hex, outputs, ids)
    template = "%s".join(p.replace("%", "%%") for p in parts)
    sha = hashlib.sha256
    try:
        return [sha((template % row).encode()).digest() for row in zip(input_hex, outputs, ids, strict=True)]
    except UnicodeEncodeError:
        return [
            sha((template % row).encode("utf-8", "surrogatepass")).digest()
            for row in zip(input_hex, outputs, ids, strict=True)
        ]


def _arrow_leaf_hashes(
    parts: tuple[str, str, str, str], input_hex: Any, outputs: Any, ids: list[str]
) -> list[bytes]:
    """Leaf hashes of a batch: the leaf texts are joined by Arrow, hashed one by one."""
    import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast
    import pyarrow.compute as pc  # heavy: loaded on first use so `import modelledger` stays fast

    leaves = pc.binary_join_element_wise(
        parts[0],
        input_hex,
        parts[1],
        outputs,
        parts[2],
        pa.array(ids, pa.string()),
        parts[3],
        "",
    )
    sha = hashlib.sha256
    return [sha(b).digest() for b in leaves.cast(pa.binary()).to_pylist()]
