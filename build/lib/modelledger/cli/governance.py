"""A version's way to production: ``state``, ``stage``, ``validate``, ``approve``, ``reject``,
``deploy``, ``rollback``, and the approval ``policy`` (``show|set``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from modelledger import LedgerEvent, ModelVersion, Registry, VersionState

from ._common import (
    echo_json,
    json_option,
    make_console,
    parse_metrics,
    parse_tags,
    print_section,
    reason_option,
    registry_options,
    required_reason_option,
)


def _state_json(mv: ModelVersion, state: VersionState) -> dict[str, Any]:
    return {"uri": mv.uri, **state.to_dict(), "aliases": list(mv.aliases)}


def _print_state(mv: ModelVersion, state: VersionState) -> None:
    print_section(
        make_console(),
        mv.uri,
        [
            ("Stage", state.stage),
            ("Registered by", state.registered_by),
            ("Approved by", state.approved_by),
            ("Decided at", state.decided_at),
            ("Aliases", ", ".join(mv.aliases) or None),
        ],
    )


def _show_state(registry: Registry, uri: str, as_json: bool) -> None:
    """Print a version's governance state after a verb (read again: aliases may have moved)."""
    mv = registry.get_version(uri)
    state = registry.state(mv.uri)
    if as_json:
        echo_json(_state_json(mv, state))
    else:
        _print_state(mv, state)


def _latest_event(registry: Registry, uri: str, action: str) -> LedgerEvent | None:
    events = [e for e in registry.history(uri) if e.action == action]
    return events[-1] if events else None


@click.command()
@click.argument("identifier")
@json_option
@registry_options
def state(registry: Registry, identifier: str, as_json: bool) -> None:
    """Show where a version stands: stage, who registered and approved it, when it was decided.

    IDENTIFIER is a models:/ identifier or a model name (its latest version).

    \b
    Example:
        modelledger state models:/credit-risk/3
        modelledger state models:/credit-risk@production --json
    """
    _show_state(registry, identifier, as_json)


@click.command()
@click.argument("identifier")
@click.argument("stage_name", metavar="STAGE")
@reason_option
@click.option(
    "--detail",
    "details",
    multiple=True,
    callback=parse_tags,
    metavar="KEY=VALUE",
    help="A detail recorded with the move (e.g. job=run-42); repeat for several.",
)
@json_option
@registry_options
def stage(
    registry: Registry,
    identifier: str,
    stage_name: str,
    reason: str | None,
    details: dict[str, str],
    as_json: bool,
) -> None:
    """Complete a manual stage (data_prepared, trained) or retire a version.

    Validated, approved, rejected and deployed have their own commands (validate,
    approve, reject, deploy), which record what those stages require.

    \b
    Example:
        modelledger stage models:/credit-risk/4 trained --detail job=run-42 --detail host=gpu-3
        modelledger stage models:/credit-risk/2 retired --reason "superseded by version 4"
    """
    mv = registry.get_version(identifier)
    registry.transition(mv.uri, stage_name, reason=reason, details=details)
    _show_state(registry, mv.uri, as_json)


