"""What the viewer's pages show, computed from a store's runs and events: the
runs-page query, a run's waterfall, the overview's charts, a two-run comparison.

Kept apart from the web framework so that each piece is a plain function over the
store's named values (`Run`, `Event`), tested without a browser, and so that the
templates only lay out numbers and text that are already decided here. Nothing here
marks text safe: recorded text leaves this module as `str` and is escaped by the
templates' autoescape.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .. import payloads
from .._model import Event, Run, RunFilter, RunStatus
from ..cli._params import parse_moment
from ..cli.render import fmt_cost, fmt_duration, fmt_offset

__all__ = [
    "PAGE_SIZES",
    "SORTS",
    "Chart",
    "DiffRow",
    "RunsQuery",
    "Waterfall",
    "bar_chart",
    "line_chart",
    "output_diff",
    "waterfall",
]

# The runs page's sort keys as the URL spells them, and RunFilter's names for them.
SORTS: Mapping[str, str] = {
    "start": "started_at",
    "duration": "duration",
    "tokens": "tokens",
    "cost": "cost",
}
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE = 50

# Event types the LangChain integration writes besides the Writer's own: a LangGraph
# interrupt (a pause for a human, not a failure), and the result it records for a
# tool that the interrupt stopped.
INTERRUPT_EVENT = "interrupt"
INTERRUPTED_TOOL_RESULT = "tool call interrupted"

_ONE_MICROSECOND = timedelta(microseconds=1)


class QueryError(ValueError):
    """A runs-page parameter that cannot be read (a bad date, say): shown on the page."""


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


@dataclass(frozen=True)
class RunsQuery:
    """The runs page's parameters, as read from its URL.

    Paging: sorted by start time, the page after this one starts at ``at`` (the last
    start time shown) after skipping ``skip`` runs that started exactly then and were
    shown already: keyset paging through RunFilter's own time bounds, so a deep page
    costs what the first one does. Other sorts page by offset."""

    statuses: tuple[str, ...] = ()
    caller: str | None = None
    name: str | None = None
    model: str | None = None
    parent: str | None = None
    text: str | None = None
    since: str | None = None
    until: str | None = None
    has_error: bool | None = None
    min_cost: float | None = None
    sort: str = "start"
    ascending: bool = False
    limit: int = DEFAULT_PAGE
    offset: int = 0
    at: str | None = None
    skip: int = 0

    @classmethod
    def from_params(cls, params: Any) -> RunsQuery:
        """From a request's query parameters (a multi-dict: ``getlist`` for status)."""
        statuses = tuple(s for s in params.getlist("status") if s)
        known = {s.value for s in RunStatus}
        for status in statuses:
            if status not in known:
                _bad(f"unknown status {status!r}")
        sort = params.get("sort") or "start"
        if sort not in SORTS:
            _bad(f"sort must be one of {', '.join(SORTS)}")
        has_error = {"yes": True, "no": False}.get(params.get("has_error") or "")
        return cls(
            statuses=statuses,
            caller=_clean(params.get("caller")),
            name=_clean(params.get("name")),
            model=_clean(params.get("model")),
            parent=_clean(params.get("parent")),
            text=_clean(params.get("q")),
            since=_clean(params.get("since")),
            until=_clean(params.get("until")),
            has_error=has_error,
            min_cost=_number(params.get("min_cost"), "min_cost"),
            sort=sort,
            ascending=params.get("dir") == "asc",
            limit=_choice(params.get("limit"), PAGE_SIZES, DEFAULT_PAGE),
            offset=_int(params.get("offset"), "offset"),
            at=_clean(params.get("at")),
            skip=_int(params.get("skip"), "skip"),
        )

    def run_filter(self, *, now: datetime | None = None, extra: int = 1) -> RunFilter:
        """The store filter for this page, asking ``extra`` more runs than a page (to
        know whether there is a next one)."""
        since = _moment(self.since, "since", now)
        until = _moment(self.until, "until", now)
        offset = self.offset
        if self.sort == "start" and self.at is not None:
            at = _moment(self.at, "at", now)
            assert at is not None
            if self.ascending:
                since = at if since is None or at > since else since
            else:
                bound = at + _ONE_MICROSECOND  # until is exclusive: keep runs started at `at`
                until = bound if until is None or bound < until else until
            offset = self.skip
        return RunFilter(
            caller=self.caller,
            name=self.name,
            status=self.statuses or None,
            since=since,
            until=until,
            parent_run_id=self.parent,
            model=self.model,
            text=self.text,
            has_error=self.has_error,
            min_cost_usd=self.min_cost,
            order_by=SORTS[self.sort],
            ascending=self.ascending,
            limit=self.limit + extra,
            offset=offset,
        )

    def count_filter(self, *, now: datetime | None = None) -> RunFilter:
        """Every run the filters match, unpaged."""
        return RunFilter(
            caller=self.caller,
            name=self.name,
            status=self.statuses or None,
            since=_moment(self.since, "since", now),
            until=_moment(self.until, "until", now),
            parent_run_id=self.parent,
            model=self.model,
            text=self.text,
            has_error=self.has_error,
            min_cost_usd=self.min_cost,
        )

    def params(self, **changes: Any) -> list[tuple[str, str]]:
        """This query as URL parameters, with ``changes`` applied (None drops one)."""
        values: dict[str, Any] = {
            "q": self.text,
            "caller": self.caller,
            "name": self.name,
            "model": self.model,
            "parent": self.parent,
            "since": self.since,
            "until": self.until,
            "has_error": None if self.has_error is None else ("yes" if self.has_error else "no"),
            "min_cost": None if self.min_cost is None else f"{self.min_cost:g}",
            "sort": None if self.sort == "start" else self.sort,
            "dir": "asc" if self.ascending else None,
            "limit": None if self.limit == DEFAULT_PAGE else str(self.limit),
            "offset": str(self.offset) if self.offset else None,
            "at": self.at,
            "skip": str(self.skip) if self.skip else None,
        }
        values.update(changes)
        pairs = [("status", s) for s in self.statuses] if "status" not in changes else []
        pairs += [(k, str(v)) for k, v in values.items() if v not in (None, "")]
        return pairs

    def next_page(self, shown: Sequence[Run]) -> list[tuple[str, str]] | None:
        """The parameters of the page after ``shown`` (a full page)."""
        if not shown:
            return None
        if self.sort != "start":
            return self.params(offset=str(self.offset + self.limit))
        last = shown[-1].started_at
        ties = sum(1 for run in shown if run.started_at == last)
        # Runs started exactly at `last` that earlier pages showed are skipped too.
        if self.at is not None and _moment(self.at, "at", None) == last:
            ties += self.skip
        return self.params(at=last.astimezone(timezone.utc).isoformat(), skip=str(ties), offset=None)

    @property
    def paged(self) -> bool:
        return self.at is not None or self.offset > 0


