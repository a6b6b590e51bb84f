from __future__ import annotations

import logging

import httpx
import orjson
import pytest

from app.kit.logging import configure_logging
from tests.conftest import Keys, event

pytestmark = pytest.mark.anyio


async def test_logs_never_contain_keys_or_payloads(
    client: httpx.AsyncClient, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_customer = "card-SECRET-4410"
    await client.post("/v1/purchases", json=event(customer_id=secret_customer), headers=keys.ingest)
    await client.post(
        "/v1/purchases/batch",
        json={"events": [event("e-2", customer_id=secret_customer, amount="-1")]},
        headers=keys.ingest,
    )
    await client.post("/v1/keys", json={"name": "n", "scopes": ["read"]}, headers=keys.manage)
    await client.get("/v1/keys", headers={"Authorization": "Bearer rk_00000000_" + "A" * 32})

    records = [str(vars(record)) for record in caplog.records]
    assert any("/v1/purchases" in r for r in records), "the access log should have run"
    everything = "\n".join(records)
    for key in keys.raw.values():
        assert key not in everything
        assert key[len("rk_00000000_") :] not in everything  # the secret part alone
    assert "A" * 32 not in everything
    assert secret_customer not in everything


def test_json_log_lines_carry_the_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    from app.kit.logging import request_id_var

    configure_logging("INFO", json=True)
    try:
        token = request_id_var.set("req-42")
        logging.getLogger("radar.test").info("hello", extra={"status": 201})
        request_id_var.reset(token)
    finally:
        logging.getLogger().handlers.clear()
    line = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["message"], line["request_id"], line["status"], line["level"]) == (
        "hello",
        "req-42",
        201,
        "INFO",
    )


def test_json_log_time_is_iso_8601_utc(capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import datetime

    configure_logging("INFO", json=True)
    try:
        logging.getLogger("radar.test").info("tick")
    finally:
        logging.getLogger().handlers.clear()
    line = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert datetime.fromisoformat(line["time"]).utcoffset() is not None
