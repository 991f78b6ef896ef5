"""Where metadata and artefacts live.

:mod:`.protocols` holds the ports the registry talks to; :func:`open_metadata_store` picks
the backend for a URL. A backend's module is imported only when a URL needs it, so
``import modelledger`` never pays for a database driver or toolkit it does not use
(SQLAlchemy alone takes longer to import than the rest of modelledger).
"""

from __future__ import annotations

import importlib
from typing import cast

from ..errors import InvalidInput
from .protocols import MetadataStore

__all__ = ["BACKENDS", "open_metadata_store"]

BACKENDS: dict[str, str] = {
    "sqlite": "modelledger.stores.sql:SqlMetadataStore",
    "postgresql": "modelledger.stores.sql:SqlMetadataStore",
    "postgres": "modelledger.stores.sql:SqlMetadataStore",
    "postgresql+psycopg": "modelledger.stores.sql:SqlMetadataStore",
}
"""URL scheme -> ``module:class`` of the metadata backend that serves it."""


def open_metadata_store(url: str) -> MetadataStore:
    """The metadata backend for ``url`` (``sqlite:///reg.db``, ``postgresql://...``); no I/O yet.

    >>> open_metadata_store("sqlite:///reg.db")  # doctest: +SKIP
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    target = BACKENDS.get(scheme)
    if target is None:
        raise InvalidInput(f"unsupported registry URL {url!r}: use sqlite:///... or postgresql://...")
    module, _, name = target.partition(":")
    return cast(MetadataStore, getattr(importlib.import_module(module), name)(url))
