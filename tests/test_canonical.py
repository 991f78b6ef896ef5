"""RFC 8785 canonical JSON: the RFC's own examples, its Appendix B numbers, and our choices."""

from __future__ import annotations

import enum
import json
import math
import random
import struct
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import pytest

from modelledger._canonical import MAX_SAFE_INTEGER, canonicalize, format_number
from modelledger.errors import InvalidInput

# --- RFC 8785 section 3.2.2: the combined example, input text and output text --------------

RFC_INPUT = r"""{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"""
RFC_OUTPUT = (
    r"""{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"""
    r""""string":"€$\u000f\nA'B\"\\\\\"/"}"""
)
# The RFC also gives the UTF-8 bytes of that output in hex.
RFC_OUTPUT_HEX = (
    "7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72 75 65 2c 66 61 6c 73 65 5d 2c 22 6e "
    "75 6d 62 65 72 73 22 3a 5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31 65 2b 33 30 "
    "2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37 5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24 "
    "5c 75 30 30 30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d"
)


def test_rfc8785_combined_example() -> None:
    out = canonicalize(json.loads(RFC_INPUT))
    assert out == RFC_OUTPUT.encode("utf-8")
    assert out == bytes.fromhex(RFC_OUTPUT_HEX)


def test_rfc8785_sorting_example() -> None:
    # Section 3.2.3: names sorted by UTF-16 code units; U+1F600 (a surrogate pair,
    # D83D DE00) sorts before U+FB33 although its code point is larger.
    text = r"""{
      "\u20ac": "Euro Sign",
      "\r": "Carriage Return",
      "\ufb33": "Hebrew Letter Dalet With Dagesh",
      "1": "One",
      "\ud83d\ude00": "Emoji: Grinning Face",
      "\u0080": "Control",
      "\u00f6": "Latin Small Letter O With Diaeresis"
    }"""
    out = json.loads(canonicalize(json.loads(text)), object_pairs_hook=list)
    assert [name for name, _ in out] == [
        "\r",
        "1",
        "\u0080",
        "\u00f6",
        "\u20ac",
        "\U0001f600",
        "\ufb33",
    ]


# --- RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text ---------------------

APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B)
def test_rfc8785_appendix_b_numbers(bits: str, expected: str) -> None:
    (value,) = struct.unpack(">d", bytes.fromhex(bits))
    assert format_number(value) == expected
    assert canonicalize([value]) == f"[{expected}]".encode()


@pytest.mark.parametrize(
    "bits", ["7fffffffffffffff", "7ff8000000000000", "7ff0000000000000", "fff0000000000000"]
)
def test_rfc8785_appendix_b_nan_and_infinity_are_errors(bits: str) -> None:
    (value,) = struct.unpack(">d", bytes.fromhex(bits))
    with pytest.raises(InvalidInput):
        canonicalize(value)


NUMBERS: list[tuple[float | int, str]] = [
    (1e21, "1e+21"),
    (1e20, "100000000000000000000"),
    (123456789012345680000.0, "123456789012345680000"),
    (1e16, "10000000000000000"),
    (1e-7, "1e-7"),
    (-1e-7, "-1e-7"),
    (1.5e-7, "1.5e-7"),
    (0.000001, "0.000001"),
    (0.0000012345, "0.0000012345"),
    (0.1, "0.1"),
    (5e-324, "5e-324"),
    (-0.0, "0"),
    (0.0, "0"),
    (1.0, "1"),
    (100.0, "100"),
    (-2.5, "-2.5"),
    (12345.678, "12345.678"),
    (1.5e300, "1.5e+300"),
    (2.0**70, "1.1805916207174113e+21"),
    (0, "0"),
    (-7, "-7"),
    (MAX_SAFE_INTEGER, "9007199254740991"),
    (-MAX_SAFE_INTEGER, "-9007199254740991"),
]


@pytest.mark.parametrize(("value", "expected"), NUMBERS)
def test_number_serialisation(value: float | int, expected: str) -> None:
    assert format_number(value) == expected
    assert canonicalize(value) == expected.encode()
    # Whatever the form, it reads back as the same double.
    assert float(json.loads(expected)) == float(value)


@pytest.mark.parametrize("value", [2**53, -(2**53), 2**60, 10**21, -(10**30)])
def test_integers_outside_the_safe_range_are_refused(value: int) -> None:
    with pytest.raises(InvalidInput, match="safe range"):
        canonicalize({"n": value})


# --- cyberphone/json-canonicalization testdata (the RFC author's reference vectors) ----------

TESTDATA = [
    # arrays
    (r'[56, {"d": true, "10": null, "1": [ ]}]', r'[56,{"1":[],"10":null,"d":true}]'),
    # structures
    (
        r"""{"1": {"f": {"f": "hi","F": 5} ,"\n": 56.0}, "10": { }, "": "empty", "a": { },
            "111": [ {"e": "yes","E": "no" } ], "A": { }}""",
        r'{"":"empty","1":{"\n":56,"f":{"F":5,"f":"hi"}},"10":{},"111":[{"E":"no","e":"yes"}],"A":{},"a":{}}',
    ),
    # french: sorting ignores locale
    (
        r"""{"peach": "This sorting order", "p\u00e9ch\u00e9": "is wrong according to French",
            "p\u00eache": "but canonicalization MUST", "sin": "ignore locale"}""",
        '{"peach":"This sorting order","p\u00e9ch\u00e9":"is wrong according to French",'
        '"p\u00eache":"but canonicalization MUST","sin":"ignore locale"}',
    ),
    # unicode: no normalisation
    (r'{"Unnormalized Unicode":"A\u030a"}', '{"Unnormalized Unicode":"A\u030a"}'),
    # weird: DEL and U+0080 stay literal, "</script>" is not escaped
    (
        r"""{"\u20ac": "Euro Sign", "1": "One", "\u0080": "Control\u007f",
            "\ud83d\ude02": "Smiley", "\u00f6": "Latin Small Letter O With Diaeresis",
            "\ufb33": "Hebrew Letter Dalet With Dagesh", "</script>": "Browser Challenge"}""",
        '{"1":"One","</script>":"Browser Challenge","\u0080":"Control\u007f",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f602":"Smiley","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
    ),
]


