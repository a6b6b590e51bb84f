"""Judging a replay: how many alerts the policy raised, and how many of them were right.

Everything is counted in days. An alert's day is the simulated day it opened on; a purchase's
day is its visit day. With H the horizon and E the last day of the data:

- an alert opened on day t is judgeable when t + H <= E, and a true positive when its
  customer made no purchase on the days after t up to t + H (precision);
- a customer "really stopped" when their last purchase L has L + H <= E and they had at least
  the policy's loyalty `min_visits` visit days (only loyal customers can be alerted); they
  were caught when an alert opened for them on day L or later, and the lead time is
  (L + H) - (that first alert's day): positive when the alert came before they had been
  silent H days (recall).

Beside the rules, two baselines (`baselines.py`) run on the same purchases and the same
simulated days and are judged the same way: recency (silent k times the customer's own mean
gap; k = 2 and 3, and the k that raises about as many alerts as the inactivity rule) and
purchase count (fewer than half the visits of the H days before in the last H days).

The report holds plain values only (dates and money as strings), so it serialises as it is.
"""

from __future__ import annotations

import bisect
import html
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from app.backtest import baselines
from app.backtest.replay import OpenedAlert, Reject, Replay
from app.policy.schemas import RULES

ALL = "all"  # the row of every rule together
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class RuleResult:
    rule: str
    enabled: bool
    alerts: int
    judgeable: int
    too_recent: int  # opened less than H days before the end of the data
    true_positives: int
    precision: float | None  # None: nothing judgeable
    caught: int  # customers who really stopped and were alerted afterwards
    recall: float | None  # None: nobody stopped
    median_lead_days: float | None
    value_at_risk: str | None  # of every alert, as announced when it opened (None: unpriced)
    value_at_risk_true_positives: str | None


RECENCY_MATCHED = "recency_matched"
COUNT_DROP = "purchase_count"


@dataclass(frozen=True, slots=True)
class BaselineResult(RuleResult):
    """A baseline judged like a rule (it has no value model: no value at risk)."""

    definition: str  # in plain words
    k: float | None = None  # recency: silent at least k times the customer's own mean gap
    window_days: int | None = None  # purchase count: the two windows' length (H)


@dataclass(frozen=True, slots=True)
class WeekCounts:
    week: str  # the Monday that starts the ISO week
    alerts: dict[str, int]  # rule -> alerts opened that week


@dataclass(frozen=True, slots=True)
class RejectOut:
    line: int
    field: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Report:
    file: str
    horizon_days: int
    step_days: int
    min_visits: int
    first_day: str | None
    last_day: str | None
    days_replayed: int
    events_read: int
    accepted: int
    duplicates: int
    rejected: int
    customers: int
    eligible_customers: int  # with at least min_visits visit days
    stopped: int
    rules: list[RuleResult]  # one per rule, then ALL
    baselines: list[BaselineResult]  # on the same days, judged the same way
    weeks: list[WeekCounts]
    reject_reasons: dict[str, int] = field(default_factory=dict)  # "field: code" -> rows
    rejects: list[RejectOut] = field(default_factory=list)  # the first few

    @property
    def overall(self) -> RuleResult:
        return self.rules[-1]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SHOWN_REJECTS = 20  # in the report; the table shows fewer
TABLE_REJECTS = 5


@dataclass(slots=True)
class _History:
    """Each customer's sorted purchase days, and who really stopped (their last day)."""

    days: dict[str, list[date]]
    stopped: dict[str, date]
    eligible: int


def build(replay: Replay, *, file: str, horizon_days: int | None = None) -> Report:
    policy = replay.policy
    horizon = horizon_days if horizon_days is not None else policy.horizon_days
    end = replay.last_day
    history = _history(replay, horizon, policy.loyalty.min_visits)
    enabled = {rule: getattr(policy.rules, rule).enabled for rule in RULES}
    by_rule: dict[str, list[OpenedAlert]] = defaultdict(list)
    for alert in replay.alerts:
        by_rule[alert.rule].append(alert)
    rows = [
        RuleResult(rule, enabled[rule], **_judge(by_rule[rule], history, horizon, end))
        for rule in RULES
    ]
    rows.append(
        RuleResult(ALL, any(enabled.values()), **_judge(replay.alerts, history, horizon, end))
    )
    inactivity = len(by_rule["inactivity"]) if enabled["inactivity"] else None
    return Report(
        file=file,
        horizon_days=horizon,
        step_days=replay.step_days,
        min_visits=policy.loyalty.min_visits,
        first_day=_iso(replay.first_day),
        last_day=_iso(end),
        days_replayed=replay.steps * replay.step_days,
        events_read=replay.rows,
        accepted=replay.accepted,
        duplicates=replay.duplicates,
        rejected=len(replay.rejects),
        customers=replay.customers,
        eligible_customers=history.eligible,
        stopped=len(history.stopped),
        rules=rows,
        baselines=_baselines(replay, history, horizon, inactivity),
        weeks=_weeks(replay),
        reject_reasons=_reasons(replay.rejects),
        rejects=[
            RejectOut(r.line, r.field, r.code, r.message) for r in replay.rejects[:SHOWN_REJECTS]
        ],
    )


