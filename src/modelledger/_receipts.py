"""Prediction ids, canonical input digests and signed prediction receipts.

Every prediction served through a :class:`~modelledger._capture.Predictor` gets a
:class:`Receipt`: what was predicted, by which model version, from which input, when,
signed with the registry's Ed25519 key. Anyone holding the registry's public key can
check one offline (:func:`verify_receipt`); changing any field makes it fail.

**Prediction id.** 128 bits, written as 26 characters of Crockford base32
(``0-9 A-Z`` without ``I L O U``; the first character is ``0``-``7``)::

    bits 127..80   48-bit Unix time in milliseconds   (ids sort by time)
    bits  79..48   32-bit version key                 (ModelVersion.key: a trace needs no scan)
    bits  47..0    48-bit random, incremented within one process and millisecond

Ids sort as strings in the order they were made (per process, strictly), and
:func:`parse_prediction_id` gives back the time and the version key.

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

**Receipt.** The signed content of a receipt (its *leaf*) is the JCS object
``{"digest", "input_digest", "key_id", "model", "output", "prediction_id", "time",
"version"}``; leaf hash ``sha256(0x00 || leaf)``. One ``predict`` call builds an RFC 6962
Merkle tree over its leaf hashes and signs once, over the JCS object
``{"key_id", "root", "tree_size", "type": RECEIPT_DOMAIN}``; each receipt carries its
inclusion proof (leaf index, tree size, audit path) and that signature. A one-row call is a
tree of one leaf: the root is the leaf hash and the audit path is empty.

>>> receipt = predictor.predict(frame).receipts[0]  # doctest: +SKIP
>>> verify_receipt(receipt.to_dict(), registry.public_key())  # doctest: +SKIP
True
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import math
import os
import random as _random
import re
import threading
import time as _time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from json.encoder import encode_basestring as _json_string
from typing import TYPE_CHECKING, Any, Final, overload

from ._canonical import MAX_SAFE_INTEGER, canonicalize, canonicalize_str
from ._integrity import audit_path, leaf_hash, root_from_audit_path
from .errors import InvalidInput, InvalidReceipt

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "RECEIPT_DOMAIN",
    "InclusionProof",
    "Receipt",
    "ReceiptBatch",
    "ReceiptSigner",
    "canonical_row",
    "check_receipt",
    "input_digest",
    "new_prediction_id",
    "parse_prediction_id",
    "verify_receipt",
]

RECEIPT_DOMAIN: Final[str] = "modelledger.prediction.receipt.v1"
"""The ``type`` inside every signed receipt payload; ledger checkpoints use another one, so
neither signature can be replayed as the other."""

# --------------------------------------------------------------------------- prediction ids

_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, ascending in ASCII
_DECODE: Final = {c: i for i, c in enumerate(_ALPHABET)}
_MAX_KEY: Final = 2**32 - 1
_RAND_BITS: Final = 48
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)


_PAIRS: Final = tuple(a + b for a in _ALPHABET for b in _ALPHABET)  # 10 bits -> 2 characters
_PAIR_SHIFTS: Final = tuple(range(120, -1, -10))


def _encode_id(value: int) -> str:
    # 130 bits (two leading zeros), 10 bits at a time: 13 lookups instead of 26.
    return "".join([_PAIRS[(value >> s) & 1023] for s in _PAIR_SHIFTS])


def _check_version_key(version_key: int) -> int:
    if type(version_key) is not int or not 0 <= version_key <= _MAX_KEY:
        raise InvalidInput(f"version key must be an int in 0..2**32-1, got {version_key!r}")
    return version_key


class _IdClock:
    """Hands out blocks of ids: strictly increasing within the process.

    The random part starts below 2**47, so a block of up to 2**47 ids never overflows
    it; within one millisecond (or when the clock steps back) the next block starts
    just after the previous one instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = -1

    def block(self, count: int) -> tuple[int, int]:
        """``(unix ms, first random value)`` for ``count`` consecutive ids."""
        # random's generator is reseeded in a forked child, so workers forked from one
        # parent do not share a sequence; the ids need uniqueness, not secrecy.
        fresh = _random.getrandbits(_RAND_BITS - 1)
        with self._lock:
            ms = _time.time_ns() // 1_000_000
            rand = fresh
            if ms <= self._last_ms:
                ms = self._last_ms
                if rand <= self._last_rand:
                    rand = self._last_rand + 1
                if rand + count > 2**_RAND_BITS:
                    ms, rand = ms + 1, fresh  # borrow the next millisecond, as ULIDs do
            self._last_ms = ms
            self._last_rand = rand + count - 1
        return ms, rand


