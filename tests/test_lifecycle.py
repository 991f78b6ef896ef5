"""Unit tests of the pure stage machine in ``modelledger._lifecycle``: no database, no files.

The expected rules are written out here on purpose (not read from the module), so a change
to the stage machine, the gates or an approval rule makes a test fail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from modelledger._ledger import LedgerEvent
from modelledger._lifecycle import (
    STAGES,
    EventDraft,
    Gate,
    GateResult,
    GovContext,
    VersionState,
    check_transition,
    decide_alias,
    decide_approval,
    decide_deploy,
    decide_policy,
    decide_registration,
    decide_rollback,
    decide_stage,
    decide_validation,
    evaluate_gates,
    parse_gates,
    replay,
)
from modelledger._policy import Policy
from modelledger.errors import Conflict, InvalidInput, InvalidManifest, PermissionDenied

MODEL = "credit-risk"
VERSION = 3
URI = f"models:/{MODEL}/{VERSION}"
ALICE = "alice@bank.example"  # registers
BOB = "bob@bank.example"  # reviews

# ---------------------------------------------------------------- the rules, written out

EXPECTED_STAGES = (
    "candidate",
    "data_prepared",
    "trained",
    "validated",
    "approved",
    "rejected",
    "deployed",
    "retired",
)

# current stage -> the stages it may move to
ALLOWED_NEXT: dict[str, set[str]] = {
    "candidate": {"data_prepared"},
    "data_prepared": {"trained"},
    "trained": {"validated", "rejected"},
    "validated": {"validated", "approved", "rejected"},
    "approved": {"deployed", "retired"},
    "rejected": {"validated"},
    "deployed": {"deployed", "retired"},
    "retired": set(),
}

ALL_PAIRS = [(current, target) for current in EXPECTED_STAGES for target in EXPECTED_STAGES]


def _pair_id(pair: tuple[str, str]) -> str:
    current, target = pair
    verdict = "ok" if target in ALLOWED_NEXT[current] else "conflict"
    return f"{current}->{target}:{verdict}"


# ---------------------------------------------------------------- helpers


def make_ctx(
    stage: str | None = "validated",
    *,
    actor: str = BOB,
    registered_by: str = ALICE,
    aliases: Mapping[str, int] | None = None,
    policy: Policy | None = None,
    version: int | None = VERSION,
) -> GovContext:
    """A context as the store hands it over; ``stage=None``: the version has no state row."""
    state = None if stage is None or version is None else VersionState(MODEL, version, stage, registered_by)
    return GovContext(MODEL, version, state, dict(aliases or {}), policy or Policy(), actor)


def only(drafts: Sequence[EventDraft]) -> EventDraft:
    assert len(drafts) == 1, drafts
    return drafts[0]


def result(gate: str, value: float | None, passed: bool) -> GateResult:
    return GateResult(gate, value, passed)


PASS = [result("auc >= 0.8 on holdout", 0.86, True), result("ks > 0.3", 0.41, True)]
FAIL = [result("auc >= 0.8 on holdout", 0.86, True), result("ks > 0.3", 0.12, False)]


# ---------------------------------------------------------------- transitions


def test_stages_are_the_documented_eight_in_order() -> None:
    assert STAGES == EXPECTED_STAGES


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=_pair_id)
def test_check_transition_every_pair(pair: tuple[str, str]) -> None:
    current, target = pair
    allowed = ALLOWED_NEXT[current]
    if target in allowed:
        check_transition(current, target, uri=URI)  # no error
        return
    with pytest.raises(Conflict) as exc:
        check_transition(current, target, uri=URI)
    message = str(exc.value)
    expected_next = ", ".join(sorted(allowed)) or "none (terminal)"
    assert f"{URI} is {current}" in message
    assert f"cannot move to {target}" in message
    assert f"(allowed next: {expected_next})" in message


@pytest.mark.parametrize(
    "target",
    ["production", "Validated", "", "archived"],
    ids=["alias-name", "capitalised", "empty", "unknown"],
)
@pytest.mark.parametrize("current", ["candidate", "validated", "retired"])
def test_check_transition_unknown_target_is_invalid_input(current: str, target: str) -> None:
    with pytest.raises(InvalidInput, match="unknown stage") as exc:
        check_transition(current, target, uri=URI)
    assert not isinstance(exc.value, Conflict)
    for stage in EXPECTED_STAGES:
        assert stage in str(exc.value)  # the message lists the stages to choose from


# ---------------------------------------------------------------- decide_stage


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("candidate", "data_prepared"),
        ("data_prepared", "trained"),
        ("approved", "retired"),
        ("deployed", "retired"),
    ],
    ids=lambda v: v,
)
def test_decide_stage_allowed_moves(current: str, target: str) -> None:
    ev = only(decide_stage(make_ctx(current), target, reason="done by hand", details={"ticket": "ML-1"}))
    assert ev.action == "stage.changed"
    assert ev.subject == URI
    assert ev.reason == "done by hand"
    assert ev.actor is None  # the acting user
    assert ev.data["model"] == MODEL
    assert ev.data["version"] == VERSION
    assert ev.data["stage"] == target
    assert ev.data["previous"] == current
    assert ev.data["details"] == {"ticket": "ML-1"}


def test_decide_stage_retiring_frees_only_this_versions_aliases() -> None:
    ctx = make_ctx("deployed", aliases={"production": VERSION, "staging": VERSION, "rollback": 2, "x": 1})
    ev = only(decide_stage(ctx, "retired", reason="superseded", details={}))
    assert ev.data["aliases"] == {"production": None, "staging": None}


def test_decide_stage_retiring_without_aliases_moves_none() -> None:
    ev = only(
        decide_stage(make_ctx("approved", aliases={"production": 2}), "retired", reason=None, details={})
    )
    assert ev.data["aliases"] == {}
    assert ev.reason is None


def test_decide_stage_early_moves_do_not_touch_aliases() -> None:
    ctx = make_ctx("candidate", aliases={"production": VERSION})
    ev = only(decide_stage(ctx, "data_prepared", reason=None, details={}))
    assert "aliases" not in ev.data


@pytest.mark.parametrize(
    ("target", "verb"),
    [("validated", "validate"), ("approved", "approve"), ("rejected", "reject"), ("deployed", "deploy")],
    ids=lambda v: v,
)
@pytest.mark.parametrize("current", ["trained", "validated", "approved"])
def test_decide_stage_refuses_stages_with_their_own_command(current: str, target: str, verb: str) -> None:
    with pytest.raises(InvalidInput, match=f"use `{verb}`"):
        decide_stage(make_ctx(current), target, reason=None, details={})


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("candidate", "trained"),
        ("candidate", "candidate"),
        ("candidate", "retired"),
        ("trained", "retired"),
        ("validated", "retired"),
        ("rejected", "retired"),
        ("retired", "candidate"),
        ("deployed", "trained"),
    ],
    ids=lambda v: v,
)
def test_decide_stage_disallowed_moves_conflict(current: str, target: str) -> None:
    with pytest.raises(Conflict, match=f"{current}: it cannot move to {target}"):
        decide_stage(make_ctx(current), target, reason=None, details={})


def test_decide_stage_unknown_target() -> None:
    with pytest.raises(InvalidInput, match="unknown stage 'shipped'"):
        decide_stage(make_ctx("candidate"), "shipped", reason=None, details={})


def test_decide_stage_without_state_row() -> None:
    with pytest.raises(Conflict, match="no governance state"):
        decide_stage(make_ctx(None), "data_prepared", reason=None, details={})


# ---------------------------------------------------------------- decide_validation


@pytest.mark.parametrize(
    ("current", "results", "expected"),
    [
        ("trained", PASS, "validated"),
        ("trained", FAIL, "rejected"),
        ("validated", PASS, "validated"),
        ("validated", FAIL, "rejected"),
        ("rejected", PASS, "validated"),
        ("trained", [], "validated"),  # no gates: nothing fails
    ],
    ids=["trained-pass", "trained-fail", "revalidate-pass", "revalidate-fail", "rejected-pass", "no-gates"],
)
def test_decide_validation_outcome(current: str, results: list[GateResult], expected: str) -> None:
    ev = only(decide_validation(make_ctx(current), results, reason=None, dataset="holdout"))
    assert ev.action == "validation.evaluated"
    assert ev.subject == URI
    assert ev.data["stage"] == expected
    assert ev.data["previous"] == current
    assert ev.data["passed"] is (expected == "validated")
    assert ev.data["results"] == [r.to_dict() for r in results]
    assert ev.data["dataset"] == "holdout"
    if expected == "validated":
        assert ev.reason is None
    else:
        assert ev.reason == "validation gates failed: ks > 0.3"


def test_decide_validation_failure_names_every_failed_gate() -> None:
    results = [
        result("auc >= 0.8", 0.7, False),
        result("ks > 0.3", 0.5, True),
        result("psi < 0.1", None, False),
    ]
    ev = only(decide_validation(make_ctx("trained"), results, reason=None, dataset=None))
    assert ev.reason == "validation gates failed: auc >= 0.8, psi < 0.1"
    assert ev.data["dataset"] is None


@pytest.mark.parametrize("results", [PASS, FAIL], ids=["pass", "fail"])
def test_decide_validation_keeps_the_given_reason(results: list[GateResult]) -> None:
    ev = only(decide_validation(make_ctx("trained"), results, reason="holdout run #41", dataset=None))
    assert ev.reason == "holdout run #41"


@pytest.mark.parametrize(
    ("current", "results"),
    [
        ("candidate", PASS),
        ("data_prepared", PASS),
        ("approved", PASS),
        ("deployed", PASS),
        ("retired", PASS),
        ("rejected", FAIL),  # rejected -> rejected is not a move
        ("approved", FAIL),
    ],
    ids=[
        "candidate",
        "data_prepared",
        "approved",
        "deployed",
        "retired",
        "rejected-fails-again",
        "approved-fail",
    ],
)
def test_decide_validation_wrong_stage_conflicts(current: str, results: list[GateResult]) -> None:
    with pytest.raises(Conflict, match=f"{URI} is {current}"):
        decide_validation(make_ctx(current), results, reason=None, dataset=None)


def test_decide_validation_without_state_row() -> None:
    with pytest.raises(Conflict, match="no governance state"):
        decide_validation(make_ctx(None), PASS, reason=None, dataset=None)


# ---------------------------------------------------------------- decide_approval: approve


@pytest.mark.parametrize(
    ("actor", "policy", "automated"),
    [
        (BOB, Policy(), False),
        (ALICE, Policy(four_eyes=False), False),
        (BOB, Policy(approver_role="risk", roles={BOB: ("risk",)}), False),
        (BOB, Policy(four_eyes=False, approver_role="risk", roles={BOB: ("dev", "risk")}), False),
        (ALICE, Policy(four_eyes=True, approver_role="risk"), True),
    ],
    ids=[
        "four-eyes-other-person",
        "four-eyes-off-registrant",
        "role-holder",
        "role-holder-among-roles",
        "automated-skips-person-checks",
    ],
)
def test_decide_approval_approves(actor: str, policy: Policy, automated: bool) -> None:
    ctx = make_ctx("validated", actor=actor, policy=policy)
    ev = only(decide_approval(ctx, approve=True, reason="reviewed holdout report #41", automated=automated))
    assert ev.action == "version.approved"
    assert ev.subject == URI
    assert ev.reason == "reviewed holdout report #41"
    assert ev.actor is None
    assert ev.data["stage"] == "approved"
    assert ev.data["previous"] == "validated"
    assert ev.data["registered_by"] == ALICE
    assert ev.data["automated"] is automated
    assert ev.data["four_eyes"] is policy.four_eyes


@pytest.mark.parametrize(
    ("actor", "policy", "match"),
    [
        (ALICE, Policy(), "four-eyes"),
        (ALICE, Policy(approver_role="risk", roles={ALICE: ("risk",)}), "four-eyes"),
        (BOB, Policy(approver_role="risk"), "requires the role 'risk'"),
        (BOB, Policy(approver_role="risk", roles={BOB: ("dev",)}), "requires the role 'risk'"),
        (BOB, Policy(four_eyes=False, approver_role="risk", roles={ALICE: ("risk",)}), "role 'risk'"),
    ],
    ids=["registrant-four-eyes", "registrant-with-role", "no-roles", "wrong-role", "four-eyes-off-no-role"],
)
def test_decide_approval_permission_denied(actor: str, policy: Policy, match: str) -> None:
    ctx = make_ctx("validated", actor=actor, policy=policy)
    with pytest.raises(PermissionDenied, match=match) as exc:
        decide_approval(ctx, approve=True, reason="looks fine")
    assert actor in str(exc.value)


@pytest.mark.parametrize("reason", [None, ""], ids=["none", "empty"])
def test_decide_approval_needs_a_reason(reason: str | None) -> None:
    with pytest.raises(InvalidInput, match="approval needs a reason"):
        decide_approval(make_ctx("validated"), approve=True, reason=reason)


@pytest.mark.parametrize("automated", [False, True], ids=["manual", "automated"])
@pytest.mark.parametrize(
    "current", ["candidate", "data_prepared", "trained", "approved", "rejected", "deployed", "retired"]
)
def test_decide_approval_only_validated(current: str, automated: bool) -> None:
    with pytest.raises(Conflict, match="only a validated version can be approved"):
        decide_approval(make_ctx(current), approve=True, reason="ok", automated=automated)


def test_decide_approval_without_state_row() -> None:
    with pytest.raises(Conflict, match="no governance state"):
        decide_approval(make_ctx(None), approve=True, reason="ok")


# ---------------------------------------------------------------- decide_approval: reject


@pytest.mark.parametrize("current", ["trained", "validated"])
@pytest.mark.parametrize("actor", [BOB, ALICE], ids=["reviewer", "registrant"])
def test_decide_approval_rejects(current: str, actor: str) -> None:
    # four-eyes and roles guard approvals only: anyone may reject
    policy = Policy(four_eyes=True, approver_role="risk")
    ev = only(decide_approval(make_ctx(current, actor=actor, policy=policy), approve=False, reason="bias"))
    assert ev.action == "version.rejected"
    assert ev.subject == URI
    assert ev.reason == "bias"
    assert ev.data == {"model": MODEL, "version": VERSION, "stage": "rejected", "previous": current}


@pytest.mark.parametrize("reason", [None, ""], ids=["none", "empty"])
def test_decide_approval_rejection_needs_a_reason(reason: str | None) -> None:
    with pytest.raises(InvalidInput, match="rejection needs a reason"):
        decide_approval(make_ctx("validated"), approve=False, reason=reason)


@pytest.mark.parametrize(
    "current", ["candidate", "data_prepared", "approved", "rejected", "deployed", "retired"]
)
def test_decide_approval_reject_wrong_stage(current: str) -> None:
    with pytest.raises(Conflict, match=f"{URI} is {current}"):
        decide_approval(make_ctx(current), approve=False, reason="no")


# ---------------------------------------------------------------- decide_deploy


@pytest.mark.parametrize(
    ("current", "alias", "aliases", "previous"),
    [
        ("approved", "production", {}, None),
        ("approved", "production", {"production": 2}, 2),
        ("approved", "production", {"production": 2, "rollback": 1}, 2),
        ("approved", "production", {"rollback": 1}, None),  # a stale @rollback is removed
        ("deployed", "staging", {"production": VERSION}, None),
        ("deployed", "production", {"production": 2, "staging": VERSION}, 2),
    ],
    ids=[
        "first-deploy",
        "replaces-holder",
        "replaces-holder-and-rollback",
        "stale-rollback-removed",
        "deployed-to-second-alias",
        "deployed-promoted",
    ],
)
def test_decide_deploy(current: str, alias: str, aliases: dict[str, int], previous: int | None) -> None:
    ev = only(decide_deploy(make_ctx(current, aliases=aliases), alias, reason="go-live CHG-7"))
    assert ev.action == "deployment.deployed"
    assert ev.subject == URI
    assert ev.reason == "go-live CHG-7"
    assert ev.data["stage"] == "deployed"
    assert ev.data["previous_stage"] == current
    assert ev.data["alias"] == alias
    assert ev.data["previous"] == previous
    assert ev.data["aliases"] == {alias: VERSION, "rollback": previous}


@pytest.mark.parametrize(
    "current", ["candidate", "data_prepared", "trained", "validated", "rejected", "retired"]
)
def test_decide_deploy_needs_approval(current: str) -> None:
    with pytest.raises(Conflict, match="only an approved version can be deployed"):
        decide_deploy(make_ctx(current), "production", reason=None)


def test_decide_deploy_alias_already_held() -> None:
    with pytest.raises(Conflict, match="already holds @production"):
        decide_deploy(make_ctx("deployed", aliases={"production": VERSION}), "production", reason=None)


def test_decide_deploy_without_state_row() -> None:
    with pytest.raises(Conflict, match="no governance state"):
        decide_deploy(make_ctx(None), "production", reason=None)


def _moved(aliases: Mapping[str, int], drafts: Sequence[EventDraft]) -> dict[str, int]:
    """The aliases after the drafts' alias moves (None removes)."""
    out = dict(aliases)
    for d in drafts:
        for alias, version in (d.data.get("aliases") or {}).items():
            if version is None:
                out.pop(alias, None)
            else:
                out[alias] = version
    return out


