"""``receipt verify``: check one prediction receipt offline.

It needs no registry, only the public key, so it maps errors with ``fail`` directly
instead of through ``registry_options`` (which opens a registry).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from modelledger import InvalidInput, Receipt, check_receipt
from modelledger.errors import InvalidReceipt

from ._common import echo_json, fail, json_option


@click.group()
def receipt() -> None:
    """Prediction receipts: check one offline with only the registry's public key.

    \b
    Example:
        modelledger receipt verify receipt.json --public-key registry.pub.pem
    """


@receipt.command("verify")
@click.argument("receipt_path", metavar="RECEIPT_JSON", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--public-key",
    "public_key_path",
    required=True,
    metavar="PEM",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The registry's public key (from `modelledger keys export`).",
)
@json_option
@click.option("--traceback", "show_traceback", is_flag=True, help="Show the full traceback of an error.")
def receipt_verify(receipt_path: Path, public_key_path: Path, as_json: bool, show_traceback: bool) -> None:
    """Check a prediction receipt: exit code 0 when genuine, 1 (with the reason) when not.

    Any changed field, a proof from another batch or another key's signature fails.

    \b
    Example:
        modelledger receipt verify receipt.json --public-key registry.pub.pem
        modelledger receipt verify receipt.json --public-key registry.pub.pem --json
    """
    try:
        try:
            text = receipt_path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {receipt_path}: {exc.strerror or exc}") from exc
        try:
            pem = public_key_path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {public_key_path}: {exc.strerror or exc}") from exc
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"{receipt_path} is not JSON: {exc}") from exc
        try:
            check_receipt(raw, pem)
        except InvalidReceipt as exc:
            if as_json:
                echo_json({"valid": False, "prediction_id": exc.prediction_id, "reason": exc.reason})
            raise
        parsed = Receipt.from_dict(raw)
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except Exception as exc:
        fail(exc, show_traceback=show_traceback)
    if as_json:
        echo_json({"valid": True, **parsed.to_dict()})
        return
    click.echo(
        f"Receipt {parsed.prediction_id} is valid: models:/{parsed.model}/{parsed.version} "
        f"({parsed.digest}) at {parsed.time}, signed by key {parsed.key_id}"
    )
