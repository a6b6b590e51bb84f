"""The OpenAPI document: generated from the app, then made to describe what it really does.

Corrections to FastAPI's output: the ingest endpoints parse their bodies themselves, so
their request schemas are added here; every 422 is our problem+json, not FastAPI's default
validation-error shape, and every /v1 operation may get one (an unknown query parameter);
and every operation that takes a body documents the 400 (not JSON) and 413 (too large)
answers it may get before any route code runs.
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
_PROBLEM = {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_PROBLEM_422 = {
    "description": "The request is not valid: `errors[]` names each bad field",
    "content": _PROBLEM,
}
_BODY_PROBLEMS = {
    "400": {"description": "The body is not valid JSON (`malformed_json`)", "content": _PROBLEM},
    "413": {"description": "The body is larger than the service accepts", "content": _PROBLEM},
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
    for path, operations in document["paths"].items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses or path.startswith("/v1/"):  # (an unknown query parameter)
                responses["422"] = _PROBLEM_422
            if "requestBody" in operation:
                for status, answer in _BODY_PROBLEMS.items():
                    responses.setdefault(status, answer)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = document
    return document


def render_openapi() -> str:
    from app.kit.settings import Settings
    from app.main import create_app

    app = create_app(Settings(migrate_on_start=False))
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