@pytest.mark.xfail(
    strict=True,
    reason="one @rollback is shared by every alias: deploying to a fresh @staging removes "
    "(or a used @staging overwrites) the @rollback that @production relies on",
)
@pytest.mark.parametrize("staging_holder", [None, 5], ids=["fresh-staging", "used-staging"])
def test_deploy_to_another_alias_keeps_productions_rollback(staging_holder: int | None) -> None:
    aliases = {"production": 2, "rollback": 1}  # v2 replaced v1 in production
    if staging_holder is not None:
        aliases["staging"] = staging_holder
    aliases = _moved(aliases, decide_deploy(make_ctx("approved", aliases=aliases), "staging", reason=None))
    ev = only(decide_rollback(make_ctx(None, version=None, aliases=aliases), "production", reason="incident"))
    assert ev.data["to"] == 1  # production goes back to what production held before


# ---------------------------------------------------------------- decide_rollback


def test_decide_rollback_moves_alias_back_and_clears_rollback() -> None:
    ctx = make_ctx(None, version=None, aliases={"production": 3, "rollback": 2, "staging": 3})
    ev = only(decide_rollback(ctx, "production", reason="incident 12"))
    assert ev.action == "deployment.rolled_back"
    assert ev.subject == f"models:/{MODEL}@production"
    assert ev.reason == "incident 12"
    assert ev.data == {
        "model": MODEL,
        "alias": "production",
        "from": 3,
        "to": 2,
        "aliases": {"production": 2, "rollback": None},
    }


