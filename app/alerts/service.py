"""Evaluating customers against the policy, and opening, updating and resolving their alerts.

Runs inside the transaction that changed the customers (an ingest group commit, or a sweep
batch), so an alert never disagrees with the pattern it was computed from, and every alert
change is recorded in the change feed by the same commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial

from sqlalchemy import Connection, text

from app.alerts import holdout, queries, repository, rules
from app.alerts.repository import AlertRow
from app.customers import repository as customers
from app.customers.state import CustomerState
from app.kit.db import Money, TransactionRunner, utcnow
from app.kit.errors import DATABASE_UNAVAILABLE_ERRORS
from app.kit.metrics import Metrics
from app.kit.periodic import Job
from app.kit.settings import Settings
from app.policy import service as policies
from app.policy.schemas import RULES, Rule
from app.scoring import service as scoring
from app.setaside import repository as setaside
from app.webhooks import outbox

logger = logging.getLogger("radar.alerts")

# Why an alert was resolved without anyone working it.
CUSTOMER_RETURNED = "customer_returned"  # they visited again and the rule no longer holds
CONDITION_CLEARED = "condition_cleared"  # the rule no longer holds (windows moved, new model)
POLICY_CHANGED = "policy_changed"  # the rule was disabled or the customer excluded
# rules.MUTED, "explained_by_inactivity": the customer went silent, and that alert says it all

_VERSIONS = text(
    "SELECT (SELECT coalesce(max(version), 0) FROM policies), "
    "(SELECT coalesce(max(id), 0) FROM model_fits)"
)


@dataclass(slots=True)
class AlertChanges:
    """What one evaluation decided, written after the customers' rows."""

    opened: list[dict[str, object]] = field(default_factory=list)
    changed: list[tuple[str | None, AlertRow]] = field(default_factory=list)  # (event, alert)
    # The evaluated patterns, so that publishing needs not read them again.
    states: dict[str, CustomerState] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.opened or self.changed)


class Evaluator:
    """Applies the current policy and population model; both are re-read only when a newer
    version exists (one small query per transaction), so every replica follows a PUT at once.
    """

    def __init__(self, escalate_after: timedelta = timedelta(0)) -> None:
        self._policy = policies.DEFAULT_POLICY
        self._model = scoring.PRIOR_MODEL
        self._escalate_after = escalate_after  # 0: never

    def context(
        self, connection: Connection
    ) -> tuple[policies.CurrentPolicy, scoring.PopulationModel]:
        policy_version, fit_id = connection.execute(_VERSIONS).one()
        if policy_version != self._policy.version:
            self._policy = policies.current(connection)
        if fit_id != self._model.fit_id:
            self._model = scoring.current_model(connection)
        return self._policy, self._model

    def evaluate(
        self,
        connection: Connection,
        states: Sequence[CustomerState],
        now: datetime,
    ) -> AlertChanges:
        """Decide every customer's alerts and set their `next_check_at`; write nothing yet.

        Only customers who could defect (enough visits to be loyal, now or with tenure) or
        who have an unresolved alert are scored: for the others nothing can happen before
        their next visit. `find_crossings` also works out the day each customer's defection
        score would reach the inactivity threshold (a bisection: the sweeper does it, for a
        whole batch at once); without it the next check is the first day the rule could
        fire at all, and the sweeper finds the exact day then.
        """
        changes = AlertChanges()
        if not states:
            return changes
        current, model = self.context(connection)
        policy = current.body
        as_of = now.date()
        open_alerts: dict[tuple[str, str], AlertRow] = {
            (alert.customer_id, alert.rule): alert
            for alert in repository.unresolved(connection, [s.customer_id for s in states])
        }
        open_customers = {customer for customer, _ in open_alerts}
        candidates = []
        for state in states:
            if state.customer_id in open_customers or rules.may_defect(state, policy):
                candidates.append(state)
            else:
                state.next_check_at = None
        if not candidates:
            return changes
        scores = scoring.score_many(
            candidates,
            model.params,
            as_of,
            policy.horizon_days,
            spend=model.spend,
            value=scoring.ValueSettings(
                policy.value.horizon_days, policy.value.annual_discount_rate
            ),
        )
        for state, score in zip(candidates, scores, strict=True):
            evaluation = rules.evaluate(
                state, score, policy, now, has_open_alerts=state.customer_id in open_customers
            )
            state.next_check_at = _with_alert_deadlines(
                evaluation.next_check_at,
                [open_alerts.get((state.customer_id, rule)) for rule in RULES],
                now,
                self._escalate_after,
            )
            for rule in RULES:
                _decide(
                    changes,
                    state,
                    score,
                    evaluation,
                    rule,
                    open_alerts.get((state.customer_id, rule)),
                    current,
                    now,
                    self._escalate_after,
                )
        changes.states = {s.customer_id: s for s in candidates}
        if changes.opened:
            _spare_resolved_lapses(connection, changes, changes.states)
            _assign_arms(changes.opened, open_alerts.values(), policy.holdout)
        return changes

    def write(self, connection: Connection, changes: AlertChanges) -> None:
        if not changes:
            return
        opened = repository.insert_alerts(connection, changes.opened)
        repository.link_cases(connection, opened)
        repository.update_alerts(connection, [alert for _, alert in changes.changed])
        events = [("alert.opened", alert) for alert in opened]
        events += [(kind, alert) for kind, alert in changes.changed if kind is not None]
        if events:
            now = events[0][1].updated_at
            repository.record_events(connection, events, now)
            summaries = {
                c: _summary(changes.states[c])
                for c in {alert.customer_id for _, alert in events}
                if c in changes.states
            }
            outbox.enqueue_alert_events(connection, events, now, customers=summaries)


