"""Prediction ids, canonical input digests, Merkle proofs and signed receipts (offline checks)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from modelledger import (
    InvalidInput,
    InvalidReceipt,
    ModelVersion,
    Predictor,
    Receipt,
    canonical_row,
    check_receipt,
    input_digest,
    parse_prediction_id,
    verify_receipt,
)
from modelledger._canonical import canonicalize
from modelledger._integrity import (
    audit_path,
    leaf_hash,
    merkle_levels,
    merkle_root,
    node_hash,
    root_from_audit_path,
)
from modelledger._keys import generate_key, key_id, load_private_key
from modelledger._serving.encoding import arrow_row_texts, arrow_tokens, column_tokens, row_texts
from modelledger._serving.receipts import RECEIPT_DOMAIN, id_block, new_prediction_id, root_payload
from modelledger.cli import main

CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


class Scorer:
    """A tiny model: a score from two columns."""

    def predict(self, frame: Any) -> Any:
        return np.asarray(frame["income"], dtype=float) / 1000 + np.asarray(frame["age"])


def _version(key: int = 7) -> ModelVersion:
    return ModelVersion(
        model="credit-risk",
        version=3,
        folder="models/credit-risk/run-1",
        digest="sha256:" + "ab" * 32,
        flavor="python",
        files=(),
        manifest={},
        key=key,
    )


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "registry.key"
    generate_key(path)
    return path


@pytest.fixture
def public_pem(keyfile: Path) -> bytes:
    from modelledger._keys import public_key_pem

    return public_key_pem(load_private_key(keyfile))


@pytest.fixture
def predictor(keyfile: Path) -> Predictor:
    return Predictor(Scorer(), version=_version(), key=keyfile)


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [41, 29, 55, 33, 62],
            "income": [52000.5, 31000.0, float("nan"), 78000.25, 45000.0],
            "employment": ["salaried", "self-employed", "salaried", "unemployed", "salaried"],
        }
    )


# --------------------------------------------------------------------------- prediction ids


def test_prediction_id_is_26_crockford_characters_carrying_time_and_version_key() -> None:
    before = datetime.now(timezone.utc)
    pid = new_prediction_id(123456)
    after = datetime.now(timezone.utc)
    assert len(pid) == 26 and set(pid) <= CROCKFORD and pid[0] in "01234567"
    when, key = parse_prediction_id(pid)
    assert key == 123456
    assert before - timedelta(milliseconds=1) <= when <= after + timedelta(milliseconds=1)
    assert parse_prediction_id(pid.lower()) == (when, key)


def test_prediction_ids_sort_in_the_order_they_were_made() -> None:
    ids: list[str] = []
    for count in [1, 3, 500, 1, 20, 1000, 2]:
        ids.extend(id_block(9, count)[1])
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert {parse_prediction_id(i)[1] for i in ids} == {9}


@pytest.mark.parametrize("key", [0, 1, 3, 2**32 - 1])
def test_version_key_round_trips_at_the_edges(key: int) -> None:
    ids = id_block(key, 40)[1]  # the vectorised path
    assert all(parse_prediction_id(i)[1] == key for i in ids)
    assert parse_prediction_id(new_prediction_id(key))[1] == key


@pytest.mark.parametrize(
    "bad", ["", "0" * 25, "0" * 27, "01ARZ3NDEKTSV4RRFFQ69G5FAU", "81ARZ3NDEKTSV4RRFFQ69G5FAV"]
)
def test_malformed_prediction_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        parse_prediction_id(bad)


@pytest.mark.parametrize("key", [-1, 2**32, 1.5])
def test_version_keys_outside_32_bits_are_refused(key: Any) -> None:
    with pytest.raises(InvalidInput):
        new_prediction_id(key)


# --------------------------------------------------------------------------- canonical input


@pytest.mark.parametrize(
    ("row", "text"),
    [
        ({"b": 1, "a": 2}, '{"a":2,"b":1}'),
        ({"x": 3.0, "y": -0.0, "z": 0.1}, '{"x":3,"y":0,"z":0.1}'),
        ({"x": float("nan"), "y": None, "z": pd.NA, "t": pd.NaT}, '{"t":null,"x":null,"y":null,"z":null}'),
        ({"up": math.inf, "down": -math.inf}, '{"down":"-Infinity","up":"Infinity"}'),
        ({"big": 2**60, "ok": 2**53 - 1}, '{"big":"1152921504606846976","ok":9007199254740991}'),
        ({"f": True, "s": 'a"b\\c\n€%'}, '{"f":true,"s":"a\\"b\\\\c\\n€%"}'),
        ({"n": np.int64(4), "g": np.float32(0.5), "h": np.bool_(False)}, '{"g":0.5,"h":false,"n":4}'),
        ({"d": date(2026, 1, 2), "e": 1e21, "s": 1e-7}, '{"d":"2026-01-02","e":1e+21,"s":1e-7}'),
        ({"list": [1, 2.5, None], "map": {"k": 1}}, '{"list":[1,2.5,null],"map":{"k":1}}'),
        ({"raw": b"\x00\xff", 5: "int name"}, '{"5":"int name","raw":"AP8="}'),
    ],
)
def test_canonical_row(row: dict[Any, Any], text: str) -> None:
    assert canonical_row(row) == text
    assert input_digest(row) == "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_nan_and_missing_values_hash_alike_and_deterministically() -> None:
    assert input_digest({"a": float("nan")}) == input_digest({"a": None}) == input_digest({"a": np.nan})
    assert input_digest({"a": 3}) == input_digest({"a": 3.0}) == input_digest({"a": np.float64(3)})
    assert input_digest({"a": 1, "b": 2}) == input_digest({"b": 2, "a": 1})


def _random_floats(n: int, rng: random.Random) -> list[float]:
    special = [
        0.0,
        -0.0,
        1.0,
        -2.5,
        1e16,
        1e15,
        9.999e15,
        1e21,
        1e-7,
        1e-4,
        0.0001234,
        5e-324,
        1.7976931348623157e308,
    ]
    special += [float("nan"), math.inf, -math.inf, 123456789012345678.0, 0.1 + 0.2, 2.0**53, -(2.0**60)]
    values = [rng.uniform(-1e6, 1e6) for _ in range(n)] + [round(rng.uniform(-1e5, 1e5), 2) for _ in range(n)]
    values += [rng.choice([1, -1]) * 10 ** rng.uniform(-30, 30) for _ in range(n)] + special
    return values


def test_vectorised_column_tokens_match_the_canonical_encoder() -> None:
    rng = random.Random(5)
    floats = _random_floats(300, rng)
    for values in (floats, floats[:10]):  # the vectorised and the scalar path
        tokens = column_tokens(np.array(values))
        expected = [
            "null" if v != v else json.dumps("Infinity" if v > 0 else "-Infinity") if math.isinf(v) else None
            for v in values
        ]
        for token, value, special in zip(tokens, values, expected, strict=True):
            assert token == (special or canonicalize(value).decode()), value
    ints = [0, -1, 2**53 - 1, -(2**53 - 1), 2**62, -(2**62)] + [
        rng.randrange(-(10**12), 10**12) for _ in range(100)
    ]
    assert column_tokens(np.array(ints, dtype=np.int64)) == [
        str(i) if abs(i) <= 2**53 - 1 else f'"{i}"' for i in ints
    ]


def test_arrow_tokens_match_the_python_tokens() -> None:
    rng = random.Random(8)
    columns = [
        np.array(_random_floats(100, rng)),
        np.array([rng.randrange(-(10**15), 10**15) for _ in range(300)], dtype=np.int64),
        np.array([2**60, 1, -3] * 30, dtype=np.int64),
        np.array([True, False, True] * 30),
        np.array(["plain", 'q"uote', "back\\slash", "tab\t", "€", "\x01", ""] * 20),
        pd.array(["x", None, "y\n"] * 30, dtype="str"),
        np.array([1, "a", None, 2.5] * 30, dtype=object),
    ]
    for values in columns:
        assert arrow_tokens(values).to_pylist() == column_tokens(values)


def test_long_calls_sign_the_same_canonical_rows(predictor: Predictor, public_pem: bytes) -> None:
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, 300),
            "income": np.where(rng.random(300) < 0.1, np.nan, rng.normal(5e4, 2e4, 300).round(2)),
            "employment": rng.choice(["salaried", 'self "employed"', "€"], 300),
        }
    )
    predictions, receipts = predictor.predict(frame)  # over ARROW_MIN_ROWS rows: the vectorised path
    for i in (0, 1, 150, 299):
        assert receipts[i].input_digest == input_digest(frame.iloc[i].to_dict())
        assert verify_receipt(receipts[i], public_pem)
    assert [r.output for r in receipts[:3]] == [None if math.isnan(p) else p for p in predictions[:3]]


def test_batch_rows_hash_like_single_rows() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, 200),
            "income": np.where(rng.random(200) < 0.1, np.nan, rng.normal(5e4, 2e4, 200).round(2)),
            "flag": rng.random(200) < 0.5,
            "kind": rng.choice(["a", "b€", 'q"uote', "50%"], 200),
            "when": pd.to_datetime("2026-01-01") + pd.to_timedelta(rng.integers(0, 10**9, 200), unit="ms"),
            "cat": pd.Categorical(rng.choice(["x", "y"], 200)),
        }
    )
    frame["when_utc"] = frame["when"].dt.tz_localize("UTC")
    frame.loc[3, "kind"] = None
    frame.loc[4, "when"] = pd.NaT
    frame.loc[5, "when"] = pd.Timestamp("2026-02-01 10:00:00")
    columns = [frame._get_column_array(i) for i in range(frame.shape[1])]
    texts = row_texts(list(frame.columns), columns, len(frame))
    for i in (0, 3, 4, 5, 17, 199):
        assert texts[i] == canonical_row(frame.iloc[i].to_dict())
        json.loads(texts[i])  # valid JSON
    assert '"when":"2026-02-01T10:00:00"' in texts[5] and '"when":null' in texts[4]
    assert arrow_row_texts(list(frame.columns), columns, len(frame)).to_pylist() == texts
    # a numpy datetime64 array (any unit) gives the same text as pandas' Timestamps
    numpy_when = frame["when"].to_numpy().astype("datetime64[ms]")
    assert row_texts(["when"], [numpy_when], 200) == row_texts(["when"], [columns[4]], 200)


# --------------------------------------------------------------------------- Merkle proofs


def _rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH from RFC 6962 section 2.1, written the recursive way."""
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(_rfc6962_root(leaves[:k]), _rfc6962_root(leaves[k:]))