@pytest.mark.parametrize(
    ("aliases", "match"),
    [
        ({}, "@rollback is not set: there is nothing to roll back to"),
        ({"production": 3}, "@rollback is not set: there is nothing to roll back to"),
        ({"rollback": 2}, "@production is not set: there is nothing to roll back"),
        ({"rollback": 2, "staging": 3}, "@production is not set"),
    ],
    ids=["nothing-set", "no-rollback", "alias-unset", "other-alias-set"],
)
def test_decide_rollback_conflicts(aliases: dict[str, int], match: str) -> None:
    with pytest.raises(Conflict, match=match):
        decide_rollback(make_ctx(None, version=None, aliases=aliases), "production", reason=None)


@pytest.mark.xfail(
    strict=True,
    reason="rolling back @rollback itself is accepted: it records a rollback and only deletes @rollback",
)
def test_decide_rollback_of_rollback_alias_is_refused() -> None:
    ctx = make_ctx(None, version=None, aliases={"production": 3, "rollback": 2})
    with pytest.raises(InvalidInput):
        decide_rollback(ctx, "rollback", reason=None)


# ---------------------------------------------------------------- decide_alias


@pytest.mark.parametrize(
    ("version", "aliases", "action", "previous"),
    [
        (3, {}, "alias.set", None),
        (3, {"champion": 2}, "alias.set", 2),
        (None, {"champion": 2}, "alias.deleted", 2),
        (None, {}, "alias.deleted", None),
    ],
    ids=["set-new", "move", "delete", "delete-unset"],
)
def test_decide_alias(
    version: int | None, aliases: dict[str, int], action: str, previous: int | None
) -> None:
    ctx = make_ctx(None, version=None, aliases=aliases)
    ev = only(decide_alias(ctx, "champion", version, reason="A/B winner"))
    assert ev.action == action
    assert ev.subject == f"models:/{MODEL}@champion"
    assert ev.reason == "A/B winner"
    assert ev.data == {
        "model": MODEL,
        "alias": "champion",
        "version": version,
        "previous": previous,
        "aliases": {"champion": version},
    }


