"""The OpenAPI document, rendered deterministically for `openapi/openapi.json`."""

from __future__ import annotations

import json

from app.kit.settings import Settings
from app.main import create_app


def render_openapi() -> str:
    app = create_app(Settings(migrate_on_start=False))
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