@click.command()
@click.argument("identifier")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    callback=parse_metrics,
    metavar="NAME=VALUE",
    help="A metric measured now (overrides the manifest's); repeat for several.",
)
@click.option("--dataset", default=None, help="The data set the metrics were measured on (e.g. holdout).")
@reason_option
@json_option
@registry_options
def validate(
    registry: Registry,
    identifier: str,
    metrics: dict[str, float],
    dataset: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Evaluate the manifest's gates: the version becomes validated if all pass, else rejected.

    Without --metric the gates are checked against the manifest's metrics. Prints
    each gate with its value; exit code 1 when a gate fails (the version is then
    rejected, and the ledger records why).

    \b
    Example:
        modelledger validate models:/credit-risk/3 --metric auc=0.84 --metric ks=0.41 --dataset holdout
    """
    mv = registry.get_version(identifier)
    result = registry.validate(mv.uri, metrics=metrics, dataset=dataset, reason=reason)
    event = _latest_event(registry, mv.uri, "validation.evaluated")
    gates: list[dict[str, Any]] = list(event.data.get("results") or []) if event else []
    passed = result.stage == "validated"
    if as_json:
        echo_json({**_state_json(mv, result), "passed": passed, "gates": gates})
    else:
        console = make_console()
        console.print(f"{escape(mv.uri)} is [bold]{escape(result.stage)}[/]")
        if gates:
            table = Table("Gate", "Value", "Result")
            for gate in gates:
                value = gate.get("value")
                table.add_row(
                    escape(str(gate.get("gate"))),
                    "missing" if value is None else f"{value:g}",
                    "[green]pass[/]" if gate.get("passed") else "[red]fail[/]",
                )
            console.print(table)
        else:
            console.print("  (the manifest has no gates)")
    if not passed:
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("identifier")
@required_reason_option
@json_option
@registry_options
def approve(registry: Registry, identifier: str, reason: str, as_json: bool) -> None:
    """Approve a validated version. By default (four-eyes) not by whoever registered it.

    \b
    Example:
        modelledger approve models:/credit-risk/3 --reason "reviewed holdout report #41" --as bob@bank.example
    """
    mv = registry.get_version(identifier)
    registry.approve(mv.uri, reason=reason)
    _show_state(registry, mv.uri, as_json)


@click.command()
@click.argument("identifier")
@required_reason_option
@json_option
@registry_options
def reject(registry: Registry, identifier: str, reason: str, as_json: bool) -> None:
    """Reject a trained or validated version, with the reason.

    \b
    Example:
        modelledger reject models:/credit-risk/3 --reason "unstable on the Q3 cohort"
    """
    mv = registry.get_version(identifier)
    registry.reject(mv.uri, reason=reason)
    _show_state(registry, mv.uri, as_json)


@click.command()
@click.argument("identifier")
@click.option(
    "--alias",
    "alias_name",
    default=None,
    help="The alias to point at the version [default: the manifest's target_alias, else production]",
)
@reason_option
@json_option
@registry_options
def deploy(
    registry: Registry, identifier: str, alias_name: str | None, reason: str | None, as_json: bool
) -> None:
    """Point an alias at an approved version; the version it held before becomes @rollback.

    \b
    Example:
        modelledger deploy models:/credit-risk/3 --reason "CAB-1234"
        modelledger deploy models:/credit-risk/4 --alias canary
    """
    mv = registry.get_version(identifier)
    registry.deploy(mv.uri, alias=alias_name, reason=reason)
    event = _latest_event(registry, mv.uri, "deployment.deployed")
    target = str(event.data["alias"]) if event else (alias_name or "production")
    previous = event.data.get("previous") if event else None
    if as_json:
        echo_json({"model": mv.model, "alias": target, "version": mv.version, "previous": previous})
        return
    click.echo(f"models:/{mv.model}@{target} -> {mv.uri}")
    if previous is not None:
        click.echo(f"models:/{mv.model}@rollback -> models:/{mv.model}/{previous}")


@click.command()
@click.argument("name", metavar="MODEL")
@click.option(
    "--alias", "alias_name", default="production", show_default=True, help="The alias to move back."
)
@reason_option
@json_option
@registry_options
def rollback(registry: Registry, name: str, alias_name: str, reason: str | None, as_json: bool) -> None:
    """Move an alias back to the version held by @rollback; prints which version now holds it.

    \b
    Example:
        modelledger rollback credit-risk --reason "INC-512: score drift"
    """
    version = registry.rollback(name, alias=alias_name, reason=reason)
    if as_json:
        echo_json({"model": name, "alias": alias_name, "version": version})
        return
    click.echo(f"models:/{name}@{alias_name} -> models:/{name}/{version}")


@click.group("policy")
def policy_group() -> None:
    """The approval policy: four-eyes, approver role, automatic approval, roles.

    \b
    Example:
        modelledger policy show
        modelledger policy set --approver-role model-risk --role carol@bank.example=model-risk --reason GOV-7
    """


def _print_policy(document: Mapping[str, Any]) -> None:
    roles = document.get("roles") or {}
    print_section(
        make_console(),
        "Policy",
        [
            ("Four eyes", document.get("four_eyes")),
            ("Approver role", document.get("approver_role")),
            ("Auto approve", document.get("auto_approve")),
            ("Roles", "; ".join(f"{a}={','.join(r)}" for a, r in sorted(roles.items())) or None),
        ],
    )


@policy_group.command("show")
@json_option
@registry_options
def policy_show(registry: Registry, as_json: bool) -> None:
    """Show the current approval policy.

    \b
    Example:
        modelledger policy show --json
    """
    document = registry.policy().to_dict()
    if as_json:
        echo_json(document)
    else:
        _print_policy(document)


@policy_group.command("set")
@click.option(
    "--four-eyes/--no-four-eyes", default=None, help="Whether a registrant may approve their own version."
)
@click.option(
    "--approver-role", default=None, metavar="ROLE", help="Only actors with ROLE may approve ('' clears)."
)
@click.option(
    "--auto-approve/--no-auto-approve",
    default=None,
    help="Whether versions whose manifest asks for it are approved when all gates pass.",
)
@click.option(
    "--role",
    "roles",
    multiple=True,
    metavar="ACTOR=ROLE",
    help="Give ACTOR the ROLE (ACTOR= removes all their roles); repeat for several.",
)
@required_reason_option
@json_option
@registry_options
def policy_set(
    registry: Registry,
    four_eyes: bool | None,
    approver_role: str | None,
    auto_approve: bool | None,
    roles: tuple[str, ...],
    reason: str,
    as_json: bool,
) -> None:
    """Change the approval policy; the change, and any relaxation, is recorded with its reason.

    Only the settings given change; the rest stay as they are.

    \b
    Example:
        modelledger policy set --no-four-eyes --reason "team of one, GOV-7"
        modelledger policy set --approver-role model-risk --role carol@bank.example=model-risk --reason GOV-8
    """
    document = registry.policy().to_dict()
    changes = 0
    if four_eyes is not None:
        document["four_eyes"], changes = four_eyes, changes + 1
    if auto_approve is not None:
        document["auto_approve"], changes = auto_approve, changes + 1
    if approver_role is not None:
        document["approver_role"], changes = approver_role or None, changes + 1
    merged: dict[str, list[str]] = {a: list(r) for a, r in (document.get("roles") or {}).items()}
    for item in roles:
        who, sep, role = item.partition("=")
        if not sep or not who:
            raise click.BadParameter(f"expected ACTOR=ROLE, got {item!r}", param_hint="'--role'")
        if not role:
            merged.pop(who, None)
        elif role not in merged.setdefault(who, []):
            merged[who].append(role)
        changes += 1
    if not changes:
        raise click.UsageError(
            "nothing to change: give --four-eyes, --approver-role, --auto-approve or --role"
        )
    document["roles"] = merged
    new = registry.set_policy(document, reason=reason).to_dict()
    if as_json:
        echo_json(new)
    else:
        _print_policy(new)
