"""The data set routes, served for real (uvicorn on loopback over the ``db_url`` registry, httpx
as the client): each answers what ``registry.datasets`` answers; the Parquet file downloads
whole or by HTTP Range and resumes to the recorded sha256; data sets need a role on every model."""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from tests.test_server import running

from modelledger import DatasetVersion, Registry, create_identity
from modelledger.server import API_PREFIX
from modelledger.server.datasets import CHUNK, Unsatisfiable, byte_range, json_value


@dataclass
class Served:
    url: str
    alice: Registry  # the Python API's view (an admin of every model)
    raw: DatasetVersion  # applications-raw/1: used as the test set of credit-risk/1
    raw2: DatasetVersion  # applications-raw/2: used by nothing
    clean: DatasetVersion  # applications/1, made from raw by a step; trains credit-risk/1, fraud/1
    big: DatasetVersion  # events/1: three row groups, a file of several CHUNKs
    admin: str
    dana: str  # viewer of credit-* only
    erin: str  # viewer of every model

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.admin}", **kwargs.pop("headers", {})}
        return httpx.get(self.url + API_PREFIX + path, headers=headers, timeout=60, **kwargs)

    def api(self, path: str, token: str | None = None, **kwargs: Any) -> Any:
        response = self.get(path, token, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()


def _raw_frame() -> pd.DataFrame:
    """Every kind of column the rows route encodes: ints, floats with gaps and infinities,
    strings, booleans, times, durations and bytes."""
    n = 300
    rng = np.random.default_rng(5)
    income = rng.normal(52_000, 15_000, n).round(2)
    income[::50] = np.nan
    income[7] = np.inf
    return pd.DataFrame(
        {
            "application_id": np.arange(1, n + 1, dtype=np.int64),
            "income": income,
            "employment": rng.choice(["salaried", "self-employed", None], n),
            "approved": rng.choice([True, False], n),
            "applied_at": pd.Timestamp("2024-01-01 09:30") + pd.to_timedelta(np.arange(n), unit="h"),
            "wait": pd.to_timedelta(rng.integers(0, 600, n), unit="s"),
            "scan": [bytes([i % 256, 255]) for i in range(n)],
        }
    )


def _enrol(registry: Registry, tmp: Path, name: str, models: list[str]) -> None:
    _path, _kid, pem = create_identity(name, tmp / f"{name}.key")
    registry.enrol(name, pem, roles=["viewer"], models=models)


@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Iterator[Served]:
    art = str(tmp_path / "artifacts")
    alice = Registry.open(db_url, artifacts=art, actor="alice@example.com")
    frame = _raw_frame()
    raw = alice.datasets.register("applications-raw", frame, source={"uri": "s3://dwh/x.csv", "kind": "file"})
    raw2 = alice.datasets.register("applications-raw", frame.head(100))
    clean = alice.datasets.register(
        "applications",
        frame.dropna(subset=["income"]),
        steps=[{"name": "drop rows without income", "kind": "filter", "inputs": [raw.uri]}],
    )
    rng = np.random.default_rng(11)
    n = 140_000
    big = alice.datasets.register(
        "events",
        pd.DataFrame({"id": np.arange(n, dtype=np.int64), "a": rng.normal(size=n), "b": rng.normal(size=n)}),
    )
    alice.register("credit-risk", lambda rows: rows, capture=False, datasets={"train": clean, "test": raw})
    alice.register("fraud", lambda rows: rows, capture=False, datasets={"train": clean})
    _enrol(alice, tmp_path, "dana@example.com", ["credit-*"])
    _enrol(alice, tmp_path, "erin@example.com", ["*"])
    tokens = [alice.create_token(m)[0] for m in ("alice@example.com", "dana@example.com", "erin@example.com")]
    server_registry = Registry.open(db_url, artifacts=art)
    with running(server_registry) as url:
        yield Served(url, alice, raw, raw2, clean, big, *tokens)
    server_registry.close()
    alice.close()


def _records(table: Any) -> list[dict[str, Any]]:
    return [{k: json_value(v) for k, v in row.items()} for row in table.to_pylist()]


def test_listings_and_versions_answer_what_the_python_api_answers(served: Served) -> None:
    reg = served.alice
    listed = served.api("/datasets")
    assert listed == {"items": list(reg.datasets.list()), "next_cursor": None}
    assert [d["name"] for d in listed["items"]] == ["applications", "applications-raw", "events"]
    assert [d["latest_version"] for d in listed["items"]] == [1, 2, 1]
    assert [d["name"] for d in served.api("/datasets", params={"prefix": "applications-"})["items"]] == [
        "applications-raw"
    ]
    first = served.api("/datasets", params={"limit": 2})
    assert [d["name"] for d in first["items"]] == ["applications", "applications-raw"]
    rest = served.api("/datasets", params={"cursor": first["next_cursor"]})
    assert [d["name"] for d in rest["items"]] == ["events"] and rest["next_cursor"] is None

    versions = served.api("/datasets/applications-raw/versions")
    assert versions == {
        "items": [json_value(dv.to_dict()) for dv in reg.datasets.versions("applications-raw")],
        "next_cursor": None,
    }
    paged = served.api("/datasets/applications-raw/versions", params={"limit": 1})
    assert [v["version"] for v in paged["items"]] == [2]
    older = served.api(
        "/datasets/applications-raw/versions", params={"limit": 1, "cursor": paged["next_cursor"]}
    )
    assert [v["version"] for v in older["items"]] == [1] and older["next_cursor"] is None

    one = served.api("/datasets/applications-raw/versions/1")
    expected = reg.datasets.get("datasets:/applications-raw/1").to_dict()
    # JSON has no number for infinity: the income column's max is the string Infinity
    assert expected["stats"]["income"]["max"] == math.inf
    assert one == {
        **expected,
        "stats": {**expected["stats"], "income": {**expected["stats"]["income"], "max": "Infinity"}},
    }
    assert one["row_count"] == 300 and one["source"]["uri"] == "s3://dwh/x.csv"
    assert [c["name"] for c in one["schema"]] == list(_raw_frame().columns)
    assert served.api("/datasets/applications-raw/versions/latest") == json_value(
        reg.datasets.get("applications-raw").to_dict()
    )
    clean = served.api("/datasets/applications/versions/latest")
    assert clean["steps"][0]["inputs"] == [served.raw.uri] and clean["steps"][0]["kind"] == "filter"
    assert clean["created_by"] == "alice@example.com"


def test_rows_are_a_preview_with_the_column_types(served: Served) -> None:
    reg = served.alice
    got = served.api("/datasets/applications-raw/versions/1/rows", params={"offset": 5, "limit": 4})
    assert got["dataset"] == "datasets:/applications-raw/1"
    assert (got["offset"], got["limit"], got["total_rows"]) == (5, 4, 300)
    assert got["rows"] == _records(reg.datasets.read(served.raw).slice(5, 4))
    table = reg.datasets.preview(served.raw, offset=5, limit=4)
    assert got["columns"] == [
        {**c.to_dict(), "arrow_type": str(table.schema.field(c.name).type)} for c in served.raw.schema
    ]
    types = {c["name"]: (c["type"], c["arrow_type"]) for c in got["columns"]}
    assert types["applied_at"] == ("datetime", "timestamp[us]") and types["scan"] == ("binary", "binary")
    row = got["rows"][2]  # row 7: the infinite income
    assert row["application_id"] == 8 and row["income"] == "Infinity"
    assert row["applied_at"] == "2024-01-01T16:30:00"
    assert row["scan"] == base64.b64encode(bytes([7, 255])).decode()
    assert isinstance(row["wait"], float) and isinstance(row["approved"], bool)
    assert (
        served.api("/datasets/applications-raw/versions/1/rows", params={"limit": 1})["rows"][0]["income"]
        is None
    )

    default = served.api("/datasets/events/versions/latest/rows")
    assert (default["offset"], default["limit"], len(default["rows"])) == (0, 100, 100)
    # across the boundary of the first two row groups (65,536 rows each)
    edge = served.api("/datasets/events/versions/1/rows", params={"offset": 65_000, "limit": 1000})
    assert edge["rows"] == _records(reg.datasets.read(served.big).slice(65_000, 1000))
    tail = served.api("/datasets/events/versions/1/rows", params={"offset": 139_990, "limit": 1000})
    assert [r["id"] for r in tail["rows"]] == list(range(139_990, 140_000))
    assert served.api("/datasets/events/versions/1/rows", params={"offset": 200_000})["rows"] == []

    for params, status in [
        ({"limit": 1001}, 400),
        ({"limit": 0}, 400),
        ({"offset": -1}, 400),
        ({"limit": "many"}, 422),
    ]:
        response = served.get("/datasets/events/versions/1/rows", params=params)
        assert response.status_code == status, (params, response.text)
        assert response.json()["error"] == "InvalidInput"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_file_downloads_whole_and_by_range(served: Served) -> None:
    big = served.big
    path = f"/datasets/events/versions/{big.version}/file"
    assert big.size_bytes > 2 * CHUNK  # streamed in several pieces
    whole = served.get(path)
    assert whole.status_code == 200
    data = whole.content
    assert len(data) == big.size_bytes == int(whole.headers["content-length"])
    assert _sha(data) == big.file_sha256
    with served.alice.datasets.open(big) as fh:
        assert fh.read() == data
    etag = f'"{big.file_sha256}"'
    b64 = base64.b64encode(bytes.fromhex(big.file_sha256)).decode()
    assert whole.headers["etag"] == etag
    assert whole.headers["repr-digest"] == f"sha-256=:{b64}:"
    assert whole.headers["digest"] == f"SHA-256={b64}"
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "application/vnd.apache.parquet"
    assert whole.headers["content-disposition"] == 'attachment; filename="events-1.parquet"'
    size = len(data)

    def ranged(spec: str, **headers: str) -> httpx.Response:
        return served.get(path, headers={"Range": spec, **headers})

    first = ranged("bytes=0-99")
    assert first.status_code == 206 and first.content == data[:100]
    assert first.headers["content-range"] == f"bytes 0-99/{size}"
    assert first.headers["content-length"] == "100" and first.headers["etag"] == etag
    suffix = ranged("bytes=-1000")
    assert suffix.status_code == 206 and suffix.content == data[-1000:]
    assert suffix.headers["content-range"] == f"bytes {size - 1000}-{size - 1}/{size}"
    assert ranged(f"bytes=-{size * 2}").content == data  # a suffix longer than the file is all of it
    middle = ranged(f"bytes={CHUNK - 10}-{CHUNK + 9}")  # across a piece boundary of the stream
    assert middle.status_code == 206 and middle.content == data[CHUNK - 10 : CHUNK + 10]
    cut = ranged(f"bytes={size - 5}-{size + 100}")
    assert cut.status_code == 206 and cut.content == data[-5:]
    assert cut.headers["content-range"] == f"bytes {size - 5}-{size - 1}/{size}"

    for spec in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        refused = ranged(spec)
        assert refused.status_code == 416, spec
        assert refused.headers["content-range"] == f"bytes */{size}"
        assert refused.json()["error"].endswith("RangeNotSatisfiable")  # the phrase varies by Python
    # ranges this server does not serve are ignored, as HTTP allows: the whole file
    for spec in ("bytes=0-9,20-29", "items=0-9", "bytes=9-0", "bytes=a-b"):
        ignored = ranged(spec)
        assert ignored.status_code == 200 and ignored.content == data, spec

    # If-Range: the tag of the file being resumed; another tag gets the whole (new) file
    assert ranged("bytes=0-9", **{"If-Range": etag}).status_code == 206
    stale = ranged("bytes=0-9", **{"If-Range": '"' + "0" * 64 + '"'})
    assert stale.status_code == 200 and stale.content == data
    unchanged = served.get(path, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""

    head = httpx.head(served.url + API_PREFIX + path, headers={"Authorization": f"Bearer {served.admin}"})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(size) and head.headers["etag"] == etag


def test_an_interrupted_download_resumes_to_the_recorded_sha256(served: Served) -> None:
    big = served.big
    url = f"{served.url}{API_PREFIX}/datasets/events/versions/latest/file"
    auth = {"Authorization": f"Bearer {served.admin}"}
    got = bytearray()
    with httpx.stream("GET", url, headers=auth, timeout=60) as response:
        assert response.status_code == 200
        etag = response.headers["etag"]
        for piece in response.iter_raw():
            got += piece
            if len(got) > CHUNK + 12_345:
                break  # the connection drops part-way
    assert 0 < len(got) < big.size_bytes
    while len(got) < big.size_bytes:  # resume in uneven slices, as a download tool would
        spec = f"bytes={len(got)}-{len(got) + 700_000}"
        response = httpx.get(url, headers={**auth, "Range": spec, "If-Range": etag}, timeout=60)
        assert response.status_code == 206, response.text
        assert response.headers["content-range"].startswith(f"bytes {len(got)}-")
        got += response.content
    assert len(got) == big.size_bytes and _sha(bytes(got)) == big.file_sha256 == etag.strip('"')


def test_usage_and_lineage_say_what_used_a_version(served: Served) -> None:
    reg = served.alice
    raw = served.api("/datasets/applications-raw/versions/1/usage")
    assert raw == {
        "dataset": "datasets:/applications-raw/1",
        "used_by": [{"uri": "models:/credit-risk/1", "model": "credit-risk", "version": 1, "role": "test"}],
        "through_derived": ["models:/fraud/1"],  # trained on applications/1, made from it
    }
    assert [(u["uri"], u["role"]) for u in raw["used_by"]] == reg.datasets.used_by(served.raw)
    clean = served.api("/datasets/applications/versions/1/usage")
    assert [(u["uri"], u["role"]) for u in clean["used_by"]] == reg.datasets.used_by(served.clean)
    assert [u["uri"] for u in clean["used_by"]] == ["models:/credit-risk/1", "models:/fraud/1"]
    assert clean["through_derived"] == []
    assert served.api("/datasets/applications-raw/versions/latest/usage") == {
        "dataset": "datasets:/applications-raw/2",
        "used_by": [],
        "through_derived": [],
    }
    lineage = served.api("/datasets/applications-raw/versions/1/lineage")
    assert lineage == reg.lineage(served.raw.uri).to_dict()
    assert {n["id"] for n in lineage["nodes"] if n["kind"] == "model"} == {
        "models:/credit-risk/1",
        "models:/fraud/1",
    }


ROUTES = [
    "/datasets",
    "/datasets/applications-raw/versions",
    "/datasets/applications-raw/versions/1",
    "/datasets/applications-raw/versions/1/rows",
    "/datasets/applications-raw/versions/1/file",
    "/datasets/applications-raw/versions/1/usage",
    "/datasets/applications-raw/versions/1/lineage",
]


def test_data_sets_need_a_role_on_every_model(served: Served) -> None:
    # dana reads credit-risk/1, which was tested on applications-raw/1, and still may not read the
    # data: data sets belong to no model
    assert served.api("/models/credit-risk/versions/1", served.dana)["model"] == "credit-risk"
    for path in [*ROUTES, "/datasets/no-such-data/versions/1/file"]:
        response = served.get(path, served.dana)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"] == "PermissionDenied"
        assert "every model" in response.json()["message"]
    # a viewer of every model reads them all, as an admin does
    for path in ROUTES:
        mine, admins = served.get(path, served.erin), served.get(path)
        assert mine.status_code == 200, (path, mine.text)
        assert mine.content == admins.content, path
    assert httpx.get(served.url + API_PREFIX + "/datasets").status_code == 401


def test_unknown_data_sets_and_versions_are_404(served: Served) -> None:
    for path in [
        "/datasets/no-such-data/versions",
        "/datasets/no-such-data/versions/1",
        "/datasets/no-such-data/versions/latest/rows",
        "/datasets/applications-raw/versions/9",
        "/datasets/applications-raw/versions/9/rows",
        "/datasets/applications-raw/versions/9/file",
        "/datasets/applications-raw/versions/9/usage",
        "/datasets/applications-raw/versions/9/lineage",
    ]:
        response = served.get(path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"] == "NotFound", path
    bad = served.get("/datasets/applications-raw/versions/champion")
    assert bad.status_code == 400 and "number or 'latest'" in bad.json()["message"]

    served.alice.erase(served.raw2.uri, reason="retention ended")
    assert served.api("/datasets/applications-raw/versions/2")["row_count"] == 100  # the record stays
    for path in ("/datasets/applications-raw/versions/2/rows", "/datasets/applications-raw/versions/2/file"):
        response = served.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "Erased" and "retention ended" in response.json()["message"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", (0, 0)),
        ("bytes=0-99", (0, 99)),
        ("bytes = 10 - 19", (10, 19)),
        ("bytes=990-", (990, 999)),
        ("bytes=990-5000", (990, 999)),
        ("bytes=-1", (999, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=5-4", None),
        ("bytes=-", None),
        ("bytes=0-1,5-6", None),
        ("bits=0-1", None),
        ("bytes=١-٢", None),  # noqa: RUF001 - digits of another script are not a range
    ],
)
def test_byte_range_reads_one_range_of_bytes(header: str, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-1001", "bytes=-0"])
def test_a_range_past_the_end_is_unsatisfiable(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        byte_range(header, 1000)
