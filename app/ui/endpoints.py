"""GET /ui/: a one-page dashboard over the same API (no build step, the user pastes a key)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.kit.settings import Settings

router = APIRouter(include_in_schema=False)
# The page runs only its own script and styles, served from /ui/ (no inline script, so text
# that reaches the page, such as the configured reasons, can never run), talks to this
# service only, and may not be framed (clickjacking) nor rebased.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
NOSNIFF = {"X-Content-Type-Options": "nosniff"}  # the script and styles only as what they are
# In a JSON block these cannot end the element (</script>) or start a comment (<!--); JSON
# reads the escapes back as the same characters.
_JSON_IN_HTML = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def _resource(name: str) -> str:
    return files("app.ui").joinpath(name).read_text(encoding="utf-8")


@cache
def _page(reasons: tuple[str, ...]) -> str:
    config = orjson.dumps({"reasons": list(reasons)}).decode().translate(_JSON_IN_HTML)
    return _resource("index.html").replace("__CONFIG__", config)


@cache
def _asset(name: str) -> str:
    return _resource(name)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/ui/")
async def dashboard(request: Request) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    return HTMLResponse(
        _page(tuple(settings.alert_reasons)),
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, **NOSNIFF},
    )


@router.get("/ui/app.js")
async def script() -> Response:
    return Response(_asset("app.js"), media_type="text/javascript", headers=NOSNIFF)


@router.get("/ui/app.css")
async def styles() -> Response:
    return Response(_asset("app.css"), media_type="text/css", headers=NOSNIFF)
