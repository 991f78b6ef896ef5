"""What the PROV, CycloneDX and SPDX export tests share: one demo registry, and golden text.

``shared_demo`` builds the demo's registry (``tests.export_support.build_demo``) once per test
process, not once per module: the three test modules only read it, and building it is most
of their time. ``golden_text`` turns an export into the text kept in its golden file.
"""

from __future__ import annotations

import atexit
import json
import shutil
from datetime import datetime, timezone
from typing import Any

import pytest
from tests.export_support import Demo, build_demo, golden_json

from modelledger import (
    ColumnSpec,
    DatasetSource,
    DatasetVersion,
    FileEntry,
    LedgerEvent,
    ModelVersion,
    __version__,
)
from modelledger._export import Provenance

_DEMO: list[Demo] = []


def shared_demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The demo's registry, built on first use in this process and kept for the others."""
    if not _DEMO:
        root = tmp_path_factory.mktemp("export-std-demo")
        # the story creates its cast's keys, and an identity is never created twice: keys of
        # their own keep this build clear of another module's build of the same story (each
        # registry keeps the identity it opened with, whose file stays here)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MODELLEDGER_IDENTITIES", str(tmp_path_factory.mktemp("export-std-identities")))
            demo = build_demo(root)

        def close() -> None:
            demo.registry.close()
            demo.officer.close()
            shutil.rmtree(root, ignore_errors=True)

        atexit.register(close)
        _DEMO.append(demo)
    return _DEMO[0]


def volatile_values(p: Provenance) -> list[tuple[str, str]]:
    """``(value, placeholder)`` for what differs between two builds of the same story, or
    between two environments: digests over a manifest that holds times, file hashes that
    depend on the library versions that wrote the files, keys, versions of the framework and
    of modelledger. Longest first, so a digest goes before its prefix."""
    pairs: list[tuple[str, str]] = [(p.key_id, "<key-id>"), (p.public_key.hex(), "<public-key>")]
    if p.model is not None:
        digest = p.model.digest.split(":", 1)[1]
        pairs += [(digest, "<model-digest>"), (digest[:32], "<model-digest-prefix>")]
        pairs.append((p.model.folder, "<folder>"))
        pairs += [(f.sha256, f"<sha256 of {f.path}>") for f in p.model.files]
        framework_version = p.model.manifest.get("framework_version")
        if framework_version:
            pairs.append((str(framework_version), "<framework-version>"))
    pairs += [(d.file_sha256, f"<sha256 of {d.name} parquet>") for d in p.datasets]
    pairs.append((__version__, "<modelledger-version>"))
    return sorted({(v, k) for v, k in pairs if v}, key=lambda pair: -len(pair[0]))


def golden_text(exported: bytes, p: Provenance) -> str:
    """The export with every volatile value replaced, as golden-file text."""
    text = exported.decode("utf-8")
    for value, placeholder in volatile_values(p):
        text = text.replace(value, placeholder)
    parsed: Any = json.loads(text)
    return golden_json(parsed)


def edge_provenance() -> Provenance:
    """A provenance the demo does not reach: a ``files`` model with an odd name and no
    signature, hyperparameters whose names hold ``:``, spaces and nesting, a source that is
    unknown, a test set only, an actor that is not an e-mail address, an alias event, model
    card considerations, and a data set registered from a file without steps."""
    hex64 = "ab" * 32
    dataset = DatasetVersion(
        name="scores.v2",
        version=3,
        digest=f"sha256:{'cd' * 32}",
        path="datasets/scores.v2/cdcd/data.parquet",
        file_sha256="ef" * 32,
        size_bytes=10,
        row_count=2,
        schema=(ColumnSpec("score", "float"),),
        stats={},
        source=DatasetSource(uri="s3://bucket/raw data/scores 2026.csv", kind="file"),
        created_at=datetime(2026, 11, 2, 8, 0, 0, 123456, tzinfo=timezone.utc),
        created_by="etl-bot",
    )
    model = ModelVersion(
        model="Fraud.Scorer_v2",
        version=12,
        folder="models/Fraud.Scorer_v2/x",
        digest=f"sha256:{hex64}",
        flavor="files",
        files=(FileEntry("weights/a b.onnx", 5, "01" * 32), FileEntry("copy.onnx", 5, "01" * 32)),
        manifest={
            "params": {"model__max depth": 3, "a:b": [1, 2], "nested": {"x": None}, "big": 2**40},
            "metrics": {"rmse_test": 0.25, "latency-ms": 3},
            "settings": {
                "considerations": {
                    "users": "fraud analysts",
                    "ethicalConsiderations": [{"name": "bias", "mitigationStrategy": "audit"}, "junk"],
                    "unknownKey": ["dropped"],
                }
            },
            "source": {"unknown": "run under pytest"},
            "datasets": [{"role": "test", "uri": dataset.uri, "digest": dataset.digest, "rows": 2}],
            "gates": [{"metric": "rmse", "max": 0.3}],
        },
        created_at=datetime(2026, 11, 3, 9, 0, 0, tzinfo=timezone.utc),
        created_by="ci-bot",
    )
    events = (
        LedgerEvent(
            seq=40,
            time="2026-11-03T09:00:00.000001Z",
            actor="ci-bot",
            action="version.registered",
            subject=model.uri,
            data={"stage": "candidate"},
        ),
        LedgerEvent(
            seq=41,
            time="2026-11-03T10:00:00Z",
            actor="ops lead",
            action="alias.set",
            subject=f"models:/{model.model}@champion",
            data={"alias": "champion", "version": 12},
            reason="weekly swap: ticket #12",
        ),
    )
    return Provenance(
        subject=model.uri,
        kind="model",
        model=model,
        datasets=(dataset,),
        roles={dataset.uri: "test"},
        events=events,
        prediction=None,
        key_id="k1",
        public_key=bytes(32),
        generated_at="2026-11-03T10:00:00Z",
    )
