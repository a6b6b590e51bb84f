"""The page people work from: the call list, a customer, the manager's view, and /docs.

Server-rendered (Jinja2, autoescaped) with htmx for the actions and the refresh; charts by
Chart.js. Every asset is served from this package (app/ui/static/vendor, with licences):
nothing is loaded from elsewhere, and the pages run no inline script (strict CSP).

Sign-in: a person pastes an API key once; it is kept in an HttpOnly, SameSite=Strict
cookie for the browser session, so that every view has a real address (bookmarks, links,
CSV downloads) and the key is out of reach of the page's scripts.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from decimal import Decimal
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import Connection
from starlette.staticfiles import StaticFiles

from app.alerts import queries, workflow
from app.alerts.queries import CaseFilter, CaseSort
from app.alerts.repository import AlertRow
from app.alerts.schemas import Outcome
from app.customers.endpoints import read_customer
from app.customers.state import week_index, week_start
from app.kit.auth import Principal, Scope, authorize
from app.kit.db import TransactionRunner
from app.kit.errors import Forbidden, RadarError
from app.kit.params import IDENTIFIER_PATTERN, LATEST_TIME
from app.kit.settings import Settings
from app.outreach.service import EffectRow
from app.plans import repository as plan_repository
from app.policy import service as policies
from app.policy.schemas import RULES
from app.quality import service as quality
from app.quality.service import WeekRow
from app.reports import service as reports
from app.reports.endpoints import to_csv
from app.reports.service import RateRow, ReasonRow, ResponseRow, ValueRow
from app.ui import views

router = APIRouter(include_in_schema=False)

# The pages run only their own scripts and styles, talk to this service only, and may not
# be framed (clickjacking) nor rebased. Chart.js sizes its canvas through the style
# property (CSSOM), which a CSP does not govern; no page has an inline style or script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
# Swagger UI sets inline styles in its markup; its script is still this service's own.
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # the pages show customers' data
}
KEY_COOKIE, NAME_COOKIE, STORE_COOKIE = "radar_key", "radar_name", "radar_store"
LONG_POLL = 25.0  # seconds a /ui/changes request waits for a change
UNDO_SECONDS = 5

templates = Environment(
    loader=PackageLoader("app.ui", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


class StaticAssets(StaticFiles):
    """The page's scripts, styles and vendored libraries, never sniffed as anything else."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response


def static_assets() -> StaticAssets:
    return StaticAssets(packages=[("app.ui", "static")])


class SignInNeeded(Exception):
    def __init__(self, message: str | None = None) -> None:
        self.message = message


async def signed_in(request: Request, scope: Scope = Scope.READ) -> Principal:
    """The person's key, from the session cookie, checked as the API checks a bearer."""
    token = request.cookies.get(KEY_COOKIE)
    if not token:
        raise SignInNeeded()
    try:
        return await authorize(request, token, scope)
    except RadarError as exc:
        if exc.status in (401, 403):
            raise SignInNeeded(exc.detail or exc.title) from None
        raise


def sign_in_redirect(request: Request, exc: SignInNeeded) -> Response:
    """To the sign-in form, and back here after it (htmx follows HX-Redirect)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET" or request.url.path.startswith("/ui/changes"):
        target = "/ui/"
    query = {"next": target, **({"error": exc.message} if exc.message else {})}
    location = "/ui/login?" + urlencode(query)
    if request.headers.get("HX-Request"):
        return Response(status_code=204, headers={"HX-Redirect": location})
    if request.url.path.startswith("/ui/changes"):
        return JSONResponse({"signed_out": True}, status_code=401)
    return RedirectResponse(location, status_code=303)


def _same_origin(request: Request) -> None:
    """A change must come from this site's own page: the cookie is SameSite=Strict, and
    browsers say where a request comes from (Sec-Fetch-Site, Origin)."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    # By host, not scheme: behind a proxy that ends TLS this service sees http while the
    # browser says https; a page of another host is what must be refused.
    if (site is not None and site not in ("same-origin", "none")) or (
        origin is not None and urlsplit(origin).netloc != request.url.netloc
    ):
        raise Forbidden("This change must come from the service's own page.")


