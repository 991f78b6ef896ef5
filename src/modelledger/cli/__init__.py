"""The ``modelledger`` command line: a thin face over the public Python API.

Every command opens the registry, calls one or two :class:`~modelledger.Registry`
verbs and renders what they return: rich tables for people, one JSON document
with ``--json`` for scripts. Library errors become one red line on stderr and
exit code 1, in one place (:func:`~modelledger.cli._common.registry_options`); usage
errors (a missing argument, an unknown option) one line too, with exit code 2
(:class:`~modelledger.cli._common.OneLineUsageGroup`).

One module per noun; this one holds the ``main`` group (the ``modelledger`` console
script) and registers theirs:

- :mod:`.models`: ``models list|show|create``
- :mod:`.versions`: ``versions list|show``, ``register``, ``download``, ``predict``
- :mod:`.aliases`: ``alias list|set|rm``
- :mod:`.governance`: ``state``, ``stage``, ``validate``, ``approve``, ``reject``, ``deploy``,
  ``rollback``, ``policy show|set``
- :mod:`.history`: ``history``, ``audit``
- :mod:`.datasets`: ``datasets list|show|register|lineage``
- :mod:`.lineage`: ``lineage``, ``diff``, ``trace``
- :mod:`.predictions`: ``predictions``
- :mod:`.receipts`: ``receipt verify``
- :mod:`.keys`: ``keys export``, ``checkpoint export``
- :mod:`.admin`: ``init``, ``migrate``, ``verify``, ``gc``, ``rebuild-state``
- :mod:`.config`: ``config show``
- :mod:`.members`: ``identity create|show``, ``members list|add|roles|revoke``
- :mod:`.search`: ``search versions|models``
- :mod:`.tokens`: ``tokens create|list|revoke``
- :mod:`.webhooks`: ``webhooks list|add|rm|deliveries|deliver``
- :mod:`.importer`: ``import mlflow``
- :mod:`.server`: ``server`` (the read API; imports :mod:`modelledger.server` only when run)
- :mod:`.export`: ``export`` (provenance in OpenLineage, PROV, CycloneDX, SPDX, in-toto...),
  ``openlineage status|flush`` (the events sent as things happen)

A command's module is imported when that command is looked up (:data:`COMMANDS` names it), so
``modelledger server`` loads neither the other commands nor the libraries they render with.
"""

from __future__ import annotations

import importlib

import click

from modelledger import __version__

from ._common import OneLineUsageGroup

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, str] = {
    "init": "admin:init",
    "migrate": "admin:migrate",
    "verify": "admin:verify",
    "gc": "admin:gc",
    "rebuild-state": "admin:rebuild_state",
    "erase": "erasure:erase",
    "models": "models:models",
    "versions": "versions:versions",
    "register": "versions:register",
    "download": "versions:download",
    "predict": "versions:predict",
    "alias": "aliases:alias",
    "state": "governance:state",
    "stage": "governance:stage",
    "validate": "governance:validate",
    "approve": "governance:approve",
    "reject": "governance:reject",
    "deploy": "governance:deploy",
    "rollback": "governance:rollback",
    "policy": "governance:policy_group",
    "history": "history:history",
    "audit": "history:audit",
    "datasets": "datasets:datasets",
    "lineage": "lineage:lineage",
    "diff": "lineage:diff",
    "trace": "lineage:trace",
    "predictions": "predictions:predictions",
    "receipt": "receipts:receipt",
    "keys": "keys:keys",
    "identity": "members:identity",
    "members": "members:members",
    "search": "search:search",
    "checkpoint": "keys:checkpoint",
    "config": "config:config",
    "tokens": "tokens:tokens",
    "webhooks": "webhooks:webhooks",
    "server": "server:server",
    "import": "importer:import_group",
    "export": "export:export",
    "openlineage": "export:openlineage",
}
"""Each command of ``modelledger``: ``module:attribute`` of the click command, the module
under this package. Imported by name when the command is looked up, as ``SERVER_MODULE``
and ``stores.BACKENDS`` are: ``modelledger server`` then imports the server command alone,
not the other twenty modules and rich (a tenth of the time the server takes to come up)."""


class LazyCommandGroup(OneLineUsageGroup):
    """The ``main`` group, whose commands are imported when looked up (:data:`COMMANDS`).

    ``list_commands`` and ``get_command`` are click's way to a group's commands (help, shell
    completion and dispatch go through them); ``--help`` lists every command, so it imports
    them all, as before."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in COMMANDS:
            module, attribute = COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
            self.add_command(command, cmd_name)
        return command


@click.group(cls=LazyCommandGroup)
@click.version_option(__version__, prog_name="modelledger")
def main() -> None:
    """modelledger: a model registry built around lineage.

    Every command takes --registry, --artifacts and --storage-option; without
    them it reads MODELLEDGER_URL, MODELLEDGER_ARTIFACTS and
    MODELLEDGER_STORAGE_OPTIONS, then modelledger.toml (this folder or a parent),
    then the user config file, else uses the embedded registry in ./.modelledger
    (`modelledger config show` says which). Read commands take --json. Who acts
    is proven by your own key: --as NAME (or MODELLEDGER_USER, else git's
    user.email, else the OS user) picks which of your keys signs; only a key an
    admin enrolled for that name may (`modelledger identity show`).

    \b
    Exit codes:
        0  ok
        1  error (a library error, a failed check such as verify)
        2  usage error (a missing argument, an unknown or conflicting option)
        3  register landed a version its gates rejected, or short of
           --require-stage (the version is registered all the same)

    \b
    Object stores (S3 or S3-compatible, e.g. MinIO):
        --artifacts s3://bucket/prefix --storage-option endpoint_url=http://minio:9000
        --storage-option key=... --storage-option secret=...
        --storage-option client_kwargs='{"region_name": "eu-west-1"}'
        (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION, or
        [storage_options] in modelledger.toml); `init --create-bucket` makes the bucket.

    \b
    Example:
        modelledger init --registry sqlite:///reg.db --artifacts ./store
        modelledger register credit-risk ./model --manifest manifest.yaml
        modelledger predict models:/credit-risk/1 applications.csv -o scored.parquet
    """
