"""``predictions``: captured predictions of a version or model, for a time range.

``--since`` and ``--until`` are passed to the library as given; it parses them (the forms
``gc --older-than`` and ``audit --since`` take too).
"""

from __future__ import annotations

import click

from modelledger import Registry

from ._common import (
    TIME_HELP,
    check_table_output,
    echo_json,
    json_option,
    output_option,
    registry_options,
    write_table,
)


@click.command("predictions")
@click.argument("identifier_or_model")
@click.option(
    "--since", default=None, metavar="TIME", help=f"Only predictions at or after this time ({TIME_HELP})."
)
@click.option("--until", default=None, metavar="TIME", help="Only predictions before this time (same forms).")
@output_option("Write them to a .csv or .parquet file (default: a summary on stdout).")
@json_option
@registry_options
def predictions(
    registry: Registry,
    identifier_or_model: str,
    since: str | None,
    until: str | None,
    output_path: str | None,
    as_json: bool,
) -> None:
    """Read captured predictions of a version, or of every version of a model, for a time range.

    \b
    Example:
        modelledger predictions credit-risk --since 2026-11-01 -o november.parquet
        modelledger predictions models:/credit-risk/3 --since 2026-11-27T00:00:00Z
        modelledger predictions credit-risk --since yesterday --json
    """
    check_table_output(output_path)
    table = registry.predictions(identifier_or_model, since=since, until=until)
    if output_path is not None:
        write_table(table.to_pandas(), output_path)
    if as_json:
        times = table.column("time") if table.num_rows else None
        echo_json(
            {
                "count": table.num_rows,
                "first_time": times[0].as_py() if times is not None else None,
                "last_time": times[-1].as_py() if times is not None else None,
                "output": output_path,
            }
        )
        return
    if output_path is None:
        click.echo(f"{table.num_rows} captured prediction(s)")
        if table.num_rows:
            times = table.column("time")
            click.echo(f"from {times[0].as_py()} to {times[-1].as_py()}")
        return
    click.echo(f"wrote {table.num_rows} prediction(s) to {output_path}")
