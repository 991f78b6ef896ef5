"""The lifecycle of names, as ledger events: retire a version, archive and rename a model, tag
versions. Every verb is checked for its refusals, its event and actor, and that ``verify``
and ``check_state`` stay clean (the state tables still replay from the ledger)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from tests.helpers import DynamoAttacker

from modelledger import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    ModelRenamed,
    NotFound,
    PermissionDenied,
    Registry,
)
from modelledger.cli import main


def _open(db_url: str, tmp_path: Path, actor: str) -> Registry:
    return Registry.open(db_url, artifacts=str(tmp_path / "artifacts"), actor=actor)


@pytest.fixture
def reg(db_url: str, tmp_path: Path) -> Iterator[Registry]:
    with _open(db_url, tmp_path, "alice@example.com") as r:
        r.set_policy({"four_eyes": False}, reason="tests act alone")
        yield r


def _approved(reg: Registry, name: str = "credit-risk") -> str:
    uri = reg.register(name, lambda rows: rows, capture=False).uri
    reg.approve(uri, reason="reviewed")
    return uri


def _clean(reg: Registry) -> None:
    assert reg.check_state() == []
    report = reg.verify()
    assert report.ok, [str(p) for p in report.problems]


def _last(reg: Registry, name: str) -> tuple[str, str, str | None]:
    e = reg.history(name)[-1]
    return e.action, e.actor, e.reason


def _member(db_url: str, tmp_path: Path, name: str, *roles: str, models: str = "*") -> Registry:
    """``name`` (a key of their own, made on first use in this session) enrolled with ``roles``."""
    member = _open(db_url, tmp_path, name)
    pem = member.whoami()["public_key"]
    _open(db_url, tmp_path, "alice@example.com").enrol(name, pem, roles=list(roles), models=models)
    return member


# --------------------------------------------------------------------------- retire


def test_retired_version_refuses_deploy_and_alias_load_but_loads_by_number(reg: Registry) -> None:
    v1 = _approved(reg)
    reg.deploy(v1)
    reg.set_alias("credit-risk", "staging", 1)
    state = reg.retire(v1, reason="superseded")
    assert state.stage == "retired"
    event = reg.history(v1)[-1]
    assert (event.action, event.actor, event.reason) == ("stage.changed", "alice@example.com", "superseded")
    # the aliases that pointed at it are removed, and the event says which
    assert event.data["aliases"] == {"production": None, "staging": None}
    assert reg.get_version(v1).aliases == ()
    with pytest.raises(Conflict, match="retired"):
        reg.deploy(v1)
    with pytest.raises(Conflict, match="retired: no alias may point at it"):
        reg.set_alias("credit-risk", "staging", 1)
    with pytest.raises(Conflict, match=r"resolves to models:/credit-risk/1, which is retired"):
        reg.load("models:/credit-risk@latest")
    assert reg.load(v1).version.version == 1  # by number, for audit
    with pytest.raises(InvalidInput, match="reason"):
        reg.retire(v1, reason="")
    _clean(reg)


def test_retire_cli(reg: Registry, db_url: str, tmp_path: Path) -> None:
    v1 = _approved(reg)
    reg.deploy(v1)
    args = ["--registry", db_url, "--artifacts", str(tmp_path / "artifacts"), "--as", "alice@example.com"]
    out = CliRunner().invoke(main, ["versions", "retire", v1, "--reason", "old", *args])
    assert out.exit_code == 0, out.output
    assert "Retired models:/credit-risk/1 (aliases removed: @production)" in out.output
    assert reg.state(v1).stage == "retired"
    out = CliRunner().invoke(main, ["versions", "retire", v1, *args])
    assert out.exit_code == 2  # --reason is required


# --------------------------------------------------------------------------- archive


def test_archived_model_is_hidden_and_refuses_versions_and_deploys(reg: Registry, tmp_path: Path) -> None:
    v1 = _approved(reg)
    reg.create_model("other")
    model = reg.archive_model("credit-risk", reason="replaced")
    assert model.archived
    assert _last(reg, "credit-risk") == ("model.archived", "alice@example.com", "replaced")
    assert [m.name for m in reg.list_models()] == ["other"]
    assert [m.name for m in reg.list_models(include_archived=True)] == ["credit-risk", "other"]
    with pytest.raises(Conflict, match="archived: it cannot take new versions"):
        reg.register("credit-risk", lambda rows: rows, capture=False)
    assert len(list((tmp_path / "artifacts" / "models" / "credit-risk").iterdir())) == 1  # nothing new
    with pytest.raises(Conflict, match="archived: it cannot be deployed"):
        reg.deploy(v1)
    with pytest.raises(Conflict, match="already archived"):
        reg.archive_model("credit-risk")
    assert reg.load(v1).version.version == 1  # its versions still load
    _clean(reg)
    reg.unarchive_model("credit-risk", reason="needed again")
    assert _last(reg, "credit-risk")[0] == "model.unarchived"
    assert not reg.get_model("credit-risk").archived
    reg.deploy(v1)
    assert reg.register("credit-risk", lambda rows: rows, capture=False).version == 2
    with pytest.raises(Conflict, match="not archived"):
        reg.unarchive_model("credit-risk")
    with pytest.raises(NotFound):
        reg.archive_model("nope")
    _clean(reg)


def test_the_store_refuses_a_version_of_an_archived_model(reg: Registry) -> None:
    """The facade's early check aside, the store refuses under its lock (a race)."""
    _approved(reg)
    uploaded = reg.upload("credit-risk", lambda rows: rows, capture=False)
    reg.archive_model("credit-risk")
    with pytest.raises(Conflict, match="archived"):
        reg.create_version(uploaded)


