"""Prediction ids and signed prediction receipts.

Every prediction served through a :class:`~modelledger._serving.predictor.Predictor` gets
a :class:`Receipt`: what was predicted, by which model version, from which input, when,
signed with the registry's Ed25519 key. Anyone holding the registry's public key can
check one offline (:func:`verify_receipt`); changing any field makes it fail.

**Prediction id.** 128 bits, written as 26 characters of Crockford base32
(``0-9 A-Z`` without ``I L O U``; the first character is ``0``-``7``)::

    bits 127..80   48-bit Unix time in milliseconds   (ids sort by time)
    bits  79..48   32-bit version key                 (ModelVersion.key: a trace needs no scan)
    bits  47..0    48-bit random, incremented within one process and millisecond

Ids sort as strings in the order they were made (per process, strictly), and
:func:`parse_prediction_id` gives back the time and the version key.

**Input digest.** A receipt's ``input_digest`` is ``"sha256:" + sha256`` of the row's
canonical JSON text (see :mod:`modelledger._serving.encoding` for the rules, and
:func:`~modelledger._serving.encoding.input_digest`).

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
import json
import os
import random as _random
import threading
import time as _time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from json.encoder import encode_basestring as _json_string
from typing import TYPE_CHECKING, Any, Final, overload

from .._canonical import canonicalize
from .._integrity import audit_path, leaf_hash, root_from_audit_path
from .._keys import key_id, load_private_key, load_public_key, public_key_pem, verify_with_key
from .._time import EPOCH
from ..errors import InvalidInput, InvalidReceipt

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "RECEIPT_DOMAIN",
    "InclusionProof",
    "Receipt",
    "ReceiptBatch",
    "ReceiptSigner",
    "check_receipt",
    "check_version_key",
    "id_block",
    "id_ms",
    "new_prediction_id",
    "parse_prediction_id",
    "rfc3339_ms",
    "root_payload",
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
_PAIRS: Final = tuple(a + b for a in _ALPHABET for b in _ALPHABET)  # 10 bits -> 2 characters
_PAIR_SHIFTS: Final = tuple(range(120, -1, -10))


def _encode_id(value: int) -> str:
    # 130 bits (two leading zeros), 10 bits at a time: 13 lookups instead of 26.
    return "".join([_PAIRS[(value >> s) & 1023] for s in _PAIR_SHIFTS])


def check_version_key(version_key: int) -> int:
    """``version_key`` if it fits the 32 bits a prediction id has for it, else :class:`InvalidInput`."""
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

    def after_fork(self) -> None:
        """A fresh lock in a forked child: one held by another thread at fork would never be released."""
        self._lock = threading.Lock()


_CLOCK = _IdClock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _CLOCK.after_fork())


def id_block(version_key: int, count: int) -> tuple[int, list[str]]:
    """``count`` consecutive ids for ``version_key`` made now: (unix ms, ids in order)."""
    ms, rand = _CLOCK.block(count)
    high = (ms << 80) | (version_key << 48)
    if count < 16:
        return ms, [_encode_id(high | (rand + i)) for i in range(count)]
    import numpy as np  # heavy: loaded on first use so `import modelledger` stays fast

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
    return id_block(check_version_key(version_key), 1)[1][0]


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
    return EPOCH + timedelta(milliseconds=ms), (value >> 48) & _MAX_KEY


def id_ms(prediction_id: str) -> int:
    """The Unix time in ms a prediction id was made at."""
    return _decode_id(prediction_id) >> 80


_second_cache: list[Any] = [None, ""]  # (unix second, its "YYYY-MM-DDTHH:MM:SS." text)


def rfc3339_ms(ms: int) -> str:
    """RFC 3339 UTC text of a Unix time in ms, always with three decimals: the receipt's ``time``."""
    second = ms // 1000
    cached = _second_cache
    if cached[0] != second:
        text = (EPOCH + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S.")
        cached[0], cached[1] = second, text  # a race only writes the same value twice
    return f"{cached[1]}{ms % 1000:03d}Z"


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


def root_payload(root_hex: str, tree_size: int, kid: str) -> bytes:
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
        self._key = private_key
        self.key_id = key_id(private_key)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ReceiptSigner:
        return cls(load_private_key(path))

    def public_key_pem(self) -> bytes:
        return public_key_pem(self._key)

    def sign_root(self, root: bytes, tree_size: int) -> str:
        """Base64 Ed25519 signature over the root payload of a batch of ``tree_size`` receipts."""
        return base64.b64encode(self._key.sign(root_payload(root.hex(), tree_size, self.key_id))).decode()


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

    @property
    def input_hexes(self) -> Any:
        """The sha256 hex of each row's canonical input text, in row order (a list or an Arrow array)."""
        return self._input_hex

    @property
    def output_texts(self) -> Any:
        """The canonical JSON text of each row's output, in row order (a list or an Arrow array)."""
        return self._outputs

    @property
    def levels(self) -> Sequence[Sequence[bytes]]:
        """The call's Merkle tree, level by level from the leaf hashes up to the root."""
        return self._levels

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


# --------------------------------------------------------------------------- verification


def _public_key(public_pem: bytes | str | Ed25519PublicKey) -> Ed25519PublicKey:
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
        made_ms = id_ms(parsed.prediction_id)
    except InvalidInput as exc:
        raise InvalidReceipt(pid, exc.message) from exc
    if rfc3339_ms(made_ms) != parsed.time:
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
    if not verify_with_key(public, root_payload(proof.root, proof.tree_size, parsed.key_id), signature):
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