# ---------------------------------------------------------------- decide_policy


@pytest.mark.parametrize("reason", [None, ""], ids=["none", "empty"])
def test_decide_policy_needs_a_reason(reason: str | None) -> None:
    with pytest.raises(InvalidInput, match="policy change needs a reason"):
        decide_policy(make_ctx(None), Policy(four_eyes=False), reason=reason)


STRICT = Policy(four_eyes=True, approver_role="risk", auto_approve=False, roles={BOB: ("risk",)})


@pytest.mark.parametrize(
    ("old", "new", "relaxed"),
    [
        (Policy(), Policy(four_eyes=False), ["four_eyes"]),
        (STRICT, Policy(roles={BOB: ("risk",)}), ["approver_role"]),
        (Policy(), Policy(auto_approve=True), ["auto_approve"]),
        (STRICT, Policy(four_eyes=False, auto_approve=True), ["four_eyes", "approver_role", "auto_approve"]),
        (Policy(four_eyes=False, auto_approve=True), STRICT, []),
        (Policy(), Policy(), []),
        (STRICT, Policy(approver_role="audit", roles={BOB: ("risk",)}), []),
        (STRICT, Policy(approver_role="risk", roles={ALICE: ("risk",), BOB: ("risk",)}), []),
        (Policy(auto_approve=True), Policy(auto_approve=True, four_eyes=True), []),
    ],
    ids=[
        "four-eyes-off",
        "approver-role-dropped",
        "auto-approve-on",
        "all-three",
        "tightened",
        "unchanged",
        "role-renamed",
        "roles-granted",
        "auto-approve-kept",
    ],
)
def test_decide_policy_relaxed(old: Policy, new: Policy, relaxed: list[str]) -> None:
    ev = only(decide_policy(make_ctx(None, policy=old), new, reason="team of one, GOV-7"))
    assert ev.action == "policy.changed"
    assert ev.subject == "registry"
    assert ev.reason == "team of one, GOV-7"
    assert ev.data["policy"] == new.to_dict()
    assert ev.data["previous"] == old.to_dict()
    assert ev.data["relaxed"] == relaxed


# ---------------------------------------------------------------- decide_registration

RECORD = {"folder": "credit-risk/3-abc", "digest": "sha256:abc", "flavor": "sklearn", "files": 2}
MANIFEST: dict[str, Any] = {
    "gates": ["auc >= 0.80 on holdout"],
    "metrics": {"auc_holdout": 0.86},
    "datasets": [{"uri": "datasets:/applications-train/1", "role": "train"}],
    "training_job": {"id": "job-7"},
    "framework": "sklearn",
    "framework_version": "1.5.0",
    "source": {"git_commit": "abc123"},
}
AUTO_POLICY = Policy(auto_approve=True)
REG = "version.registered"
MOVE = "stage.changed"
VAL = "validation.evaluated"
APP = "version.approved"
DEP = "deployment.deployed"


def register(
    stages: Mapping[str, str] | None = None, policy: Policy | None = None, **manifest: Any
) -> list[EventDraft]:
    doc = {**MANIFEST, **manifest}
    if stages is not None:
        doc["stages"] = dict(stages)
    ctx = GovContext(MODEL, VERSION, None, {"production": 2}, policy or Policy(), ALICE)
    return decide_registration(ctx, doc, RECORD)


def _stages_walked(drafts: Sequence[EventDraft]) -> list[tuple[str, str]]:
    return [(d.action, d.data["stage"]) for d in drafts]


