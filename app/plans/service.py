"""Opening plans from the policy's playbooks, and closing them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Connection

from app.kit.errors import Conflict, NotFound
from app.plans import repository
from app.plans.repository import PlanRow
from app.policy import service as policies


def open_for_resolution(
    connection: Connection,
    *,
    customer_id: str,
    reason: str,
    store_id: str | None,
    alert_id: int,
    actor: str,
    now: datetime,
) -> int | None:
    """The plan a resolution with `reason` belongs to: the customer's open plan for that
    reason (their other alerts resolved in the same call join it), or a new one from the
    current policy's playbook; None when the policy has no playbook for the reason.

    The caller holds the customer's lock (the alert workflow's), so two resolutions of one
    customer cannot both open one."""
    existing = repository.open_for(connection, customer_id, reason)
    if existing is not None:
        return existing
    policy = policies.current(connection)
    playbook = policy.body.playbooks.get(reason)
    if playbook is None:
        return None
    return repository.add(
        connection,
        {
            "customer_id": customer_id,
            "reason": reason,
            "action": playbook.action,
            "owner": playbook.owner,
            "store_id": store_id,
            "alert_id": alert_id,
            "opened_by": actor,
            "opened_at": now,
            "opened_on": now.date(),
            "follow_up_on": now.date() + timedelta(days=playbook.follow_up_days),
            "policy_version": policy.version,
        },
    )


def get(connection: Connection, plan_id: int) -> PlanRow:
    plan = repository.get(connection, plan_id)
    if plan is None:
        raise NotFound(f"There is no plan {plan_id}.")
    return plan


def close(
    connection: Connection,
    plan_id: int,
    status: Literal["done", "cancelled"],
    actor: str,
    note: str | None,
    now: datetime,
) -> PlanRow:
    if not repository.close(connection, plan_id, status, now, actor, note):
        plan = get(connection, plan_id)  # 404 when there is none
        when = f" at {plan.closed_at:%Y-%m-%d %H:%M} UTC" if plan.closed_at else ""
        raise Conflict(
            f"Plan {plan_id} was already {plan.status}{when} by {plan.closed_by}; a closed "
            "plan cannot change. A new resolution with the reason opens a new one.",
            code="plan_closed",
        )
    return get(connection, plan_id)
