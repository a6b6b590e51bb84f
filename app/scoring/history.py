"""From purchase dates to the per-customer summary the BTYD models need."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import date

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class Summary:
    """Per customer, in days: repeat purchase days `x`, last minus first `t_x`, age `T`."""

    customers: list[Hashable]
    x: NDArray[np.float64]
    t_x: NDArray[np.float64]
    T: NDArray[np.float64]


def summarise(purchases: Iterable[tuple[Hashable, date]], as_of: date) -> Summary:
    """Summarise purchases made on or before `as_of`; several on one day are one visit."""
    days: dict[Hashable, set[date]] = {}
    for customer, day in purchases:
        if day <= as_of:
            days.setdefault(customer, set()).add(day)
    customers = list(days)
    first = [min(days[c]) for c in customers]
    last = [max(days[c]) for c in customers]
    return Summary(
        customers=customers,
        x=np.array([len(days[c]) - 1 for c in customers], dtype=np.float64),
        t_x=np.array([(lst - fst).days for fst, lst in zip(first, last, strict=True)], float),
        T=np.array([(as_of - fst).days for fst in first], dtype=np.float64),
    )