def test_archive_needs_the_admin_role(reg: Registry, db_url: str, tmp_path: Path) -> None:
    _approved(reg)
    dev = _member(db_url, tmp_path, "dev@bank.example", "contributor", "deployer")
    with pytest.raises(PermissionDenied, match="needs the admin role"):
        dev.archive_model("credit-risk")
    with pytest.raises(PermissionDenied, match="needs the admin role"):
        dev.rename_model("credit-risk", "pd", reason="x")
    assert not reg.get_model("credit-risk").archived


def test_rebuild_state_restores_archived_and_tags(reg: Registry, db_url: str) -> None:
    v1 = _approved(reg)
    reg.archive_model("credit-risk")
    reg.set_version_tags(v1, {"team": "risk"})
    if db_url.startswith("dynamodb:"):
        editor = DynamoAttacker(db_url)
        editor.put_state({**editor.model_record("credit-risk"), "archived_at": None})
        for tag in (i for i in editor.model_items("credit-risk") if i["sk"].startswith("G#")):
            editor.delete_state(tag)
    else:
        engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE models SET archived_at = NULL")
            conn.exec_driver_sql("DELETE FROM version_tags")
        engine.dispose()
    found = {d.what for d in reg.check_state()}
    assert found == {"archived models:/credit-risk", "tags of models:/credit-risk/1"}
    assert not reg.verify().ok
    reg.rebuild_state()
    assert reg.get_model("credit-risk").archived
    assert reg.get_version(v1).tags == {"team": "risk"}
    _clean(reg)


# --------------------------------------------------------------------------- rename