@pytest.mark.parametrize(
    ("stages", "policy", "walk"),
    [
        (None, None, [(REG, "candidate"), (MOVE, "data_prepared"), (MOVE, "trained"), (VAL, "validated")]),
        ({"data_prepared": "manual"}, None, [(REG, "candidate")]),
        ({"data_prepared": "manual", "trained": "auto", "validated": "auto"}, None, [(REG, "candidate")]),
        ({"trained": "manual"}, None, [(REG, "candidate"), (MOVE, "data_prepared")]),
        ({"validated": "manual"}, None, [(REG, "candidate"), (MOVE, "data_prepared"), (MOVE, "trained")]),
        (
            {"approved": "auto"},
            None,
            [(REG, "candidate"), (MOVE, "data_prepared"), (MOVE, "trained"), (VAL, "validated")],
        ),
        (
            {"approved": "auto"},
            AUTO_POLICY,
            [
                (REG, "candidate"),
                (MOVE, "data_prepared"),
                (MOVE, "trained"),
                (VAL, "validated"),
                (APP, "approved"),
            ],
        ),
        (
            {"approved": "manual", "deployed": "auto"},
            AUTO_POLICY,
            [(REG, "candidate"), (MOVE, "data_prepared"), (MOVE, "trained"), (VAL, "validated")],
        ),
        (
            {"approved": "auto", "deployed": "auto"},
            Policy(auto_approve=False),
            [(REG, "candidate"), (MOVE, "data_prepared"), (MOVE, "trained"), (VAL, "validated")],
        ),
        (
            {"approved": "auto", "deployed": "auto"},
            AUTO_POLICY,
            [
                (REG, "candidate"),
                (MOVE, "data_prepared"),
                (MOVE, "trained"),
                (VAL, "validated"),
                (APP, "approved"),
                (DEP, "deployed"),
            ],
        ),
    ],
    ids=[
        "default-modes-stop-before-approval",
        "data-prepared-manual",
        "first-manual-stage-stops-the-walk",
        "trained-manual",
        "validated-manual",
        "auto-approve-without-policy",
        "auto-approve-with-policy",
        "approved-manual-deployed-auto",
        "auto-deploy-without-policy",
        "auto-approve-and-deploy",
    ],
)
def test_decide_registration_walk(
    stages: Mapping[str, str] | None, policy: Policy | None, walk: list[tuple[str, str]]
) -> None:
    drafts = register(stages, policy)
    assert _stages_walked(drafts) == walk
    for d in drafts:
        assert d.subject == URI
        assert d.data["model"] == MODEL
        assert d.data["version"] == VERSION
    # each move starts where the previous one ended
    previous = [d.data.get("previous_stage", d.data.get("previous")) for d in drafts[1:]]
    assert previous == [stage for _, stage in walk[:-1]]


def test_decide_registration_records_what_was_registered() -> None:
    reg, prepared, trained, validated = register()
    assert reg.data == {
        "model": MODEL,
        "version": VERSION,
        "stage": "candidate",
        "digest": "sha256:abc",
        "folder": "credit-risk/3-abc",
        "flavor": "sklearn",
        "source": {"git_commit": "abc123"},
        "settings_digest": None,
    }
    assert reg.actor is None
    assert reg.reason is None
    assert prepared.data["details"] == {
        "datasets": [{"uri": "datasets:/applications-train/1", "role": "train"}]
    }
    assert trained.data["details"] == {
        "folder": "credit-risk/3-abc",
        "digest": "sha256:abc",
        "files": 2,
        "training_job": {"id": "job-7"},
        "framework": "sklearn",
        "framework_version": "1.5.0",
    }
    assert validated.data["passed"] is True
    assert validated.data["results"] == [{"gate": "auc >= 0.8 on holdout", "value": 0.86, "passed": True}]
    assert validated.reason is None
    assert all(d.actor is None for d in (prepared, trained, validated))


def test_decide_registration_keeps_the_settings_digest() -> None:
    ctx = GovContext(MODEL, VERSION, None, {}, Policy(), ALICE)
    drafts = decide_registration(
        ctx, {"stages": {"data_prepared": "manual"}}, {**RECORD, "settings_digest": "s1"}
    )
    assert only(drafts).data["settings_digest"] == "s1"


@pytest.mark.parametrize(
    "manifest",
    [
        {"metrics": {"auc_holdout": 0.70}},
        {"metrics": {}},
        {"gates": ["auc >= 0.80 on holdout", "ks > 0.3"], "metrics": {"auc_holdout": 0.9, "ks": 0.1}},
    ],
    ids=["gate-below-threshold", "metric-missing", "second-gate-fails"],
)
def test_decide_registration_failing_gates_reject(manifest: dict[str, Any]) -> None:
    drafts = register({"approved": "auto", "deployed": "auto"}, AUTO_POLICY, **manifest)
    assert _stages_walked(drafts) == [
        (REG, "candidate"),
        (MOVE, "data_prepared"),
        (MOVE, "trained"),
        (VAL, "rejected"),
    ]
    last = drafts[-1]
    assert last.data["passed"] is False
    assert last.reason is not None
    assert last.reason.startswith("validation gates failed: ")


def test_decide_registration_without_gates_validates() -> None:
    drafts = register(gates=None, metrics=None)
    assert _stages_walked(drafts)[-1] == (VAL, "validated")
    assert drafts[-1].data["results"] == []


@pytest.mark.parametrize(
    "policy",
    [
        AUTO_POLICY,
        Policy(auto_approve=True, four_eyes=True, approver_role="risk"),  # nobody holds the role
    ],
    ids=["auto-approve", "auto-approve-despite-four-eyes-and-role"],
)
def test_decide_registration_auto_approval_acts_as_the_policy(policy: Policy) -> None:
    approved = register({"approved": "auto"}, policy)[-1]
    assert approved.action == APP
    assert approved.actor == "policy:auto-approve"
    assert approved.reason == "all validation gates passed"
    assert approved.data["automated"] is True
    assert approved.data["previous"] == "validated"
    assert approved.data["registered_by"] == ALICE
    assert approved.data["four_eyes"] is policy.four_eyes


@pytest.mark.parametrize(
    ("target_alias", "alias"),
    [(None, "production"), ("", "production"), ("champion", "champion")],
    ids=["default-production", "empty-means-production", "manifest-target-alias"],
)
def test_decide_registration_auto_deploy_target(target_alias: str | None, alias: str) -> None:
    deployed = register({"approved": "auto", "deployed": "auto"}, AUTO_POLICY, target_alias=target_alias)[-1]
    assert deployed.action == DEP
    assert deployed.actor is None  # the registering user
    assert deployed.reason == "automatic deployment after approval"
    assert deployed.data["alias"] == alias
    assert deployed.data["previous_stage"] == "approved"
    previous = 2 if alias == "production" else None  # the context has @production -> 2
    assert deployed.data["previous"] == previous
    assert deployed.data["aliases"] == {alias: VERSION, "rollback": previous}


@pytest.mark.xfail(
    strict=True,
    reason="deploy() refuses @rollback, but a manifest target_alias 'rollback' with automatic deployment "
    "is accepted: the version is recorded as deployed while no alias points at it",
)
def test_decide_registration_refuses_auto_deploy_to_rollback() -> None:
    with pytest.raises(InvalidInput):
        register({"approved": "auto", "deployed": "auto"}, AUTO_POLICY, target_alias="rollback")


# ---------------------------------------------------------------- parse_gates


