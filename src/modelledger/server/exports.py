"""``GET /api/v1/export``: a version's, data set's or prediction's provenance in a standard
format, the bytes ``Registry.export`` returns (what ``RemoteRegistry.export`` asks for).

Who may read it: as for what the export describes. A model version or a prediction needs a
role on its model (a prediction's model is found from its id); a data set version needs a role
on every model, as the data set routes do (:func:`.datasets.need_every_model`). Formats that
are signed are signed with the server's own key.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run time.
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query
from fastapi.responses import Response

from modelledger import EXPORT_FORMATS, Member, Registry, parse_prediction_id

from .datasets import need_every_model
from .deps import Deps, need_view, route

__all__ = ["add_routes"]


def add_routes(app: FastAPI, registry: Registry, deps: Deps) -> None:
    Caller = Annotated[Member, Depends(deps.caller)]

    def need_subject(member: Member, identifier: str) -> None:
        if identifier.startswith("datasets:/"):
            need_every_model(member)
        elif identifier.startswith("models:/"):
            need_view(member, registry.get_version(identifier).model)
        else:
            _when, key = parse_prediction_id(identifier)
            need_view(member, registry.get_version_by_key(key).model)

    ok: dict[int | str, dict[str, Any]] = {
        200: {"description": "the export (UTF-8 JSON)", "content": {"application/json": {"schema": {}}}}
    }

    @route(app, "GET", "/export", tags=["lineage"], response_class=Response, responses=ok)
    def export(
        member: Caller,
        identifier: Annotated[
            str, Query(description="models:/<name>/<n> or @alias, datasets:/<name>/<n>, or a prediction id")
        ],
        format: Annotated[str, Query(description="one of: " + ", ".join(sorted(EXPORT_FORMATS)))],
    ) -> Response:
        """The provenance of a model version, a data set version or a prediction in a standard
        format (OpenLineage, PROV, CycloneDX, SPDX, in-toto, model-signing)."""
        need_subject(member, identifier)
        return Response(registry.export(identifier, format=format), media_type="application/json")
