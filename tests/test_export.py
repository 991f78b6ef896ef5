"""Export: what is collected for a model version, a data set version and a prediction, the
``Registry.export`` verb and the ``modelledger export`` command, on the demo's registry."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.export_support import DATA_SCIENTIST, RISK_OFFICER, Demo, demo_fixture, public_key  # noqa: F401

from modelledger import EXPORT_FORMATS, InvalidInput, NotFound, PermissionDenied
from modelledger._export import collect
from modelledger.cli import main


def test_a_model_version_collects_its_data_events_and_key(demo: Demo) -> None:
    p = collect(demo.registry, "models:/credit-risk@production")
    assert (p.subject, p.kind) == ("models:/credit-risk/1", "model")
    assert p.model is not None and p.model.digest == demo.version.digest
    # every data set upstream, inputs before what was made from them
    assert [d.uri for d in p.datasets] == [
        demo.raw.uri,
        demo.clean.uri,
        demo.train.uri,
        demo.holdout.uri,
    ]
    assert dict(p.roles) == {demo.train.uri: "train", demo.holdout.uri: "holdout"}
    actions = [e.action for e in p.events]
    assert actions[0] == "version.registered"
    assert {"version.approved", "deployment.deployed"} <= set(actions)
    assert [e.seq for e in p.events] == sorted(e.seq for e in p.events)
    approved = next(e for e in p.events if e.action == "version.approved")
    assert approved.actor == RISK_OFFICER
    assert p.prediction is None
    who = demo.registry.whoami()
    assert p.key_id == who["key_id"] and len(p.public_key) == 32
    # not the clock: the newest event's time
    assert p.generated_at == max(e.time for e in p.events)


def test_a_data_set_version_collects_its_steps_inputs(demo: Demo) -> None:
    p = collect(demo.registry, demo.train.uri)
    assert (p.subject, p.kind, p.model) == (demo.train.uri, "dataset", None)
    assert [d.uri for d in p.datasets] == [demo.raw.uri, demo.clean.uri, demo.train.uri]
    assert [e.action for e in p.events] == ["dataset.registered"]
    assert p.events[0].subject == demo.train.uri and p.events[0].actor == DATA_SCIENTIST
    assert dict(p.roles) == {}


def test_a_prediction_collects_the_version_that_made_it(demo: Demo) -> None:
    p = collect(demo.registry, demo.prediction_id)
    assert (p.subject, p.kind) == (demo.prediction_id, "prediction")
    assert p.model is not None and p.model.uri == demo.version.uri
    assert p.prediction is not None and p.prediction["output"] in (0, 1)
    assert p.prediction["receipt"]["prediction_id"] == demo.prediction_id
    assert len(p.datasets) == 4
    assert p.generated_at >= p.prediction["time"][:19]


def test_collecting_twice_gives_equal_provenance(demo: Demo) -> None:
    assert collect(demo.registry, demo.version.uri) == collect(demo.registry, "models:/credit-risk/1")


@pytest.mark.parametrize(
    "identifier",
    ["models:/no-such-model/1", "datasets:/no-such-data/1", "01JZ2XQDG000000AG00000001A"],
)
def test_unknown_subjects_are_not_found(demo: Demo, identifier: str) -> None:
    with pytest.raises(NotFound):
        collect(demo.registry, identifier)


def test_what_cannot_be_exported_is_refused_with_the_choices(demo: Demo) -> None:
    with pytest.raises(InvalidInput, match="datasets:/"):
        collect(demo.registry, "credit-risk")
    with pytest.raises(InvalidInput, match="unknown export format 'pdf'"):
        demo.registry.export(demo.version.uri, format="pdf")


def test_the_command_refuses_an_unknown_format_as_a_usage_error(demo: Demo) -> None:
    result = CliRunner().invoke(
        main, ["export", demo.version.uri, "--format", "pdf", "--registry", _url(demo)]
    )
    assert result.exit_code == 2
    assert "pdf" in result.output


def test_the_command_writes_a_file_and_says_what_it_wrote_as_json(demo: Demo, tmp_path: Path) -> None:
    out = tmp_path / "lineage.json"
    args = ["export", demo.version.uri, "--format", "openlineage", "-o", str(out), "--json"]
    result = CliRunner().invoke(main, [*args, "--registry", _url(demo)])
    assert result.exit_code == 0, result.output
    said = json.loads(result.stdout)
    written = out.read_bytes()
    assert written == demo.registry.export(demo.version.uri, format="openlineage")
    assert said == {
        "identifier": demo.version.uri,
        "format": "openlineage",
        "path": str(out),
        "bytes": len(written),
        "sha256": hashlib.sha256(written).hexdigest(),
    }


def _url(demo: Demo) -> str:
    return f"sqlite:///{demo.root / 'registry.db'}"


def test_a_registry_server_exports_the_same_bytes(demo: Demo) -> None:
    """``Registry.open("http://...")``: the server makes the export, under the caller's roles."""
    from tests.test_server import running

    from modelledger._remote import RemoteRegistry

    fmt = "openlineage"
    assert fmt in EXPORT_FORMATS
    token = demo.registry.create_token(RISK_OFFICER)[0]
    demo.registry.enrol(
        "auditor@bank.example", public_key("auditor@bank.example"), roles="viewer", models="other-*"
    )
    scoped = demo.registry.create_token("auditor@bank.example")[0]
    with running(demo.registry) as url:
        remote = RemoteRegistry(url, token=token)
        with remote:
            for identifier in (demo.version.uri, demo.train.uri, demo.prediction_id):
                assert remote.export(identifier, format=fmt) == demo.registry.export(identifier, format=fmt)
            with pytest.raises(InvalidInput, match="unknown export format"):
                remote.export(demo.version.uri, format="pdf")
        with RemoteRegistry(url, token=scoped) as outsider:
            for identifier in (demo.version.uri, demo.train.uri, demo.prediction_id):
                with pytest.raises(PermissionDenied):
                    outsider.export(identifier, format=fmt)
