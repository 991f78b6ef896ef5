"""``modelledger.inputs()``: a training script's data, read through the registry.

The script names no file: the ``MODELLEDGER_DATA_<ROLE>`` variables name the data set versions,
so the same script trains again on other data without edits (see :mod:`modelledger._entrypoint`
for what is recorded, and :mod:`modelledger._run` for running a version again).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from ._entrypoint import REGISTRY_VARIABLE, check_declared, data_variables, remember_inputs
from ._registration import DATASET_ROLES
from ._registry import Registry
from .errors import InvalidInput

__all__ = ["inputs"]


def inputs(registry: Registry | None = None, *, env: Iterable[str] = ()) -> dict[str, Any]:
    """Role -> pandas DataFrame, read from the registry as the ``MODELLEDGER_DATA_<ROLE>``
    variables name them (``MODELLEDGER_DATA_TRAIN=datasets:/applications-train/3``).

    The registry is ``registry``, else the one ``$MODELLEDGER_REGISTRY`` (a URL) names, else
    the default (``Registry.open()``). Every data set is checked against its recorded digest as
    it is read. The roles, and the variables named in ``env`` (declared to matter for the
    training, such as ``FEATURE_SET``; a name that looks like a secret is refused), are
    remembered: the next ``register`` in this process records them (see
    :mod:`modelledger._entrypoint`). Roles are those ``register`` takes: train, validation, holdout, test.

    >>> frames = modelledger.inputs()  # doctest: +SKIP
    >>> frames["train"].shape  # doctest: +SKIP
    (4470, 9)
    """
    declared = check_declared(env)
    found = data_variables()
    if not found:
        raise InvalidInput(
            "no data set named: set MODELLEDGER_DATA_<ROLE>=datasets:/name/N (for example "
            "MODELLEDGER_DATA_TRAIN=datasets:/applications-train/3) for each role the training reads"
        )
    unknown = sorted(set(found) - set(DATASET_ROLES))
    if unknown:
        raise InvalidInput(
            f"unknown data set role {unknown[0]!r} (MODELLEDGER_DATA_{unknown[0].upper()}): "
            f"use {', '.join(DATASET_ROLES)}"
        )
    if registry is None:
        registry = Registry.open(os.environ.get(REGISTRY_VARIABLE) or None)
    frames = {role: registry.datasets.to_pandas(uri) for role, uri in found.items()}
    remember_inputs(found, declared)
    return frames