def _bad(message: str) -> Any:
    raise QueryError(message)


def _moment(text: str | None, what: str, now: datetime | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_moment(text, now=now)
    except ValueError as exc:
        raise QueryError(f"{what}: {exc}") from None


def _number(text: str | None, what: str) -> float | None:
    text = _clean(text)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise QueryError(f"{what} must be a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise QueryError(f"{what} must be a finite number >= 0, got {text!r}")
    return value


def _int(text: str | None, what: str) -> int:
    text = _clean(text)
    if text is None:
        return 0
    if not text.isdigit() or len(text) > 12:
        raise QueryError(f"{what} must be a whole number >= 0, got {text!r}")
    return int(text)


def _choice(text: str | None, allowed: Sequence[int], default: int) -> int:
    text = _clean(text)
    if text is None:
        return default
    if not text.isdigit() or int(text) not in allowed:
        raise QueryError(f"limit must be one of {', '.join(map(str, allowed))}")
    return int(text)


# -- the run page's waterfall ----------------------------------------------------------

# Bars are laid out on a 0..1000 axis (the SVG's viewBox); a bar is never thinner
# than this, so an instant (an error, a 0 ms tool) stays visible and clickable.
AXIS = 1000.0
_MIN_BAR = 4.0
MAX_DEPTH = 3  # child runs shown nested, this many levels down
MAX_CHILDREN = 50  # per run; the rest are listed, not drawn


@dataclass(frozen=True)
class Row:
    """One bar of the waterfall: a step, a tool call (call and result together), a
    marked event (error, interrupt, custom), or a child run's span."""

    kind: str  # step, tool, error, interrupt, event, child
    label: str
    detail: str  # a short second part of the label (model, tokens, duration)
    start: float  # seconds since the shown run started
    end: float
    depth: int
    state: str  # ok, error, interrupted, cancelled, open, running
    run_id: str
    anchor: str  # the page-unique id of this row ("r<depth>-<run>-<seq>")
    events: tuple[Event, ...] = ()
    child: Run | None = None
    x: float = 0.0
    width: float = 0.0


@dataclass(frozen=True)
class Waterfall:
    rows: list[Row]
    span: float  # seconds the axis covers
    ticks: list[str]  # labels at 0, 1/4, 1/2, 3/4 and the end of the axis
    hidden_children: int = 0


def _since(start: datetime, moment: datetime) -> float:
    return (moment - start).total_seconds()


def _tool_state(result: Event | None, running: bool) -> str:
    if result is None:
        return "open" if running else "cancelled"
    text = result.payload.get(payloads.RESULT)
    if text == INTERRUPTED_TOOL_RESULT:
        return "interrupted"
    if text == payloads.CANCELLED_TOOL_RESULT:
        return "cancelled"
    return "error" if result.payload.get(payloads.ERROR_FLAG) else "ok"


def _float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if 0 <= number < float("inf") else 0.0


def _str(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _run_rows(
    run: Run,
    events: Sequence[Event],
    origin: datetime,
    now: datetime,
    depth: int,
) -> list[tuple[float, int, Row]]:
    """The rows of one run's own events, each with its sort key (time, sequence)."""
    running = run.status is RunStatus.RUNNING
    run_end = run.finished_at or now
    keyed: list[tuple[float, int, Row]] = []
    open_calls: dict[str, int] = {}  # tool call id (or name) -> index in keyed
    prefix = f"r{depth}-{run.run_id}"
    for event in events:
        p = event.payload
        at = _since(origin, event.created_at)
        anchor = f"{prefix}-{event.sequence}"
        kind = event.event_type
        if kind == payloads.STEP:
            ms = _float(p.get(payloads.STEP_MS))
            parts = [_str(p[k]) for k in (payloads.MODEL, payloads.FINISH_REASON) if p.get(k)]
            if payloads.IN_TOKENS in p or payloads.OUT_TOKENS in p:
                parts.append(
                    f"{_float(p.get(payloads.IN_TOKENS)):,.0f} in / "
                    f"{_float(p.get(payloads.OUT_TOKENS)):,.0f} out"
                )
            parts.append(fmt_duration(ms))
            row = Row("step", f"step {_str(p.get(payloads.ITER, '?'))}", " · ".join(parts),
                      max(at - ms / 1000.0, 0.0), at, depth, "ok", run.run_id, anchor, (event,))
            keyed.append((at - ms / 1000.0, event.sequence, row))
        elif kind == payloads.RESOLVED_MODEL and keyed and keyed[-1][2].kind == "step":
            t, seq, step = keyed[-1]  # shown with the step it names the model of
            keyed[-1] = (t, seq, _with_events(step, (*step.events, event)))
        elif kind == payloads.TOOL_CALL:
            key = _str(p.get(payloads.ID) or p.get(payloads.NAME, ""))
            row = Row("tool", _str(p.get(payloads.NAME, "?")), "", at, _since(origin, run_end),
                      depth, _tool_state(None, running), run.run_id, anchor, (event,))
            open_calls[key] = len(keyed)
            keyed.append((at, event.sequence, row))
        elif kind == payloads.TOOL_RESULT:
            key = _str(p.get(payloads.ID) or p.get(payloads.NAME, ""))
            index = open_calls.pop(key, None)
            state = _tool_state(event, running)
            result_ms = p.get(payloads.DURATION_MS)
            detail = fmt_duration(_float(result_ms)) if result_ms is not None else ""
            if index is None:  # a result without a recorded call: drawn from its duration
                row = Row("tool", _str(p.get(payloads.NAME, "?")), detail,
                          max(at - _float(result_ms) / 1000.0, 0.0), at, depth, state, run.run_id,
                          anchor, (event,))
                keyed.append((at, event.sequence, row))
            else:
                t, seq, call = keyed[index]
                keyed[index] = (t, seq, Row(call.kind, call.label, detail, call.start, at, depth, state,
                                            call.run_id, call.anchor, (*call.events, event)))
        elif kind == payloads.ERROR:
            label = _str(p.get(payloads.MESSAGE, "error"))
            keyed.append((at, event.sequence,
                          Row("error", "error", label, at, at, depth, "error", run.run_id, anchor, (event,))))
        elif kind == INTERRUPT_EVENT:
            keyed.append((at, event.sequence, Row("interrupt", "interrupt", "", at, at, depth,
                                                  "interrupted", run.run_id, anchor, (event,))))
        else:
            keyed.append((at, event.sequence, Row("event", kind, "", at, at, depth, "ok", run.run_id,
                                                  anchor, (event,))))
    return keyed


def _with_events(row: Row, events: tuple[Event, ...]) -> Row:
    return Row(row.kind, row.label, row.detail, row.start, row.end, row.depth, row.state,
               row.run_id, row.anchor, events, row.child)


def waterfall(
    run: Run,
    events: Sequence[Event],
    *,
    children: Callable[[str], list[Run]],
    logs: Callable[[str], list[Event]],
    now: datetime | None = None,
) -> Waterfall:
    """``run``'s steps, tool calls and marked events as bars on one time axis, with
    its child runs (and theirs, `MAX_DEPTH` levels down) nested at their start."""
    moment = now or datetime.now(timezone.utc)
    origin = run.started_at
    hidden = 0

    def rows_of(current: Run, current_events: Sequence[Event], depth: int) -> list[Row]:
        nonlocal hidden
        groups = [(t, seq, [row]) for t, seq, row in _run_rows(current, current_events, origin, moment, depth)]
        if depth < MAX_DEPTH:
            kids = children(current.run_id)
            hidden += max(len(kids) - MAX_CHILDREN, 0)
            for kid in kids[:MAX_CHILDREN]:
                start = _since(origin, kid.started_at)
                end = _since(origin, kid.finished_at or moment)
                state = {RunStatus.SUCCEEDED: "ok", RunStatus.RUNNING: "running",
                         RunStatus.INTERRUPTED: "interrupted",
                         RunStatus.CANCELLED: "cancelled"}.get(kid.status, "error")
                head = Row("child", kid.name, f"{kid.status.value} · {fmt_duration(kid.duration_ms)}",
                           start, end, depth, state, kid.run_id, f"c{depth}-{kid.run_id}", (), kid)
                groups.append((start, -1, [head, *rows_of(kid, logs(kid.run_id), depth + 1)]))
        groups.sort(key=lambda item: (item[0], item[1]))
        return [row for _t, _s, group in groups for row in group]

    rows = rows_of(run, events, 0)
    ends = [r.end for r in rows] + [r.start for r in rows]
    ends.append(_since(origin, run.finished_at or moment))
    span = max(max(ends), 0.001)
    laid = [_placed(row, span) for row in rows]
    ticks = [fmt_offset(span * i / 4) for i in range(5)]
    return Waterfall(laid, span, ticks, hidden)


def _placed(row: Row, span: float) -> Row:
    start = min(max(row.start, 0.0), span)
    end = min(max(row.end, start), span)
    x = start / span * AXIS
    width = max((end - start) / span * AXIS, _MIN_BAR)
    if x + width > AXIS:
        x = AXIS - width
    return Row(row.kind, row.label, row.detail, row.start, row.end, row.depth, row.state, row.run_id,
               row.anchor, row.events, row.child, round(x, 2), round(width, 2))


def so_far(run: Run, events: Iterable[Event]) -> Run:
    """A running run with the counts its recorded events show: a store writes a run's
    totals when it ends, so until then its row says 0 steps, 0 tokens."""
    if run.status is not RunStatus.RUNNING:
        return run
    steps = calls = tokens_in = tokens_out = 0
    for event in events:
        if event.event_type == payloads.STEP:
            steps += 1
            tokens_in += int(_float(event.payload.get(payloads.IN_TOKENS)))
            tokens_out += int(_float(event.payload.get(payloads.OUT_TOKENS)))
        elif event.event_type == payloads.TOOL_CALL:
            calls += 1
    return dataclasses.replace(run, steps=max(run.steps, steps), tool_calls=max(run.tool_calls, calls),
                               input_tokens=max(run.input_tokens, tokens_in),
                               output_tokens=max(run.output_tokens, tokens_out))


def pretty_json(text: Any) -> str:
    """Tool arguments (JSON text) indented for reading; other text as it is."""
    if not isinstance(text, str):
        return json.dumps(text, ensure_ascii=False, indent=2, sort_keys=True, default=str)
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, indent=2, sort_keys=True)
    except (ValueError, RecursionError):
        return text


def payload_json(event: Event) -> str:
    return json.dumps(event.payload, ensure_ascii=False, indent=2, sort_keys=True, default=str)


# -- charts ----------------------------------------------------------------------------

CHART_W = 640.0
CHART_H = 160.0
_PAD_LEFT = 56.0
_PAD_BOTTOM = 22.0
_PAD_TOP = 8.0


@dataclass(frozen=True)
class ChartBar:
    x: float
    y: float
    width: float
    height: float
    tip: str  # the bar's tooltip: its label and value


@dataclass(frozen=True)
class ChartLabel:
    x: float
    y: float
    text: str


@dataclass(frozen=True)
class Chart:
    """One server-drawn SVG chart: bars or lines, their axis labels, and a table
    of the same numbers for reading (and for screen readers)."""

    title: str
    bars: list[ChartBar]
    lines: list[tuple[str, str]]  # (css class, SVG polyline points)
    x_labels: list[ChartLabel]
    y_labels: list[ChartLabel]
    legend: list[tuple[str, str]]  # (css class, name)
    width: float = CHART_W
    height: float = CHART_H
    empty: bool = False


def _plot_x(i: int, n: int) -> float:
    inner = CHART_W - _PAD_LEFT - 8
    return _PAD_LEFT + (inner * (i + 0.5) / max(n, 1))


def _plot_y(value: float, top: float) -> float:
    inner = CHART_H - _PAD_TOP - _PAD_BOTTOM
    return CHART_H - _PAD_BOTTOM - (value / top * inner if top > 0 else 0.0)


def _x_labels(labels: Sequence[str]) -> list[ChartLabel]:
    n = len(labels)
    step = max(1, n // 8)  # at most about eight labels under the axis
    return [ChartLabel(_plot_x(i, n), CHART_H - 6, labels[i]) for i in range(0, n, step)]


def _y_labels(top: float, fmt: Callable[[float], str]) -> list[ChartLabel]:
    return [ChartLabel(_PAD_LEFT - 6, _plot_y(top * f, top) + 4, fmt(top * f)) for f in (0.0, 0.5, 1.0)]


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float],
              fmt: Callable[[float], str] = lambda v: f"{v:,.0f}") -> Chart:
    n = len(values)
    top = max(values, default=0.0) or 1.0
    inner = CHART_W - _PAD_LEFT - 8
    width = max(inner / max(n, 1) * 0.7, 1.0)
    bars = []
    for i, (label, value) in enumerate(zip(labels, values, strict=False)):
        y = _plot_y(value, top)
        bars.append(ChartBar(round(_plot_x(i, n) - width / 2, 2), round(y, 2), round(width, 2),
                             round(CHART_H - _PAD_BOTTOM - y, 2), f"{label}: {fmt(value)}"))
    return Chart(title, bars, [], _x_labels(labels), _y_labels(top, fmt), [], empty=n == 0)


def line_chart(title: str, labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float | None]]],
               fmt: Callable[[float], str] = lambda v: f"{v:,.0f}") -> Chart:
    """``series``: (css class, name, one value or None per label) each."""
    n = len(labels)
    top = max((v for _c, _n, vs in series for v in vs if v is not None), default=0.0) or 1.0
    lines = []
    dots = []
    for css, _name, values in series:
        points = [(round(_plot_x(i, n), 2), round(_plot_y(v, top), 2)) for i, v in enumerate(values)
                  if v is not None]
        lines.append((css, " ".join(f"{x},{y}" for x, y in points)))
        dots += [ChartBar(x - 2.5, y - 2.5, 5, 5, f"{labels[i]}: {fmt(v)}")
                 for (x, y), (i, v) in zip(points, [(i, v) for i, v in enumerate(values) if v is not None], strict=False)]
    return Chart(title, dots, lines, _x_labels(labels), _y_labels(top, fmt),
                 [(css, name) for css, name, _v in series], empty=n == 0)


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def day_range(since: datetime, until: datetime) -> list[str]:
    """Every UTC day from ``since`` to ``until``, as YYYY-MM-DD."""
    day = since.astimezone(timezone.utc).date()
    last = until.astimezone(timezone.utc).date()
    out = []
    while day <= last:
        out.append(day.isoformat())
        day += timedelta(days=1)
    return out


