"""The DynamoDB metadata store (work in progress): metadata in DynamoDB, artefacts in S3.

The design, with the access pattern of every Protocol method, is docs/dynamodb.md. Built so
far: the tables, the ledger core (governed writes conditional on the head, checkpoints, events,
roster, policy, version state) and models and versions. It does not yet implement the whole
:class:`~modelledger.stores.protocols.MetadataStore`, so it is not in
:data:`modelledger.stores.BACKENDS`: ``Registry.open`` does not offer it until it does.
"""

from __future__ import annotations

from .base import SCHEMA_REVISION, parse_url
from .models import DynamoModels

__all__ = ["SCHEMA_REVISION", "DynamoStore", "parse_url"]


class DynamoStore(DynamoModels):
    """The DynamoDB store for ``dynamodb://<table-prefix>?region=...`` URLs (part of the ports)."""