def _reasons(rejects: Iterable[Reject]) -> dict[str, int]:
    """Rejected rows by field and code: what to fix in the file, at a glance."""
    return dict(sorted(Counter(f"{r.field or 'row'}: {r.code}" for r in rejects).items()))


def _history(replay: Replay, horizon: int, min_visits: int) -> _History:
    found: dict[str, set[date]] = defaultdict(set)
    for purchase in replay.purchases:
        found[purchase.customer_id].add(purchase.day)
    days = {customer: sorted(visits) for customer, visits in found.items()}
    eligible = {customer: visits for customer, visits in days.items() if len(visits) >= min_visits}
    end = replay.last_day
    stopped = {
        customer: visits[-1]
        for customer, visits in eligible.items()
        if end is not None and visits[-1] + timedelta(days=horizon) <= end
    }
    return _History(days, stopped, len(eligible))


def _baselines(
    replay: Replay, history: _History, horizon: int, inactivity_alerts: int | None
) -> list[BaselineResult]:
    """Recency at k = 2 and 3, at the k matched to the inactivity rule's alerts (when it is
    enabled and raised any), and purchase count; judged on the replay's days."""
    if replay.first_day is None:
        return []
    days = baselines.Days(replay.first_day, replay.step_days, replay.steps)
    loyalty = replay.policy.loyalty
    tenths = [(f"recency_k{k}", k * baselines.TENTHS) for k in baselines.FIXED_K]
    if inactivity_alerts:
        matched = baselines.matched_k(history.days, days, loyalty, inactivity_alerts)
        tenths.append((RECENCY_MATCHED, matched))
    end = replay.last_day
    results = []
    for name, k_tenths in tenths:
        alerts = _alerts(name, baselines.recency(history.days, days, loyalty, k_tenths))
        k = k_tenths / baselines.TENTHS
        definition = f"silent at least {k:g} x the customer's own mean gap"
        if name == RECENCY_MATCHED:
            definition += f" (k matched to the {inactivity_alerts:,} inactivity alerts)"
        measures = _judge(alerts, history, horizon, end, priced=False)
        results.append(BaselineResult(name, True, **measures, definition=definition, k=k))
    alerts = _alerts(COUNT_DROP, baselines.count_drop(history.days, days, loyalty, horizon))
    measures = _judge(alerts, history, horizon, end, priced=False)
    definition = f"visits in the last {horizon} days under half those of the {horizon} before"
    results.append(
        BaselineResult(COUNT_DROP, True, **measures, definition=definition, window_days=horizon)
    )
    return results


def _alerts(name: str, opened: dict[str, list[date]]) -> list[OpenedAlert]:
    return [
        OpenedAlert(customer, name, day, Decimal(0))
        for customer, days in sorted(opened.items())
        for day in days
    ]


def _judge(
    alerts: Sequence[OpenedAlert],
    history: _History,
    horizon: int,
    end: date | None,
    *,
    priced: bool = True,
) -> dict[str, Any]:
    """The measures of a RuleResult for these alerts (no value at risk unless priced)."""
    span = timedelta(days=horizon)
    judgeable = [a for a in alerts if end is not None and a.day + span <= end]
    right = [a for a in judgeable if not _bought_within(history.days.get(a.customer_id), a, span)]
    leads = _leads(alerts, history.stopped, span)
    return dict(
        alerts=len(alerts),
        judgeable=len(judgeable),
        too_recent=len(alerts) - len(judgeable),
        true_positives=len(right),
        precision=_share(len(right), len(judgeable)),
        caught=len(leads),
        recall=_share(len(leads), len(history.stopped)),
        median_lead_days=float(statistics.median(leads)) if leads else None,
        value_at_risk=_money(a.value_at_risk for a in alerts) if priced else None,
        value_at_risk_true_positives=_money(a.value_at_risk for a in right) if priced else None,
    )


def _bought_within(days: list[date] | None, alert: OpenedAlert, span: timedelta) -> bool:
    """Whether the customer bought on a day in (t, t + H]."""
    if not days:
        return False
    after = bisect.bisect_right(days, alert.day)
    return after < len(days) and days[after] <= alert.day + span


def _leads(alerts: Iterable[OpenedAlert], stopped: dict[str, date], span: timedelta) -> list[int]:
    """For each stopped customer alerted on or after their last purchase: the lead time of
    the first such alert, in days."""
    first: dict[str, date] = {}
    for alert in alerts:
        last = stopped.get(alert.customer_id)
        if last is not None and alert.day >= last:
            first[alert.customer_id] = min(alert.day, first.get(alert.customer_id, alert.day))
    return sorted((stopped[customer] + span - day).days for customer, day in first.items())