def _summary(state: CustomerState) -> dict[str, object]:
    def amount(units: int) -> Decimal:  # as the Money column reads it back
        return (Decimal(units) / Money.SCALE).normalize()

    return outbox.customer_summary(
        state.customer_id,
        state.first_visit_on,
        state.last_visit_on,
        state.visit_days,
        state.home_store,
        state.segment,
        amount(state.purchase_amount) - amount(state.refund_amount),
    )


def _decide(
    changes: AlertChanges,
    state: CustomerState,
    score: scoring.Scores | None,
    evaluation: rules.Evaluation,
    rule: Rule,
    alert: AlertRow | None,
    current: policies.CurrentPolicy,
    now: datetime,
    escalate_after: timedelta,
) -> None:
    verdict = evaluation.verdicts.get(rule)
    stake = score.value_if_retained * verdict.stake if score and verdict else 0.0
    value = Money.clamp(stake)
    severity = rules.severity_of(float(value), current.body)
    if verdict is not None and verdict.firing and (evaluation.eligible or alert is not None):
        if alert is None:
            changes.opened.append(
                {
                    "customer_id": state.customer_id,
                    "rule": rule,
                    "status": "open",
                    "severity": severity,
                    "score": verdict.score,
                    "value_at_risk": value,
                    "store_id": state.home_store,
                    "evidence": verdict.evidence,
                    "policy_version": current.version,
                    "opened_at": now,
                    "updated_at": now,
                    "resolved_at": None,
                    "resolution": None,
                }
            )
            return
        # Still firing: refresh the numbers; a change of severity is news to announce, and so
        # is the end of a snooze (the alert is back in the open queue).
        kind = "alert.updated" if alert.severity != severity else None
        if alert.status == "snoozed" and (
            alert.snoozed_until is None or alert.snoozed_until <= now
        ):
            alert.status, alert.snoozed_until, kind = "open", None, "alert.updated"
        if escalation_due(alert, escalate_after, now):
            alert.escalated_at, kind = now, "alert.escalated"  # acknowledged, then left
        alert.severity, alert.score, alert.value_at_risk = severity, verdict.score, value
        alert.evidence, alert.updated_at = verdict.evidence, now
        changes.changed.append((kind, alert))
        return
    if alert is None:
        return
    if verdict is None or evaluation.excluded:
        reason = POLICY_CHANGED
    elif verdict.muted_by is not None:
        reason = rules.MUTED
    elif state.last_visit_on is not None and state.last_visit_on >= alert.opened_at.date():
        reason = CUSTOMER_RETURNED
    else:
        reason = CONDITION_CLEARED
    alert.status, alert.resolution, alert.resolved_at, alert.updated_at = (
        "resolved",
        reason,
        now,
        now,
    )
    if verdict is not None:
        alert.evidence = verdict.evidence
    changes.changed.append(("alert.resolved", alert))