STRING_GATES = [
    ("auc >= 0.80", Gate("auc", ">=", 0.8)),
    ("ks > 0.3", Gate("ks", ">", 0.3)),
    ("brier <= 0.2", Gate("brier", "<=", 0.2)),
    ("psi < 0.1", Gate("psi", "<", 0.1)),
    ("bias == 0", Gate("bias", "==", 0.0)),
    ("auc>=0.8", Gate("auc", ">=", 0.8)),
    ("  auc   >=   0.8  ", Gate("auc", ">=", 0.8)),
    ("delta >= -0.5", Gate("delta", ">=", -0.5)),
    ("loss < 1e-3", Gate("loss", "<", 0.001)),
    ("loss < 2.5E+1", Gate("loss", "<", 25.0)),
    ("auc >= 0.80 on holdout", Gate("auc", ">=", 0.8, "holdout")),
    ("auc>=0.8 on   holdout_2024", Gate("auc", ">=", 0.8, "holdout_2024")),
    ("holdout.auc >= 0.8", Gate("holdout.auc", ">=", 0.8)),
    ("f1-macro >= 0.7", Gate("f1-macro", ">=", 0.7)),
]


@pytest.mark.parametrize(("text", "gate"), STRING_GATES, ids=[repr(text) for text, _ in STRING_GATES])
def test_parse_gates_string_form(text: str, gate: Gate) -> None:
    assert parse_gates([text]) == [gate]


@pytest.mark.parametrize(
    ("item", "gate"),
    [
        ({"metric": "ks", "op": ">", "value": 0.3}, Gate("ks", ">", 0.3)),
        ({"metric": "auc", "value": 0.8}, Gate("auc", ">=", 0.8)),
        ({"metric": "auc", "op": ">=", "value": 1}, Gate("auc", ">=", 1.0)),
        ({"metric": "brier", "op": "<=", "value": 0.2}, Gate("brier", "<=", 0.2)),
        ({"metric": "psi", "op": "<", "value": 0.1}, Gate("psi", "<", 0.1)),
        ({"metric": "bias", "op": "==", "value": 0}, Gate("bias", "==", 0.0)),
        (
            {"metric": "auc", "op": ">=", "value": 0.8, "dataset": "holdout"},
            Gate("auc", ">=", 0.8, "holdout"),
        ),
    ],
    ids=["gt", "default-op", "int-value", "le", "lt", "eq", "dataset"],
)
def test_parse_gates_mapping_form(item: dict[str, Any], gate: Gate) -> None:
    assert parse_gates([item]) == [gate]


@pytest.mark.parametrize("raw", [None, []], ids=["none", "empty"])
def test_parse_gates_nothing(raw: Any) -> None:
    assert parse_gates(raw) == []


def test_parse_gates_keeps_order_of_mixed_forms() -> None:
    gates = parse_gates(["auc >= 0.80 on holdout", {"metric": "ks", "op": ">", "value": 0.3}])
    assert gates == [Gate("auc", ">=", 0.8, "holdout"), Gate("ks", ">", 0.3)]
    assert [str(g) for g in gates] == ["auc >= 0.8 on holdout", "ks > 0.3"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("auc >= 0.8", "gates"),
        ({"metric": "auc", "value": 0.8}, "gates"),
        (["auc"], "gates[0]"),
        (["auc >= 0.8", "auc => 0.8"], "gates[1]"),
        (["auc >= 0.8", "ks > 0.1", "auc >= high"], "gates[2]"),
        (["auc >= 0.8 on"], "gates[0]"),
        (["auc >= .8"], "gates[0]"),
        (["auc >= 0.8 on holdout extra"], "gates[0]"),
        (["auc != 0.8"], "gates[0]"),
        ([""], "gates[0]"),
        (["auc >= 0.8", {"metric": "auc", "op": "=>", "value": 1}], "gates[1]"),
        ([{"op": ">=", "value": 1}], "gates[0]"),
        ([{"metric": 5, "value": 1}], "gates[0]"),
        ([{"metric": "auc", "value": "0.8"}], "gates[0].value"),
        ([{"metric": "auc", "value": True}], "gates[0].value"),
        (["ks > 0.1", {"metric": "auc"}], "gates[1].value"),
        ([{"metric": "auc", "threshold": 0.8}], "gates[0].value"),
        ([42], "gates[0]"),
        (["auc >= 0.8", None], "gates[1]"),
        ([["auc", ">=", 0.8]], "gates[0]"),
    ],
    ids=[
        "not-a-list-string",
        "not-a-list-mapping",
        "no-operator",
        "reversed-operator",
        "word-threshold",
        "on-without-dataset",
        "leading-dot-number",
        "trailing-words",
        "not-equal",
        "empty-string",
        "mapping-bad-op",
        "mapping-no-metric",
        "mapping-metric-not-str",
        "mapping-value-str",
        "mapping-value-bool",
        "mapping-no-value",
        "mapping-threshold-key",
        "number-item",
        "none-item",
        "list-item",
    ],
)
def test_parse_gates_bad_input_names_the_gate(raw: Any, field: str) -> None:
    with pytest.raises(InvalidManifest) as exc:
        parse_gates(raw)
    assert exc.value.field == field
    assert f"field '{field}'" in str(exc.value)


@pytest.mark.xfail(
    strict=True,
    reason="data set names may hold '-' and '.' (e.g. applications-train), "
    "but a gate's 'on <dataset>' only reads \\w+",
)
@pytest.mark.parametrize("dataset", ["applications-holdout", "holdout.2024"])
def test_parse_gates_on_any_valid_dataset_name(dataset: str) -> None:
    assert parse_gates([f"auc >= 0.8 on {dataset}"]) == [Gate("auc", ">=", 0.8, dataset)]


# ---------------------------------------------------------------- evaluate_gates

ON_HOLDOUT = Gate("auc", ">=", 0.8, "holdout")


