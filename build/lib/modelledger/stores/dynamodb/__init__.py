"""The DynamoDB metadata store: metadata in DynamoDB, artefacts in S3.

The design, with the access pattern of every Protocol method, is docs/dynamodb.md. Every
method of :class:`~modelledger.stores.protocols.MetadataStore` is built (mypy checks it
below); ``dynamodb://`` is in :data:`modelledger.stores.BACKENDS`, so ``Registry.open``, the
CLI and ``modelledger init`` reach it, and the parametrised suite runs on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocols import MetadataStore
from .base import SCHEMA_REVISION, parse_url
from .models import DynamoModels
from .tokens import DynamoTokens
from .webhooks import DynamoWebhooks

__all__ = ["SCHEMA_REVISION", "DynamoStore", "parse_url"]


class DynamoStore(DynamoModels, DynamoTokens, DynamoWebhooks):
    """The DynamoDB store for ``dynamodb://<table-prefix>?region=...`` URLs (part of the ports)."""


if TYPE_CHECKING:

    def _implements_the_ports(store: DynamoStore) -> MetadataStore:
        return store  # mypy checks here that the class implements every port
