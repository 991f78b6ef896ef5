"""Identity you can prove: personal keys, enrolment in the ledger, roles, revocation, four-eyes
by member, protected aliases, and verify naming an event whose actor was rewritten.

Each test makes its own registry and its own identities folder: the shared cast of the other
tests (every member an admin) would hide what roles refuse.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from tests.helpers import attacker

from modelledger import PermissionDenied, Registry, check_receipt_with_bundle, create_identity
from modelledger._keys import load_private_key
from modelledger._ledger import ChainBuilder, LedgerEvent, sign_checkpoint
from modelledger.cli import main
from modelledger.errors import InvalidReceipt

ADMIN = "ada@bank.example"


@pytest.fixture
def ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "ids"
    monkeypatch.setenv("MODELLEDGER_IDENTITIES", str(folder))
    return folder


@pytest.fixture
def url(tmp_path: Path, ids: Path, request: pytest.FixtureRequest) -> str:
    """A new registry (SQLite, or the PostgreSQL session database emptied) whose root is ADMIN."""
    if request.param == "sqlite":
        db = f"sqlite:///{tmp_path / 'r.db'}"
    else:
        from tests.conftest import _pg_reset

        db = str(request.getfixturevalue("pg_url"))
        _pg_reset(db)
    Registry.open(db, artifacts=str(tmp_path / "art"), actor=ADMIN).init()
    return db


def _open(url: str, tmp_path: Path, actor: str, **kwargs: object) -> Registry:
    return Registry.open(url, artifacts=str(tmp_path / "art"), actor=actor, **kwargs)  # type: ignore[arg-type]


def _member(url: str, tmp_path: Path, name: str, *roles: str, models: str = "*") -> Registry:
    """``name`` with a key of their own, enrolled by ADMIN with ``roles``."""
    _path, _kid, pem = create_identity(name)
    _open(url, tmp_path, ADMIN).enrol(name, pem, roles=list(roles), models=models)
    return _open(url, tmp_path, name)


def _validated(reg: Registry, name: str = "credit-risk") -> str:
    v = reg.register(name, lambda rows: rows, capture=False)
    reg.validate(v.uri, metrics={})
    return v.uri


pytestmark = pytest.mark.parametrize("url", ["sqlite", "postgresql"], indirect=True)


def test_the_first_user_is_the_root_admin_with_a_key_of_their_own(
    url: str, ids: Path, tmp_path: Path
) -> None:
    admin = _open(url, tmp_path, ADMIN)
    (root,) = admin.members()
    assert (root.name, root.roles, root.root) == (ADMIN, ("admin",), True)
    key = ids / f"{ADMIN}.key"
    assert admin.key_path == key and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert root.keys[0].key_id == admin.whoami()["key_id"]
    init = next(iter(admin.audit(action="registry.initialized")))
    assert init.data["root"]["member"] == ADMIN and "PRIVATE" not in json.dumps(init.data)


def test_approval_is_refused_to_a_non_member_a_member_without_the_role_and_a_revoked_key(
    url: str, tmp_path: Path
) -> None:
    dev = _member(url, tmp_path, "dev@bank.example", "contributor")
    uri = _validated(dev)
    create_identity("eve@bank.example")  # a key of her own, never enrolled
    with pytest.raises(PermissionDenied, match="not enrolled"):
        _open(url, tmp_path, "eve@bank.example").approve(uri, reason="looks fine")
    with pytest.raises(PermissionDenied, match="needs the approver role"):
        _member(url, tmp_path, "intern@bank.example", "contributor", "viewer").approve(uri, reason="ok")
    officer = _member(url, tmp_path, "risk@bank.example", "approver")
    kid = officer.whoami()["key_id"]
    _open(url, tmp_path, ADMIN).revoke_key("risk@bank.example", kid, reason="laptop stolen")
    with pytest.raises(PermissionDenied, match="revoked"):
        officer.approve(uri, reason="reviewed")
    assert _open(url, tmp_path, ADMIN).state(uri).stage == "validated"
    assert _open(url, tmp_path, ADMIN).verify().ok


def test_roles_are_scoped_to_model_patterns(url: str, tmp_path: Path) -> None:
    dev = _member(url, tmp_path, "dev@bank.example", "contributor")
    credit, fraud = _validated(dev, "credit-risk"), _validated(dev, "fraud-score")
    officer = _member(url, tmp_path, "risk@bank.example", "approver", models="credit-*")
    assert officer.approve(credit, reason="reviewed").stage == "approved"
    with pytest.raises(PermissionDenied, match="approver role for fraud-score"):
        officer.approve(fraud, reason="reviewed")


def test_four_eyes_compares_members_not_keys(url: str, tmp_path: Path, ids: Path) -> None:
    dev = _member(url, tmp_path, "dev@bank.example", "contributor", "approver")
    uri = _validated(dev)
    # a second key of the same person, enrolled too: still the same member
    second = ids / "second.key"
    _path, _kid, pem = create_identity("dev@bank.example", second)
    _open(url, tmp_path, ADMIN).enrol("dev@bank.example", pem, roles=["contributor", "approver"])
    with pytest.raises(PermissionDenied, match="four-eyes"):
        _open(url, tmp_path, "dev@bank.example", key=second).approve(uri, reason="self-review")


def test_naming_someone_whose_key_you_do_not_hold_is_refused(url: str, tmp_path: Path, ids: Path) -> None:
    dev = _member(url, tmp_path, "dev@bank.example", "contributor")
    uri = _validated(dev)
    _member(url, tmp_path, "bob@bank.example", "approver")
    (ids / "bob@bank.example.key").unlink()  # bob's key is on bob's machine, not here
    runner = CliRunner()
    where = ["--registry", url, "--artifacts", str(tmp_path / "art")]
    result = runner.invoke(main, ["approve", uri, "--reason", "ok", "--as", "bob@bank.example", *where])
    assert result.exit_code == 1 and "you hold no key" in result.stderr
    # the dev's own key, claiming to be bob: refused, and nothing recorded
    with pytest.raises(PermissionDenied, match=r"signed by key \w+ of dev@bank.example"):
        _open(url, tmp_path, "bob@bank.example", key=ids / "dev@bank.example.key").approve(uri, reason="ok")
    assert not list(_open(url, tmp_path, ADMIN).audit(action="version.approved"))


def test_policy_and_enrolment_need_an_admin(url: str, tmp_path: Path) -> None:
    officer = _member(url, tmp_path, "risk@bank.example", "approver", "deployer")
    with pytest.raises(PermissionDenied, match="needs the admin role"):
        officer.set_policy({"four_eyes": False}, reason="faster")
    _path, _kid, pem = create_identity("mallory@bank.example")
    with pytest.raises(PermissionDenied, match="needs the admin role"):
        officer.enrol("mallory@bank.example", pem, roles="approver")
    assert _open(url, tmp_path, ADMIN).policy().four_eyes


def test_model_metadata_changes_are_recorded(url: str, tmp_path: Path) -> None:
    dev = _member(url, tmp_path, "dev@bank.example", "contributor")
    dev.create_model("credit-risk", description="v0")
    dev.update_model("credit-risk", description="Scores applications", tags={"team": "risk"})
    (event,) = [e for e in dev.history("credit-risk") if e.action == "model.updated"]
    assert (event.actor, event.data["description"], event.data["tags"]) == (
        "dev@bank.example",
        "Scores applications",
        {"team": "risk"},
    )
    viewer = _member(url, tmp_path, "audit@bank.example", "viewer")
    with pytest.raises(PermissionDenied, match="needs the contributor role"):
        viewer.update_model("credit-risk", description="tampered")


def test_an_event_whose_actor_was_rewritten_is_named_by_verify(url: str, tmp_path: Path, ids: Path) -> None:
    """A contributor with database access rewrites who approved, recomputes the chain and
    re-signs the checkpoints with her own (enrolled) key: every rewritten write is named."""
    dev = _member(url, tmp_path, "dev@bank.example", "contributor")
    uri = _validated(dev)
    officer = _member(url, tmp_path, "risk@bank.example", "approver")
    officer.reject(uri, reason="bias on the Q3 cohort")
    mallory = load_private_key(ids / "dev@bank.example.key")
    with attacker(url) as conn:
        rows = conn.exec_driver_sql(
            "SELECT seq, time, actor, action, subject, data, reason, hash FROM ledger_events ORDER BY seq"
        ).all()
        target = next(r.seq for r in rows if r.action == "version.rejected")
        builder = ChainBuilder()
        for r in rows:
            event = LedgerEvent(
                seq=r.seq,
                time=r.time,
                actor="dev@bank.example" if r.seq == target else r.actor,
                action=r.action,
                subject=r.subject,
                data=json.loads(r.data),
                reason=r.reason,
            )
            digest = builder.append(event)
            conn.execute(
                sa.text("UPDATE ledger_events SET actor = :a, hash = :h WHERE seq = :s"),
                {"a": event.actor, "h": digest, "s": r.seq},
            )
            cp = conn.exec_driver_sql(f"SELECT time FROM ledger_checkpoints WHERE seq = {r.seq}").first()
            if cp is not None and r.seq >= target:
                signed = sign_checkpoint(mallory, r.seq, digest, cp[0])
                conn.execute(
                    sa.text(
                        "UPDATE ledger_checkpoints SET head_hash = :h, key_id = :k, signature = :g "
                        "WHERE seq = :s"
                    ),
                    {"h": digest, "k": signed.key_id, "g": signed.signature, "s": r.seq},
                )
            elif cp is not None:
                conn.execute(
                    sa.text("UPDATE ledger_checkpoints SET head_hash = :h WHERE seq = :s"),
                    {"h": digest, "s": r.seq},
                )
        conn.execute(sa.text("UPDATE ledger_head SET hash = :h"), {"h": builder.head_hex})
    problems = _open(url, tmp_path, ADMIN).verify().problems
    named = [p for p in problems if p.kind == "unauthorized"]
    assert [p.path for p in named] == [f"ledger event {target}"]
    assert "dev@bank.example may not version.rejected: it needs the approver role" in named[0].detail


TEAM = r"""
import json, sys
from modelledger import Registry, create_identity
url, artifacts, options, step = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
me = sys.argv[5]
reg = Registry.open(url, artifacts=artifacts, storage_options=options, actor=me)
if step == "identity":
    print(create_identity(me)[2].decode())