def test_rename_keeps_history_and_the_old_name_resolves(reg: Registry, tmp_path: Path) -> None:
    v1 = _approved(reg, "credit")
    reg.deploy(v1)
    folder = reg.get_version(v1).folder
    model = reg.rename_model("credit", "credit-risk", reason="naming convention")
    assert model.name == "credit-risk"
    assert _last(reg, "credit-risk") == ("model.renamed", "alice@example.com", "naming convention")
    # history(new) holds the events written under the old name
    actions = [e.action for e in reg.history("credit-risk")]
    assert actions[0] == "version.registered" and "deployment.deployed" in actions
    assert [e.action for e in reg.history("models:/credit-risk/1")][:1] == ["version.registered"]
    # the folder keeps its path: no byte moved
    mv = reg.get_version("models:/credit-risk/1")
    assert mv.folder == folder and (tmp_path / "artifacts" / folder).is_dir()
    assert mv.aliases == ("production",)
    assert reg.load("models:/credit-risk@production").version.uri == "models:/credit-risk/1"
    # the old name resolves, with a warning
    with pytest.warns(ModelRenamed, match="'credit' was renamed to 'credit-risk'"):
        old = reg.load("models:/credit/1")
    assert old.version.uri == "models:/credit-risk/1"
    with pytest.warns(ModelRenamed):
        assert reg.get_model("credit").name == "credit-risk"
    with pytest.warns(ModelRenamed):
        assert [v.version for v in reg.list_versions("credit")] == [1]
    with pytest.warns(ModelRenamed):
        assert len(reg.history("credit")) == len(reg.history("credit-risk"))
    assert {m.name for m in reg.list_models()} == {"credit-risk"}
    # governance continues under the new name, from the state written under the old one
    v2 = reg.register("credit-risk", lambda rows: rows, capture=False).uri
    assert v2 == "models:/credit-risk/2"
    reg.approve(v2, reason="ok")
    reg.deploy(v2)
    assert reg.rollback("credit-risk") == 1
    reg.retire("models:/credit-risk/2", reason="bad")
    _clean(reg)
    reg.rebuild_state()
    _clean(reg)


def test_rename_refusals(reg: Registry) -> None:
    _approved(reg, "a")
    _approved(reg, "b")
    with pytest.raises(AlreadyExists):
        reg.rename_model("a", "b", reason="x")
    with pytest.raises(NotFound):
        reg.rename_model("nope", "c", reason="x")
    with pytest.raises(InvalidInput, match="reason"):
        reg.rename_model("a", "c", reason="")
    with pytest.raises(InvalidInput):
        reg.rename_model("a", "not a name!", reason="x")
    reg.rename_model("a", "c", reason="x")
    # a former name is never reused: neither by a rename nor by a new registration
    with pytest.raises(Conflict, match="former name"):
        reg.rename_model("b", "a", reason="x")
    with pytest.raises(Conflict, match="renamed to c"):
        reg.register("a", lambda rows: rows, capture=False)
    with pytest.raises(Conflict, match="former name of c"):
        reg.create_model("a")
    # a chain of renames resolves to the newest name
    reg.rename_model("c", "d", reason="y")
    with pytest.warns(ModelRenamed, match="'a' was renamed to 'd'"):
        assert reg.get_version("models:/a/1").uri == "models:/d/1"
    _clean(reg)


def test_rename_scoped_to_both_names(reg: Registry, db_url: str, tmp_path: Path) -> None:
    _approved(reg, "credit-old")
    scoped = _member(db_url, tmp_path, "scoped@bank.example", "admin", models="credit-*")
    with pytest.raises(PermissionDenied, match="role for that name"):
        scoped.rename_model("credit-old", "fraud", reason="x")
    assert scoped.rename_model("credit-old", "credit-new", reason="x").name == "credit-new"
    _clean(reg)


def test_rename_and_archive_cli(reg: Registry, db_url: str, tmp_path: Path) -> None:
    _approved(reg, "credit")
    args = ["--registry", db_url, "--artifacts", str(tmp_path / "artifacts"), "--as", "alice@example.com"]
    run = CliRunner().invoke
    out = run(main, ["models", "rename", "credit", "credit-risk", "--reason", "GOV-12", *args])
    assert out.exit_code == 0 and "Renamed model credit to credit-risk" in out.output, out.output
    out = run(main, ["models", "archive", "credit-risk", "--reason", "done", *args])
    assert out.exit_code == 0 and "Archived model credit-risk" in out.output, out.output
    out = run(main, ["models", "list", *args])
    assert "credit-risk" not in out.output
    out = run(main, ["models", "list", "--archived", *args])
    assert "credit-risk" in out.output
    out = run(main, ["models", "unarchive", "credit-risk", *args])
    assert out.exit_code == 0 and not reg.get_model("credit-risk").archived