@pytest.mark.parametrize(("source", "expected"), TESTDATA)
def test_reference_testdata(source: str, expected: str) -> None:
    assert canonicalize(json.loads(source)) == expected.encode("utf-8")


# --- strings -------------------------------------------------------------------------------

SHORT_ESCAPES = {0x08: r"\b", 0x09: r"\t", 0x0A: r"\n", 0x0C: r"\f", 0x0D: r"\r"}


@pytest.mark.parametrize("code", range(0x20))
def test_control_characters_are_escaped(code: int) -> None:
    expected = SHORT_ESCAPES.get(code, f"\\u{code:04x}")
    assert canonicalize(chr(code)) == f'"{expected}"'.encode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"', r'"\""'),
        ("\\", r'"\\"'),
        ("/", '"/"'),
        ("\x7f", '"\x7f"'),
        ("\u2028\u2029", '"\u2028\u2029"'),
        ("caf\u00e9 \u20ac \U0001f600", '"caf\u00e9 \u20ac \U0001f600"'),
        ("", '""'),
    ],
)
def test_everything_else_is_literal_utf8(value: str, expected: str) -> None:
    assert canonicalize(value) == expected.encode("utf-8")


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(InvalidInput, match="surrogate"):
        canonicalize({"a": "x\ud800y"})
    with pytest.raises(InvalidInput, match="surrogate"):
        canonicalize({"\udc00": 1})


# --- objects and Python types ----------------------------------------------------------------


def test_member_order_does_not_matter() -> None:
    a = {"b": 1, "a": {"y": [1, 2], "x": None}, "c": "z"}
    b = {"c": "z", "a": {"x": None, "y": [1, 2]}, "b": 1}
    assert canonicalize(a) == canonicalize(b) == b'{"a":{"x":null,"y":[1,2]},"b":1,"c":"z"}'


def test_utf16_order_applies_in_nested_objects() -> None:
    value = {"outer": {"\ufb33": 1, "\U0001f600": 2, "a": 3}, "v": "\U0001f601"}
    assert canonicalize(value) == '{"outer":{"a":3,"\U0001f600":2,"\ufb33":1},"v":"\U0001f601"}'.encode()


def test_agrees_with_json_dumps_on_plain_data() -> None:
    # For ASCII names, ints, strings, bools and None, JCS equals sorted compact json.dumps.
    value = {
        "seq": 12,
        "data": {"model": "fraud", "version": 3, "tags": ["a", "b"], "ok": True, "gone": None},
        "text": 'tab\there "quoted" caf\u00e9 \x01',
        "nested": [[], {}, [{"z": 0, "y": -1}]],
    }
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonicalize(value) == expected.encode("utf-8")
    assert json.loads(canonicalize(value)) == value


class Colour(enum.IntEnum):
    RED = 1


class Name(str, enum.Enum):
    ALICE = "alice"


def test_subclasses_and_other_containers_encode_as_their_base() -> None:
    value: Any = OrderedDict(
        [
            ("t", (1, 2)),
            ("m", MappingProxyType({"k": Colour.RED})),
            ("s", Name.ALICE),
            ("b", [True, False]),
        ]
    )
    assert canonicalize(value) == b'{"b":[true,false],"m":{"k":1},"s":"alice","t":[1,2]}'


@pytest.mark.parametrize(
    "value",
    [
        {1: "a"},
        {"a": {2: "b"}},
        {("a",): 1},
        {"a": {1, 2}},
        {"a": b"bytes"},
        {"a": object()},
        float("nan"),
        [float("inf")],
        {"a": -float("inf")},
    ],
)
def test_values_without_an_exact_json_form_are_refused(value: Any) -> None:
    with pytest.raises(InvalidInput):
        canonicalize(value)


def test_self_containing_value_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidInput, match="nested too deeply"):
        canonicalize(loop)


def test_bool_is_not_a_number() -> None:
    assert canonicalize([True, 1, False, 0]) == b"[true,1,false,0]"
    with pytest.raises(InvalidInput):
        format_number(True)


def test_random_doubles_round_trip_in_ecmascript_layout() -> None:
    rng = random.Random(8785)
    for _ in range(20_000):
        (value,) = struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))
        if not math.isfinite(value):
            continue
        text = format_number(value)
        assert float(text) == value, (value, text)
        magnitude = abs(value)
        # ECMAScript uses plain notation exactly for 1e-6 <= |x| < 1e21 (and 0)
        assert ("e" in text) == (magnitude != 0 and not 1e-6 <= magnitude < 1e21), text
        assert not text.endswith(".0") and "e+0" not in text and "e-0" not in text
