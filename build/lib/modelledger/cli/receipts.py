"""``receipt verify``: check one prediction receipt offline.

It needs no registry, only the public key, so it maps errors with ``fail`` directly
instead of through ``registry_options`` (which opens a registry).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from modelledger import InvalidInput, Receipt, check_receipt, check_receipt_with_bundle
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
    default=None,
    metavar="PEM",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The key that signed it, or with --bundle the registry's root key to pin.",
)
@click.option(
    "--bundle",
    "bundle_path",
    default=None,
    metavar="JSON",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The registry's trust bundle (`keys export --bundle`): checks the signing key was an "
    "enrolled serving key for the model, not revoked at the receipt's time.",
)
@json_option
@click.option("--traceback", "show_traceback", is_flag=True, help="Show the full traceback of an error.")
def receipt_verify(
    receipt_path: Path,
    public_key_path: Path | None,
    bundle_path: Path | None,
    as_json: bool,
    show_traceback: bool,
) -> None:
    """Check a prediction receipt: exit code 0 when genuine, 1 (with the reason) when not.

    Any changed field, a proof from another batch or another key's signature fails; with
    --bundle, so does a key that was not an enrolled serving key, or was revoked by then.

    \b
    Example:
        modelledger receipt verify receipt.json --bundle bundle.json --public-key root.pub.pem
        modelledger receipt verify receipt.json --public-key scorer.pub.pem --json
    """
    try:
        try:
            text = receipt_path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {receipt_path}: {exc.strerror or exc}") from exc
        if public_key_path is None and bundle_path is None:
            raise InvalidInput("give --bundle (the registry's trust bundle) or --public-key")
        pem = _read(public_key_path) if public_key_path is not None else None
        bundle = None
        if bundle_path is not None:
            try:
                bundle = json.loads(_read(bundle_path))
            except ValueError as exc:
                raise InvalidInput(f"{bundle_path} is not JSON: {exc}") from exc
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"{receipt_path} is not JSON: {exc}") from exc
        try:
            if bundle is not None:
                check_receipt_with_bundle(raw, bundle, root_public_key=pem)
            else:
                assert pem is not None
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


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from exc
