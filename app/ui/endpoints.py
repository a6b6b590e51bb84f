"""GET /ui/: a one-page dashboard over the same API (no build step, the user pastes a key)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.kit.settings import Settings

router = APIRouter(include_in_schema=False)
# The page's script and styles are inline; it talks to this service only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self'"
)


@cache
def _page(reasons: tuple[str, ...]) -> str:
    template = files("app.ui").joinpath("index.html").read_text(encoding="utf-8")
    return template.replace("__REASONS__", orjson.dumps(list(reasons)).decode())


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/ui/")
async def dashboard(request: Request) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    return HTMLResponse(
        _page(tuple(settings.alert_reasons)),
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY},
    )
