"""``tokens create|list|revoke``: API tokens that stand for enrolled members over HTTP (an
admin's acts, recorded in the ledger without the secret)."""

from __future__ import annotations

import click

from modelledger import ApiToken, PermissionDenied, Registry

from ._common import echo_json, json_option, make_console, reason_option, registry_options


def _need_admin(registry: Registry) -> None:
    """Refuse up front, with a plain message, what the ledger would refuse anyway: only an
    admin of every model makes or revokes tokens."""
    who = registry.whoami()
    member = who["member"]
    if member is None or "admin" not in member["roles"] or "*" not in member["models"]:
        raise PermissionDenied(
            f"{who['actor']} is not an admin of this registry: only an admin manages tokens"
        )


@click.group()
def tokens() -> None:
    """API tokens for the registry server: each stands for one enrolled member.

    \b
    Example:
        modelledger tokens create --member bob@bank.example --expires 30d
        modelledger tokens list
        modelledger tokens revoke 3f2a9c0d4e5b6a71 --reason "laptop lost"
    """


@tokens.command("create")
@click.option("--member", required=True, help="The enrolled member the token stands for.")
@click.option("--expires", default=None, help="An age such as 30d or 12h (default: never expires).")
@reason_option
@json_option
@registry_options
def tokens_create(
    registry: Registry, member: str, expires: str | None, reason: str | None, as_json: bool
) -> None:
    """Make a token for MEMBER and print it once: only its SHA-256 is kept (admin only). Send it
    to the server as `Authorization: Bearer <token>`.

    \b
    Example:
        modelledger tokens create --member bob@bank.example --expires 30d
        modelledger tokens create --member dashboards --json
    """
    _need_admin(registry)
    secret, record = registry.create_token(member, expires=expires, reason=reason)
    if as_json:
        echo_json({"token": secret, **record.to_dict()})
        return
    until = f"until {record.expires_at}" if record.expires_at else "with no expiry"
    click.echo(f"Token {record.id} for {record.member}, {until}; it is shown only this once:", err=True)
    click.echo(secret)


def _rows(items: list[ApiToken]) -> None:
    from rich.table import Table  # only the table view needs it

    table = Table("id", "member", "created", "by", "expires", "revoked")
    for tok in items:
        table.add_row(
            tok.id, tok.member, tok.created_at, tok.created_by, tok.expires_at or "-", tok.revoked_at or "-"
        )
    make_console().print(table)


@tokens.command("list")
@click.option("--member", default=None, help="Only this member's tokens.")
@json_option
@registry_options
def tokens_list(registry: Registry, member: str | None, as_json: bool) -> None:
    """Every token: id, member, when made and by whom, expiry and revocation (never a secret).

    \b
    Example:
        modelledger tokens list --member bob@bank.example --json
    """
    items = registry.list_tokens(member=member)
    if as_json:
        echo_json([t.to_dict() for t in items])
        return
    if not items:
        click.echo("no tokens")
        return
    _rows(items)


@tokens.command("revoke")
@click.argument("token_id")
@reason_option
@json_option
@registry_options
def tokens_revoke(registry: Registry, token_id: str, reason: str | None, as_json: bool) -> None:
    """Revoke token TOKEN_ID: from now on it authenticates no one (admin only).

    \b
    Example:
        modelledger tokens revoke 3f2a9c0d4e5b6a71 --reason "laptop lost"
    """
    _need_admin(registry)
    record = registry.revoke_token(token_id, reason=reason)
    if as_json:
        echo_json(record.to_dict())
        return
    click.echo(f"Revoked token {record.id} of {record.member}")
