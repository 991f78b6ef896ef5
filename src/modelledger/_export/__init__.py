"""Provenance in the formats other tools read: ``Registry.export(identifier, format=...)``.

:func:`export` collects the :class:`~._collect.Provenance` of a model version, a data set
version or a prediction once (:mod:`._collect`), then hands it to one renderer,
``modelledger._export.<module>.render(provenance, *, sign=None) -> bytes``. Renderers are pure
and deterministic (the same registry gives the same bytes) and are imported only when their
format is asked for: some need libraries ``import modelledger`` must not load.

``sign`` is given to every renderer; it signs bytes with the exporting identity's Ed25519 key
(a raw 64-byte signature). Formats that carry no signature never call it, so exporting them
needs no private key.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..errors import InvalidInput
from ._collect import ExportSource, Provenance, collect

__all__ = ["FORMATS", "Provenance", "collect", "export", "render"]

Signer = Callable[[bytes], bytes]

FORMATS: dict[str, str] = {
    # format name -> module under modelledger._export (one line per format: keep merges trivial)
    "openlineage": "openlineage",
    "prov": "prov",
    "cyclonedx": "cyclonedx",
    "spdx": "spdx",
    "in-toto": "intoto",
    "model-signing": "model_signing",
}


def render(provenance: Provenance, fmt: str, *, sign: Signer | None = None) -> bytes:
    """``provenance`` in format ``fmt`` (one of :data:`FORMATS`)."""
    module = importlib.import_module(f"{__name__}.{_module(fmt)}")
    out: bytes = module.render(provenance, sign=sign)
    return out


def export(registry: ExportSource, identifier: str, fmt: str, *, sign: Signer | None = None) -> bytes:
    """The provenance of ``identifier`` in format ``fmt``, as bytes (UTF-8 JSON for every format
    so far). The format is checked before anything is read.

    >>> export(registry, "models:/credit-risk@production", "openlineage")  # doctest: +SKIP
    """
    _module(fmt)
    return render(collect(registry, identifier), fmt, sign=sign)


def _module(fmt: str) -> str:
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise InvalidInput(f"unknown export format {fmt!r}: choose one of {', '.join(sorted(FORMATS))}")
    return FORMATS[fmt]