_CLOCK = _IdClock()
if hasattr(os, "register_at_fork"):  # a lock held by another thread at fork would never be released
    os.register_at_fork(after_in_child=lambda: setattr(_CLOCK, "_lock", threading.Lock()))


def _id_block(version_key: int, count: int) -> tuple[int, list[str]]:
    """``count`` consecutive ids for ``version_key`` made now: (unix ms, ids in order)."""
    ms, rand = _CLOCK.block(count)
    high = (ms << 80) | (version_key << 48)
    if count < 16:
        return ms, [_encode_id(high | (rand + i)) for i in range(count)]
    import numpy as np

    # The first 16 characters (bits 129..50) are the same for the whole block; the last
    # 10 (bits 49..0: two version-key bits and the random part) are computed vectorised.
    prefix = _encode_id(high)[:16]
    low = np.arange(count, dtype=np.uint64) + np.uint64(((version_key & 3) << 48) | rand)
    shifts = np.arange(45, -1, -5, dtype=np.uint64)
    digits = (low[:, None] >> shifts) & np.uint64(31)
    text = np.frombuffer(_ALPHABET.encode(), dtype=np.uint8)[digits].tobytes().decode("ascii")
    return ms, [prefix + text[i : i + 10] for i in range(0, 10 * count, 10)]


def new_prediction_id(version_key: int) -> str:
    """A new prediction id for the version with numeric key ``version_key``.

    >>> pid = new_prediction_id(42)
    >>> len(pid), parse_prediction_id(pid)[1]
    (26, 42)
    """
    return _id_block(_check_version_key(version_key), 1)[1][0]


def _decode_id(prediction_id: str) -> int:
    if not isinstance(prediction_id, str) or len(prediction_id) != 26:
        raise InvalidInput(f"a prediction id is 26 characters of Crockford base32, got {prediction_id!r}")
    value = 0
    try:
        for char in prediction_id.upper():
            value = (value << 5) | _DECODE[char]
    except KeyError:
        raise InvalidInput(f"not a prediction id (bad character): {prediction_id!r}") from None
    if value >> 128:
        raise InvalidInput(f"not a prediction id (more than 128 bits): {prediction_id!r}")
    return value


def parse_prediction_id(prediction_id: str) -> tuple[datetime, int]:
    """``(time, version_key)`` of a prediction id: when it was made (UTC, ms) and by which version.

    Raises :class:`~modelledger.errors.InvalidInput` for a string that is not a prediction id.

    >>> when, key = parse_prediction_id("01JZ2XQDG000000AG00000001A")
    >>> when.isoformat(), key
    ('2025-07-01T12:00:00+00:00', 42)
    """
    value = _decode_id(prediction_id)
    ms = value >> 80
    return _EPOCH + timedelta(milliseconds=ms), (value >> 48) & _MAX_KEY


def _id_ms(prediction_id: str) -> int:
    return _decode_id(prediction_id) >> 80


_second_cache: list[Any] = [None, ""]  # (unix second, its "YYYY-MM-DDTHH:MM:SS." text)


