"""Small model classes used by the tests (importable, so pickles can find them), the
attacker's raw database connection, an ASGI app served on a free loopback port, and the
subcommands of a click group."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click
import numpy as np
import sqlalchemy as sa


class Doubler:
    """A plain Python model: predicts twice the first column."""

    def predict(self, data: Any) -> Any:
        return np.asarray(data)[:, 0] * 2


class Tripwire:
    """Unpickling this object leaves a mark in the file it names."""

    def __init__(self, mark: str) -> None:
        self.mark = mark

    def predict(self, data: Any) -> Any:
        return np.zeros(len(data))

    def __setstate__(self, state: dict[str, Any]) -> None:
        with open(state["mark"], "a") as fh:
            fh.write("unpickled\n")
        self.__dict__.update(state)


@contextmanager
def attacker(db_url: str) -> Iterator[sa.Connection]:
    """A raw connection with the append-only triggers out of the way."""
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                for name in conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger'"
                ).scalars():
                    conn.exec_driver_sql(f"DROP TRIGGER {name}")
            else:
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")  # skips triggers
            yield conn
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free loopback port; yields its base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


class LoopbackHTTP:
    """A plain HTTP server on 127.0.0.1 (a free port) answering with ``handler`` in a thread of
    its own: the outer edge a test fakes (an identity provider, a key set, a webhook receiver).
    ``port`` 0 takes a free one; a given port lets a test bring a receiver back where it was."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        self._http = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.port = self._http.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)


def subcommands(group: click.Group) -> list[tuple[str, click.Command]]:
    """``group``'s commands by name, through click's own look-up (``list_commands`` and
    ``get_command``): the ``modelledger`` group imports a command's module only then, so its
    ``commands`` dict holds only those looked up so far."""
    ctx = click.Context(group)
    found = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    return [(name, command) for name, command in found if command is not None]
