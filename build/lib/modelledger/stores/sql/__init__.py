"""The SQL metadata store: one SQLAlchemy Core implementation for SQLite and PostgreSQL.

Split by concern: :mod:`.base` (engine, transactions, schema), :mod:`.ledger` (governed
writes, the chain, governance state), :mod:`.models` (models and versions), :mod:`.datasets`
(data lineage), :mod:`.tokens` (API tokens), :mod:`.webhooks` (webhooks and their delivery
log); :mod:`.statements` holds the prebuilt statements
and :mod:`.driver` runs the hot ones on the DB-API cursor.

SQLite is run durable (WAL with ``synchronous=FULL``: a committed version survives power
loss) and write transactions start with ``BEGIN IMMEDIATE`` so concurrent writers queue on
the lock instead of failing on upgrade.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocols import MetadataStore
from .base import HEAD_REVISION
from .datasets import SqlDatasets
from .models import SqlModels
from .statements import normalise_url
from .tokens import SqlTokens
from .webhooks import SqlWebhooks

__all__ = ["HEAD_REVISION", "SqlMetadataStore", "normalise_url"]


class SqlMetadataStore(SqlModels, SqlDatasets, SqlTokens, SqlWebhooks):
    """SQLAlchemy Core store for ``sqlite:///...`` and ``postgresql://...`` URLs.

    Implements :class:`~modelledger.stores.protocols.MetadataStore`.
    """


if TYPE_CHECKING:

    def _implements_the_ports(store: SqlMetadataStore) -> MetadataStore:
        return store  # mypy checks here that the class implements every port