elif step == "init":
    reg.init()
elif step == "enrol":
    reg.enrol(sys.argv[6], sys.argv[7].encode(), roles=["contributor", "approver", "deployer"])
elif step == "register":
    v = reg.register("credit-" + me.split("@")[0], lambda rows: rows, capture=False)
    reg.validate(v.uri, metrics={})
    print(v.uri)
elif step == "approve-deploy":
    reg.approve(sys.argv[6], reason="reviewed by " + me)
    reg.deploy(sys.argv[6], reason="release")
    print(reg.get_version(sys.argv[6]).aliases)
elif step == "verify":
    print(json.dumps(reg.verify().ok))
"""


def test_two_people_with_their_own_homes_share_one_registry_without_copying_a_key(
    url: str, tmp_path: Path, s3_artifacts: tuple[str, dict[str, object]]
) -> None:
    if not url.startswith("postgresql"):
        pytest.skip("the team setup is PostgreSQL + S3")
    artifacts, options = s3_artifacts
    homes = {name: tmp_path / name.split("@")[0] for name in ("alice@team.example", "bob@team.example")}

    def run(who: str, step: str, *extra: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELLEDGER_")}
        env |= {"HOME": str(homes[who]), "XDG_CONFIG_HOME": str(homes[who] / ".config")}
        args = [sys.executable, "-c", TEAM, url, artifacts, json.dumps(options), step, who, *extra]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    from tests.conftest import _pg_reset

    _pg_reset(url)  # a registry nobody has initialised yet
    alice, bob = "alice@team.example", "bob@team.example"
    run(alice, "identity")
    bob_pem = run(bob, "identity")  # bob sends alice his public key, nothing else
    run(alice, "init")
    run(alice, "enrol", bob, bob_pem)
    mine, theirs = run(alice, "register"), run(bob, "register")
    assert run(bob, "approve-deploy", mine) == "('production',)"
    assert run(alice, "approve-deploy", theirs) == "('production',)"
    assert run(bob, "verify") == "true"
    for who, home in homes.items():
        keys = sorted(p.name for p in home.rglob("*.key"))
        assert keys == [f"{who}.key"]  # each holds only their own key


def test_a_receipt_signed_after_its_serving_key_was_revoked_fails_offline(url: str, tmp_path: Path) -> None:
    admin = _open(url, tmp_path, ADMIN)
    dev = _member(url, tmp_path, "dev@bank.example", "contributor")
    v = dev.register("credit-risk", lambda rows: [sum(r) for r in rows], capture=False)
    with pytest.raises(PermissionDenied, match="serving identity"):
        admin.load(v.uri, capture=True)  # an admin's key never signs receipts
    scorer = _member(url, tmp_path, "scorer-prod", "serving", models="credit-*")
    with scorer.load(v.uri, capture=True) as served:
        before = served.predict([[1, 2]]).receipts[0]
        admin.revoke_key("scorer-prod", served.key_id, reason="host decommissioned")
        time.sleep(0.002)  # receipts keep milliseconds
        after = served.predict([[3, 4]]).receipts[0]
    bundle = json.loads(json.dumps(admin.trust_bundle()))  # as a file would carry it
    root = admin.public_key()
    assert check_receipt_with_bundle(before.to_dict(), bundle, root_public_key=root).prediction_id
    with pytest.raises(InvalidReceipt, match="after it was revoked"):
        check_receipt_with_bundle(after.to_dict(), bundle, root_public_key=root)

    files = {name: tmp_path / f"{name}.json" for name in ("before", "after", "bundle")}
    files["before"].write_text(json.dumps(before.to_dict()))
    files["after"].write_text(json.dumps(after.to_dict()))
    files["bundle"].write_text(json.dumps(bundle))
    (tmp_path / "root.pem").write_bytes(root)
    runner = CliRunner()
    pinned = ["--bundle", str(files["bundle"]), "--public-key", str(tmp_path / "root.pem")]
    assert runner.invoke(main, ["receipt", "verify", str(files["before"]), *pinned]).exit_code == 0
    refused = runner.invoke(main, ["receipt", "verify", str(files["after"]), *pinned])
    assert refused.exit_code == 1 and "revoked" in refused.stderr

    # a bundle whose root was swapped (to enrol a forger) fails against the pinned root
    _p, _k, other = create_identity("forger", tmp_path / "forger.key")
    forged = json.loads(json.dumps(bundle))
    forged["root"]["public_key"] = other.decode()
    with pytest.raises(InvalidReceipt, match="not the pinned key"):
        check_receipt_with_bundle(before.to_dict(), forged, root_public_key=root)
    # and a bundle whose enrolment was edited (more roles) no longer verifies
    cut = json.loads(json.dumps(bundle))
    cut["segments"][-1]["events"][0]["event"]["data"]["roles"] = ["serving", "admin"]
    with pytest.raises(InvalidReceipt, match="trust bundle does not verify"):
        check_receipt_with_bundle(before.to_dict(), cut, root_public_key=root)


def test_an_existing_openssh_key_can_be_your_identity(url: str, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = tmp_path / "id_ed25519"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    private.chmod(0o600)
    public = tmp_path / "id_ed25519.pub"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        + b" carol@laptop\n"
    )
    member = _open(url, tmp_path, ADMIN).enrol("carol@bank.example", public, roles="contributor")
    carol = _open(url, tmp_path, "carol@bank.example", key=private)
    assert carol.whoami()["key_id"] == member.keys[0].key_id
    v = carol.register("credit-risk", lambda rows: rows, capture=False)
    assert next(iter(carol.history(v.uri))).actor == "carol@bank.example"
    private.chmod(0o644)  # readable by others: refused, as for any private key
    with pytest.raises(PermissionDenied, match="chmod 600"):
        _open(url, tmp_path, "carol@bank.example", key=private).register(
            "credit-risk", lambda r: r, capture=False
        )