@pytest.mark.parametrize("size", [*range(1, 18), 31, 32, 33, 100])
def test_every_leaf_proves_its_inclusion_and_the_root_is_rfc6962s(size: int) -> None:
    data = [f"leaf {i}".encode() for i in range(size)]
    levels = merkle_levels([leaf_hash(d) for d in data])
    root = levels[-1][0]
    assert root == merkle_root(data) == _rfc6962_root(data)
    for index in range(size):
        path = audit_path(levels, index)
        assert root_from_audit_path(levels[0][index], index, size, path) == root
        if size > 1:  # the same path does not prove the leaf at another place
            other = (index + 1) % size
            with contextlib.suppress(InvalidInput):
                assert root_from_audit_path(levels[0][index], other, size, path) != root


def test_impossible_proofs_are_refused() -> None:
    levels = merkle_levels([leaf_hash(bytes([i])) for i in range(5)])
    path = audit_path(levels, 1)
    for index, size, bad in [(5, 5, path), (-1, 5, path), (1, 5, path[:-1]), (1, 5, [*path, path[0]])]:
        with pytest.raises(InvalidInput):
            root_from_audit_path(levels[0][1], index, size, bad)


def test_root_payload_is_the_jcs_of_its_fields() -> None:
    root = hashlib.sha256(b"x").hexdigest()
    assert root_payload(root, 12, "abcd") == canonicalize(
        {"type": RECEIPT_DOMAIN, "root": root, "tree_size": 12, "key_id": "abcd"}
    )


