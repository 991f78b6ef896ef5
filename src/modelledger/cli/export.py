"""``export``: a version's, data set's or prediction's provenance in a standard format
(OpenLineage, W3C PROV, CycloneDX, SPDX, in-toto, model-signing) for other tools to read;
``openlineage status|flush``: the events sent as things happen."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import click

from modelledger import EXPORT_FORMATS, InvalidInput, Registry

from ._common import echo_json, json_option, output_option, registry_options


@click.command("export")
@click.argument("identifier")
@click.option(
    "--format",
    "-f",
    "fmt",
    required=True,
    type=click.Choice(sorted(EXPORT_FORMATS)),
    help="The format to write (docs/export.md says which tool reads each).",
)
@output_option("Write the export here; default: stdout.")
@json_option
@registry_options
def export(registry: Registry, identifier: str, fmt: str, output_path: str | None, as_json: bool) -> None:
    """Export the provenance of IDENTIFIER (a model version, a data set version or a
    prediction id) in a standard format: the same registry always gives the same bytes.

    \b
    Example:
        modelledger export models:/credit-risk@production --format openlineage -o lineage.json
        modelledger export datasets:/applications-train/3 --format openlineage
        modelledger export 01JD3M4Q8Z0000001K7WQ2X9RB --format openlineage

    Every format is a JSON document, so with --json and no -o the export itself is printed; with
    -o, --json prints what was written (path, size, sha256) instead of a line for people.
    """
    data = registry.export(identifier, format=fmt)
    if output_path is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        Path(output_path).write_bytes(data)
    except OSError as exc:
        raise InvalidInput(f"cannot write {output_path}: {exc.strerror or exc}") from exc
    if as_json:
        digest = hashlib.sha256(data).hexdigest()
        echo_json(
            {
                "identifier": identifier,
                "format": fmt,
                "path": output_path,
                "bytes": len(data),
                "sha256": digest,
            }
        )
        return
    click.echo(f"Wrote {fmt} for {identifier} to {output_path} ({len(data):,} bytes)", err=True)


@click.group("openlineage")
def openlineage() -> None:
    """OpenLineage events sent as things happen (MODELLEDGER_OPENLINEAGE, or openlineage in
    modelledger.toml): what waits in the spool, and sending it now.

    \b
    Example:
        modelledger openlineage status
        modelledger openlineage flush --timeout 30
    """


def _show(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(status)
        return
    line = f"{status['pending']} pending, {status['sent']} sent to {status['transport']}"
    if status["rejected"]:
        line += f", {status['rejected']} refused for good (kept in rejected/)"
    if status["pending"]:
        line += f" (oldest waiting since {status['oldest_pending']})"
    click.echo(line)
    if status["last_error"]:
        click.echo(f"last error at {status['last_error_at']}: {status['last_error']}")
    click.echo(f"spool: {status['spool']}")


@openlineage.command("status")
@json_option
@registry_options
def openlineage_status(registry: Registry, as_json: bool) -> None:
    """Show where events go, how many wait in the spool, how many were sent, the last error.

    \b
    Example:
        modelledger openlineage status --json
    """
    _show(registry.openlineage_status(), as_json)


@openlineage.command("flush")
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for a delivery under way."
)
@json_option
@registry_options
def openlineage_flush(registry: Registry, timeout: float, as_json: bool) -> None:
    """Send every pending event now (in order; it stops at the first the receiver refuses).

    \b
    Example:
        modelledger openlineage flush
    """
    _show(registry.flush_openlineage(timeout=timeout), as_json)
