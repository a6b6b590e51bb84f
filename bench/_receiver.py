"""A webhook receiver for the benchmarks: uvicorn serving on this process's event loop, on a
free port of 127.0.0.1. Subclasses say what to do with each request (`handle`); the tests
have their own receiver, which a benchmark must not import."""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType
from typing import Any, Self

import uvicorn
from _process import HOST


class LocalReceiver:
    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind((HOST, 0))
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_level="error",
            lifespan="off",
            access_log=False,
            interface="asgi3",
            http="httptools",
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    def handle(self, path: str, body: bytes, headers: dict[bytes, bytes]) -> int:
        """Record one request; the status to answer with."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._server.force_exit = True
        if self._task is not None:
            await self._task
        self._socket.close()

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status = self.handle(scope["path"], body, dict(scope["headers"]))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})