@pytest.mark.parametrize(
    ("gate", "metrics", "value", "passed"),
    [
        (ON_HOLDOUT, {"auc_holdout": 0.86}, 0.86, True),
        (ON_HOLDOUT, {"holdout.auc": 0.86}, 0.86, True),
        (ON_HOLDOUT, {"auc": 0.86}, 0.86, True),
        (ON_HOLDOUT, {"auc_holdout": 0.7, "holdout.auc": 0.9, "auc": 0.95}, 0.7, False),
        (ON_HOLDOUT, {"holdout.auc": 0.9, "auc": 0.5}, 0.9, True),
        (ON_HOLDOUT, {"auc_train": 0.99, "train.auc": 0.99}, None, False),
        (ON_HOLDOUT, {}, None, False),
        (Gate("auc", ">=", 0.8), {"auc_holdout": 0.9, "holdout.auc": 0.9}, None, False),
        (Gate("auc", ">=", 0.8), {"auc": 1}, 1.0, True),
        (Gate("holdout.auc", ">=", 0.8), {"holdout.auc": 0.81}, 0.81, True),
    ],
    ids=[
        "metric_dataset",
        "dataset.metric",
        "plain-fallback",
        "metric_dataset-wins",
        "dataset.metric-before-plain",
        "other-dataset-only",
        "missing",
        "no-dataset-needs-plain",
        "int-value",
        "dotted-plain-name",
    ],
)
def test_evaluate_gates_lookup(
    gate: Gate, metrics: dict[str, float], value: float | None, passed: bool
) -> None:
    (res,) = evaluate_gates([gate], metrics)
    assert res == GateResult(str(gate), value, passed)
    assert res.to_dict() == {"gate": str(gate), "value": value, "passed": passed}


@pytest.mark.parametrize(
    ("op", "below", "equal", "above"),
    [
        (">=", False, True, True),
        (">", False, False, True),
        ("<=", True, True, False),
        ("<", True, False, False),
        ("==", False, True, False),
    ],
    ids=["ge", "gt", "le", "lt", "eq"],
)
def test_evaluate_gates_operators(op: str, below: bool, equal: bool, above: bool) -> None:
    gate = Gate("auc", op, 0.8)
    outcomes = [evaluate_gates([gate], {"auc": v})[0].passed for v in (0.79, 0.8, 0.81)]
    assert outcomes == [below, equal, above]


def test_evaluate_gates_every_gate_in_order() -> None:
    gates = parse_gates(["auc >= 0.8 on holdout", "ks > 0.3", "psi < 0.1"])
    results = evaluate_gates(gates, {"auc_holdout": 0.86, "ks": 0.2})
    assert [r.to_dict() for r in results] == [
        {"gate": "auc >= 0.8 on holdout", "value": 0.86, "passed": True},
        {"gate": "ks > 0.3", "value": 0.2, "passed": False},
        {"gate": "psi < 0.1", "value": None, "passed": False},
    ]


def test_evaluate_no_gates() -> None:
    assert evaluate_gates([], {"auc": 0.9}) == []


# ---------------------------------------------------------------- replay


def t(n: int) -> str:
    return f"2026-03-01T10:{n:02d}:00Z"


def ev(
    seq: int, actor: str, action: str, subject: str, data: dict[str, Any], reason: str | None = None
) -> LedgerEvent:
    return LedgerEvent(
        seq=seq, time=t(seq), actor=actor, action=action, subject=subject, data=data, reason=reason
    )


def v(model: str, version: int | None, **extra: Any) -> dict[str, Any]:
    return {"model": model, "version": version, **extra}


CR1, CR2, FR1 = "models:/credit-risk/1", "models:/credit-risk/2", "models:/fraud/1"
NEW_POLICY = {"four_eyes": False, "approver_role": None, "auto_approve": True, "roles": {"bob": ["risk"]}}

STORY = [
    ev(1, "alice", "version.registered", CR1, v(MODEL, 1, stage="candidate", digest="d1", folder="f1")),
    ev(
        2, "alice", "stage.changed", CR1, v(MODEL, 1, stage="data_prepared", previous="candidate", details={})
    ),
    ev(3, "alice", "stage.changed", CR1, v(MODEL, 1, stage="trained", previous="data_prepared", details={})),
    ev(
        4,
        "alice",
        "validation.evaluated",
        CR1,
        v(MODEL, 1, stage="validated", previous="trained", passed=True),
    ),
    ev(5, "bob", "version.approved", CR1, v(MODEL, 1, stage="approved", previous="validated"), "report #41"),
    ev(
        6,
        "carol",
        "deployment.deployed",
        CR1,
        v(
            MODEL,
            1,
            stage="deployed",
            alias="production",
            previous=None,
            aliases={"production": 1, "rollback": None},
        ),
    ),
    # alias events name a version too, but change no version's state
    ev(
        7,
        "carol",
        "alias.set",
        f"models:/{MODEL}@champion",
        v(MODEL, 1, alias="champion", aliases={"champion": 1}),
    ),
    ev(
        8, "carol", "alias.set", f"models:/{MODEL}@shadow", v(MODEL, 1, alias="shadow", aliases={"shadow": 1})
    ),
    ev(
        9,
        "carol",
        "alias.deleted",
        f"models:/{MODEL}@champion",
        v(MODEL, None, alias="champion", aliases={"champion": None}),
    ),
    ev(10, "bob", "version.registered", CR2, v(MODEL, 2, stage="candidate")),
    ev(11, "bob", "stage.changed", CR2, v(MODEL, 2, stage="data_prepared", previous="candidate")),
    ev(12, "bob", "stage.changed", CR2, v(MODEL, 2, stage="trained", previous="data_prepared")),
    ev(13, "dave", "version.registered", FR1, v("fraud", 1, stage="candidate")),
    ev(14, "alice", "version.rejected", CR2, v(MODEL, 2, stage="rejected", previous="trained"), "leakage"),
    ev(
        15,
        "dave",
        "alias.set",
        "models:/fraud@staging",
        v("fraud", 1, alias="staging", aliases={"staging": 1}),
    ),
    ev(
        16,
        "admin",
        "policy.changed",
        "registry",
        {"policy": NEW_POLICY, "previous": Policy().to_dict()},
        "GOV-7",
    ),
]


def test_replay_a_whole_story() -> None:
    state = replay(STORY)
    assert state.versions == {
        (MODEL, 1): VersionState(
            MODEL, 1, "deployed", "alice", approved_by="bob", decided_at=t(5), last_seq=6
        ),
        (MODEL, 2): VersionState(
            MODEL, 2, "rejected", "bob", approved_by=None, decided_at=t(14), last_seq=14
        ),
        ("fraud", 1): VersionState("fraud", 1, "candidate", "dave", last_seq=13),
    }
    assert state.aliases == {(MODEL, "production"): 1, (MODEL, "shadow"): 1, ("fraud", "staging"): 1}
    assert state.policy == Policy(
        four_eyes=False, approver_role=None, auto_approve=True, roles={"bob": ("risk",)}
    )


