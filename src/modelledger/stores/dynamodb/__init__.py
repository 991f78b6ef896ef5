"""The DynamoDB metadata store (work in progress): metadata in DynamoDB, artefacts in S3.

The design, with the access pattern of every Protocol method, is docs/dynamodb.md; its
"Status" lists what is built (all but version search) and what is
not. It does not yet implement the whole
:class:`~modelledger.stores.protocols.MetadataStore`, so it is not in
:data:`modelledger.stores.BACKENDS`: ``Registry.open`` does not offer it until it does.
"""

from __future__ import annotations

from .base import SCHEMA_REVISION, parse_url
from .models import DynamoModels
from .tokens import DynamoTokens
from .webhooks import DynamoWebhooks

__all__ = ["SCHEMA_REVISION", "DynamoStore", "parse_url"]


class DynamoStore(DynamoModels, DynamoTokens, DynamoWebhooks):
    """The DynamoDB store for ``dynamodb://<table-prefix>?region=...`` URLs (part of the ports)."""