def _assign_arms(
    opened: list[dict[str, object]], unresolved: Iterable[AlertRow], share: float
) -> None:
    """Each new alert's arm and case: those of the customer's case still open (one call
    covers all their reasons), or a new case's, drawn from its first alert (rule order)."""
    ongoing: dict[str, tuple[str | None, int]] = {}
    for alert in unresolved:  # as decided now: an alert resolving here ends its case
        if alert.status != "resolved":
            ongoing.setdefault(alert.customer_id, (alert.arm, alert.case_id or alert.id))
    new: dict[str, str | None] = {}
    for row in opened:
        customer = str(row["customer_id"])
        if customer in ongoing:
            row["arm"], row["case_id"] = ongoing[customer]
            continue
        if customer not in new:
            new[customer] = holdout.arm_for(customer, str(row["rule"]), str(row["severity"]), share)
        row["arm"], row["case_id"] = new[customer], None  # linked once inserted


def escalation_due(alert: AlertRow, escalate_after: timedelta, now: datetime) -> bool:
    return escalate_after > timedelta(0) and (
        alert.status == "acknowledged"
        and alert.escalated_at is None
        and alert.acknowledged_at is not None
        and alert.acknowledged_at + escalate_after <= now
    )


def _with_alert_deadlines(
    next_check: datetime | None,
    alerts: Sequence[AlertRow | None],
    now: datetime,
    escalate_after: timedelta,
) -> datetime | None:
    """The next check, brought forward to the end of a snooze (the alert reopens then) and
    to the escalation of an acknowledged alert nobody resolved."""
    moments = [next_check]
    for alert in alerts:
        if alert is None:
            continue
        if alert.status == "snoozed":
            moments.append(alert.snoozed_until)
        if escalation_due(alert, escalate_after, datetime.max.replace(tzinfo=UTC)):
            assert alert.acknowledged_at is not None
            moments.append(alert.acknowledged_at + escalate_after)
    known = [moment for moment in moments if moment is not None]
    return max(min(known), now) if known else None


def _spare_resolved_lapses(
    connection: Connection, changes: AlertChanges, states: dict[str, CustomerState]
) -> None:
    """Do not reopen what a person resolved: after someone closed a customer's alert (won
    back, lost, not a defection...), the same rule opens a new one only once the customer
    has visited since, and lapsed again."""
    pairs = [(str(row["customer_id"]), str(row["rule"])) for row in changes.opened]
    resolved = repository.manually_resolved(connection, pairs)
    if not resolved:
        return

    def still_new(row: dict[str, object]) -> bool:
        at = resolved.get((str(row["customer_id"]), str(row["rule"])))
        last = states[str(row["customer_id"])].last_visit_on
        return at is None or (last is not None and last > at.date())

    changes.opened = [row for row in changes.opened if still_new(row)]


@dataclass(frozen=True, slots=True)
class SweepResult:
    customers: int
    batches: int
    set_aside: int = 0  # customers that failed alone, and wait SET_ASIDE_FOR


SWEEPER = "sweeper"  # the loop's name among set-aside items
# How long a customer the sweeper could not evaluate waits before it is tried again (a
# new event of theirs, or a retry through the API, comes sooner).
SET_ASIDE_FOR = timedelta(hours=1)


