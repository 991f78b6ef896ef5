"""Where metadata and artefacts live.

:mod:`.protocols` holds the ports the registry talks to; :func:`open_metadata_store` picks
the backend for a URL. A backend's module is imported only when a URL needs it, so
``import modelledger`` never pays for a database driver or toolkit it does not use
(SQLAlchemy alone takes longer to import than the rest of modelledger).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, cast

from ..errors import InvalidInput
from .protocols import MetadataStore

__all__ = ["BACKENDS", "METADATA_STORAGE_OPTIONS", "artifact_storage_options", "open_metadata_store"]

BACKENDS: dict[str, str] = {
    "sqlite": "modelledger.stores.sql:SqlMetadataStore",
    "postgresql": "modelledger.stores.sql:SqlMetadataStore",
    "postgres": "modelledger.stores.sql:SqlMetadataStore",
    "postgresql+psycopg": "modelledger.stores.sql:SqlMetadataStore",
    "dynamodb": "modelledger.stores.dynamodb:DynamoStore",
}
"""URL scheme -> ``module:class`` of the metadata backend that serves it."""

METADATA_STORAGE_OPTIONS = frozenset({"dynamodb_endpoint_url", "dynamodb_region"})
"""Storage options that are a metadata backend's, not fsspec's (a ``dynamodb://`` registry's
endpoint and region): :func:`artifact_storage_options` leaves them out. Kept here, not read
from the backend's module, so that opening a SQL registry never imports the DynamoDB one."""


def open_metadata_store(url: str, *, storage_options: Mapping[str, Any] | None = None) -> MetadataStore:
    """The metadata backend for ``url`` (``sqlite:///reg.db``, ``postgresql://...``,
    ``dynamodb://<table-prefix>?region=...``); no I/O yet. A backend whose class sets
    ``uses_storage_options`` also gets ``storage_options`` (DynamoDB reads its endpoint there).

    >>> open_metadata_store("sqlite:///reg.db")  # doctest: +SKIP
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    target = BACKENDS.get(scheme)
    if target is None:
        raise InvalidInput(
            f"unsupported registry URL {url!r}: use sqlite:///..., postgresql://... "
            "or dynamodb://<table-prefix>?region=..."
        )
    module, _, name = target.partition(":")
    backend = getattr(importlib.import_module(module), name)
    if getattr(backend, "uses_storage_options", False):
        return cast(MetadataStore, backend(url, storage_options=storage_options))
    return cast(MetadataStore, backend(url))


def artifact_storage_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` without the metadata backend's own (:data:`METADATA_STORAGE_OPTIONS`): what
    fsspec gets (s3fs hands unknown options to its session, which refuses them).

    >>> artifact_storage_options({"endpoint_url": "http://minio:9000", "dynamodb_region": "eu-west-1"})
    {'endpoint_url': 'http://minio:9000'}
    """
    return {k: v for k, v in options.items() if k not in METADATA_STORAGE_OPTIONS}