def _weeks(replay: Replay) -> list[WeekCounts]:
    """Alerts per rule in every week of the replay, empty weeks included (for the chart)."""
    if replay.first_day is None or replay.last_day is None:
        return []
    counts: dict[date, dict[str, int]] = {}
    week = _monday(replay.first_day)
    last = replay.first_day + timedelta(days=replay.steps * replay.step_days - 1)
    while week <= last:
        counts[week] = dict.fromkeys(RULES, 0)
        week += timedelta(weeks=1)
    for alert in replay.alerts:
        counts[_monday(alert.day)][alert.rule] += 1
    return [WeekCounts(week.isoformat(), tally) for week, tally in counts.items()]


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _money(amounts: Iterable[Decimal]) -> str:
    return format(sum(amounts, Decimal(0)).quantize(CENT), "f")


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


# -- the terminal table ------------------------------------------------------------------------


def table(report: Report) -> str:
    lines = [
        f"Backtest of {report.file}: {report.first_day} to {report.last_day}, "
        f"{report.days_replayed} days in steps of {report.step_days}, horizon "
        f"{report.horizon_days} days",
        f"events: {report.events_read:,} read, {report.accepted:,} accepted, "
        f"{report.duplicates:,} duplicates, {report.rejected:,} rejected; "
        f"{report.customers:,} customers, {report.eligible_customers:,} with at least "
        f"{report.min_visits} visit days, {report.stopped:,} of them really stopped",
        "",
        _rule_table(report.rules, report.baselines),
        "",
        "precision: alerts whose customer did not buy within the horizon, of those opened at "
        "least a horizon before the end",
        "recall: customers who really stopped (no purchase for a horizon after their last) "
        "alerted after their last purchase",
        "lead: days before the customer had been silent a horizon (negative: after)",
    ]
    lines += _baseline_lines(report.baselines)
    lines += _reject_lines(report)
    lines += ["", _week_table(report.weeks)]
    return "\n".join(lines)


def _rule_table(rows: Sequence[RuleResult], others: Sequence[BaselineResult]) -> str:
    header = (
        f"{'rule':<{NAME_WIDTH}} {'alerts':>7} {'judged':>7} {'recent':>7} {'right':>7} "
        f"{'precision':>9} {'caught':>7} {'recall':>7} {'lead':>6} {'value at risk':>14} "
        f"{'of the right':>14}"
    )
    lines = [header, "-" * len(header)]
    lines += [_text_row(_rule_name(row), row) for row in rows]
    if others:
        lines.append("baselines")
        lines += [_text_row(_baseline_name(row), row) for row in others]
    return "\n".join(lines)


def _text_row(name: str, row: RuleResult) -> str:
    return (
        f"{name:<{NAME_WIDTH}} {row.alerts:>7,} {row.judgeable:>7,} {row.too_recent:>7,} "
        f"{row.true_positives:>7,} {_percent(row.precision):>9} {row.caught:>7,} "
        f"{_percent(row.recall):>7} {_days(row.median_lead_days):>6} "
        f"{_amount(row.value_at_risk):>14} {_amount(row.value_at_risk_true_positives):>14}"
    )


NAME_WIDTH = 20  # "frequency_drop (off)"


def _rule_name(row: RuleResult) -> str:
    return row.rule if row.enabled or row.rule == ALL else f"{row.rule} (off)"


def _baseline_name(row: BaselineResult) -> str:
    if row.k is None:
        return "  " + row.rule.replace("_", " ")
    return f"  recency k={row.k:g}{' *' if row.rule == RECENCY_MATCHED else ''}"


def _baseline_lines(rows: Sequence[BaselineResult]) -> list[str]:
    if not rows:
        return []
    lines = [
        "baselines: loyal customers only, on the replay's days, judged like the rules; no "
        "value model, so no value at risk"
    ]
    lines += [f"  {_baseline_name(row).strip()}: {row.definition}" for row in rows]
    return lines


def _reject_lines(report: Report) -> list[str]:
    if not report.rejects:
        return []
    reasons = ", ".join(f"{count:,} {reason}" for reason, count in report.reject_reasons.items())
    lines = ["", f"rejected rows ({reasons}):"]
    shown = report.rejects[:TABLE_REJECTS]
    lines += [
        f"  line {r.line}{' ' + r.field if r.field else ''}: {r.message} [{r.code}]" for r in shown
    ]
    if report.rejected > len(shown):
        lines.append(f"  ... and {report.rejected - len(shown):,} more")
    return lines