# --------------------------------------------------------------------------- receipts


def test_a_one_row_receipt_verifies_offline(
    predictor: Predictor, public_pem: bytes, frame: pd.DataFrame
) -> None:
    predictions, receipts = predictor.predict(frame.iloc[:1])
    assert len(receipts) == 1
    receipt = receipts[0]
    assert receipt.output == predictions[0]
    assert receipt.proof.tree_size == 1 and receipt.proof.audit_path == ()
    assert receipt.proof.root == receipt.leaf_hash().hex()
    assert receipt.model == "credit-risk" and receipt.version == 3 and receipt.digest == _version().digest
    assert receipt.input_digest == input_digest(frame.iloc[0].to_dict())
    assert receipt.key_id == key_id(public_pem) == predictor.key_id
    assert parse_prediction_id(receipt.prediction_id)[1] == 7
    when = parse_prediction_id(receipt.prediction_id)[0]
    assert receipt.time == when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    assert verify_receipt(receipt, public_pem)
    document = json.loads(receipt.to_json())
    assert verify_receipt(document, public_pem)
    assert Receipt.from_dict(document) == receipt


def test_batch_receipts_share_one_signature_and_each_verifies(
    predictor: Predictor, public_pem: bytes, frame: pd.DataFrame
) -> None:
    predictions, receipts = predictor.predict(frame)
    assert len(receipts) == len(frame) == len(set(receipts.ids))
    assert receipts.ids == sorted(receipts.ids)
    assert len({r.signature for r in receipts}) == 1
    for i, receipt in enumerate(receipts):
        assert receipt.proof.leaf_index == i and receipt.proof.tree_size == 5
        assert receipt.output == pytest.approx(predictions[i], nan_ok=True) or math.isnan(predictions[i])
        assert receipt.input_digest == input_digest(frame.iloc[i].to_dict())
        check_receipt(receipt.to_dict(), public_pem)
    assert receipts[2].output is None  # NaN income gives a NaN score: null in JSON


