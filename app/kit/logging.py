"""Structured JSON logs with the request id; never API keys or payloads."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


# These log SQL with its parameters (customer ids, amounts) at DEBUG: never let them.
_PARAMETER_LOGGERS = ("aiosqlite", "asyncpg", "sqlalchemy.engine", "sqlalchemy.pool")


# These log every request's URL at INFO: a webhook URL often carries the receiver's token.
_URL_LOGGERS = ("httpx", "httpcore")


def silence_parameter_logs() -> None:
    for name in (*_PARAMETER_LOGGERS, *_URL_LOGGERS):
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if json:
        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",  # ISO 8601, UTC
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The access log below replaces uvicorn's, which would log raw query strings.
    logging.getLogger("uvicorn.access").disabled = True
    # /readyz reads the schema revision on every probe; alembic would log that each time.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