def _week_table(weeks: Sequence[WeekCounts]) -> str:
    header = "week of     " + " ".join(f"{rule:>14}" for rule in RULES) + f" {'total':>7}"
    lines = ["alerts opened per week", header]
    for week in weeks:
        counts = " ".join(f"{week.alerts[rule]:>14,}" for rule in RULES)
        lines.append(f"{week.week}  {counts} {sum(week.alerts.values()):>7,}")
    return "\n".join(lines)


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.1%}"


def _days(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _amount(text: str | None) -> str:
    return "-" if text is None else f"{Decimal(text):,.0f}"


# -- the chart ---------------------------------------------------------------------------------

COLOURS = {
    "inactivity": "#d62728",
    "frequency_drop": "#1f77b4",
    "spend_drop": "#ff7f0e",
    "category_lapse": "#2ca02c",
}
WIDTH, HEIGHT, MARGIN = 960, 360, 48


def chart(report: Report) -> str:
    """A self-contained page: alerts per week as stacked bars by rule, in inline SVG."""
    title = html.escape(f"Alerts per week: backtest of {report.file}")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}</style></head><body>"
        f"<h1>{title}</h1><p>{html.escape(_caption(report))}</p>"
        f"{_svg(report.weeks)}{_summary_html(report.rules, report.baselines)}</body></html>\n"
    )


def _caption(report: Report) -> str:
    overall = report.overall
    return (
        f"{report.first_day} to {report.last_day}, horizon {report.horizon_days} days: "
        f"{overall.alerts:,} alerts, precision {_percent(overall.precision)}, "
        f"recall {_percent(overall.recall)} of {report.stopped:,} customers who stopped."
    )


def _svg(weeks: Sequence[WeekCounts]) -> str:
    top = max((sum(w.alerts.values()) for w in weeks), default=0) or 1
    plot_w, plot_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    slot = plot_w / max(len(weeks), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT + 24}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT + 24}" role="img" aria-label="alerts per week by rule">',
        *_axes(top, plot_h),
    ]
    for index, week in enumerate(weeks):
        x = MARGIN + index * slot
        base = float(HEIGHT - MARGIN)  # bars stack upwards from the axis
        for rule in RULES:
            count = week.alerts[rule]
            if count:
                height = count / top * plot_h
                base -= height
                parts.append(
                    f'<rect x="{x + slot * 0.1:.1f}" y="{base:.1f}" width="{slot * 0.8:.1f}" '
                    f'height="{height:.1f}" fill="{COLOURS[rule]}"><title>week of {week.week}: '
                    f"{count} {rule}</title></rect>"
                )
        if index % max(1, len(weeks) // 8) == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - MARGIN + 16}" font-size="11">{week.week}</text>'
            )
    parts += _legend()
    parts.append("</svg>")
    return "".join(parts)


def _axes(top: int, plot_h: float) -> list[str]:
    base = HEIGHT - MARGIN
    parts = [
        f'<line x1="{MARGIN}" y1="{base}" x2="{WIDTH - MARGIN}" y2="{base}" stroke="#333"/>',
        f'<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{base}" stroke="#333"/>',
    ]
    for tick in sorted({0, top // 2, top}):
        y = base - tick / top * plot_h
        parts.append(
            f'<text x="{MARGIN - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{tick}</text>'
        )
    return parts


def _legend() -> list[str]:
    parts = []
    for index, rule in enumerate(RULES):
        x = MARGIN + index * 180
        y = HEIGHT + 8
        parts.append(
            f'<rect x="{x}" y="{y}" width="12" height="12" fill="{COLOURS[rule]}"/>'
            f'<text x="{x + 18}" y="{y + 11}" font-size="12">{rule}</text>'
        )
    return parts


def _summary_html(rows: Sequence[RuleResult], others: Sequence[BaselineResult]) -> str:
    names = ("rule", "alerts", "judged", "right", "precision", "caught", "recall", "lead")
    head = "".join(f"<th>{name}</th>" for name in names)
    body = "".join(_html_row(r.rule, r) for r in rows)
    if others:
        body += f'<tr><th colspan="{len(names)}">baselines</th></tr>'
        body += "".join(_html_row(_baseline_name(r).strip(), r) for r in others)
    notes = "".join(f"<li>{html.escape(line.strip())}</li>" for line in _baseline_lines(others))
    return f"<table><tr>{head}</tr>{body}</table>" + (f"<ul>{notes}</ul>" if notes else "")


def _html_row(name: str, r: RuleResult) -> str:
    return (
        f"<tr><td>{html.escape(name)}</td><td>{r.alerts}</td><td>{r.judgeable}</td>"
        f"<td>{r.true_positives}</td><td>{_percent(r.precision)}</td><td>{r.caught}</td>"
        f"<td>{_percent(r.recall)}</td><td>{_days(r.median_lead_days)}</td></tr>"
    )