def _render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    html = templates.get_template(name).render(
        request=request,
        currency=str(settings.currency),
        name=_person(request.cookies.get(NAME_COOKIE)) or "",
        my_store=_store(request.cookies.get(STORE_COOKIE)),
        rule_names=views.RULE_NAMES,
        event_names=views.EVENT_NAMES,
        owners=OWNERS,
        money=_money,
        ago=_ago,
        add_days=lambda day, days: day + timedelta(days=round(days)),
        hours=_hours,
        crm_link=lambda customer_id: _crm_link(settings.crm_customer_url, customer_id),
        today=_today(request),
        **context,
    )
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, **SECURITY_HEADERS}
    return HTMLResponse(html, status_code=status_code, headers=headers)


def _crm_link(template: str | None, customer_id: str) -> str | None:
    if template is None:
        return None
    return template.replace("{customer_id}", quote(customer_id, safe=""))


def _hours(value: float | None) -> str:
    """A duration people read at a glance: hours under two days, days beyond."""
    if value is None:
        return "\u2013"
    return f"{value:.1f} h" if value < 48 else f"{value / 24:.1f} days"


def _money(amount: Decimal | float | None, currency: str) -> str:
    if amount is None:
        return "\u2013"
    return f"{currency} {Decimal(amount):,.2f}"


def _ago(day: date | datetime | None, today: date) -> str:
    if day is None:
        return ""
    if isinstance(day, datetime):
        day = day.date()
    days = (today - day).days
    if days == 0:
        return "today"
    if days == 1:
        return "yesterday"
    if days == -1:
        return "tomorrow"
    return f"{days} days ago" if days > 0 else f"in {-days} days"


def _today(request: Request) -> date:
    now: datetime = request.app.state.clock()
    return now.date()


def _transactions(request: Request) -> TransactionRunner:
    transactions: TransactionRunner = request.app.state.transactions
    return transactions


# ---- sign-in ----------------------------------------------------------------------------


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/")


def _safe_next(target: str | None) -> str:
    """Only back into this page (never an open redirect, nor a dot-segment out of it)."""
    if not target or not target.startswith("/ui/") or target.startswith("/ui//"):
        return "/ui/"
    path = unquote(target.split("?", 1)[0])
    if "\\" in path or any(part in (".", "..") for part in path.split("/")):
        return "/ui/"
    if not _NAME_CHARACTERS.match(target):
        return "/ui/"
    return target


@router.get("/ui/login")
async def login_form(
    request: Request,
    next_: Annotated[str | None, Query(alias="next", max_length=2000)] = None,
    error: Annotated[str | None, Query(max_length=300)] = None,
) -> HTMLResponse:
    return _render(request, "login.html", next=_safe_next(next_), error=error)


@router.post("/ui/login")
async def login(
    request: Request,
    key: Annotated[str, Form(max_length=200)],
    person: Annotated[str, Form(max_length=100)] = "",
    store: Annotated[str, Form(max_length=128)] = "",
    next_: Annotated[str, Form(alias="next", max_length=2000)] = "/ui/",
) -> Response:
    _same_origin(request)
    key, person, store = key.strip(), person.strip(), store.strip()
    problem = None
    if person and not _NAME_CHARACTERS.match(person):
        problem = "Your name: control characters are not allowed."
    elif store and not _is_id(store):
        problem = "Your store: an id as the tills send it (no control characters)."
    if problem:
        return _render(
            request, "login.html", status_code=422, next=_safe_next(next_), error=problem
        )
    try:
        principal = await authorize(request, key, Scope.READ)
    except RadarError as exc:
        message = (
            "That key has no 'read' scope: ask for a key with it."
            if exc.status == 403
            else "That key is unknown or revoked: check it, or ask for a new one."
        )
        if exc.status not in (401, 403):
            raise
        return _render(
            request, "login.html", status_code=exc.status, next=_safe_next(next_), error=message
        )
    response = RedirectResponse(_safe_next(next_), status_code=303)
    secure = request.url.scheme == "https"
    cookie = {"httponly": True, "samesite": "strict", "secure": secure, "path": "/"}
    # Percent-encoded: a cookie holds Latin-1 only, and names are not (Łukasz, 李雷).
    response.set_cookie(KEY_COOKIE, key, **cookie)  # type: ignore[arg-type]
    response.set_cookie(NAME_COOKIE, quote(person or principal.name), **cookie)  # type: ignore[arg-type]
    response.set_cookie(STORE_COOKIE, quote(store), **cookie)  # type: ignore[arg-type]
    return response


