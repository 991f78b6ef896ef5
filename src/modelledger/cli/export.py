"""``export``: a version's, data set's or prediction's provenance in a standard format
(OpenLineage, W3C PROV, CycloneDX, SPDX, in-toto, model-signing) for other tools to read."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from modelledger import EXPORT_FORMATS, InvalidInput, Registry

from ._common import output_option, registry_options


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
@registry_options
def export(registry: Registry, identifier: str, fmt: str, output_path: str | None) -> None:
    """Export the provenance of IDENTIFIER (a model version, a data set version or a
    prediction id) in a standard format: the same registry always gives the same bytes.

    \b
    Example:
        modelledger export models:/credit-risk@production --format openlineage -o lineage.json
        modelledger export datasets:/applications-train/3 --format openlineage
        modelledger export 01JD3M4Q8Z0000001K7WQ2X9RB --format openlineage
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
    click.echo(f"Wrote {fmt} for {identifier} to {output_path} ({len(data):,} bytes)", err=True)