def _rfc3339_ms(ms: int) -> str:
    """RFC 3339 UTC text of a Unix time in ms, always with three decimals: the receipt's ``time``."""
    second = ms // 1000
    cached = _second_cache
    if cached[0] != second:
        text = (_EPOCH + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S.")
        cached[0], cached[1] = second, text  # a race only writes the same value twice
    return f"{cached[1]}{ms % 1000:03d}Z"


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
    import numpy as np

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
        import numpy as np

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
    import numpy as np

    as_float = values.astype(np.float64, copy=False)
    if len(as_float) < 64:
        return [_float_token(v) for v in as_float.tolist()]
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = pa.array(as_float).cast(pa.string())
    redo = pc.or_(
        pc.or_(pc.match_substring(texts, "e"), pc.match_substring(texts, "n")), pc.equal(texts, "-0")
    )
    out: list[str] = texts.to_pylist()
    if pc.any(redo).as_py():
        for i in np.flatnonzero(redo.to_numpy(zero_copy_only=False)).tolist():
            out[i] = _float_token(float(as_float[i]))
    return out


def _column_tokens(values: Any) -> list[str]:
    """Canonical JSON texts of a column of values (a numpy array, pandas array or sequence)."""
    import numpy as np

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


def _row_texts(names: Sequence[str], columns: Sequence[Any], count: int) -> list[str]:
    """The canonical JSON text of each row of a table given as columns."""
    template, order = _object_template(tuple(names))
    tokens = [_column_tokens(columns[i]) for i in order]
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
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_large_string(strings.type):
        strings = strings.cast(pa.string())
    if pc.any(pc.match_substring_regex(strings, r'["\\\x00-\x1f]')).as_py():
        return pa.array(
            [_json_string(v) if v is not None else "null" for v in strings.to_pylist()], pa.string()
        )
    return pc.fill_null(pc.binary_join_element_wise('"', strings, '"', ""), "null")


def _arrow_float_tokens(values: Any) -> Any:
    """:func:`_float_tokens` as an Arrow string array."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

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


def _arrow_tokens(values: Any) -> Any:
    """Canonical JSON texts of a column, as an Arrow string array."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

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
    return pa.array(_column_tokens(values), pa.string())


def _arrow_row_texts(names: Sequence[str], columns: Sequence[Any], count: int) -> Any:
    """:func:`_row_texts` as an Arrow string array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    _template, order = _object_template(tuple(names))
    if not order:
        return pa.array(["{}"] * count, pa.string())
    pieces: list[Any] = []
    for position, i in enumerate(order):
        tokens = _arrow_tokens(columns[i])
        if len(tokens) != count:
            raise InvalidInput("the input's columns do not all have the same number of rows")
        pieces += [("{" if position == 0 else ",") + _json_string(names[i]) + ":", tokens]
    pieces.append("}")
    return pc.binary_join_element_wise(*pieces, "")


def _arrow_hex_digests(texts: Any) -> Any:
    """sha256 hex of each value of an Arrow string array, as an Arrow string array."""
    import pyarrow as pa

    sha = hashlib.sha256
    return pa.array([sha(b).hexdigest() for b in texts.cast(pa.binary()).to_pylist()], pa.string())


def _arrow_leaf_hashes(
    parts: tuple[str, str, str, str], input_hex: Any, outputs: Any, ids: list[str]
) -> list[bytes]:
    """Leaf hashes of a batch: the leaf texts are joined by Arrow, hashed one by one."""
    import pyarrow as pa
    import pyarrow.compute as pc

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


# --------------------------------------------------------------------------- receipts


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Where a receipt's leaf sits in its batch's Merkle tree, and the hashes that prove it."""

    leaf_index: int
    tree_size: int
    audit_path: tuple[str, ...]  # hex sibling hashes, leaf level first
    root: str  # hex Merkle root: what the signature covers

    def to_dict(self) -> dict[str, Any]:
        return {
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "audit_path": list(self.audit_path),
            "root": self.root,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> InclusionProof:
        _expect_keys(raw, {"leaf_index", "tree_size", "audit_path", "root"}, "receipt proof")
        index, size, path, root = raw["leaf_index"], raw["tree_size"], raw["audit_path"], raw["root"]
        if type(index) is not int or type(size) is not int:
            raise InvalidInput("receipt proof leaf_index and tree_size must be integers")
        if not isinstance(path, (list, tuple)) or not all(isinstance(h, str) for h in path):
            raise InvalidInput("receipt proof audit_path must be a list of hex strings")
        if not isinstance(root, str):
            raise InvalidInput("receipt proof root must be a hex string")
        return cls(leaf_index=index, tree_size=size, audit_path=tuple(path), root=root)


_BODY_FIELDS: Final = (
    "prediction_id",
    "model",
    "version",
    "digest",
    "input_digest",
    "output",
    "time",
    "key_id",
)


def _expect_keys(raw: Mapping[str, Any], expected: set[str], what: str) -> None:
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{what} must be a JSON object")
    if set(raw) != expected:
        missing, extra = sorted(expected - set(raw)), sorted(set(raw) - expected)
        raise InvalidInput(f"{what} fields do not match: missing {missing}, unexpected {extra}")


@dataclass(frozen=True, slots=True)
class Receipt:
    """The signed record of one prediction.

    ``output`` is the prediction as JSON data; ``signature`` is base64 of the Ed25519
    signature over the batch root (see the module docstring). Serialise with
    :meth:`to_dict` (or :meth:`to_json`) and check with :func:`verify_receipt`.
    """

    prediction_id: str
    model: str
    version: int
    digest: str
    input_digest: str
    output: Any
    time: str
    key_id: str
    proof: InclusionProof
    signature: str

    @property
    def version_key(self) -> int:
        """The numeric key of the version that made the prediction (from the id)."""
        return parse_prediction_id(self.prediction_id)[1]

    def body(self) -> dict[str, Any]:
        """The signed content: every field but the proof and the signature."""
        return {
            "prediction_id": self.prediction_id,
            "model": self.model,
            "version": self.version,
            "digest": self.digest,
            "input_digest": self.input_digest,
            "output": self.output,
            "time": self.time,
            "key_id": self.key_id,
        }

    def leaf_hash(self) -> bytes:
        """``sha256(0x00 || JCS(body))``."""
        return leaf_hash(canonicalize(self.body()))

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "proof": self.proof.to_dict(), "signature": self.signature}

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Receipt:
        """Parse a receipt dict; raises :class:`~modelledger.errors.InvalidInput` when malformed."""
        _expect_keys(raw, {*_BODY_FIELDS, "proof", "signature"}, "receipt")
        for name in ("prediction_id", "model", "digest", "input_digest", "time", "key_id", "signature"):
            if not isinstance(raw[name], str):
                raise InvalidInput(f"receipt {name} must be a string, got {raw[name]!r:.60}")
        if type(raw["version"]) is not int:
            raise InvalidInput(f"receipt version must be an integer, got {raw['version']!r:.60}")
        return cls(
            prediction_id=raw["prediction_id"],
            model=raw["model"],
            version=raw["version"],
            digest=raw["digest"],
            input_digest=raw["input_digest"],
            output=raw["output"],
            time=raw["time"],
            key_id=raw["key_id"],
            proof=InclusionProof.from_dict(raw["proof"]),
            signature=raw["signature"],
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Receipt:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"a receipt must be JSON: {exc}") from exc
        return cls.from_dict(raw)


def _root_payload(root_hex: str, tree_size: int, kid: str) -> bytes:
    """JCS of ``{"key_id", "root", "tree_size", "type"}``: the bytes a receipt signature covers.

    Written out by hand (all members are ASCII, sorted) because it is on every predict
    call; a test checks it against :func:`~modelledger._canonical.canonicalize`.
    """
    return (
        f'{{"key_id":{_json_string(kid)},"root":{_json_string(root_hex)},'
        f'"tree_size":{int(tree_size)},"type":"{RECEIPT_DOMAIN}"}}'
    ).encode()


class ReceiptSigner:
    """Signs batch roots with the registry's private key.

    >>> signer = ReceiptSigner(load_private_key("registry.key"))  # doctest: +SKIP
    """

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        from ._keys import key_id

        self._key = private_key
        self.key_id = key_id(private_key)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ReceiptSigner:
        from ._keys import load_private_key

        return cls(load_private_key(path))

    def public_key_pem(self) -> bytes:
        from ._keys import public_key_pem

        return public_key_pem(self._key)

    def sign_root(self, root: bytes, tree_size: int) -> str:
        """Base64 Ed25519 signature over the root payload of a batch of ``tree_size`` receipts."""
        return base64.b64encode(self._key.sign(_root_payload(root.hex(), tree_size, self.key_id))).decode()


class ReceiptBatch(Sequence[Receipt]):
    """The receipts of one ``predict`` call, built on access (one signature for all).

    ``ids`` lists the prediction ids in row order; ``batch[i]`` is the receipt of row
    ``i`` with its inclusion proof.
    """

    __slots__ = (
        "_input_hex",
        "_levels",
        "_outputs",
        "digest",
        "ids",
        "key_id",
        "model",
        "root",
        "signature",
        "time",
        "version",
    )

    def __init__(
        self,
        *,
        ids: list[str],
        model: str,
        version: int,
        digest: str,
        time: str,
        key_id: str,
        input_hex: Any,
        outputs: Any,
        levels: list[list[bytes]],
        signature: str,
    ) -> None:
        self.ids = ids
        self.model = model
        self.version = version
        self.digest = digest
        self.time = time
        self.key_id = key_id
        self._input_hex = input_hex  # sha256 hex of each input text (a list or an Arrow array)
        self._outputs = outputs  # canonical JSON text of each output (a list or an Arrow array)
        self._levels = levels
        self.root = levels[-1][0].hex() if ids else ""
        self.signature = signature

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> Receipt: ...
    @overload
    def __getitem__(self, index: slice) -> list[Receipt]: ...
    def __getitem__(self, index: int | slice) -> Receipt | list[Receipt]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self.ids)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("receipt index out of range")
        path = tuple(h.hex() for h in audit_path(self._levels, index))
        return Receipt(
            prediction_id=self.ids[index],
            model=self.model,
            version=self.version,
            digest=self.digest,
            input_digest="sha256:" + _text_at(self._input_hex, index),
            output=json.loads(_text_at(self._outputs, index)),
            time=self.time,
            key_id=self.key_id,
            proof=InclusionProof(leaf_index=index, tree_size=n, audit_path=path, root=self.root),
            signature=self.signature,
        )

    def __iter__(self) -> Iterator[Receipt]:
        for i in range(len(self.ids)):
            yield self[i]

    def to_list(self) -> list[dict[str, Any]]:
        """Every receipt as a dict (for JSON)."""
        return [r.to_dict() for r in self]

    def __repr__(self) -> str:
        uri = f"models:/{self.model}/{self.version}"
        return f"<ReceiptBatch {len(self)} receipts of {uri} root {self.root[:12]}>"


