"""``identity create|show`` (your own signing key) and ``members list|add|roles|revoke`` (who may
do what in a registry, recorded in its ledger by an admin)."""

from __future__ import annotations

from pathlib import Path

import click

from modelledger import ROLES, InvalidInput, Member, ModelLedgerError, Registry, create_identity

from ._common import (
    echo_json,
    fail,
    json_option,
    make_console,
    reason_option,
    registry_options,
    required_reason_option,
)


@click.group()
def identity() -> None:
    """Your own signing key: it proves who acts; it never leaves this machine.

    \b
    Example:
        modelledger identity create --name bob@bank.example -o bob.pub.pem
        modelledger identity show
    """


@identity.command("create")
@click.option("--name", required=True, help="Your member name (an e-mail address, or a service name).")
@click.option(
    "--key",
    "key_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="Where to write the private key (default: the identities folder, <name>.key).",
)
@click.option(
    "-o",
    "--output",
    "output_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="Also write the public key (PEM) here, to hand to an admin.",
)
@json_option
def identity_create(name: str, key_path: str | None, output_path: str | None, as_json: bool) -> None:
    """Create a new private key of your own (mode 0600) and print its public half for an admin.

    \b
    Example:
        modelledger identity create --name bob@bank.example -o bob.pub.pem
    """
    try:
        path, kid, pem = create_identity(name, key_path)
        if output_path is not None:
            _write(output_path, pem)
    except ModelLedgerError as exc:  # this command opens no registry, so it maps its own errors
        fail(exc, show_traceback=False)
    if as_json:
        echo_json({"name": name, "key_path": str(path), "key_id": kid, "public_key": pem.decode("ascii")})
        return
    click.echo(f"Created identity {name} (key {kid}) at {path}", err=True)
    click.echo(pem.decode("ascii"), nl=False)


@identity.command("show")
@json_option
@registry_options
def identity_show(registry: Registry, as_json: bool) -> None:
    """Who you act as here: name, key file, key id, and your enrolment in this registry.

    \b
    Example:
        modelledger identity show --registry postgresql://ml@db/registry
    """
    who = registry.whoami()
    if as_json:
        echo_json(who)
        return
    member = who["member"]
    enrolled = (
        f"enrolled as {member['name']}: {', '.join(member['roles'])} on {', '.join(member['models'])}"
        if member
        else "not enrolled in this registry (give your public key to an admin)"
    )
    click.echo(f"{who['actor']} (key {who['key_id']} at {who['key_path']}): {enrolled}")
    click.echo(who["public_key"], nl=False)


@click.group()
def members() -> None:
    """Who may do what: members, their roles (scoped to model-name patterns) and keys.

    \b
    Roles: viewer, contributor, approver, deployer, serving, admin.
    Example:
        modelledger members add bob@bank.example --key bob.pub.pem --role approver --role deployer
        modelledger members list
    """


def _rows(items: list[Member]) -> None:
    from rich.table import Table  # only the table view needs it

    table = Table("member", "roles", "models", "keys")
    for m in items:
        keys = ", ".join(
            k.key_id + (f" (revoked {k.revoked_time})" if k.revoked_seq is not None else "") for k in m.keys
        )
        table.add_row(m.name + (" (root)" if m.root else ""), ", ".join(m.roles), ", ".join(m.models), keys)
    make_console().print(table)


@members.command("list")
@json_option
@registry_options
def members_list(registry: Registry, as_json: bool) -> None:
    """Every member with their roles, model scope and keys.

    \b
    Example:
        modelledger members list --json
    """
    items = registry.members()
    if as_json:
        echo_json([m.to_dict() for m in items])
        return
    _rows(items)


role_option = click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice(ROLES),
    help="A role to hold (repeat for several).",
)
models_option = click.option(
    "--models",
    "models",
    multiple=True,
    help="Model-name patterns the roles apply to (repeat; default: every model), e.g. credit-*.",
)


@members.command("add")
@click.argument("name")
@click.option(
    "--key",
    "public_key",
    required=True,
    help="The member's public key: a PEM file (from `identity create -o`) or an ssh-ed25519 .pub file.",
)
@role_option
@models_option
@reason_option
@json_option
@registry_options
def members_add(
    registry: Registry,
    name: str,
    public_key: str,
    roles: tuple[str, ...],
    models: tuple[str, ...],
    reason: str | None,
    as_json: bool,
) -> None:
    """Enrol NAME with their public key and roles (an admin's act, recorded in the ledger).

    \b
    Example:
        modelledger members add bob@bank.example --key bob.pub.pem --role approver --role deployer
        modelledger members add scorer-prod --key scorer.pub.pem --role serving --models "credit-*"
    """
    member = registry.enrol(name, Path(public_key), roles=roles, models=models or ("*",), reason=reason)
    if as_json:
        echo_json(member.to_dict())
        return
    click.echo(f"Enrolled {member.name}: {', '.join(member.roles)} on {', '.join(member.models)}")


@members.command("roles")
@click.argument("name")
@role_option
@models_option
@reason_option
@json_option
@registry_options
def members_roles(
    registry: Registry,
    name: str,
    roles: tuple[str, ...],
    models: tuple[str, ...],
    reason: str | None,
    as_json: bool,
) -> None:
    """Replace NAME's roles and model scope (an admin's act, recorded in the ledger).

    \b
    Example:
        modelledger members roles bob@bank.example --role approver --models "credit-*"
    """
    member = registry.set_roles(name, roles, models=models or ("*",), reason=reason)
    if as_json:
        echo_json(member.to_dict())
        return
    click.echo(f"{member.name}: {', '.join(member.roles)} on {', '.join(member.models)}")


@members.command("revoke")
@click.argument("name")
@click.argument("key_id")
@required_reason_option
@json_option
@registry_options
def members_revoke(registry: Registry, name: str, key_id: str, reason: str, as_json: bool) -> None:
    """Revoke one of NAME's keys: nothing it signs from now on is accepted.

    \b
    Example:
        modelledger members revoke scorer-prod 1f2e3d4c5b6a7988 --reason "host decommissioned"
    """
    member = registry.revoke_key(name, key_id, reason=reason)
    if as_json:
        echo_json(member.to_dict())
        return
    click.echo(f"Revoked key {key_id} of {name}")


def _write(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc}") from exc