TAMPERED = {
    "prediction_id": lambda d: d.update(prediction_id=new_prediction_id(7)),
    "model": lambda d: d.update(model="credit-risk-v2"),
    "version": lambda d: d.update(version=4),
    "digest": lambda d: d.update(digest="sha256:" + "cd" * 32),
    "input_digest": lambda d: d.update(input_digest=input_digest({"age": 18})),
    "output": lambda d: d.update(output=d["output"] + 1),
    "time": lambda d: d.update(time="2020-01-01T00:00:00.000Z"),
    "key_id": lambda d: d.update(key_id="0" * 16),
    "signature": lambda d: d.update(signature=d["signature"][:-4] + "AAA="),
    "proof.root": lambda d: d["proof"].update(root="00" * 32),
    "proof.leaf_index": lambda d: d["proof"].update(leaf_index=d["proof"]["leaf_index"] ^ 1),
    "proof.tree_size": lambda d: d["proof"].update(tree_size=d["proof"]["tree_size"] + 1),
    "proof.audit_path": lambda d: d["proof"].update(audit_path=[h[::-1] for h in d["proof"]["audit_path"]]),
    "extra field": lambda d: d.update(note="hello"),
    "missing field": lambda d: d.pop("time"),
}


@pytest.mark.parametrize("field", list(TAMPERED))
def test_any_changed_field_fails(
    predictor: Predictor, public_pem: bytes, frame: pd.DataFrame, field: str
) -> None:
    document = predictor.predict(frame).receipts[1].to_dict()
    assert verify_receipt(document, public_pem)
    TAMPERED[field](document)
    assert not verify_receipt(document, public_pem)
    with pytest.raises(InvalidReceipt) as err:
        check_receipt(document, public_pem)
    assert err.value.reason and "\n" not in err.value.message