# --------------------------------------------------------------------------- tags


def test_version_tags_are_ledger_events(reg: Registry, db_url: str, tmp_path: Path) -> None:
    v1 = _approved(reg)
    mv = reg.set_version_tags(v1, {"team": "risk", "old": "x"}, reason="ownership")
    assert mv.tags == {"team": "risk", "old": "x"}
    event = reg.history(v1)[-1]
    assert (event.action, event.actor) == ("version.tagged", "alice@example.com")
    assert event.data["tags"] == {"team": "risk", "old": "x"}
    assert reg.set_version_tags(v1, {"old": None}).tags == {"team": "risk"}
    assert reg.get_version("credit-risk").tags == {"team": "risk"}
    assert [v.tags for v in reg.list_versions("credit-risk")] == [{"team": "risk"}]
    assert reg.get_version(v1).to_dict()["tags"] == {"team": "risk"}
    with pytest.raises(InvalidInput):
        reg.set_version_tags(v1, {})
    with pytest.raises(InvalidInput):
        reg.set_version_tags(v1, {"": "x"})
    with pytest.raises(NotFound):
        reg.set_version_tags("models:/credit-risk/9", {"a": "b"})
    viewer = _member(db_url, tmp_path, "viewer@bank.example", "viewer")
    with pytest.raises(PermissionDenied, match="contributor"):
        viewer.set_version_tags(v1, {"a": "b"})
    # tags follow a rename
    reg.rename_model("credit-risk", "pd", reason="x")
    assert reg.get_version("models:/pd/1").tags == {"team": "risk"}
    _clean(reg)


def test_version_tag_cli(reg: Registry, db_url: str, tmp_path: Path) -> None:
    v1 = _approved(reg)
    reg.set_version_tags(v1, {"old": "y"})
    args = ["--registry", db_url, "--artifacts", str(tmp_path / "artifacts"), "--as", "alice@example.com"]
    out = CliRunner().invoke(main, ["versions", "tag", v1, "team=risk", "--remove", "old", *args])
    assert out.exit_code == 0, out.output
    assert reg.get_version(v1).tags == {"team": "risk"}
    out = CliRunner().invoke(main, ["versions", "show", v1, *args])
    assert "team=risk" in out.output
    out = CliRunner().invoke(main, ["versions", "tag", v1, *args])
    assert out.exit_code == 2


def test_no_warning_for_current_names(reg: Registry) -> None:
    v1 = _approved(reg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg.load(v1)
        reg.history("credit-risk")


class _Scorer:
    def predict(self, frame: object) -> object:
        return frame["income"] / 1000  # type: ignore[index]


def test_trace_after_a_rename_keeps_the_governance(reg: Registry) -> None:
    import pandas as pd

    frame = pd.DataFrame({"income": [50_000.0, 61_000.0]})
    uri = reg.register("credit", _Scorer(), sample_input=frame, capture=False).uri
    reg.approve(uri, reason="reviewed")
    reg.deploy(uri, reason="first release")
    with reg.load("models:/credit@production", capture=True) as served:
        receipts = served.predict(frame).receipts
    reg.rename_model("credit", "credit-risk", reason="naming")
    report = reg.trace(receipts[0].prediction_id)
    assert [a["reason"] for a in report.governance["approvals"]] == ["reviewed"]
    assert [d["reason"] for d in report.governance["deployments"]] == ["first release"]
    _clean(reg)
