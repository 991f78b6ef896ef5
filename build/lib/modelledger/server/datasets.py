"""The data set routes: listings, one version's record, a preview of its rows, its Parquet
file (resumable, with HTTP Range), what used it and its lineage.

Who may read them: a data set belongs to no model, so these routes need a role on **every**
model (``Member.unscoped``), as ``/audit`` without ``?model=`` does. A member scoped to some
models gets 403 on each of them, whether or not the data set exists, and still sees what their
models were trained on, as far as the model's own ``/lineage`` shows it (digests, row counts,
columns, sources), but never the rows themselves. The stricter rule was chosen over "a data set
version used by a model in scope" because that one needs a walk of every version's downstream
lineage for each item of a listing, and a data set made from another would leak the rows of its
raw input to whoever may see any model trained on the derived one.

Everything goes through ``registry.datasets`` (``list``, ``versions``, ``get``, ``preview``,
``open``, ``used_by``) and ``registry.lineage``.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run time.
import base64
import math
import re
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import IO, Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException

from modelledger import DatasetVersion, InvalidInput, Member, PermissionDenied, Registry, parse_model_uri

from .deps import Deps, route
from .schemas import (
    DatasetPage,
    DatasetRowsOut,
    DatasetUsageOut,
    DatasetVersionOut,
    DatasetVersionPage,
    LineageOut,
)

__all__ = ["CHUNK", "Unsatisfiable", "add_routes", "byte_range", "json_value", "need_every_model"]

CHUNK = 1 << 20
"""Bytes read from the store and sent per piece of a file download."""

PARQUET = "application/vnd.apache.parquet"

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.ASCII)


def need_every_model(member: Member) -> None:
    if not (member.unscoped and member.can_view(None)):
        raise PermissionDenied(
            f"{member.name} holds roles on some models only: data sets belong to no model, "
            "so reading them needs a role on every model"
        )


class Unsatisfiable(Exception):
    """A Range whose first byte is past the end of the file (416)."""


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The first and last byte (inclusive) a ``Range`` header asks for in a file of ``size`` bytes.

    ``None`` means "send the whole file": a header this server ignores, as HTTP allows (another
    unit, several ranges, a malformed one). A well-formed range that starts past the end raises
    :class:`Unsatisfiable`; one that runs past the end is cut at the end.

    >>> byte_range("bytes=0-99", 1000), byte_range("bytes=-100", 1000), byte_range("bytes=900-", 1000)
    ((0, 99), (900, 999), (900, 999))
    """
    match = _RANGE.fullmatch(header.replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - suffix), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # not a valid range at all: ignored rather than refused
    if start >= size:
        raise Unsatisfiable
    return start, min(end, size - 1)


