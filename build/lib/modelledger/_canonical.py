"""RFC 8785 JSON Canonicalization Scheme (JCS): one exact byte string per JSON value.

The ledger hashes ``canonicalize(event)``, so two implementations (this one, a
verifier written in another language, a future version of this one) must agree
on every byte. The rules, in short:

* objects: members sorted by the UTF-16 code units of their names, no whitespace;
* strings: only ``"`` and ``\\`` and the control characters U+0000..U+001F are
  escaped (``\\b \\f \\n \\r \\t`` in short form, the rest as ``\\u00xx`` with
  lower-case hex); everything else, including U+007F and U+2028, is literal UTF-8;
* numbers: the ECMAScript ``Number.prototype.toString`` form of the IEEE 754
  double: ``1`` not ``1.0``, ``1e+21``, ``1e-7``, ``0.000001``, ``-0`` -> ``0``;
* ``true``, ``false``, ``null`` as such; arrays keep their order.

Choices where the RFC leaves room (each raises :class:`~modelledger.errors.InvalidInput`):

* **Integers** must lie in the I-JSON safe range ``-(2**53 - 1) .. 2**53 - 1``.
  A larger ``int`` is rejected even when a double could hold it exactly
  (``2**60``): JCS would print it as the shortest double, ``1152921504606847000``,
  so the bytes would no longer spell the value that was recorded. Encode big
  numbers (nanosecond timestamps, byte offsets of huge files) as strings.
* **Floats** must be finite: NaN and infinities have no JSON form.
* **Strings** must be valid Unicode: a lone surrogate (``"\\ud800"``) is rejected,
  as RFC 8785 section 3.2.2.2 asks.
* **Object names** must be ``str``: ``{1: "a"}`` is rejected rather than silently
  turned into ``{"1": "a"}``.
* Accepted Python types: ``dict`` and any ``Mapping``; ``list`` and ``tuple``;
  ``str``; ``int``; ``float``; ``bool``; ``None`` (and subclasses of these, such as
  ``IntEnum`` or ``StrEnum`` members, which encode as their base value).

>>> canonicalize({"b": [1.0, None, True], "a": "\\u20ac"})
b'{"a":"\\xe2\\x82\\xac","b":[1,null,true]}'
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring as _json_string  # the C accelerated one when available
from typing import Any

from .errors import InvalidInput

__all__ = ["MAX_SAFE_INTEGER", "canonicalize", "canonicalize_str", "format_number"]

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer every JSON implementation reads back exactly (I-JSON, RFC 7493)."""

_int_repr = int.__repr__  # bypasses IntEnum.__str__/__repr__ overrides
# float repr() yields the shortest round-trip digits only with the "short" style, which
# every mainstream CPython build has; anywhere else, refuse floats rather than mis-hash them.
_SHORT_FLOAT_REPR = sys.float_repr_style == "short"


def format_number(value: float | int) -> str:
    """The ECMAScript ``Number.prototype.toString`` form of ``value`` (RFC 8785 section 3.2.2.3).

    >>> [format_number(x) for x in (1.0, 1e21, 1e-7, 0.000001, -0.0, 5e-324, 2**53 - 1)]
    ['1', '1e+21', '1e-7', '0.000001', '0', '5e-324', '9007199254740991']
    """
    if isinstance(value, bool):
        raise InvalidInput("cannot canonicalize a bool as a number")
    if isinstance(value, int):
        return _format_int(value)
    if isinstance(value, float):
        return _format_float(value)
    raise InvalidInput(f"cannot canonicalize {type(value).__name__} as a JSON number")


def _format_int(value: int) -> str:
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return _int_repr(value)
    raise InvalidInput(
        f"integer {_int_repr(value)} is outside the JSON safe range ±(2**53-1); "
        "record it as a string to keep every digit"
    )


