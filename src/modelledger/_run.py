"""Running a registered version's training again: the engine of reproduce and refresh.

:func:`run_entrypoint` takes a version whose manifest records how it was trained (``run``,
see :mod:`modelledger._entrypoint`), and runs that command again in a clean checkout of the
recorded revision, in an isolated environment with the recorded Python and dependency
versions, on the recorded data set versions (or new ones), and returns the candidate the run
registered, linked to the version it came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from ._entrypoint import STEPS, RunProgress, StepEvent
from .errors import RunFailed

if TYPE_CHECKING:
    from ._domain import ModelVersion

__all__ = ["STEPS", "RunHost", "RunProgress", "StepEvent", "run_entrypoint"]


class RunHost(Protocol):
    """What running a version again needs of the registry (a :class:`~modelledger.Registry`)."""

    def get_version(self, name_or_uri: str, version: int | None = None) -> ModelVersion: ...


def run_entrypoint(
    registry: RunHost,
    version: ModelVersion | str,
    *,
    data: Mapping[str, str] | None,
    link: tuple[str, str],
    progress: RunProgress | None = None,
    allow_dirty: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ModelVersion:
    """Run ``version``'s recorded training again and return the candidate it registered.

    The steps (:data:`STEPS`): a clean checkout of the recorded revision (a version recorded
    from a dirty checkout is refused unless ``allow_dirty``), an isolated environment with
    the recorded Python and exact dependency versions (cached under ``cache_dir``), the data
    (the recorded data set versions, checked by digest; ``data`` replaces roles:
    ``{"train": "datasets:/applications/8"}``), the run (the recorded command, with
    ``MODELLEDGER_DATA_<ROLE>`` set and ``link`` = ``("reproduction_of" | "refresh_of",
    "models:/x/3")`` carried by its registration). A failure at any step raises
    :class:`~modelledger.errors.RunFailed` naming the step and leaves no candidate.

    >>> run_entrypoint(registry, "models:/credit-risk/3", data=None,
    ...                link=("reproduction_of", "models:/credit-risk/3"))  # doctest: +SKIP
    """
    # The engine (checkout, environment, run) lands with the environment builder.
    raise RunFailed("checkout", "running a version again is not available yet")