def json_value(value: Any) -> Any:
    """A value of ``Table.to_pylist()`` as JSON can carry it (see ``DatasetRowsOut.rows``)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return str(value)


def _pieces(fh: IO[bytes], start: int, length: int) -> Iterator[bytes]:
    try:
        fh.seek(start)
        left = length
        while left > 0:
            piece = fh.read(min(CHUNK, left))
            if not piece:
                return  # shorter than checked when opened: the client sees a short body
            left -= len(piece)
            yield piece
    finally:
        fh.close()


def _matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` list names this entity tag (weak comparison, as it asks)."""
    if header is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def add_routes(app: FastAPI, registry: Registry, deps: Deps) -> None:
    Caller = Annotated[Member, Depends(deps.caller)]
    Limit = Annotated[int, Query(description="page size, 1-1000")]
    Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
    Ref = Annotated[str, Path(description="a version number, or latest")]

    def get(path: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return route(app, "GET", path, **options)

    def dataset_version(member: Member, name: str, ref: str) -> DatasetVersion:
        need_every_model(member)
        if ref == "latest":
            return registry.datasets.get(name)
        if ref.isascii() and ref.isdigit():
            return registry.datasets.get(name, int(ref))
        raise InvalidInput(f"a data set version is a number or 'latest', got {ref!r}")

    @get("/datasets", quick=True, response_model=DatasetPage, tags=["datasets"])
    def list_datasets(
        member: Caller, prefix: str | None = None, limit: Limit = 100, cursor: Cursor = None
    ) -> DatasetPage:
        """Data sets by name, filtered by name prefix (needs a role on every model)."""
        need_every_model(member)
        page = registry.datasets.list(prefix=prefix, limit=limit, cursor=cursor)
        return DatasetPage.model_validate({"items": list(page), "next_cursor": page.next_cursor})

    @get("/datasets/{name}/versions", quick=True, response_model=DatasetVersionPage, tags=["datasets"])
    def list_dataset_versions(
        member: Caller, name: str, limit: Limit = 100, cursor: Cursor = None
    ) -> DatasetVersionPage:
        """A data set's versions, newest first."""
        need_every_model(member)
        page = registry.datasets.versions(name, limit=limit, cursor=cursor)
        return DatasetVersionPage.model_validate(
            {"items": [json_value(dv.to_dict()) for dv in page], "next_cursor": page.next_cursor}
        )

    @get("/datasets/{name}/versions/{ref}", quick=True, response_model=DatasetVersionOut, tags=["datasets"])
    def get_dataset_version(member: Caller, name: str, ref: Ref) -> DatasetVersionOut:
        """One version (a number, or ``latest``): schema, statistics, source, processing steps,
        digests, size, rows, who registered it and when."""
        # json_value: a column holding infinities has them as its min or max
        return DatasetVersionOut.model_validate(json_value(dataset_version(member, name, ref).to_dict()))

    @get("/datasets/{name}/versions/{ref}/rows", response_model=DatasetRowsOut, tags=["datasets"])
    def get_rows(
        member: Caller,
        name: str,
        ref: Ref,
        limit: Annotated[int, Query(description="rows, 1-1000")] = 100,
        offset: Annotated[int, Query(description="the first row, from 0")] = 0,
    ) -> DatasetRowsOut:
        """A preview: rows ``offset`` to ``offset + limit`` as JSON records, with the column
        types. Only the Parquet row groups holding them are read."""
        dv = dataset_version(member, name, ref)
        table = registry.datasets.preview(dv, offset=offset, limit=limit)
        kinds = {c.name: c for c in dv.schema}
        columns = [
            {
                "name": f.name,
                "type": kinds[f.name].type if f.name in kinds else "object",
                "nullable": kinds[f.name].nullable if f.name in kinds else True,
                "arrow_type": str(f.type),
            }
            for f in table.schema
        ]
        rows = [{k: json_value(v) for k, v in row.items()} for row in table.to_pylist()]
        return DatasetRowsOut.model_validate(
            {
                "dataset": dv.uri,
                "offset": offset,
                "limit": limit,
                "total_rows": dv.row_count,
                "columns": columns,
                "rows": rows,
            }
        )

    file_responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {PARQUET: {}}, "description": "the whole file"},
        206: {"content": {PARQUET: {}}, "description": "the bytes of the Range asked for"},
        304: {"description": "If-None-Match names this file's ETag"},
        416: {"description": "the Range starts past the end of the file"},
    }

    def send_file(
        request: Request,
        member: Member,
        name: str,
        ref: str,
        range_: str | None,
        if_range: str | None,
        if_none_match: str | None,
    ) -> Response:
        dv = dataset_version(member, name, ref)
        etag = f'"{dv.file_sha256}"'
        b64 = base64.b64encode(bytes.fromhex(dv.file_sha256)).decode("ascii")
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Repr-Digest": f"sha-256=:{b64}:",
            "Digest": f"SHA-256={b64}",
            "Content-Disposition": f'attachment; filename="{dv.name}-{dv.version}.parquet"',
        }
        fh = registry.datasets.open(dv)  # Erased, missing or of another size: no header is sent
        size = dv.size_bytes
        span = None
        try:
            if _matches(if_none_match, etag):
                fh.close()
                return Response(status_code=304, headers=headers)
            # If-Range: resume only the file whose tag the client holds; for any other, all of it
            if range_ is not None and (if_range is None or if_range.strip() == etag):
                span = byte_range(range_, size)
        except Unsatisfiable:
            fh.close()
            raise HTTPException(
                416,
                f"{range_!r} starts past the end of the file ({size} bytes)",
                headers={"Content-Range": f"bytes */{size}"},
            ) from None
        except BaseException:
            fh.close()
            raise
        start, end = span if span is not None else (0, size - 1)
        length = end - start + 1
        headers["Content-Length"] = str(length)
        status = 200
        if span is not None:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if request.method == "HEAD":
            fh.close()
            return Response(status_code=status, headers=headers, media_type=PARQUET)
        return StreamingResponse(
            _pieces(fh, start, length), status_code=status, headers=headers, media_type=PARQUET
        )

    Range = Annotated[
        str | None, Header(alias="range", description="bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX")
    ]
    IfRange = Annotated[str | None, Header(description="the ETag of the file being resumed")]
    IfNoneMatch = Annotated[str | None, Header()]
    file_path = "/datasets/{name}/versions/{ref}/file"

    @route(app, "GET", file_path, tags=["datasets"], response_class=Response, responses=file_responses)
    def get_file(
        request: Request,
        member: Caller,
        name: str,
        ref: Ref,
        range_: Range = None,
        if_range: IfRange = None,
        if_none_match: IfNoneMatch = None,
    ) -> Response:
        """The stored Parquet file, streamed, with ``Content-Length`` and its sha256 as ``ETag``
        (``"<hex>"``), ``Repr-Digest`` and ``Digest``. A single ``Range`` (with ``If-Range``, to
        resume only the same file) answers 206 with ``Content-Range``, a range past the end 416;
        other ``Range`` headers are ignored (200, the whole file)."""
        return send_file(request, member, name, ref, range_, if_range, if_none_match)

    @route(app, "HEAD", file_path, tags=["datasets"], response_class=Response, responses=file_responses)
    def head_file(
        request: Request,
        member: Caller,
        name: str,
        ref: Ref,
        range_: Range = None,
        if_range: IfRange = None,
        if_none_match: IfNoneMatch = None,
    ) -> Response:
        """The headers ``GET`` would send (size, ETag, digests), without the file."""
        return send_file(request, member, name, ref, range_, if_range, if_none_match)

    @get("/datasets/{name}/versions/{ref}/usage", response_model=DatasetUsageOut, tags=["datasets"])
    def get_usage(member: Caller, name: str, ref: Ref) -> DatasetUsageOut:
        """The model versions trained or evaluated on this version, and those that used data
        sets made from it (what an erasure or a data problem reaches)."""
        dv = dataset_version(member, name, ref)
        direct = []
        for uri, role in registry.datasets.used_by(dv):
            ref_ = parse_model_uri(uri)
            direct.append({"uri": uri, "model": ref_.name, "version": ref_.version, "role": role})
        seen = {d["uri"] for d in direct}
        graph = registry.lineage(dv.uri)
        # a data set's graph holds no model upstream: every model node in it used the data
        derived = [n.id for n in graph.nodes.values() if n.kind == "model" and n.id not in seen]
        derived.sort(key=lambda uri: (parse_model_uri(uri).name, parse_model_uri(uri).version or 0))
        return DatasetUsageOut.model_validate(
            {"dataset": dv.uri, "used_by": direct, "through_derived": derived}
        )

    @get("/datasets/{name}/versions/{ref}/lineage", response_model=LineageOut, tags=["datasets"])
    def get_dataset_lineage(member: Caller, name: str, ref: Ref) -> LineageOut:
        """Everything upstream of the version (sources, steps, input data sets) and downstream
        (data sets made from it, model versions that used them), as a JSON graph."""
        dv = dataset_version(member, name, ref)
        return LineageOut.model_validate(registry.lineage(dv.uri).to_dict())
