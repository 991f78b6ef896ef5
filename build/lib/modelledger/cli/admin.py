"""Looking after the registry itself: ``init``, ``migrate``, ``verify``, ``gc``, ``rebuild-state``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from rich.table import Table

from modelledger import ModelVersion, ObjectRetention, Registry, StateDifference, VerifyReport

from ._common import as_text, echo_json, human_size, json_option, make_console, registry_options


def _init(registry: Registry, *, create_bucket: bool, as_json: bool) -> None:
    created = registry.create_bucket() if create_bucket else False
    revision = registry.init()
    if as_json:
        echo_json({"revision": revision, "artifacts": registry.artifact_root, "bucket_created": created})
        return
    if created:
        click.echo(f"Created the bucket of {registry.artifact_root}")
    click.echo(f"Registry schema at revision {revision}")


create_bucket_option = click.option(
    "--create-bucket",
    is_flag=True,
    help="Create the S3 bucket of an s3:// artefact root first, if it does not exist.",
)


@click.command()
@create_bucket_option
@json_option
@registry_options
def init(registry: Registry, create_bucket: bool, as_json: bool) -> None:
    """Create the registry schema, or upgrade it to this version's.

    With an S3 (or S3-compatible) artefact root, --create-bucket creates its bucket;
    point at the server with --storage-option endpoint_url=..., and give credentials and
    region as key=..., secret=..., client_kwargs='{"region_name": "eu-west-1"}' (or the
    AWS_* environment variables, or [storage_options] in modelledger.toml). A dynamodb://
    registry's init creates its two tables (on-demand capacity) and their indexes, and waits
    until they are ready; credentials come from boto3's chain (AWS_* variables, a profile, a role).

    \b
    Example:
        modelledger init --registry sqlite:///reg.db --artifacts ./store
        modelledger init --artifacts s3://ml-models/registry --create-bucket --storage-option endpoint_url=http://minio:9000
        modelledger init --registry 'dynamodb://acme-?region=eu-west-1' --artifacts s3://acme-models/registry
    """
    _init(registry, create_bucket=create_bucket, as_json=as_json)


@click.command()
@create_bucket_option
@json_option
@registry_options
def migrate(registry: Registry, create_bucket: bool, as_json: bool) -> None:
    """Upgrade the registry schema (the same as init).

    \b
    Example:
        modelledger migrate --registry postgresql://ml@db/registry --artifacts s3://ml-models
    """
    _init(registry, create_bucket=create_bucket, as_json=as_json)


def _render_report(report: VerifyReport, root: str) -> None:
    for note in report.notes:
        click.secho(note, fg="yellow", err=True)
    if report.mode == "since_last" and report.since is not None:
        click.echo(
            f"Since the verify of {report.since.time} (last full verify {report.since.full_time}): "
            f"{report.covered}"
        )
    click.echo(
        f"Checked {report.versions_checked} versions, {report.datasets_checked} data sets, "
        f"{report.files_checked} files under {root}, "
        f"{report.events_checked} ledger events and {report.checkpoints_checked} signed checkpoints: "
        + ("no problems" if report.ok else f"{len(report.problems)} problems")
    )
    for problem in report.problems:
        click.secho(str(problem), fg="red")
    for finding in (*report.in_flight, *report.unrecorded):
        click.secho(f"{finding} (not counted as a problem)", fg="yellow")
    for erasure in report.erased:
        click.echo(f"erased: {erasure} (recorded, not a problem)")
    if report.retention:
        _render_retention(report.retention)
    if report.recorded is not None:
        click.echo(
            f"Recorded: proved up to ledger event {report.recorded.seq}, version key "
            f"{report.recorded.version_key}, data set key {report.recorded.dataset_key} "
            f"(signed by key {report.recorded.key_id})"
        )


def _render_retention(objects: Sequence[ObjectRetention]) -> None:
    table = Table("Object", "Mode", "Retain until", "Legal hold")
    for held in objects:
        until = held.retain_until.isoformat(timespec="seconds") if held.retain_until else "-"
        table.add_row(as_text(held.path), held.mode or "-", until, "on" if held.legal_hold else "-")
    make_console().print(table)


@click.command()
@click.option(
    "--public-key",
    "public_key",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="The registry's public key kept outside it (from `keys export`): detects a re-signed history.",
)
@click.option(
    "--trusted-checkpoint",
    "trusted_checkpoint",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="A checkpoint kept outside the registry (from `checkpoint export`): detects a ledger cut short.",
)
@click.option(
    "--captures",
    is_flag=True,
    help="Also re-check every captured prediction against the signed root of its call (slower).",
)
@click.option(
    "--since-last",
    "since_last",
    is_flag=True,
    help="Check only what came after the last clean verify this key recorded, and that it still "
    "holds (a full verify when there is none). Old files are not re-hashed: run a full verify too.",
)
@click.option(
    "--no-record",
    "no_record",
    is_flag=True,
    help="Do not record what this run proved (a clean run records it, signed with your key).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Threads hashing files (default: twice the cores, at most 16).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes checking signatures and version folders beside the ledger pass "
    "(default: one per core on a ledger of 10,000 writes or more; 1: none).",
)
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    help="Unreferenced files younger than this are reported as in flight, not as problems.",
)
@click.option(
    "--retention",
    is_flag=True,
    help="Also list the S3 Object Lock retention of every object (mode, retain-until, legal hold).",
)
@json_option
@registry_options
def verify(
    registry: Registry,
    public_key: str | None,
    trusted_checkpoint: str | None,
    captures: bool,
    since_last: bool,
    no_record: bool,
    workers: int | None,
    jobs: int | None,
    grace: str,
    retention: bool,
    as_json: bool,
) -> None:
    """Check everything the registry vouches for; exit code 1 on any problem.

    Recomputes the ledger's hash chain and its signed checkpoints (naming the first
    event that does not match, e.g. "ledger event 12"), checks the head row, compares the
    state tables with a replay of the ledger, re-hashes every stored artefact and data set,
    and accounts for every file of every version folder: changed, missing and orphaned
    files are all reported. Pin the key and a checkpoint kept elsewhere to detect a
    rewritten or truncated ledger.

    A clean run records what it proved, signed with your key. --since-last checks that
    record still holds and then only what came after it: new ledger events, new versions
    and data sets and their files. It does not re-hash older files nor compare the state
    tables: keep a full verify on a schedule (e.g. nightly --since-last, weekly full).

    \b
    Example:
        modelledger verify --registry postgresql://ml@db/registry --artifacts s3://ml-models
        modelledger verify --public-key registry.pub.pem --trusted-checkpoint cp.json
        modelledger verify --captures
        modelledger verify --since-last     # only what is new since the last clean verify
        modelledger verify --retention      # and each S3 object's Object Lock retention
    """
    status = make_console(stderr=True).status("Verifying artefacts...")
    checked = 0

    def tick(mv: ModelVersion) -> None:
        nonlocal checked
        checked += 1
        status.update(f"Verifying artefacts... {checked} versions ({mv.uri})")

    with status:
        report = registry.verify(
            progress=tick,
            grace=grace,
            public_key=public_key,
            trusted_checkpoint=trusted_checkpoint,
            captures=captures,
            since_last=since_last,
            record=not no_record,
            workers=workers,
            retention=retention,
            jobs=jobs,
        )
    if as_json:
        echo_json(report.to_dict())
    else:
        _render_report(report, registry.artifact_root)
    if not report.ok:
        raise click.exceptions.Exit(1)


@click.command()
@click.option(
    "--older-than",
    default="24h",
    show_default=True,
    metavar="DURATION",
    help="only what was last written longer ago than this (30m, 24h, 7d, 0)",
)
@click.option("--delete", is_flag=True, help="remove what is listed (without it, nothing changes)")
@json_option
@registry_options
def gc(registry: Registry, older_than: str, delete: bool, as_json: bool) -> None:
    """List (and with --delete remove) stored files that nothing references.

    Version folders of registrations that failed or were never completed, and data set
    files of interrupted ingests: what `verify` reports as orphans. Registered versions and
    data sets are never touched, and neither is anything written more recently than
    --older-than (a registration may still be writing it).

    \b
    Example:
        modelledger gc --older-than 7d            # what would go
        modelledger gc --older-than 7d --delete
    """
    report = registry.gc(older_than=older_than, delete=delete)
    if as_json:
        echo_json(report.to_dict())
        return
    if report.items:
        table = Table("Path", "Kind", "Size", "Last written")
        for item in report.items:
            when = item.modified.isoformat(timespec="seconds") if item.modified else "-"
            table.add_row(as_text(item.path), item.kind, human_size(item.size_bytes), when)
        make_console().print(table)
    done = "removed" if delete else "would remove"
    click.echo(f"{done} {len(report.items)} unreferenced items, {human_size(report.size_bytes)}")
    if report.recent:
        click.echo(f"left {report.recent} younger than {older_than} (or of unknown age) alone")
    if report.retained:
        click.secho(
            f"left {len(report.retained)} objects S3 Object Lock still retains (and the folders or "
            "files holding them) for a later gc:",
            fg="yellow",
        )
        _render_retention(report.retained)
    if report.items and not delete:
        click.echo("dry run: run again with --delete to remove them")


def _differences_json(differences: Sequence[StateDifference]) -> list[dict[str, Any]]:
    return [{"what": d.what, "ledger": d.expected, "table": d.found} for d in differences]


@click.command("rebuild-state")
@click.option(
    "--check", is_flag=True, help="Only compare; exit code 1 when the tables differ from the ledger."
)
@json_option
@registry_options
def rebuild_state(registry: Registry, check: bool, as_json: bool) -> None:
    """Rewrite the state tables (stages, aliases, policy) from the ledger, or --check them.

    \b
    Example:
        modelledger rebuild-state --check
        modelledger rebuild-state
    """
    differences = registry.check_state() if check else registry.rebuild_state()
    if as_json:
        echo_json({"checked_only": check, "differences": _differences_json(differences)})
    else:
        if not differences:
            click.echo("The state tables match the ledger")
        elif check:
            click.echo(f"{len(differences)} differences between the state tables and the ledger:")
        else:
            click.echo(f"Rebuilt the state tables from the ledger; {len(differences)} differences fixed:")
        for d in differences:
            click.secho(f"  {d}", fg="red" if check else None)
    if check and differences:
        raise click.exceptions.Exit(1)