def _text_at(texts: Any, index: int) -> str:
    value = texts[index]
    return value if type(value) is str else str(value.as_py())


def _leaf_parts(model: str, version: int, digest: str, time: str, kid: str) -> tuple[str, str, str, str]:
    """``"\x00" + JCS(body)`` cut around its three per-row values: input digest hex, output, id."""
    lit = _json_string
    return (
        f'\x00{{"digest":{lit(digest)},"input_digest":"sha256:',
        f'","key_id":{lit(kid)},"model":{lit(model)},"output":',
        ',"prediction_id":"',
        f'","time":{lit(time)},"version":{int(version)}}}',
    )


def _leaf_template(model: str, version: int, digest: str, time: str, kid: str) -> str:
    """:func:`_leaf_parts` as a ``%`` template with ``%s`` holes."""
    return "%s".join(part.replace("%", "%%") for part in _leaf_parts(model, version, digest, time, kid))


# --------------------------------------------------------------------------- verification


def _public_key(public_pem: bytes | str | Ed25519PublicKey) -> Ed25519PublicKey:
    from ._keys import load_public_key

    if isinstance(public_pem, str):
        public_pem = public_pem.encode()
    if isinstance(public_pem, (bytes, bytearray, memoryview)):
        return load_public_key(bytes(public_pem))
    return public_pem


