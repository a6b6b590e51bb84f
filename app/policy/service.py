"""Storing, reading and loading the policy: the newest stored version applies everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import orjson
from pydantic import ValidationError
from sqlalchemy import Connection, insert, or_, select, update

from app.kit.errors import FieldError, ValidationFailed, json_pointer
from app.models import Customer, Policy
from app.policy.schemas import PolicyBody, PolicyOut


@dataclass(frozen=True, slots=True)
class CurrentPolicy:
    body: PolicyBody
    version: int
    source: Literal["default", "api", "file"]
    created_by: str | None = None
    created_at: datetime | None = None

    def out(self) -> PolicyOut:
        return PolicyOut(
            **self.body.model_dump(),
            version=self.version,
            source=self.source,
            created_by=self.created_by,
            created_at=self.created_at,
        )


DEFAULT_POLICY = CurrentPolicy(PolicyBody(), 0, "default")


def current(connection: Connection) -> CurrentPolicy:
    row = connection.execute(select(Policy).order_by(Policy.version.desc()).limit(1)).first()
    if row is None:
        return DEFAULT_POLICY
    policy = row[0] if isinstance(row[0], Policy) else row
    source: Literal["api", "file"] = "file" if policy.source == "file" else "api"
    return CurrentPolicy(
        PolicyBody.model_validate(policy.body),
        int(policy.version),
        source,
        policy.created_by,
        policy.created_at,
    )


def replace(
    connection: Connection,
    body: PolicyBody,
    *,
    source: Literal["api", "file"],
    created_by: str | None,
    now: datetime,
) -> CurrentPolicy:
    """Store a new version and make every customer due, so the sweeper re-evaluates them all
    under it (one indexed UPDATE; the evaluations themselves happen in the sweeper's batches).
    """
    version = connection.execute(
        insert(Policy)
        .values(
            body=body.model_dump(mode="json"),
            source=source,
            created_by=created_by,
            created_at=now,
        )
        .returning(Policy.version)
    ).scalar_one()
    connection.execute(
        update(Customer)
        .where(or_(Customer.next_check_at.is_(None), Customer.next_check_at > now))
        .values(next_check_at=now)
    )
    return CurrentPolicy(body, int(version), source, created_by, now)


def with_known_reasons(body: PolicyBody, reasons: Sequence[str]) -> PolicyBody:
    """The body as it may be stored where people give `reasons`: a playbook it names for
    another reason is refused, naming it (it could never open a plan); omitted playbooks
    default to those of the configured reasons, so the stored policy can be sent back."""
    if "playbooks" not in body.model_fields_set:
        known = {reason: play for reason, play in body.playbooks.items() if reason in reasons}
        return body.model_copy(update={"playbooks": known})
    unknown = [reason for reason in body.playbooks if reason not in reasons]
    if unknown:
        raise ValidationFailed(
            "A playbook must be for one of the reasons people may give (RADAR_ALERT_REASONS).",
            errors=[
                FieldError(
                    pointer=json_pointer("playbooks", reason),
                    code="unknown_reason",
                    message=f"not a reason people may give: one of {', '.join(reasons)}",
                )
                for reason in unknown
            ],
        )
    return body


class PolicyFileError(ValueError):
    pass


def read_file(path: Path) -> PolicyBody:
    """A policy from a JSON file; every problem is reported with the field it concerns."""
    try:
        document = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise PolicyFileError(f"cannot read the policy file {path}: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise PolicyFileError(f"the policy file {path} is not valid JSON: {exc}") from exc
    try:
        return PolicyBody.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise PolicyFileError(f"the policy file {path} is invalid: {problems}") from exc


def apply_file(
    connection: Connection, path: Path, now: datetime, reasons: Sequence[str] | None = None
) -> CurrentPolicy:
    """At start: store the file's policy as a new version unless it is already the current one."""
    body = read_file(path)
    if reasons is not None:
        try:
            body = with_known_reasons(body, reasons)
        except ValidationFailed as exc:
            problems = "; ".join(f"{e.pointer}: {e.message}" for e in exc.errors or [])
            raise PolicyFileError(f"the policy file {path} is invalid: {problems}") from exc
    latest = current(connection)
    if latest.version > 0 and latest.body == body:
        return latest
    return replace(connection, body, source="file", created_by=str(path)[:100], now=now)
