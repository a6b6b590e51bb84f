"""The OpenAPI document: generated from the app, then made to describe what it really does.

Two corrections to FastAPI's output: the ingest endpoints parse their bodies themselves, so
their request schemas are added here; and every 422 is our problem+json, not FastAPI's
default validation-error shape.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from app.ingestion.schemas import BatchIn, PurchaseEventIn
from app.kit.errors import PROBLEM_CONTENT_TYPE

REF_TEMPLATE = "#/components/schemas/{model}"
_PROBLEM_422 = {
    "description": "The request is not valid: `errors[]` names each bad field",
    "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    _, extra = models_json_schema(
        [(PurchaseEventIn, "validation"), (BatchIn, "validation")], ref_template=REF_TEMPLATE
    )
    schemas.update(extra.get("$defs", {}))
    for operations in document["paths"].values():
        for operation in operations.values():
            if "422" in operation.get("responses", {}):
                operation["responses"]["422"] = _PROBLEM_422
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = document
    return document


def render_openapi() -> str:
    from app.kit.settings import Settings
    from app.main import create_app

    app = create_app(Settings(migrate_on_start=False))
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