@pytest.mark.parametrize(
    ("cut", "stage", "last_seq", "aliases"),
    [
        (0, None, None, set()),
        (1, "candidate", 1, set()),
        (5, "approved", 5, set()),
        (6, "deployed", 6, {"production"}),
        (7, "deployed", 6, {"production", "champion"}),
        (9, "deployed", 6, {"production", "shadow"}),
    ],
    ids=["nothing", "registered", "approved", "deployed", "alias-set", "alias-deleted"],
)
def test_replay_prefixes(cut: int, stage: str | None, last_seq: int | None, aliases: set[str]) -> None:
    """Replaying the first events gives the state as it stood then."""
    state = replay(STORY[:cut])
    got = state.versions.get((MODEL, 1))
    assert ((got.stage, got.last_seq) if got else (None, None)) == (stage, last_seq)
    assert {alias for (model, alias) in state.aliases if model == MODEL} == aliases
    assert state.policy == Policy()


def test_replay_nothing() -> None:
    state = replay([])
    assert state.versions == {}
    assert state.aliases == {}
    assert state.policy == Policy()


def test_replay_rollback_and_retire() -> None:
    events = [
        *STORY[:6],
        ev(20, "bob", "version.registered", CR2, v(MODEL, 2, stage="candidate")),
        ev(21, "carol", "version.approved", CR2, v(MODEL, 2, stage="approved", previous="validated")),
        ev(
            22,
            "carol",
            "deployment.deployed",
            CR2,
            v(MODEL, 2, stage="deployed", aliases={"production": 2, "rollback": 1}),
        ),
        ev(
            23,
            "carol",
            "deployment.rolled_back",
            f"models:/{MODEL}@production",
            {
                "model": MODEL,
                "alias": "production",
                "from": 2,
                "to": 1,
                "aliases": {"production": 1, "rollback": None},
            },
        ),
        ev(24, "carol", "stage.changed", CR2, v(MODEL, 2, stage="retired", previous="deployed", aliases={})),
        ev(
            25,
            "carol",
            "stage.changed",
            CR1,
            v(MODEL, 1, stage="retired", previous="deployed", aliases={"production": None}),
        ),
    ]
    state = replay(events)
    assert state.aliases == {}
    assert state.versions[(MODEL, 1)] == VersionState(MODEL, 1, "retired", "alice", "bob", t(5), 25)
    assert state.versions[(MODEL, 2)] == VersionState(MODEL, 2, "retired", "bob", "carol", t(21), 24)


def test_replay_auto_approval_is_by_the_policy() -> None:
    drafts = register({"approved": "auto"}, AUTO_POLICY)
    events = [
        LedgerEvent(
            seq=i, time=t(i), actor=d.actor or ALICE, action=d.action, subject=d.subject, data=dict(d.data)
        )
        for i, d in enumerate(drafts, start=1)
    ]
    state = replay(events)
    assert state.versions[(MODEL, VERSION)] == VersionState(
        MODEL, VERSION, "approved", ALICE, approved_by="policy:auto-approve", decided_at=t(5), last_seq=5
    )


@pytest.mark.xfail(
    strict=True,
    reason="a rejection by failing gates (validation.evaluated) leaves decided_at unset, "
    "while an automatic approval and a manual rejection both set it",
)
def test_replay_rejection_by_gates_is_a_decision() -> None:
    drafts = register(metrics={"auc_holdout": 0.5})
    events = [
        LedgerEvent(
            seq=i, time=t(i), actor=d.actor or ALICE, action=d.action, subject=d.subject, data=dict(d.data)
        )
        for i, d in enumerate(drafts, start=1)
    ]
    got = replay(events).versions[(MODEL, VERSION)]
    assert got.stage == "rejected"
    assert got.decided_at == t(4)


# ---------------------------------------------------------------- decisions and replay together


class Ledger:
    """Drafts become events; each decision sees the state a replay of the events so far gives."""

    def __init__(self) -> None:
        self.events: list[LedgerEvent] = []

    def ctx(self, actor: str, version: int | None = None) -> GovContext:
        state = replay(self.events)
        aliases = {alias: n for (model, alias), n in state.aliases.items() if model == MODEL}
        vstate = state.versions.get((MODEL, version)) if version is not None else None
        return GovContext(MODEL, version, vstate, aliases, state.policy, actor)

    def append(self, actor: str, drafts: Sequence[EventDraft]) -> None:
        for d in drafts:
            seq = len(self.events) + 1
            self.events.append(
                LedgerEvent(
                    seq=seq,
                    time=t(seq),
                    actor=d.actor or actor,
                    action=d.action,
                    subject=d.subject,
                    data=dict(d.data),
                    reason=d.reason,
                )
            )


def test_decisions_replayed_tell_the_story() -> None:
    led = Ledger()
    for n in (1, 2):
        ctx = GovContext(MODEL, n, None, {}, Policy(), ALICE)
        led.append(ALICE, decide_registration(ctx, MANIFEST, RECORD))  # walks to validated
    with pytest.raises(PermissionDenied):
        decide_approval(led.ctx(ALICE, 1), approve=True, reason="mine")
    led.append(BOB, decide_approval(led.ctx(BOB, 1), approve=True, reason="report #41"))
    approved_seq = len(led.events)
    led.append(BOB, decide_deploy(led.ctx(BOB, 1), "production", reason=None))
    led.append(BOB, decide_approval(led.ctx(BOB, 2), approve=True, reason="report #42"))
    led.append(BOB, decide_deploy(led.ctx(BOB, 2), "production", reason=None))
    assert led.ctx(BOB).aliases == {"production": 2, "rollback": 1}
    led.append(BOB, decide_rollback(led.ctx(BOB), "production", reason="incident 12"))
    assert led.ctx(BOB).aliases == {"production": 1}
    led.append(BOB, decide_stage(led.ctx(BOB, 1), "retired", reason="superseded", details={}))
    led.append("admin", decide_policy(led.ctx("admin"), Policy(four_eyes=False), reason="team of one"))

    state = replay(led.events)
    assert state.aliases == {}
    assert state.policy == Policy(four_eyes=False)
    v1, v2 = state.versions[(MODEL, 1)], state.versions[(MODEL, 2)]
    assert (v1.stage, v1.registered_by, v1.approved_by, v1.decided_at) == (
        "retired",
        ALICE,
        BOB,
        t(approved_seq),
    )
    assert (v2.stage, v2.approved_by) == ("deployed", BOB)
    assert v1.last_seq == len(led.events) - 1
