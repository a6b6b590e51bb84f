"""The framework ceiling for `bench/ingest.py`: bare FastAPI validating one purchase event.

No middleware, no authentication, no database: the endpoint takes the service's own
`PurchaseEventIn` as its body parameter (so FastAPI and pydantic do exactly the validation
the service does) and answers 201. Served by the same single-process uvicorn as the service:

    uvicorn bench._ceiling:app --app-dir . --host 127.0.0.1 --port 8100 \
        --log-level warning --no-access-log
"""

from __future__ import annotations

from fastapi import FastAPI, status

from app.ingestion.schemas import PurchaseEventIn

app = FastAPI(title="Ingest ceiling", docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/ingest", status_code=status.HTTP_201_CREATED)
async def ingest(event: PurchaseEventIn) -> dict[str, str]:
    return {"status": "accepted"}
