"""``webhooks list|add|rm|deliveries|deliver``: receivers that get every new ledger event as a
signed POST (adding and removing one: admin)."""

from __future__ import annotations

import click

from modelledger import Registry, Webhook, WebhookDelivery

from ._common import as_text, echo_json, json_option, make_console, registry_options


@click.group()
def webhooks() -> None:
    """Webhooks: URLs that receive each new ledger event as a signed JSON POST, in order,
    retried with backoff until the receiver answers 2xx. `modelledger server` delivers them.

    \b
    Example:
        modelledger webhooks add https://ci.example/hooks/ml --action "deployment.*"
        modelledger webhooks list
        modelledger webhooks deliveries 3f2a9c0d4e5b6a71
        modelledger webhooks rm 3f2a9c0d4e5b6a71
    """


def _hook_rows(items: list[Webhook]) -> None:
    from rich.table import Table  # only the table view needs it

    table = Table("id", "url", "actions", "after seq", "failures", "next attempt", "by", "active")
    for h in items:
        table.add_row(
            h.id,
            as_text(h.url),
            as_text(", ".join(h.actions) if h.actions else "all"),
            str(h.last_seq),
            str(h.failures),
            h.next_attempt_at or "-",
            as_text(h.created_by),
            as_text(h.active),
        )
    make_console().print(table)


def _delivery_rows(items: list[WebhookDelivery]) -> None:
    from rich.table import Table  # only the table view needs it

    table = Table("time", "webhook", "seq", "action", "attempt", "result", "next retry")
    for d in items:
        result = str(d.status_code) if d.status_code is not None else as_text(d.error)
        table.add_row(d.time, d.webhook, str(d.seq), d.action, str(d.attempt), result, d.next_retry or "-")
    make_console().print(table)


@webhooks.command("list")
@click.option("--all", "include_removed", is_flag=True, help="Removed webhooks too.")
@json_option
@registry_options
def webhooks_list(registry: Registry, include_removed: bool, as_json: bool) -> None:
    """Every webhook: id, URL, action filter, how far it got in the ledger and its retry state
    (never its secret).

    \b
    Example:
        modelledger webhooks list --json
        modelledger webhooks list --all
    """
    items = registry.list_webhooks(include_removed=include_removed)
    if as_json:
        echo_json([h.to_dict() for h in items])
        return
    if not items:
        click.echo("no webhooks")
        return
    _hook_rows(items)


@webhooks.command("add")
@click.argument("url")
@click.option(
    "--action",
    "actions",
    multiple=True,
    metavar="PATTERN",
    help="Only events of this action (version.approved, deployment.*); repeat for several "
    "(default: every event).",
)
@click.option(
    "--after",
    type=click.IntRange(min=0),
    default=None,
    help="Start after this ledger seq (0: the whole ledger; default: only events from now on).",
)
@json_option
@registry_options
def webhooks_add(
    registry: Registry, url: str, actions: tuple[str, ...], after: int | None, as_json: bool
) -> None:
    """Send each new ledger event to URL (admin only) and print the webhook's secret once: the
    receiver checks `X-Modelledger-Signature: sha256=<HMAC-SHA256 of the body>` with it.

    \b
    Example:
        modelledger webhooks add https://ci.example/hooks/ml
        modelledger webhooks add https://chat.example/hook --action "deployment.*" --action version.approved
    """
    hook, secret = registry.add_webhook(url, actions=list(actions) or None, after=after)
    if as_json:
        echo_json({"secret": secret, **hook.to_dict()})
        return
    click.echo(
        f"Webhook {hook.id} to {hook.url}, from ledger event {hook.last_seq + 1} on; "
        "its secret is shown only this once:",
        err=True,
    )
    click.echo(secret)


@webhooks.command("rm")
@click.argument("webhook_id")
@json_option
@registry_options
def webhooks_rm(registry: Registry, webhook_id: str, as_json: bool) -> None:
    """Stop webhook WEBHOOK_ID (admin only): nothing more is sent and its secret is forgotten;
    its delivery log stays.

    \b
    Example:
        modelledger webhooks rm 3f2a9c0d4e5b6a71
    """
    hook = registry.remove_webhook(webhook_id)
    if as_json:
        echo_json(hook.to_dict())
        return
    click.echo(f"Removed webhook {hook.id} to {hook.url}")


@webhooks.command("deliveries")
@click.argument("webhook_id")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="How many.")
@json_option
@registry_options
def webhooks_deliveries(registry: Registry, webhook_id: str, limit: int, as_json: bool) -> None:
    """The last delivery attempts of webhook WEBHOOK_ID, newest first: event, attempt, HTTP
    status or error, and when a failed one is retried.

    \b
    Example:
        modelledger webhooks deliveries 3f2a9c0d4e5b6a71 --limit 20
    """
    items = registry.webhook_deliveries(webhook_id, limit=limit)
    if as_json:
        echo_json([d.to_dict() for d in items])
        return
    if not items:
        click.echo("no deliveries yet")
        return
    _delivery_rows(items)


@webhooks.command("deliver")
@click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Seconds per post."
)
@json_option
@registry_options
def webhooks_deliver(registry: Registry, timeout: float, as_json: bool) -> None:
    """Run one delivery round now (what `modelledger server` does every second): post each due
    webhook's pending events, in order, and record every attempt.

    \b
    Example:
        modelledger webhooks deliver --json
    """
    attempts = registry.deliver_webhooks(timeout=timeout)
    if as_json:
        echo_json([d.to_dict() for d in attempts])
        return
    if not attempts:
        click.echo("nothing to deliver")
        return
    _delivery_rows(attempts)