def test_the_time_must_match_the_id(predictor: Predictor, public_pem: bytes, frame: pd.DataFrame) -> None:
    document = predictor.predict(frame.iloc[:1]).receipts[0].to_dict()
    document["time"] = document["time"][:-2] + ("1Z" if document["time"][-2] != "1" else "2Z")
    with pytest.raises(InvalidReceipt, match="not the time in its prediction id"):
        check_receipt(document, public_pem)


def test_a_receipt_fails_under_another_key(predictor: Predictor, frame: pd.DataFrame, tmp_path: Path) -> None:
    other = generate_key(tmp_path / "other.key")
    receipt = predictor.predict(frame).receipts[0]
    with pytest.raises(InvalidReceipt, match="not by this public key"):
        check_receipt(receipt, other)
    # and a receipt re-labelled with the other key's id still fails on the signature
    relabelled = receipt.to_dict() | {"key_id": key_id(other)}
    assert not verify_receipt(relabelled, other)


def test_a_proof_from_another_batch_fails(
    predictor: Predictor, public_pem: bytes, frame: pd.DataFrame
) -> None:
    first = predictor.predict(frame).receipts[1].to_dict()
    second = predictor.predict(frame).receipts[1].to_dict()
    assert first["proof"]["audit_path"] != second["proof"]["audit_path"]
    for graft in (
        {"proof": second["proof"]},
        {"proof": second["proof"], "signature": second["signature"]},
        {"signature": second["signature"]},
    ):
        assert not verify_receipt(first | graft, public_pem), graft.keys()


def test_output_shapes_give_one_receipt_per_row(keyfile: Path, public_pem: bytes) -> None:
    class Proba:
        def predict(self, frame: Any) -> Any:
            return np.column_stack([np.full(len(frame), 0.25), np.full(len(frame), 0.75)])

    class Records:
        def predict(self, rows: Any) -> Any:
            return [{"label": "yes", "score": r["x"] * 2} for r in rows]

    proba = Predictor(Proba(), version=_version(), key=keyfile).predict(pd.DataFrame({"x": [1, 2]}))
    assert [r.output for r in proba.receipts] == [[0.25, 0.75], [0.25, 0.75]]
    rows = Predictor(Records(), version=_version(), key=keyfile).predict([{"x": 1}, {"x": 2.5}])
    assert [r.output for r in rows.receipts] == [{"label": "yes", "score": 2}, {"label": "yes", "score": 5}]
    assert all(verify_receipt(r, public_pem) for r in [*proba.receipts, *rows.receipts])
    with pytest.raises(InvalidInput, match="one output per row"):
        Predictor(lambda x: [1], version=_version(), key=keyfile).predict(pd.DataFrame({"x": [1, 2]}))


# --------------------------------------------------------------------------- the CLI


def test_cli_receipt_verify(
    predictor: Predictor, public_pem: bytes, frame: pd.DataFrame, tmp_path: Path
) -> None:
    receipt = predictor.predict(frame).receipts[4]
    good, bad, pem = tmp_path / "receipt.json", tmp_path / "bad.json", tmp_path / "registry.pub.pem"
    good.write_text(receipt.to_json())
    bad.write_text(json.dumps(receipt.to_dict() | {"output": 0.5}))
    pem.write_bytes(public_pem)
    runner = CliRunner()

    ok = runner.invoke(main, ["receipt", "verify", str(good), "--public-key", str(pem)])
    assert ok.exit_code == 0, ok.output
    assert receipt.prediction_id in ok.output and "valid" in ok.output

    failed = runner.invoke(main, ["receipt", "verify", str(bad), "--public-key", str(pem)])
    assert failed.exit_code == 1
    lines = failed.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "a field was changed" in lines[0]

    as_json = runner.invoke(main, ["receipt", "verify", str(bad), "--public-key", str(pem), "--json"])
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["valid"] is False

    missing = runner.invoke(
        main, ["receipt", "verify", str(tmp_path / "nope.json"), "--public-key", str(pem)]
    )
    assert missing.exit_code == 1 and "cannot read" in missing.output