def _format_float(value: float) -> str:
    value = float(value)  # a float subclass may override __repr__
    if not math.isfinite(value):
        raise InvalidInput(f"{value!r} has no JSON representation")
    if value == 0.0:
        return "0"  # also -0.0
    if not _SHORT_FLOAT_REPR:  # pragma: no cover
        raise InvalidInput("this Python cannot produce shortest float digits (sys.float_repr_style)")
    # repr() gives the shortest digit string that round-trips, choosing the closest
    # candidate, exactly the digits ECMAScript asks for; only the layout differs.
    text = repr(value)
    sign = ""
    if text[0] == "-":
        sign = "-"
        text = text[1:]
    mantissa, _, exp_text = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    # value == 0.<digits> * 10**point, after dropping padding zeros
    point = len(whole) + (int(exp_text) if exp_text else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    exponent = point - 1
    exp_sign = "+" if exponent > 0 else "-"
    head = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{head}e{exp_sign}{abs(exponent)}"


def _utf16_key(item: tuple[str, Any]) -> bytes:
    # Big-endian UTF-16 compares byte-wise exactly as its 16-bit code units do.
    return item[0].encode("utf-16-be", "surrogatepass")


def _make_encoder(utf16_sort: bool) -> Callable[[Any], str]:
    """One recursive encoder; ``utf16_sort`` is only needed for names beyond U+FFFF.

    Python sorts ``str`` by code point, which equals UTF-16 code unit order unless a
    name holds a character above U+FFFF (a surrogate pair in UTF-16, so it sorts
    *before* U+E000..U+FFFF there). ``canonicalize`` takes the cheap path first and
    redoes the work with ``utf16_sort`` only when the output contains such a character.
    """
    string = _json_string
    fmt_int = _format_int
    fmt_float = _format_float
    sort_key = _utf16_key if utf16_sort else None

    def encode_object(obj: Mapping[Any, Any]) -> str:
        if not obj:
            return "{}"
        try:
            items = sorted(obj.items(), key=sort_key)
            # A str subclass passes the C encoder; anything else raises TypeError.
            parts = [string(k) + ":" + (string(v) if type(v) is str else encode(v)) for k, v in items]
        except TypeError as exc:
            bad = next((k for k in obj if not isinstance(k, str)), None)
            if bad is None:
                raise
            raise InvalidInput(
                f"object member names must be strings, got {type(bad).__name__} {bad!r}"
            ) from exc
        return "{" + ",".join(parts) + "}"

    def encode_array(seq: list[Any] | tuple[Any, ...]) -> str:
        return "[" + ",".join([string(v) if type(v) is str else encode(v) for v in seq]) + "]"

    def encode(value: Any) -> str:
        t = type(value)
        if t is str:
            return string(value)
        if t is dict:
            return encode_object(value)
        if t is int:
            if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
                return _int_repr(value)
            return fmt_int(value)
        if value is None:
            return "null"
        if value is True:
            return "true"
        if value is False:
            return "false"
        if t is list or t is tuple:
            return encode_array(value)
        if t is float:
            return fmt_float(value)
        # Subclasses and other containers: slower, but never silently wrong.
        if isinstance(value, str):
            return string(value)
        if isinstance(value, int):
            return fmt_int(int(value))
        if isinstance(value, float):
            return fmt_float(value)
        if isinstance(value, Mapping):
            return encode_object(value)
        if isinstance(value, (list, tuple)):
            return encode_array(value)
        raise InvalidInput(f"cannot canonicalize a value of type {t.__name__}: {value!r:.80}")

    return encode


_encode_fast = _make_encoder(utf16_sort=False)
_encode_utf16 = _make_encoder(utf16_sort=True)


def canonicalize_str(value: Any) -> str:
    """Like :func:`canonicalize` but returns ``str`` (not yet checked for lone surrogates).

    >>> canonicalize_str({"z": 1, "a": [0.5, "x"]})
    '{"a":[0.5,"x"],"z":1}'
    """
    try:
        text = _encode_fast(value)
        # str.isascii() is O(1) in CPython; max() only runs for non-ASCII output.
        if not text.isascii() and max(text) > "\uffff":
            text = _encode_utf16(value)
    except RecursionError as exc:
        raise InvalidInput("value is nested too deeply (or contains itself)") from exc
    return text


def canonicalize(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON-compatible Python value.

    Raises :class:`~modelledger.errors.InvalidInput` for values JSON cannot hold
    exactly (see the module docstring).

    >>> canonicalize({"numbers": [1e30, 4.50, 2e-3, 1e-27], "literals": [None, True, False]})
    b'{"literals":[null,true,false],"numbers":[1e+30,4.5,0.002,1e-27]}'
    """
    text = canonicalize_str(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"string contains a lone surrogate {text[exc.start : exc.end]!r}; JSON text must be valid Unicode"
        ) from exc
