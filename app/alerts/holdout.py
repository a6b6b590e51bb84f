"""The outreach experiment: which new cases are held out as a control group.

A case (a customer's alerts, from the first that opened while none was unresolved) is
assigned when it opens: *control* (tracked like every other case, never on the call list nor
sent to CRMs) with the policy's `holdout` probability, else *contact*. The draw is a keyed
hash of the customer, the opening alert's rule and its severity, not a random number:

- it is auditable: anyone can recompute it (`arm_for`) from what the alert shows;
- it is stable: re-evaluating, rebuilding the patterns or running several replicas gives the
  same arm, whatever order events arrive in, with no state to keep;
- it is nested: raising the holdout from 0.1 to 0.2 keeps every control case in control;
- each stratum (rule x severity) is its own randomised experiment at the same share, so the
  report can compare the arms within strata. Exact balance within a stratum (permuted
  blocks) would need a counter per stratum, which depends on the order cases open in and
  could not be recomputed from the events; with a draw per case, the share in a stratum of
  n cases is within about 2 sqrt(h(1 - h) / n) of h.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Arm = Literal["contact", "control"]
ARMS: tuple[Arm, ...] = ("contact", "control")
# Domain separation: the same customer id hashed elsewhere never gives the same draw.
_PERSON = b"radar-holdout-v1"


def draw(customer_id: str, rule: str, severity: str) -> float:
    """The case's uniform draw in [0, 1): BLAKE2b-64 of the stratum and the customer."""
    key = f"{rule}\x1f{severity}\x1f{customer_id}".encode()
    digest = hashlib.blake2b(key, digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "big") / 2**64


def arm_for(customer_id: str, rule: str, severity: str, holdout: float) -> Arm | None:
    """The arm of a case opened by an alert of this rule and severity; None without a
    holdout (no experiment runs, and the case is called like every other)."""
    if holdout <= 0:
        return None
    return "control" if draw(customer_id, rule, severity) < holdout else "contact"
