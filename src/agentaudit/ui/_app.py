"""The viewer's routes: the runs list, one run, a comparison, the overview, and the
small JSON answers their pages poll for live updates.

Every route reads the store through its public read methods and nothing else, so
the viewer works over any store that opens read-only (SQLite now, the server stores
as they land). Run ids travel as query parameters (``/run?id=…``), never inside the
path: an id is recorded text and may hold any character. Endpoints are plain
functions: Starlette runs them on its thread pool, so a slow read never blocks the
event loop that serves the other requests.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._errors import AgentAuditError, RunNotFoundError
from .._model import FAILED_STATUSES, TERMINAL_STATUSES, Event, Run, RunFilter, RunStatus
from ..cli._terminal import visible
from ..cli.render import fmt_cost, fmt_duration, fmt_int, fmt_rate, fmt_time
from . import _views
from ._security import SecurityMiddleware

__all__ = ["create_app"]

logger = logging.getLogger("agentaudit.ui")
_HERE = Path(__file__).parent
LATENCY_SAMPLE = 200  # finished runs per day the overview's latency percentiles read
TOP_GROUPS = 12  # models and callers the overview charts; the rest are summed as "others"
OVERVIEW_DAYS = (7, 30, 90)
MAX_EVENTS = 5000  # events of one run drawn on its page; a longer log is cut (and says so)


def _link(path: str, params: Sequence[tuple[str, str]] | Mapping[str, Any] | None = None) -> str:
    """A link to one of the viewer's own routes: recorded text only ever enters a
    URL as an encoded query parameter."""
    if not path.startswith("/") or path.startswith("//"):
        raise ValueError(f"not a route of the viewer: {path!r}")
    items = list(params.items()) if isinstance(params, Mapping) else list(params or [])
    items = [(k, v) for k, v in items if v is not None]
    return path + ("?" + urlencode(items) if items else "")


def _short_id(run_id: str) -> str:
    """Long ids cut for a table cell; time-ordered UUIDs (v7) share their first eight
    characters within a minute, so the cut keeps thirteen. Links carry the whole id."""
    return run_id if len(run_id) <= 16 else run_id[:13] + "…"


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(_HERE / "templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        v=lambda value: visible("" if value is None else value),
        block=lambda value: visible("" if value is None else value, multiline=True),
        time=fmt_time,
        duration=fmt_duration,
        cost=fmt_cost,
        int=fmt_int,
        rate=fmt_rate,
        short=_short_id,
        elapsed=_duration_text,
        pretty=_views.pretty_json,
    )
    env.globals.update(link=_link, statuses=[s.value for s in RunStatus], sorts=list(_views.SORTS))
    return env


class Viewer:
    """The pages over one store (opened read-only by the caller)."""

    def __init__(self, store: Any, *, source: str = "") -> None:
        self.store = store
        self.source = source
        self.env = _templates()

    # -- helpers ---------------------------------------------------------------------

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(source=self.source, **context)
        return HTMLResponse(html, status_code=status)

    def models(self, runs: Sequence[Run]) -> dict[str, str]:
        reader = getattr(self.store, "run_models", None)
        return dict(reader(run.run_id for run in runs)) if reader is not None else {}

    def resolve(self, run_id: str | None) -> Run:
        if not run_id:
            raise RunNotFoundError("no run id given")
        run: Run | None = self.store.get_run(run_id)
        if run is None and hasattr(self.store, "resolve_run_id"):
            run = self.store.get_run(self.store.resolve_run_id(run_id))
        if run is None:
            raise RunNotFoundError(f"no run {run_id!r}")
        return run

    def model_of(self, run: Run, events: Sequence[Event]) -> str:
        model = self.models([run]).get(run.run_id, "")
        if model:
            return model
        for event in events:
            if event.event_type == "resolved_model":
                return str(event.payload.get("model", ""))
        return ""

    def verify_badge(self, run: Run) -> dict[str, Any]:
        """intact / broken at sequence N / erased, from the store's own check."""
        try:
            result = self.store.verify(run.run_id)
        except Exception as exc:  # the page still shows the run, saying it is unverified
            logger.exception("agentaudit ui: verifying run %r failed", run.run_id)
            return {"state": "unknown", "text": "not verified", "reason": f"{type(exc).__name__}: {exc}"}
        state = result.state
        if state == "broken":
            where = "" if result.broken_sequence is None else f" at sequence {result.broken_sequence}"
            return {"state": "broken", "text": f"broken{where}", "reason": result.reason}
        if state == "erased":
            return {"state": "erased", "text": "erased", "reason": result.reason}
        text = "intact" if run.status.is_terminal else "intact so far"
        return {"state": "intact", "text": text, "reason": f"{result.events} events verified"}

    # -- the runs page ----------------------------------------------------------------

    def runs(self, request: Request) -> Response:
        try:
            query = _views.RunsQuery.from_params(request.query_params)
            flt = query.run_filter()
            found = self.store.list_runs(flt)
        except (_views.QueryError, ValueError, AgentAuditError) as exc:  # AgentAuditError: search on an old file
            return self.page("runs.html", 400, query=_views.RunsQuery(), runs=[], models={},
                             error=str(exc), next_link=None, newest=None)
        more = len(found) > query.limit
        found = self.with_progress(found[: query.limit])
        next_params = query.next_page(found) if more else None
        newest = found[0].started_at.isoformat() if found and query.sort == "start" and not query.ascending \
            and not query.paged else None
        return self.page(
            "runs.html",
            query=query,
            runs=found,
            models=self.models(found),
            error=None,
            next_link=_link("/", next_params) if next_params else None,
            newest=newest,
        )

    def runs_count(self, request: Request) -> Response:
        """How many runs the page's filters match: asked for by the page once it is
        shown, so that a count over many runs never holds up the list itself."""
        try:
            query = _views.RunsQuery.from_params(request.query_params)
            total = self.store.count_runs(query.count_filter())
        except (_views.QueryError, ValueError, AgentAuditError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"total": total, "text": fmt_int(total)})

    def runs_live(self, request: Request) -> Response:
        """The current state of the runs a page shows as running."""
        ids = request.query_params.getlist("id")[:200]
        found = [run for run in (self.store.get_run(i) for i in ids) if run is not None]
        return JSONResponse([_run_cells(run) for run in self.with_progress(found)])

    def with_progress(self, runs: Sequence[Run]) -> list[Run]:
        """``runs``, the running ones with the counts their events show so far."""
        return [
            _views.so_far(run, self.store.get_logs(run.run_id, limit=MAX_EVENTS))
            if run.status is RunStatus.RUNNING else run
            for run in runs
        ]

    def runs_newer(self, request: Request) -> Response:
        """How many runs matching the page's filters started after its newest one."""
        try:
            query = _views.RunsQuery.from_params(request.query_params)
            flt = query.count_filter()
            after = datetime.fromisoformat(request.query_params.get("after", ""))
        except (_views.QueryError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if after.tzinfo is None:
            return JSONResponse({"error": "after needs a UTC offset"}, status_code=400)
        bound = after + timedelta(microseconds=1)
        newer = RunFilter(**{**_fields(flt), "since": max(bound, flt.since) if flt.since else bound})
        return JSONResponse({"newer": self.store.count_runs(newer)})

    # -- one run ----------------------------------------------------------------------

    def run_context(self, run: Run) -> dict[str, Any]:
        events = self.store.get_logs(run.run_id, limit=MAX_EVENTS + 1)
        cut = len(events) > MAX_EVENTS
        events = events[:MAX_EVENTS]

        def child_logs(run_id: str) -> list[Event]:
            return list(self.store.get_logs(run_id, limit=MAX_EVENTS))

        wf = _views.waterfall(run, events, children=self.store.children, logs=child_logs)
        children = self.store.children(run.run_id)
        return {
            "run": _views.so_far(run, events),
            "events": events,
            "cut": cut,
            "model": self.model_of(run, events),
            "verify": self.verify_badge(run),
            "waterfall": wf,
            "children": children,
            "version": self.version(run, events[-1].sequence if events else 0, children),
            "last": events[-1].sequence if events else 0,
            "parent": self.store.get_run(run.parent_run_id) if run.parent_run_id else None,
        }

    @staticmethod
    def version(run: Run, last: int, children: Sequence[Run]) -> str:
        """Changes whenever the run page would: a new event (``last``: the newest
        sequence), a new or finished child."""
        kids = ",".join(f"{c.run_id}:{c.status.value}:{c.steps}:{c.tool_calls}" for c in children)
        return f"{run.status.value}:{last}:{len(children)}:{hash(kids) & 0xFFFFFFFF:x}"

    def run(self, request: Request) -> Response:
        wanted = request.query_params.get("id")
        try:
            run = self.resolve(wanted)
        except RunNotFoundError as exc:
            return self.page("error.html", 404, message=str(exc))
        if run.run_id != wanted:  # a prefix: the page's address names the whole id
            return RedirectResponse(_link("/run", {"id": run.run_id}), status_code=303)
        return self.page("run.html", **self.run_context(run))

    def run_body(self, request: Request) -> Response:
        """The run page's changing part, for its live refresh."""
        try:
            run = self.resolve(request.query_params.get("id"))
        except RunNotFoundError as exc:
            return self.page("error.html", 404, message=str(exc))
        return self.page("_run_body.html", **self.run_context(run))

    def run_live(self, request: Request) -> Response:
        try:
            run = self.resolve(request.query_params.get("id"))
        except RunNotFoundError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        try:  # the last sequence the page shows: only newer events are read
            after = max(int(request.query_params.get("after") or 0), 0)
        except ValueError:
            after = 0
        events = self.store.get_logs(run.run_id, after=after)
        last = events[-1].sequence if events else after
        children = self.store.children(run.run_id)
        return JSONResponse({"status": run.status.value, "version": self.version(run, last, children)})

    # -- compare ----------------------------------------------------------------------

    def compare(self, request: Request) -> Response:
        ids = [i.strip() for i in request.query_params.getlist("run") if i.strip()]
        if len(ids) != 2:
            return self.page("compare.html", 200 if not ids else 400, sides=None, ids=ids,
                             error=None if not ids else "pick exactly two runs to compare")
        try:
            runs = [self.resolve(i) for i in ids]
        except RunNotFoundError as exc:
            return self.page("compare.html", 404, sides=None, ids=ids, error=str(exc))
        sides = []
        for run in runs:
            events = self.store.get_logs(run.run_id)
            sides.append(_views.compare_side(run, events, self.model_of(run, events)))
        left, right = sides
        return self.page(
            "compare.html",
            sides=sides,
            ids=ids,
            error=None,
            diff=_views.output_diff(left.run.output, right.run.output),
            steps=list(_zip_longest(left.steps, right.steps)),
            tools=list(_zip_longest(left.tools, right.tools)),
        )

    # -- overview ---------------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        days = OVERVIEW_DAYS
        try:
            window = int(request.query_params.get("days") or 30)
        except ValueError:
            window = 30
        if window not in days:
            window = 30
        now = datetime.now(timezone.utc)
        first = (now - timedelta(days=window - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
        flt = RunFilter(since=first)
        by_day = {row["day"]: row for row in self.summary("day", flt)}
        labels = _views.day_range(first, now)
        rows = [by_day.get(day) or _empty_group("day", day) for day in labels]
        latency_p50: list[float | None] = []
        latency_p95: list[float | None] = []
        for day in labels:
            start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
            sample = self.store.list_runs(RunFilter(since=start, until=start + timedelta(days=1),
                                                    status=TERMINAL_STATUSES, limit=LATENCY_SAMPLE))
            durations = [r.duration_ms for r in sample if r.duration_ms is not None]
            latency_p50.append(_views.percentile(durations, 0.5))
            latency_p95.append(_views.percentile(durations, 0.95))
        short = [day[5:] for day in labels]  # MM-DD under the axis; the tooltips too
        charts = [
            _views.bar_chart("Runs per day", short, [r["runs"] for r in rows]),
            _views.line_chart("Failure rate", short,
                              [("s-fail", "failed / finished",
                                [None if r["failure_rate"] is None else r["failure_rate"] * 100
                                 for r in rows])],
                              fmt=lambda v: f"{v:.1f}%"),
            _views.bar_chart("Tokens per day (input + output)", short,
                             [r["input_tokens"] + r["output_tokens"] for r in rows]),
            _views.bar_chart("Cost per day", short, [r["cost_usd"] or 0.0 for r in rows], fmt=_views.fmt_usd),
            _views.line_chart("Latency (finished runs)", short,
                              [("s-p50", "p50", latency_p50), ("s-p95", "p95", latency_p95)],
                              fmt=_views.fmt_ms),
        ]
        totals = _totals(rows)
        return self.page(
            "overview.html",
            window=window,
            windows=days,
            first=first,
            charts=charts,
            totals=totals,
            by_model=self.groups("model", flt),
            by_caller=self.groups("caller", flt),
        )

    def summary(self, by: str, flt: RunFilter) -> list[dict[str, Any]]:
        summary = getattr(self.store, "summary", None)
        if summary is not None:
            return list(summary(by, flt))
        return _summary_from_runs(self.store, by, flt)  # a store without its own totals

    def groups(self, by: str, flt: RunFilter) -> dict[str, Any]:
        rows = sorted(self.summary(by, flt), key=lambda r: (-r["runs"], str(r[by])))
        shown = rows[:TOP_GROUPS]
        rest = rows[TOP_GROUPS:]
        if rest:
            other = _empty_group(by, f"{len(rest)} others")
            for row in rest:
                for key in ("runs", "failed", "finished", "input_tokens", "output_tokens"):
                    other[key] += row[key]
                if row["cost_usd"] is not None:
                    other["cost_usd"] = (other["cost_usd"] or 0.0) + row["cost_usd"]
            other["failure_rate"] = other["failed"] / other["finished"] if other["finished"] else None
            shown.append(other)
        top_runs = max((r["runs"] for r in shown), default=0) or 1
        top_tokens = max((r["input_tokens"] + r["output_tokens"] for r in shown), default=0) or 1
        top_cost = max((r["cost_usd"] or 0.0 for r in shown), default=0.0) or 1.0
        for row in shown:
            row["label"] = row[by] if row[by] not in (None, "") else "(none)"
            row["runs_w"] = round(row["runs"] / top_runs * 100, 2)
            row["tokens_w"] = round((row["input_tokens"] + row["output_tokens"]) / top_tokens * 100, 2)
            row["cost_w"] = round((row["cost_usd"] or 0.0) / top_cost * 100, 2)
            row["fail_w"] = round((row["failure_rate"] or 0.0) * 100, 2)
        return {"by": by, "rows": shown}


def _zip_longest(a: Sequence[Any], b: Sequence[Any]) -> list[tuple[Any, Any]]:
    return [(a[i] if i < len(a) else None, b[i] if i < len(b) else None) for i in range(max(len(a), len(b)))]


def _fields(flt: RunFilter) -> dict[str, Any]:
    return {name: getattr(flt, name) for name in RunFilter.__dataclass_fields__}


def _empty_group(by: str, key: str) -> dict[str, Any]:
    return {by: key, "runs": 0, "failed": 0, "finished": 0, "failure_rate": None,
            "input_tokens": 0, "output_tokens": 0, "thinking_tokens": 0, "cost_usd": None,
            "tool_calls": 0, "steps": 0}


def _totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    runs = sum(r["runs"] for r in rows)
    failed = sum(r["failed"] for r in rows)
    finished = sum(r["finished"] for r in rows)
    priced = [r["cost_usd"] for r in rows if r["cost_usd"] is not None]
    return {
        "runs": runs,
        "failed": failed,
        "failure_rate": failed / finished if finished else None,
        "tokens": sum(r["input_tokens"] + r["output_tokens"] for r in rows),
        "cost_usd": sum(priced) if priced else None,
    }


def _summary_from_runs(store: Any, by: str, flt: RunFilter) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    runs = list(store.iter_runs(flt))
    models = dict(store.run_models(r.run_id for r in runs)) if hasattr(store, "run_models") else {}
    for run in runs:
        key = {
            "day": run.started_at.astimezone(timezone.utc).date().isoformat(),
            "model": models.get(run.run_id, ""),
            "caller": run.caller,
        }[by]
        row = groups.setdefault(key, _empty_group(by, key))
        row["runs"] += 1
        row["failed"] += run.status in FAILED_STATUSES
        row["finished"] += run.status.is_terminal
        row["input_tokens"] += run.input_tokens
        row["output_tokens"] += run.output_tokens
        if run.cost_usd is not None:
            row["cost_usd"] = (row["cost_usd"] or 0.0) + run.cost_usd
    for row in groups.values():
        row["failure_rate"] = row["failed"] / row["finished"] if row["finished"] else None
    return list(groups.values())


def _duration_text(run: Run) -> str:
    """A finished run's duration; a running run's time so far, marked as such."""
    if run.status is RunStatus.RUNNING:
        return fmt_duration((datetime.now(timezone.utc) - run.started_at).total_seconds() * 1000) + " so far"
    return fmt_duration(run.duration_ms)


def _run_cells(run: Run) -> dict[str, Any]:
    """A runs-page row's changing cells, as text (the page sets them as text)."""
    return {
        "id": run.run_id,
        "status": run.status.value,
        "duration": _duration_text(run),
        "steps": str(run.steps),
        "tools": str(run.tool_calls),
        "tokens": fmt_int(run.input_tokens + run.output_tokens),
        "cost": fmt_cost(run.cost_usd),
    }


def create_app(store: Any, *, token: str | None = None, loopback: bool = True, source: str = "") -> Any:
    """The viewer as an ASGI app over ``store`` (open it read-only: the viewer only
    reads). ``token``: required on every request when set. ``loopback``: the app is
    served on a loopback address, so only loopback Host headers are answered."""
    viewer = Viewer(store, source=source)
    app = Starlette(
        routes=[
            Route("/", viewer.runs),
            Route("/run", viewer.run),
            Route("/run/body", viewer.run_body),
            Route("/compare", viewer.compare),
            Route("/overview", viewer.overview),
            Route("/api/runs/live", viewer.runs_live),
            Route("/api/runs/count", viewer.runs_count),
            Route("/api/runs/newer", viewer.runs_newer),
            Route("/api/run/live", viewer.run_live),
            Route("/favicon.ico", lambda request: Response(status_code=204)),
            Mount("/static", app=StaticFiles(directory=str(_HERE / "static")), name="static"),
        ],
    )
    app.state.viewer = viewer
    return SecurityMiddleware(app, token=token, loopback=loopback)
