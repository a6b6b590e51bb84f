"""How many stored events wait for the scorer, as one process knows it."""

from __future__ import annotations


class Backlog:
    """Events committed and not yet folded: counted in the database every second (other
    replicas' ingests, other scorers), and moved in between by this process's own appends
    and folds. Ingest refuses new work above `bound` (503 with Retry-After) and `/readyz`
    says so, rather than letting the scorer's lag grow without limit."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.pending = 0

    def over(self) -> bool:
        return self.pending > self.bound

    def added(self, count: int) -> None:
        self.pending += count

    def taken(self, count: int) -> None:
        self.pending = max(0, self.pending - count)

    def counted(self, count: int) -> None:
        self.pending = count