@router.post("/ui/logout")
async def logout(request: Request) -> Response:
    _same_origin(request)
    response = RedirectResponse("/ui/login", status_code=303)
    for name in (KEY_COOKIE, NAME_COOKIE, STORE_COOKIE):
        response.delete_cookie(name, path="/")
    return response


# ---- the call list ------------------------------------------------------------------------

STATUSES = ("open", "acknowledged", "snoozed")
SEVERITIES = ("high", "medium", "low")
SORTS: dict[str, str] = {
    "value": "Value at risk, highest first",
    "oldest": "Waiting longest first",
    "newest": "Newest first",
}


@router.get("/ui/")
async def call_list(
    request: Request,
    store: Annotated[list[str], Query(max_length=50)] = [],  # noqa: B006
    rule: Annotated[list[str], Query(max_length=10)] = [],  # noqa: B006
    severity: Annotated[list[str], Query(max_length=10)] = [],  # noqa: B006
    status: Annotated[list[str], Query(max_length=10)] = [],  # noqa: B006
    assignee: Annotated[str, Query(max_length=100)] = "",
    q: Annotated[str, Query(max_length=128)] = "",
    sort: Annotated[str, Query(max_length=32)] = "value",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    mine: Annotated[str, Query(max_length=32)] = "",
    group: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    """Filter values the page does not offer are ignored (a hand-edited address still
    shows a list), except `page`, which must be a page number."""
    await signed_in(request)
    my_store = _store(request.cookies.get(STORE_COOKIE))
    stores = [s for s in store if s and _is_id(s)]
    mine = "1" if mine.lower() in ("1", "true", "on", "yes") else ""
    if mine and my_store:
        stores = [my_store]
    assignee = assignee.strip() if _NAME_CHARACTERS.match(assignee) else ""
    filters = CaseFilter(
        status=[s for s in status if s in STATUSES] or ["open", "acknowledged"],
        rule=[r for r in rule if r in RULES],
        severity=[s for s in severity if s in SEVERITIES],
        store_id=stores,
        assigned_to=assignee or None,
        customer_prefix=q.strip() if _is_id(q.strip()) else None,
        arm="control" if group == "control" else "contact",
    )
    case_sort: CaseSort = (
        "oldest" if sort == "oldest" else "newest" if sort == "newest" else "value"
    )
    today = _today(request)
    data, holdout = await _transactions(request).read(
        lambda connection: (
            views.call_list(connection, filters, case_sort, page, today),
            policies.current(connection).body.holdout,
        )
    )
    if page > data.pages:  # past the end (the list shrank): the last page
        return RedirectResponse(_with(request, page=data.pages), status_code=303)
    settings: Settings = request.app.state.settings
    template = "cases.html" if request.headers.get("HX-Target") == "cases" else "calls.html"
    return _render(
        request,
        template,
        data=data,
        filters=filters,
        query=q,
        sort=case_sort,
        sorts=SORTS,
        mine=bool(mine and my_store),
        statuses=STATUSES,
        severities=SEVERITIES,
        rules=RULES,
        holdout=holdout,
        reasons=settings.alert_reasons,
        outcomes=OUTCOMES,
        channels=CHANNELS,
        undo_seconds=UNDO_SECONDS,
        page_url=lambda number: _with(request, page=number),
        list_url=_with(request),
    )


def _is_id(value: str) -> bool:
    return bool(value) and len(value) <= 128 and re.match(IDENTIFIER_PATTERN, value) is not None


def _with(request: Request, **changes: Any) -> str:
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    params += [(k, str(v)) for k, v in changes.items() if v is not None]
    return "/ui/" + ("?" + urlencode(params) if params else "")


OUTCOMES: dict[str, str] = {
    "won_back": "Won back: they will come again",
    "lost": "Lost: they will not come back",
    "not_a_defection": "Not a defection (moved visits, holiday, ...)",
    "not_worth_retaining": "Not worth retaining",
}
CHANNELS = ("phone", "email", "sms", "in_store", "letter", "other")


@router.get("/ui/changes")
async def changes(
    request: Request,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    wait: Annotated[float, Query(ge=0, le=LONG_POLL)] = LONG_POLL,
) -> Response:
    """For the page's refresh: how many alert changes there are after `after` (long poll)."""
    try:
        await signed_in(request)
    except SignInNeeded:
        return JSONResponse({"signed_out": True}, status_code=401)
    deadline = time.monotonic() + wait
    while True:
        latest = await _transactions(request).read(queries.latest_seq)
        if latest > after or time.monotonic() >= deadline or request.app.state.shutting_down:
            break
        await asyncio.sleep(0.5)
    return JSONResponse(
        {"latest": latest, "changed": latest > after}, headers={"Cache-Control": "no-store"}
    )


# ---- working a case ----------------------------------------------------------------------


_NAME_CHARACTERS = re.compile(r"^[^\x00-\x1f\x7f]*$")  # a name or id: no control character
_TEXT_CHARACTERS = re.compile(r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")  # text: lines, tabs


def _form_text(form: Any, name: str, limit: int, *, lines: bool = False) -> str | None:
    """A form field, stripped; None when empty. Too long or with a control character is
    refused with the field's name (as the API does), never cut or cleaned silently."""
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be text, not a file.")
    value = value.strip()
    if len(value) > limit:
        raise ValueError(f"{name}: at most {limit} characters ({len(value)} given).")
    if not (_TEXT_CHARACTERS if lines else _NAME_CHARACTERS).match(value):
        raise ValueError(f"{name}: control characters are not allowed.")
    return value or None


def _person(value: str | None) -> str | None:
    """A name as a cookie may bring it back: bounded and printable, or not at all."""
    if not value:
        return None
    value = unquote(value).strip()
    if not 0 < len(value) <= 100 or not _NAME_CHARACTERS.match(value):
        return None
    return value


def _store(value: str | None) -> str:
    value = unquote(value or "").strip()
    return value if _is_id(value) else ""


@router.post("/ui/cases/{customer_id:path}/{action}")
async def work_case(request: Request, customer_id: str, action: str) -> Response:
    """Acknowledge, assign, snooze, add a note or resolve: on every unresolved alert of the
    customer (one call answers for all of them), in one transaction."""
    settings: Settings = request.app.state.settings
    _same_origin(request)
    principal = await signed_in(request, Scope(settings.alert_workflow_scope))
    if not _is_id(customer_id):
        return _toast(request, "No such customer.", error=True, status_code=404)
    form = await request.form()
    actor = _person(request.cookies.get(NAME_COOKIE)) or principal.name
    escalate_after = settings.alert_escalate_after
    now: datetime = request.app.state.clock()
    try:
        change = _change(action, form, actor)
    except ValueError as exc:
        return _toast(request, str(exc), error=True, status_code=422)

    def apply(connection: Connection) -> list[AlertRow] | None:
        if not queries.has_alerts(connection, customer_id):
            return None
        open_alerts = [
            alert
            for alert in queries.unresolved_for(connection, customer_id)
            if not (action == "acknowledge" and alert.status == "acknowledged")
        ]
        targets = open_alerts[:1] if action == "note" else open_alerts
        changed = []
        for alert in targets:
            row = workflow.apply(
                connection, alert.id, change, now, settings.alert_reasons, escalate_after
            )
            changed.append(row)
        return changed

    try:
        changed = await _transactions(request).run(apply)
    except RadarError as exc:
        return _toast(request, exc.detail or exc.title, error=True, status_code=exc.status)
    if changed is None:
        return _toast(request, f"{customer_id} has no alert.", error=True, status_code=404)
    if not changed:
        message = f"{customer_id} has nothing left to {action}: it was done already."
        return _toast(request, message, error=True, status_code=409)
    done = {
        "acknowledge": f"acknowledged; yours to call, {actor}",
        "assign": f"assigned to {change.to}" if change.to else "unassigned",
        "snooze": f"snoozed until {change.until:%Y-%m-%d}" if change.until else "snoozed",
        "note": "note added",
        "resolve": f"resolved as {str(change.outcome).replace('_', ' ')}",
    }[action]
    plan = await _plan_of(request, changed) if action == "resolve" else ""
    return _toast(request, f"{customer_id}: {done}.{plan}", changed=True)


OWNERS = {"store": "the store", "head_office": "head office"}


async def _plan_of(request: Request, changed: list[AlertRow]) -> str:
    """What the resolution's reason set in motion (the policy's playbook), for the toast."""
    plan_id = next((row.plan_id for row in changed if row.plan_id is not None), None)
    if plan_id is None:
        return ""
    plan = await _transactions(request).read(lambda c: plan_repository.get(c, plan_id))
    if plan is None:
        return ""
    owner = OWNERS.get(plan.owner, plan.owner)
    return f" Plan for {owner}, follow up by {plan.follow_up_on:%Y-%m-%d}: {plan.action}"


def _change(action: str, form: Any, actor: str) -> workflow.Change:
    if action == "acknowledge":  # "I'm calling": the case is theirs unless someone has it
        return workflow.Change("acknowledge", actor, to=actor)
    if action == "assign":
        to = _form_text(form, "to", 100)
        return workflow.Change("assign", actor, to=to)
    if action == "snooze":
        until = _form_text(form, "until", 10)
        if until is None or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", until):
            raise ValueError("until: choose the day the case comes back (YYYY-MM-DD).")
        try:
            day = date.fromisoformat(until)
        except ValueError:
            raise ValueError(f"until: {until} is not a day of the calendar.") from None
        moment = datetime.combine(day, day_time(), UTC)
        if moment >= LATEST_TIME:
            raise ValueError(f"until: at most {LATEST_TIME:%Y-%m-%d}.")
        return workflow.Change("snooze", actor, until=moment)
    if action == "note":
        note = _form_text(form, "note", 2000, lines=True)
        if note is None:
            raise ValueError("note: write the note first.")
        return workflow.Change("note", actor, note=note)
    if action == "resolve":
        outcome = _form_text(form, "outcome", 32)
        if outcome not in OUTCOMES:
            raise ValueError("Choose the outcome: nothing is recorded without one.")
        reason = _form_text(form, "reason", 64)
        if outcome in workflow.NEEDS_REASON and reason is None:
            raise ValueError("Choose the reason the customer gave.")
        channel = _form_text(form, "channel", 32)
        if channel is not None and channel not in CHANNELS:
            raise ValueError(f"channel: one of {', '.join(CHANNELS)}.")
        note = _form_text(form, "note", 2000, lines=True)
        checked: Outcome = outcome  # type: ignore[assignment]
        return workflow.Change(
            "resolve", actor, outcome=checked, reason=reason, note=note, channel=channel
        )
    raise ValueError(f"Unknown action {action!r}.")


def _toast(
    request: Request,
    message: str,
    *,
    error: bool = False,
    changed: bool = False,
    status_code: int = 200,
) -> HTMLResponse:
    response = _render(request, "toast.html", status_code=status_code, message=message, error=error)
    if changed:
        response.headers["HX-Trigger"] = "radar:changed"
    return response


# ---- a customer --------------------------------------------------------------------------


@router.get("/ui/customers/{customer_id:path}")
async def customer(request: Request, customer_id: str) -> Response:
    await signed_in(request)
    if not _is_id(customer_id):
        return _render(request, "missing.html", status_code=404, customer_id=customer_id[:128])
    today = _today(request)
    found = await read_customer(request, customer_id, today)
    if found is None:
        return _render(request, "missing.html", status_code=404, customer_id=customer_id)
    extras = await _transactions(request).read(
        lambda connection: views.customer_extras(connection, customer_id)
    )
    settings: Settings = request.app.state.settings
    return _render(
        request,
        "customer.html",
        customer=found,
        extras=extras,
        chart=_weekly_chart(found.pattern.weekly, today),
        reasons=settings.alert_reasons,
        outcomes=OUTCOMES,
        channels=CHANNELS,
    )


def _weekly_chart(weeks: list[Any], today: date) -> dict[str, Any]:
    """The last 53 weeks, every week shown (a week without a visit is a zero, not a gap)."""
    last = week_index(today)
    tallies = {week.week_starting: week for week in weeks}
    labels, visits, spend = [], [], []
    for index in range(last - 52, last + 1):
        start = week_start(index)
        tally = tallies.get(start)
        labels.append(f"{start:%d %b %y}")
        visits.append(tally.visits if tally else 0)
        spend.append(float(tally.net_amount) if tally else 0.0)
    return {"labels": labels, "visits": visits, "spend": spend}


# ---- the manager's view ------------------------------------------------------------------


@router.get("/ui/manager")
async def manager(request: Request) -> Response:
    await signed_in(request)
    now: datetime = request.app.state.clock()
    today = now.date()
    view = await _transactions(request).read(lambda c: views.manager_view(c, now))
    chart = {
        "labels": [f"{row.period_start:%b %Y}" for row in view.months],
        "rates": [None if row.rate is None else round(row.rate * 100, 2) for row in view.months],
        "incomplete": [row.period_end > today for row in view.months],
    }
    reasons_chart = {
        "labels": [reason.replace("_", " ") for reason, _, _ in view.lost_reasons],
        "values": [float(value) for _, _, value in view.lost_reasons],
    }
    return _render(request, "manager.html", view=view, chart=chart, reasons_chart=reasons_chart)


EXPORTS = (
    "defection-rate",
    "defection-rate-by-store",
    "defection-rate-by-staff",
    "reasons",
    "response-times",
    "value-at-risk",
    "outreach-effect",
    "model-quality",
)


@router.get("/ui/manager/{name}.csv")
async def export(request: Request, name: str) -> Response:
    """Each table of the manager's view as the reports API's CSV for the same span."""
    await signed_in(request)
    if name not in EXPORTS:
        return Response("No such export.", status_code=404, media_type="text/plain")
    now: datetime = request.app.state.clock()
    today = now.date()

    def build(connection: Connection) -> str:
        policy = policies.current(connection).body
        spans = views.ManagerSpans.of(today, policy)
        if name.startswith("defection-rate"):
            split = {"defection-rate-by-store": "store", "defection-rate-by-staff": "staff"}
            rows = reports.defection_rate(
                connection,
                policy,
                "month",
                *spans.months,
                split.get(name),  # type: ignore[arg-type]
            )
            return to_csv(rows, RateRow)
        if name == "reasons":
            return to_csv(reports.reasons(connection, *spans.recent, None), ReasonRow)
        if name == "response-times":
            return to_csv(reports.response_times(connection, *spans.recent), ResponseRow)
        if name == "outreach-effect":
            effect = views.outreach_effect(connection, policy, spans.outreach, now)
            return to_csv(effect.rows, EffectRow)
        if name == "model-quality":
            return to_csv(quality.report(connection, *spans.quality, now).weeks, WeekRow)
        return to_csv(reports.value_at_risk(connection), ValueRow)

    body = await _transactions(request).read(build)
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}-{today}.csv"',
            **SECURITY_HEADERS,
        },
    )


# ---- the API's documentation, offline ----------------------------------------------------


@router.get("/docs")
async def docs() -> HTMLResponse:
    html = files("app.ui").joinpath("templates/docs.html").read_text(encoding="utf-8")
    headers = {"Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY, **SECURITY_HEADERS}
    return HTMLResponse(html, headers=headers)
