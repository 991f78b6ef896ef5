"""The one place where errors become HTTP responses.

A :class:`~modelledger.ModelLedgerError` keeps its meaning over HTTP: its class picks the
status (:data:`STATUS`, most specific first) and the body is ``{"error": <class name>,
"message": <its one-line message>}``. Request validation (a query parameter of the wrong type)
is 422 with ``error: InvalidInput``; an unknown route 404; a limit of the server itself (see
:class:`ServerRefusal`) its own status; anything unexpected 500, with the details in the
server log and not in the response.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from modelledger import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    InvalidToken,
    MissingDependency,
    ModelLedgerError,
    NotFound,
    PermissionDenied,
)

__all__ = [
    "STATUS",
    "RequestTooLarge",
    "ResponseTimeout",
    "ServerRefusal",
    "install_error_handlers",
    "library_error_response",
    "refusal_response",
    "status_for",
    "unexpected_response",
]

log = logging.getLogger("modelledger.server")

STATUS: tuple[tuple[type[ModelLedgerError], int], ...] = (
    (InvalidToken, 401),  # before PermissionDenied, its parent: not knowing who calls is not a refusal
    (NotFound, 404),
    (InvalidInput, 400),
    (PermissionDenied, 403),
    (AlreadyExists, 409),
    (Conflict, 409),
    # the server lacks a model's framework: the request was fine, this server cannot serve it
    (MissingDependency, 501),
)
"""Library error class -> HTTP status, most specific first; any other error is 500."""


class ServerRefusal(HTTPException):
    """A limit of the server, not of the registry, refused the request (so not a
    :class:`~modelledger.ModelLedgerError`); the body's ``error`` is the subclass's name."""

    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(self.status, message)


class RequestTooLarge(ServerRefusal):
    """The request body is larger than the route accepts."""

    status = 413


class ResponseTimeout(ServerRefusal):
    """The response did not start within the server's time limit."""

    status = 503


def status_for(exc: ModelLedgerError) -> int:
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 500)


def _body(error: str, message: str, status: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "message": " ".join(message.split())}, status, headers=headers)


def library_error_response(exc: ModelLedgerError) -> JSONResponse:
    status = status_for(exc)
    if status == 500:
        log.error("request failed: %s", exc, exc_info=exc)
    headers = {"WWW-Authenticate": 'Bearer realm="modelledger"'} if status == 401 else None
    return _body(type(exc).__name__, exc.message, status, headers)


async def _library_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ModelLedgerError)
    return library_error_response(exc)


async def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = " ".join(str(part) for part in err.get("loc", ()))
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    return _body("InvalidInput", "; ".join(problems) or "invalid request", 422)


def refusal_response(exc: ServerRefusal) -> JSONResponse:
    return _body(type(exc).__name__, str(exc.detail), exc.status_code, exc.headers)


def unexpected_response(exc: BaseException) -> JSONResponse:
    """The 500 for an error nothing else maps, logged here with its traceback."""
    log.error("unexpected error", exc_info=exc)
    return _body("InternalError", "unexpected error in the server; its log has the details", 500)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, ServerRefusal):
        return refusal_response(exc)
    if exc.status_code == 404:
        return _body("NotFound", f"no such endpoint: {request.method} {request.url.path}", 404)
    phrase = HTTPStatus(exc.status_code).phrase
    return _body(phrase.replace(" ", ""), str(exc.detail or phrase), exc.status_code, exc.headers)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    return unexpected_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ModelLedgerError, _library_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
