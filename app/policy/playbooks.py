"""What to do about each reason customers give for leaving: the policy's `playbooks`.

When a person resolves an alert with a reason, the playbook for that reason opens a plan
(app/plans): the action, who owns it and when to look again. The defaults are what a retail
chain's customer service would do; a business replaces them with PUT /v1/policy.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.kit.params import NoNul

Owner = Literal["store", "head_office"]
# A reason as RADAR_ALERT_REASONS holds it (the resolve endpoint takes up to 64 characters).
ReasonName = Annotated[str, StringConstraints(min_length=1, max_length=64), NoNul]


class Playbook(BaseModel):
    """The plan a reason opens."""

    model_config = ConfigDict(extra="forbid", strict=True)

    action: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300), NoNul
    ] = Field(description="What to do, in words the owner acts on")
    owner: Owner = Field(
        description="Who does it: the customer's store, or head office (prices, range, offers)"
    )
    follow_up_days: int = Field(
        ge=1, le=365, description="Days after the plan opens by which it is to be done"
    )


def _play(action: str, owner: Owner, days: int) -> Playbook:
    return Playbook(action=action, owner=owner, follow_up_days=days)


DEFAULT_PLAYBOOKS: dict[str, Playbook] = {
    "price": _play(
        "Review the customer's basket prices against the competitor they named; offer a price "
        "match on their usual items",
        "head_office",
        14,
    ),
    "staff_attitude": _play(
        "Store manager talks to the staff member involved, then calls the customer back to "
        "apologise and say what was done",
        "store",
        7,
    ),
    "pressure_selling": _play(
        "Store manager reviews the sales approach with the team; call the customer back to "
        "apologise and promise a no-pressure visit",
        "store",
        7,
    ),
    "service_quality": _play(
        "Store manager goes through what went wrong with the team, puts it right and calls "
        "the customer back with a goodwill voucher",
        "store",
        14,
    ),
    "wait_time": _play(
        "Check staffing at the customer's usual visiting times; tell them when the store is "
        "quietest and what changed at the tills",
        "store",
        14,
    ),
    "product_availability": _play(
        "Check stock of the items the customer missed; reserve them or order them in, and "
        "call when they are on the shelf",
        "store",
        10,
    ),
    "competitor_offer": _play(
        "Compare the competitor's offer with ours; send the customer a matched offer on what "
        "they buy most",
        "head_office",
        14,
    ),
    "moved_away": _play(
        "Tell the customer where our nearest store to their new home is, with a welcome "
        "offer there",
        "head_office",
        30,
    ),
    "life_change": _play(
        "Ask what would suit them now (delivery, other products, other hours) and follow up "
        "with a personal offer",
        "store",
        30,
    ),
    "other": _play(
        "Read the call's note; the store manager decides what to do and calls the customer back",
        "store",
        14,
    ),
}

Playbooks = Annotated[
    dict[ReasonName, Playbook],
    Field(
        max_length=200,
        description="For each reason a person may give (RADAR_ALERT_REASONS), the plan it "
        "opens: an action, its owner and the follow-up; a reason without a playbook opens none",
    ),
]