def fmt_ms(value: float) -> str:
    return fmt_duration(value)


def fmt_usd(value: float) -> str:
    return fmt_cost(value)


# -- compare ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffRow:
    """One line pair of a side-by-side diff; each side is a list of (text, changed)
    pieces, None where that side has no line."""

    kind: str  # equal, replace, delete, insert
    left: list[tuple[str, bool]] | None
    right: list[tuple[str, bool]] | None


_WORDS = re.compile(r"\s+|\w+|[^\w\s]")


def _word_diff(a: str, b: str) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    wa, wb = _WORDS.findall(a), _WORDS.findall(b)
    left: list[tuple[str, bool]] = []
    right: list[tuple[str, bool]] = []
    matcher = difflib.SequenceMatcher(None, wa, wb, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if i2 > i1:
            left.append(("".join(wa[i1:i2]), op != "equal"))
        if j2 > j1:
            right.append(("".join(wb[j1:j2]), op != "equal"))
    return left, right


MAX_DIFF_CHARS = 200_000  # beyond this, each output is cut before diffing (difflib is quadratic)


def output_diff(a: str, b: str) -> list[DiffRow]:
    """Two outputs side by side, line by line; changed lines show changed words."""
    la = a[:MAX_DIFF_CHARS].splitlines() or [""]
    lb = b[:MAX_DIFF_CHARS].splitlines() or [""]
    rows: list[DiffRow] = []
    matcher = difflib.SequenceMatcher(None, la, lb, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            rows += [DiffRow("equal", [(x, False)], [(x, False)]) for x in la[i1:i2]]
        elif op == "delete":
            rows += [DiffRow("delete", [(x, True)], None) for x in la[i1:i2]]
        elif op == "insert":
            rows += [DiffRow("insert", None, [(x, True)]) for x in lb[j1:j2]]
        else:
            left, right = la[i1:i2], lb[j1:j2]
            for k in range(max(len(left), len(right))):
                if k < len(left) and k < len(right):
                    words_a, words_b = _word_diff(left[k], right[k])
                    rows.append(DiffRow("replace", words_a, words_b))
                elif k < len(left):
                    rows.append(DiffRow("delete", [(left[k], True)], None))
                else:
                    rows.append(DiffRow("insert", None, [(right[k], True)]))
    return rows


@dataclass(frozen=True)
class Side:
    """One run of a comparison: its steps and its tool calls, in order."""

    run: Run
    model: str
    steps: list[Event]
    tools: list[tuple[Event, Event | None]]  # each call with its result


def compare_side(run: Run, events: Iterable[Event], model: str) -> Side:
    steps: list[Event] = []
    tools: list[tuple[Event, Event | None]] = []
    open_calls: dict[str, int] = {}
    for event in events:
        if event.event_type == payloads.STEP:
            steps.append(event)
        elif event.event_type == payloads.TOOL_CALL:
            open_calls[_str(event.payload.get(payloads.ID) or event.payload.get(payloads.NAME))] = len(tools)
            tools.append((event, None))
        elif event.event_type == payloads.TOOL_RESULT:
            index = open_calls.pop(
                _str(event.payload.get(payloads.ID) or event.payload.get(payloads.NAME)), None
            )
            if index is not None:
                tools[index] = (tools[index][0], event)
    return Side(run, model, steps, tools)
