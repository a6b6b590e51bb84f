"""GET/PUT /v1/policy and the policy file read at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.kit.settings import Settings
from app.main import create_app
from app.policy.schemas import RULES, PolicyBody
from app.policy.service import PolicyFileError, read_file
from tests.conftest import Keys

pytestmark = pytest.mark.anyio


async def test_the_defaults_apply_until_a_policy_is_stored(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    response = await client.get("/v1/policy", headers=keys.manage)
    assert response.status_code == 200
    body = response.json()
    assert (body["version"], body["source"], body["created_at"]) == (0, "default", None)
    assert body["rules"]["inactivity"] == {"enabled": True, "share": 2.5, "min_days": 14}
    assert body["false_alarms"] == {"per_100_customers": 5.0}
    assert body["horizon_days"] == 90
    assert body["loyalty"] == {"min_visits": 4, "min_tenure_days": 60, "lost_after_days": 365}


async def test_put_stores_a_new_version_with_defaults_for_what_is_omitted(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    first = await client.put(
        "/v1/policy",
        json={"horizon_days": 60, "rules": {"spend_drop": {"enabled": False}}},
        headers=keys.manage,
    )
    assert first.status_code == 200, first.text
    stored = first.json()
    assert (stored["version"], stored["source"], stored["horizon_days"]) == (1, "api", 60)
    assert stored["created_by"].startswith("admin (rk_")
    assert stored["rules"]["spend_drop"]["enabled"] is False
    assert stored["rules"]["spend_drop"]["max_ratio"] == 0.7  # the default, filled in
    assert stored["rules"]["frequency_drop"]["enabled"] is True

    second = await client.put("/v1/policy", json={}, headers=keys.manage)
    assert second.json()["version"] == 2
    current = (await client.get("/v1/policy", headers=keys.manage)).json()
    assert (current["version"], current["horizon_days"]) == (2, 90)


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"horizon_days": 3}, "/horizon_days"),
        ({"surprise": 1}, "/surprise"),
        ({"rules": {"inactivity": {"share": 0}}}, "/rules/inactivity/share"),
        ({"rules": {"inactivity": {"score_threshold": 0.8}}}, "/rules/inactivity/score_threshold"),
        ({"rules": {"frequency_drop": {"max_ratio": 1}}}, "/rules/frequency_drop/max_ratio"),
        ({"false_alarms": {"per_100_customers": 0}}, "/false_alarms/per_100_customers"),
        ({"false_alarms": {"per_100_customers": 51}}, "/false_alarms/per_100_customers"),
        ({"loyalty": {"lost_after_days": 7}}, "/loyalty/lost_after_days"),
        (
            {"rules": {"category_lapse": {"min_purchases": "many"}}},
            "/rules/category_lapse/min_purchases",
        ),
        ({"rules": {"teleport": {}}}, "/rules/teleport"),
        ({"severity": {"medium_value_at_risk": 900, "high_value_at_risk": 100}}, "/severity"),
        ({"exclusions": {"stores": [""]}}, "/exclusions/stores/0"),
        ({"exclusions": {"segments": ["vip\x00"]}}, "/exclusions/segments/0"),
        ({"min_value_at_risk": -1}, "/min_value_at_risk"),
    ],
)
async def test_an_invalid_policy_is_refused_naming_the_field_and_nothing_changes(
    client: httpx.AsyncClient, keys: Keys, body: dict[str, Any], pointer: str
) -> None:
    response = await client.put("/v1/policy", json=body, headers=keys.manage)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert pointer in {error["pointer"] for error in response.json()["errors"]}
    assert (await client.get("/v1/policy", headers=keys.manage)).json()["version"] == 0


async def test_a_policy_that_is_not_json_is_refused(client: httpx.AsyncClient, keys: Keys) -> None:
    response = await client.put(
        "/v1/policy",
        content=b"{not json",
        headers={**keys.manage, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "malformed_json"


def _write(path: Path, document: object) -> Path:
    path.write_bytes(orjson.dumps(document))
    return path


async def test_the_policy_file_is_stored_at_start_once(settings: Settings, tmp_path: Path) -> None:
    path = _write(tmp_path / "policy.json", {"horizon_days": 30, "min_value_at_risk": 50})
    configured = settings.model_copy(update={"policy_file": path})

    async def version_after_start() -> dict[str, Any]:
        app: FastAPI = create_app(configured)
        async with LifespanManager(app):
            from app.policy.service import current

            policy = await app.state.transactions.read(current)
            return {"version": policy.version, "source": policy.source, "body": policy.body}

    # The suite's database is shared: clear earlier versions so the count is ours.
    cleanup = create_app(settings)
    async with LifespanManager(cleanup):
        from tests.conftest import _truncate

        await _truncate(cleanup)
    first = await version_after_start()
    assert first["source"] == "file"
    assert first["body"] == PolicyBody(horizon_days=30, min_value_at_risk=50)
    again = await version_after_start()  # unchanged file: no new version
    assert again["version"] == first["version"]
    _write(path, {"horizon_days": 45})
    assert (await version_after_start())["version"] == first["version"] + 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{", "is not valid JSON"),
        (b'{"rules": {"inactivity": {"min_days": 0}}}', "rules.inactivity.min_days"),
        (b'{"horizon": 90}', "horizon: Extra inputs are not permitted"),
    ],
)
def test_a_bad_policy_file_is_reported_with_the_field(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "policy.json"
    path.write_bytes(content)
    with pytest.raises(PolicyFileError, match=message.replace(".", r"\.")):
        read_file(path)


def test_a_missing_policy_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="cannot read the policy file"):
        read_file(tmp_path / "absent.json")


def test_the_budget_is_shared_by_the_enabled_rules_in_proportion() -> None:
    policy = PolicyBody.model_validate(
        {
            "false_alarms": {"per_100_customers": 6},
            "rules": {
                "inactivity": {"share": 3},
                "frequency_drop": {"share": 1},
                "spend_drop": {"enabled": False, "share": 50},
                "category_lapse": {"share": 2},
            },
        }
    )
    alpha = policy.rules.significance(policy.false_alarms)
    assert alpha == pytest.approx(
        {"inactivity": 0.03, "frequency_drop": 0.01, "category_lapse": 0.02}
    )
    nothing = PolicyBody.model_validate({"rules": {rule: {"enabled": False} for rule in RULES}})
    assert nothing.rules.significance(nothing.false_alarms) == {}