async def sweep(
    transactions: TransactionRunner,
    evaluator: Evaluator,
    clock: Callable[[], datetime],
    *,
    batch_size: int = 1000,
    max_batches: int = 1000,
    should_stop: Callable[[], bool] = lambda: False,
) -> SweepResult:
    """Re-evaluate every customer whose next check has come, batch by batch.

    Each batch is its own transaction: claim due customers (on PostgreSQL `FOR UPDATE SKIP
    LOCKED`, so replicas sweeping at once take disjoint customers and never wait for ingest),
    evaluate, store their next checks and alert changes, commit. `should_stop` is asked
    between batches (shutdown): a batch is never interrupted, the rest waits for next time.
    A batch that fails for anything but the database being away is swept again customer by
    customer; one that fails alone is set aside (`set_aside_items`), so that the most
    overdue customer cannot keep every other from being swept.
    """
    total = batches = set_aside = 0
    while batches < max_batches and not should_stop():
        now = clock()
        try:
            done = await transactions.run(
                partial(_sweep_batch, evaluator=evaluator, now=now, limit=batch_size)
            )
        except DATABASE_UNAVAILABLE_ERRORS:
            raise
        except Exception:
            logger.exception("sweep batch failed; sweeping its customers one by one")
            done, failed = await _sweep_one_by_one(transactions, evaluator, now, batch_size)
            set_aside += failed
        total += done
        batches += 1
        if done < batch_size:
            break
    if total:
        logger.info("sweep done", extra={"customers": total, "batches": batches})
    return SweepResult(total, batches, set_aside)


def _sweep_batch(
    connection: Connection, evaluator: Evaluator, now: datetime, limit: int, customer: str = ""
) -> int:
    """One transaction: due customers (or the one named), evaluated and stored."""
    if customer:
        states = customers.claim_one(connection, customer, now)
    else:
        states = customers.claim_due(connection, now, limit)
    changes = evaluator.evaluate(connection, states, now)
    customers.save_next_checks(connection, states)
    evaluator.write(connection, changes)
    setaside.clear(connection, SWEEPER, [s.customer_id for s in states])
    return len(states)


async def _sweep_one_by_one(
    transactions: TransactionRunner, evaluator: Evaluator, now: datetime, limit: int
) -> tuple[int, int]:
    """Sweep the batch's customers one transaction each; returns (swept, set aside)."""
    due = await transactions.read(lambda c: customers.due_ids(c, now, limit))
    failed = 0
    for customer_id in due:
        try:
            await transactions.run(
                partial(_sweep_batch, evaluator=evaluator, now=now, limit=1, customer=customer_id)
            )
        except DATABASE_UNAVAILABLE_ERRORS:
            raise
        except Exception as exc:
            logger.exception("customer set aside by the sweeper", extra={"customer": customer_id})
            error = f"{type(exc).__name__}: {exc}"
            await transactions.run(
                partial(_set_aside, customer_id=customer_id, error=error, now=now)
            )
            failed += 1
    return len(due), failed


def _set_aside(connection: Connection, customer_id: str, error: str, now: datetime) -> None:
    customers.check_later(connection, customer_id, now + SET_ASIDE_FOR)
    setaside.record(connection, SWEEPER, customer_id, error, now)


def sweep_again(connection: Connection, customer_id: str, now: datetime) -> None:
    """A set-aside customer, due for the sweeper's next round."""
    customers.check_later(connection, customer_id, now)


def periodic_jobs(
    settings: Settings,
    transactions: TransactionRunner,
    evaluator: Evaluator,
    clock: Callable[[], datetime],
    metrics: Metrics,
    should_stop: Callable[[], bool],
) -> list[Job]:
    """The alerts' loops: the sweeper, and the change feed's retention."""

    async def sweep_due() -> SweepResult:
        started = time.perf_counter()
        result = await sweep(
            transactions,
            evaluator,
            clock,
            batch_size=settings.sweep_batch_size,
            should_stop=should_stop,
        )
        metrics.swept.inc(result.customers)
        metrics.set_aside.labels(SWEEPER).inc(result.set_aside)
        metrics.sweep_duration.observe(time.perf_counter() - started)
        return result

    return [
        Job(
            settings.housekeeping_interval,
            "purge-alert-feed",
            lambda: transactions.run(
                lambda c: queries.purge_feed(c, utcnow(), settings.alert_feed_retention)
            ),
        ),
        Job(settings.sweep_interval, "sweep-due-customers", sweep_due),
    ]
