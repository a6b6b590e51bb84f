"""The two ingest endpoints served without FastAPI's router.

A POS posts every purchase: the request path is the service's hottest code. Routing a
request through FastAPI (matching it against every route, solving its dependencies) cost
about 170 us, more than storing the event. `IngestRoutes` sits inside the service's own
middleware (request ids, access log, metrics, body size limit) and answers
`POST /v1/purchases` and `POST /v1/purchases/batch` itself, with the same code the routes
run (`receive_one`, `receive_batch`), the same authentication and rate limits, and the
app's own exception handlers, so that every answer is byte for byte the routed one. The
routes stay registered: they document the endpoints, and serve whatever this leaves to
them (a query string, which the router refuses precisely).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.ingestion.endpoints import receive_batch, receive_one
from app.kit.auth import Principal, authorize, bearer_token
from app.kit.auth import Scope as KeyScope

Handler = Callable[[Request, Principal, str | None], Awaitable[Response]]
HANDLERS: dict[str, Handler] = {
    "/v1/purchases": receive_one,
    "/v1/purchases/batch": receive_batch,
}


@dataclass(frozen=True, slots=True)
class _Route:
    """What the metrics middleware reads of a matched route (its template)."""

    path_format: str


class IngestRoutes:
    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self.routes = {path: _Route(path) for path in HANDLERS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST" or scope["query_string"]:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.api
        scope["route"] = route  # (the metrics label requests by route template)
        request = Request(scope, receive, send)
        try:
            principal = await authorize(request, bearer_token(request), KeyScope.INGEST)
            handler = HANDLERS[route.path_format]
            response = await handler(request, principal, request.headers.get("idempotency-key"))
        except Exception as exc:
            response = await self._problem(request, exc)
        await response(scope, receive, send)

    async def _problem(self, request: Request, exc: Exception) -> Response:
        """The answer the app's exception handlers give (as the router's path would)."""
        for kind in type(exc).__mro__:
            handler = self.api.exception_handlers.get(kind)
            if handler is not None:
                answer = handler(request, exc)
                if not isinstance(answer, Response):
                    answer = await answer
                assert isinstance(answer, Response)
                return answer
        raise exc
