"""The HTTP server's connection protocol: uvicorn's httptools one, with deadlines.

uvicorn times out only idle keep-alive connections. A client that opens a connection and
sends nothing, sends its headers a byte at a time, or stops half-way through a body, would
hold the connection (and, for a body, a request task) for ever; a few hundred such clients
exhaust the server. Here the headers of each request must arrive within `header_timeout` of
its first byte (or of the connection, for the first request), and its body within
`body_timeout` of the headers; past that the client gets a 408 and the connection closes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.kit.settings import get_settings

_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)
_BODY = (
    b'{"type":"urn:defection-radar:problem:request_timeout","title":"Request timeout",'
    b'"status":408,"code":"request_timeout","detail":"The request did not arrive in time."}'
)


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's `http=` protocol class; the timeouts come from RADAR_HEADER_TIMEOUT and
    RADAR_BODY_TIMEOUT (read here, as each worker process builds its own)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout = settings.header_timeout.total_seconds()
        self.body_timeout = settings.body_timeout.total_seconds()
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = getattr(self, "cycle", None)
        if cycle is None or not cycle.response_started:
            self.transport.write(_TIMED_OUT % (len(_BODY), _BODY))
        if cycle is not None:
            cycle.disconnected = True  # the request's task sees the client gone
            cycle.message_event.set()
        self.transport.close()
