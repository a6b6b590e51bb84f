"""RFC 9457 problem details: every error the service returns, with a stable code.

Exception tree::

    RadarError                 (500 internal_error)
    ├── BadRequest             (400 malformed_json and friends)
    ├── Unauthorized           (401 unauthorized)
    ├── Forbidden              (403 forbidden)
    ├── NotFound               (404 not_found)
    ├── Conflict               (409 event_conflict, idempotency_key_in_use, ...)
    ├── PayloadTooLarge        (413 payload_too_large)
    ├── UnsupportedMediaType   (415 unsupported_media_type)
    ├── ValidationFailed       (422 validation_error, idempotency_key_reused)
    ├── TooManyRequests        (429 rate_limited)
    └── ServiceUnavailable     (503 service_unavailable)
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match

PROBLEM_CONTENT_TYPE = "application/problem+json"
# Errors that mean "the database cannot be reached right now": answered 503 + Retry-After.
DATABASE_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,  # server gone, connection refused, too many clients
    sa_exc.InterfaceError,  # connection closed under us
    sa_exc.TimeoutError,  # no pooled connection free in time
    ConnectionError,  # raised by drivers before SQLAlchemy can wrap it
)
PROBLEM_TYPE_PREFIX = "urn:defection-radar:problem:"

logger = logging.getLogger("radar.errors")


class FieldError(BaseModel):
    pointer: str = Field(description="RFC 6901 JSON pointer to the offending field")
    code: str
    message: str


class Problem(BaseModel):
    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


class RadarError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.instance_code = code or self.code
        self.errors = errors
        self.headers = headers or {}


class BadRequest(RadarError):
    status, code, title = 400, "bad_request", "Bad request"


class Unauthorized(RadarError):
    status, code, title = 401, "unauthorized", "Missing or invalid API key"


class Forbidden(RadarError):
    status, code, title = 403, "forbidden", "API key lacks the required scope"


class NotFound(RadarError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(RadarError):
    status, code, title = 409, "conflict", "Conflict"


class Gone(RadarError):
    status, code, title = 410, "gone", "Gone"


class PayloadTooLarge(RadarError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(RadarError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class ValidationFailed(RadarError):
    status, code, title = 422, "validation_error", "The request is not valid"


class TooManyRequests(RadarError):
    status, code, title = 429, "rate_limited", "Too many requests"


class ServiceUnavailable(RadarError):
    status, code, title = 503, "service_unavailable", "Service temporarily unavailable"


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for an authenticated route: 401, 403, the given codes, 429
    (the key's rate limit) and 503."""
    return {
        code: {"model": Problem, "content": {PROBLEM_CONTENT_TYPE: {}}}
        for code in (401, 403, *codes, 429, 503)
    }


def json_pointer(*parts: str | int) -> str:
    """Build an RFC 6901 pointer, escaping `~` and `/` inside each token."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def problem_response(
    *,
    status: int,
    code: str,
    title: str,
    detail: str | None,
    request: Request | None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    if request is not None:
        body["instance"] = request.url.path
        request_id = request.scope.get("state", {}).get("request_id")
        if request_id:
            body["request_id"] = request_id
    if errors:
        body["errors"] = [e.model_dump() for e in errors]
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_CONTENT_TYPE, headers=headers
    )


def _from_request_validation(request: Request, exc: RequestValidationError) -> Response:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem_response(
            status=400,
            code="malformed_json",
            title="Malformed JSON",
            detail="The request body is not valid JSON.",
            request=request,
        )
    fields = [
        FieldError(
            pointer=json_pointer(*[p for p in e["loc"] if p != "body"])
            if e["loc"][:1] == ("body",)
            else json_pointer(*e["loc"]),
            code=e["type"],
            message=e["msg"],
        )
        for e in errors
    ]
    return problem_response(
        status=422,
        code="validation_error",
        title=ValidationFailed.title,
        detail=f"{len(fields)} field(s) are not valid.",
        request=request,
        errors=fields,
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. (Starlette's own 405 names only the
    first route whose path matched, but several routes may share a path.)"""
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]


def install_error_handlers(app: FastAPI) -> None:
    async def radar_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RadarError)
        if isinstance(exc, ServiceUnavailable):
            # Expected while the database is away or the service stops: no traceback.
            logger.warning("request refused: %s (%s)", exc.instance_code, exc.detail)
        elif exc.status >= 500:
            logger.exception("request failed", exc_info=exc)
        return problem_response(
            status=exc.status,
            code=exc.instance_code,
            title=exc.title,
            detail=exc.detail,
            request=request,
            errors=exc.errors,
            headers=exc.headers,
        )

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _from_request_validation(request, exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem_response(
            status=exc.status_code,
            code=_HTTP_CODES.get(exc.status_code, "http_error"),
            title=str(exc.detail) if exc.detail else "HTTP error",
            detail=None,
            request=request,
            headers=headers,
        )

    async def database_error(request: Request, exc: Exception) -> Response:
        # A database that is down or restarting is a temporary condition the client may retry.
        logger.error("database unavailable: %s", type(exc).__name__)
        return problem_response(
            status=503,
            code="database_unavailable",
            title=ServiceUnavailable.title,
            detail="The database is not reachable; retry shortly.",
            request=request,
            headers={"Retry-After": "2"},
        )

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error", exc_info=exc)
        return problem_response(
            status=500,
            code="internal_error",
            title=RadarError.title,
            detail="An unexpected error occurred; it has been logged.",
            request=request,
        )

    async def client_disconnected(request: Request, exc: Exception) -> Response:
        # The client hung up (or was cut off by the body deadline) before its body arrived:
        # nothing happened, nobody will read an answer; not an error of ours.
        logger.info("client went away before its request body arrived")
        return problem_response(
            status=408,
            code="request_timeout",
            title="Request timeout",
            detail="The request body did not arrive.",
            request=request,
        )

    app.add_exception_handler(RadarError, radar_error)
    app.add_exception_handler(ClientDisconnect, client_disconnected)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for unavailable in DATABASE_UNAVAILABLE_ERRORS:
        app.add_exception_handler(unavailable, database_error)
    app.add_exception_handler(Exception, unexpected_error)
