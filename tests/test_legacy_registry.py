"""A registry written by modelledger 0.1.0 keeps verifying with today's code.

``tests/data/registry-0.1.0.tar.gz`` was made by the 0.1.0 release's own code path (before
every hashed text became RFC 8785 JSON): two versions whose manifests hold floats that the
two encodings spell differently (``1.0`` / ``1``, ``1e+21`` / ``1e21``, ``1e-07`` / ``1e-7``)
and non-ASCII text, data sets with a processing step, approvals, deployments, a rollback,
an alias move, a policy change and three captured, signed predictions
(``prediction_ids.txt``). Its version digests were computed over the manifests' old text,
so they verify only because the stored text (not a re-encoding) is what gets hashed; its
ledger, checkpoints and receipts were already RFC 8785 and must keep verifying as they are.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pandas as pd
import pytest

from modelledger import Registry, SchemaOutdated
from modelledger._keys import key_id

FIXTURE = Path(__file__).parent / "data" / "registry-0.1.0.tar.gz"
V1_DIGEST = "sha256:20b7e4d00810214d8a620b814250feeaf380f6490ff21405da82557652198578"
V2_DIGEST = "sha256:1b5977503fcdb9a31411976a4552ba60281c559f95f90661c5da32b037613104"


@pytest.fixture
def legacy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Registry, list[str]]:
    """The 0.1.0 registry, upgraded by the holder of its registry key (``init``: the schema,
    and its key enrolled as the root of trust), with no identity of their own yet."""
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(tmp_path, filter="data")
    home = tmp_path / "reg"
    (home / "registry.db.key").chmod(0o600)  # archives do not always keep the mode
    monkeypatch.setenv("MODELLEDGER_IDENTITIES", str(tmp_path / "ids"))
    ids = (tmp_path / "prediction_ids.txt").read_text().split()
    reg = Registry.open(f"sqlite:///{home / 'registry.db'}", actor="carol@example.com")
    return reg, ids


def test_a_registry_from_0_1_0_verifies_whole(legacy: tuple[Registry, list[str]]) -> None:
    reg, _ids = legacy
    with pytest.raises(SchemaOutdated):
        reg.verify()  # an older schema is upgraded by `init` before anything else
    reg.init()
    (root,) = reg.members()
    assert (root.name, root.roles, root.root) == ("carol@example.com", ("admin",), True)
    assert root.keys[0].key_id == key_id(reg.public_key())  # the old registry key is the root's
    report = reg.verify()
    assert report.ok, [str(p) for p in report.problems]
    assert report.versions_checked == 2 and report.datasets_checked == 3
    assert report.events_checked > 10 and report.checkpoints_checked > 0
    v1, v2 = reg.get_version("credit-risk", 1), reg.get_version("credit-risk", 2)
    assert (v1.digest, v2.digest) == (V1_DIGEST, V2_DIGEST)
    assert v1.manifest["params"]["huge"] == 1e21 and v1.manifest["params"]["tiny"] == 1e-07
    assert v1.manifest["description"] == "Mod\u00e8le de risque \u2013 cr\u00e9dit \u20ac"
    assert reg.check_state() == []


def test_its_predictions_still_trace_with_valid_receipts(legacy: tuple[Registry, list[str]]) -> None:
    reg, ids = legacy
    reg.init()
    for pid in ids:
        report = reg.trace(pid)
        assert report.receipt_valid, report.receipt_problem
        assert report.model["uri"] == "models:/credit-risk/1"  # @production after the rollback
        assert report.governance["approved_by"] == "bob@example.com"
        assert [d["role"] for d in report.datasets] == ["holdout", "train"]


def test_new_versions_and_events_join_it_and_everything_still_verifies(
    legacy: tuple[Registry, list[str]], tmp_path: Path
) -> None:
    reg, _ids = legacy
    reg.init()
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\x00\x01" * 100)
    v3 = reg.register("credit-risk", folder, metrics={"auc": 1.0}, capture=False)
    assert v3.version == 3
    reg.datasets.register("applications-raw", pd.DataFrame({"x": [1.0, 2.5]}), capture=False)
    reg.set_alias("credit-risk", "shadow", 3, reason="trial")
    report = reg.verify()
    assert report.ok, [str(p) for p in report.problems]
    assert reg.get_version("credit-risk", 1).digest == V1_DIGEST


def test_init_records_what_0_1_0_left_unrecorded(legacy: tuple[Registry, list[str]], tmp_path: Path) -> None:
    reg, _ids = legacy
    captures = sorted((tmp_path / "reg" / "artifacts").rglob("predictions/**/*.parquet"))
    assert len(captures) == 1  # 0.1.0 kept no record of it, nor of its data sets
    reg.init()
    recorded = {e.subject for e in reg.audit(action="dataset.registered", limit=100)}
    assert len(recorded) == 3 and all(s.startswith("datasets:/") for s in recorded)
    (written,) = reg.audit(action="predictions.written", limit=100)
    assert written.subject == "predictions:/credit-risk/1"
    capture = str(captures[0].relative_to(tmp_path / "reg" / "artifacts"))
    assert [f["path"] for f in written.data["files"]] == [capture]
    assert written.data["files"][0]["rows"] == 3
    after = reg.verify(captures=True)
    assert after.ok and after.unrecorded == ()
    reg.init()  # again: nothing left to record
    assert len(list(reg.audit(action="predictions.written", limit=100))) == 1
    # From now on a capture file deleted outright is named.
    captures[0].unlink()
    assert [(p.kind, p.path) for p in reg.verify().problems] == [("missing", capture)]