def check_receipt(receipt: Receipt | Mapping[str, Any], public_pem: bytes | str | Ed25519PublicKey) -> None:
    """Raise :class:`InvalidReceipt` (with the reason) unless ``receipt`` is genuine.

    Checks, in order: the fields are well formed; the receipt names the key of
    ``public_pem``; the prediction id's time is the receipt's time; the receipt's
    content hashes, through its audit path, to its root; the signature over that root
    is valid. A malformed public key raises :class:`~modelledger.errors.InvalidInput`.

    >>> check_receipt(json.load(open("receipt.json")), open("key.pem", "rb").read())  # doctest: +SKIP
    """
    from ._keys import key_id, verify_with_key

    public = _public_key(public_pem)
    pid = str(receipt.get("prediction_id", "?")) if isinstance(receipt, Mapping) else receipt.prediction_id
    try:
        parsed = receipt if isinstance(receipt, Receipt) else Receipt.from_dict(receipt)
    except InvalidInput as exc:
        raise InvalidReceipt(pid, f"malformed: {exc.message}") from exc
    expected_kid = key_id(public)
    if parsed.key_id != expected_kid:
        raise InvalidReceipt(pid, f"signed by key {parsed.key_id}, not by this public key ({expected_kid})")
    try:
        id_ms = _id_ms(parsed.prediction_id)
    except InvalidInput as exc:
        raise InvalidReceipt(pid, exc.message) from exc
    if _rfc3339_ms(id_ms) != parsed.time:
        raise InvalidReceipt(pid, f"time {parsed.time} is not the time in its prediction id")
    proof = parsed.proof
    try:
        path = [bytes.fromhex(h) for h in proof.audit_path]
    except ValueError:
        raise InvalidReceipt(pid, "invalid proof: the audit path is not hex") from None
    try:
        root = root_from_audit_path(parsed.leaf_hash(), proof.leaf_index, proof.tree_size, path)
    except InvalidInput as exc:  # an impossible proof, or an output JSON cannot hold
        raise InvalidReceipt(pid, f"invalid proof: {exc.message}") from exc
    if root.hex() != proof.root:
        raise InvalidReceipt(pid, "its content does not hash to its signed root (a field was changed)")
    try:
        signature = base64.b64decode(parsed.signature, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidReceipt(pid, "the signature is not base64") from None
    if not verify_with_key(public, _root_payload(proof.root, proof.tree_size, parsed.key_id), signature):
        raise InvalidReceipt(pid, "the signature does not verify")


def verify_receipt(receipt: Receipt | Mapping[str, Any], public_pem: bytes | str | Ed25519PublicKey) -> bool:
    """True when ``receipt`` (a :class:`Receipt` or its dict) is genuine under ``public_pem``.

    Needs nothing but the public key: no registry, no network. Use :func:`check_receipt`
    to learn why a receipt fails.

    >>> verify_receipt(receipt.to_dict(), registry.public_key())  # doctest: +SKIP
    True
    """
    try:
        check_receipt(receipt, public_pem)
    except InvalidReceipt:
        return False
    return True
