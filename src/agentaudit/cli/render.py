"""How runs and events look on a terminal, and as JSON.

`render_run` prints one run the way ``agentaudit show`` does (the demo uses it
too). It needs only the `agentaudit.Store` read protocol, so it works on any
store. Recorded text is untrusted: every piece of it goes through
`agentaudit.cli._terminal.visible` (escape sequences, carriage returns, bidi
overrides and other control characters print as visible escapes such as ``\\x1b``)
and reaches rich as a `rich.text.Text`, never as markup, so a ``[bold]`` in a
prompt prints as typed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .._errors import RunNotFoundError
from .._model import Event, Run, RunStatus
from ..stores._protocol import Store
from ._terminal import json_safe, visible

__all__ = [
    "SORT_KEYS",
    "event_json",
    "event_line",
    "json_text",
    "left_out_note",
    "render_run",
    "resolve_run",
    "run_json",
    "run_model",
    "runs_table",
    "short_ids",
    "show_json",
    "stats_table",
]

STATUS_STYLE = {
    RunStatus.RUNNING: "bold cyan",
    RunStatus.SUCCEEDED: "bold green",
    RunStatus.FAILED: "bold red",
    RunStatus.CANCELLED: "yellow",
    RunStatus.TIMEOUT: "bold red",
    RunStatus.INTERRUPTED: "yellow",
    RunStatus.ABANDONED: "bold magenta",
}
_SHORT_ID = 8
# `--sort` names, and the RunFilter order each stands for.
SORT_KEYS = {"start": "started_at", "duration": "duration", "tokens": "tokens", "cost": "cost"}
_TAIL_DETAIL = 300  # cells of an event's detail on a `tail` line


# -- small formatters ----------------------------------------------------------------


def short_id(run_id: str) -> str:
    """A long id (a UUID) cut to 8 characters, when the store cannot say how much
    of it tells it apart (see `short_ids`)."""
    return run_id if len(run_id) <= 12 else run_id[:_SHORT_ID]


def short_ids(store: Store, run_ids: Iterable[str]) -> dict[str, str]:
    """Each id as the command shows it: the shortest prefix no other stored id
    shares (at least 8 characters), on stores that can tell; ``show`` takes it back."""
    ids = list(run_ids)
    shorten = getattr(store, "short_run_ids", None)
    if shorten is not None:
        return dict(shorten(ids))
    return {run_id: short_id(run_id) for run_id in ids}


def fmt_time(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_offset(seconds: float) -> str:
    """A time since the run's start, for the timeline: +0.812s, +1m02.5s."""
    if seconds < 60:
        return f"+{seconds:.3f}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"+{int(minutes)}m{secs:04.1f}s"
    hours, minutes = divmod(int(minutes), 60)
    return f"+{hours}h{minutes:02d}m{int(secs):02d}s"


def fmt_int(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def fmt_cost(value: float | None) -> str:
    """Dollars: cents from $1 up; below, 4 decimals, or as many as the first two
    significant digits need ($0.00001, $0.000012), so a real cost never shows as 0."""
    if value is None:
        return "—"
    if value >= 1:
        return f"${value:,.2f}"
    if value == 0:
        return "$0"
    decimals = max(4, min(12, 1 - math.floor(math.log10(value))))
    text = f"{value:.{decimals}f}"
    if decimals > 4:
        text = text.rstrip("0")
    return "$" + text


def fmt_rate(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def status_text(status: RunStatus | str) -> Text:
    status = RunStatus.parse(status)
    return Text(status.value, style=STATUS_STYLE.get(status, ""))


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def recorded(value: Any, style: str = "", *, multiline: bool = False) -> Text:
    """Recorded (untrusted) text as a `Text` that is safe to print: made `visible`,
    and never parsed as markup. ``multiline`` keeps its newlines and tabs."""
    return Text(visible(value, multiline=multiline), style=style)


# -- JSON forms ----------------------------------------------------------------------


def json_text(value: Any, *, indent: int | None = None) -> str:
    """``value`` as JSON for a terminal or a file: UTF-8 text, with every control,
    bidi and separator character escaped (see `json_safe`)."""
    return json_safe(json.dumps(value, ensure_ascii=False, indent=indent, default=str))


def _rounded(value: float | None, digits: int) -> float | None:
    # Sums of floats print as 1.0410000000000001: costs are kept to 1e-9 dollars,
    # durations to the microsecond.
    return None if value is None else round(value, digits)


def run_json(run: Run, *, model: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "run_id": run.run_id,
        "name": run.name,
        "caller": run.caller,
        "parent_run_id": run.parent_run_id,
        "status": run.status.value,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_ms": _rounded(run.duration_ms, 3),
        "input": run.input,
        "output": run.output,
        "error": run.error,
        "steps": run.steps,
        "tool_calls": run.tool_calls,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "thinking_tokens": run.thinking_tokens,
        "cost_usd": _rounded(run.cost_usd, 9),
        "metadata": run.metadata,
        "host": run.host,
        "pid": run.pid,
    }
    if model is not None:
        data["model"] = model
    return data


def event_json(event: Event) -> dict[str, Any]:
    return {
        "run_id": event.run_id,
        "sequence": event.sequence,
        "event_type": event.event_type,
        "created_at": event.created_at.isoformat(),
        "payload": event.payload,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def run_model(events: Iterable[Event]) -> str:
    """The model that first served the run (its ``resolved_model`` event), or ''."""
    for event in events:
        if event.event_type == "resolved_model":
            return str(event.payload.get("model", ""))
    return ""


def resolve_run(store: Store, run_id: str) -> Run:
    """The run named by ``run_id`` or, on stores that can, by a unique prefix of it."""
    run = store.get_run(run_id)
    if run is not None:
        return run
    resolve = getattr(store, "resolve_run_id", None)
    if resolve is not None:
        run = store.get_run(resolve(run_id))
        if run is not None:
            return run
    raise RunNotFoundError(f"no run {run_id!r}")


def show_json(store: Store, run_id: str) -> dict[str, Any]:
    run = resolve_run(store, run_id)
    events = store.get_logs(run.run_id)
    return {
        "run": run_json(run, model=run_model(events)),
        "events": [event_json(e) for e in events],
        "children": [run_json(child) for child in store.children(run.run_id)],
    }


# -- one event, as a line or a timeline row --------------------------------------------


def event_detail(event: Event, *, multiline: bool = True) -> Text:
    """What an event says, in a line or two; in one line when ``multiline`` is
    false (recorded newlines then show as ``\\n``)."""
    p: Mapping[str, Any] = event.payload
    kind = event.event_type
    brk = "\n" if multiline else "  "
    if kind == "step":
        head = Text()
        head.append(f"step {visible(p.get('iter', '?'))}", style="bold")
        parts = [visible(p[k]) for k in ("model", "finish_reason") if p.get(k)]
        tokens = f"{p.get('in_tokens', 0):,} in / {p.get('out_tokens', 0):,} out"
        if p.get("thinking_tokens"):
            tokens += f" ({p['thinking_tokens']:,} thinking)"
        if p.get("cache_read_tokens"):
            tokens += f" ({p['cache_read_tokens']:,} cached)"
        if "in_tokens" in p or "out_tokens" in p:
            parts.append(tokens)
        if p.get("step_ms") is not None:
            parts.append(fmt_duration(float(p["step_ms"])))
        if parts:
            head.append("  " + " · ".join(parts), style="dim")
        if p.get("text_redacted"):
            head.append(brk + "[narration redacted: the step fired a secret-bearing tool]", style="italic yellow")
        elif p.get("text"):
            head.append(brk + visible(p["text"], multiline=multiline))
        return head
    if kind == "resolved_model":
        return Text.assemble(("model ", "dim"), (visible(p.get("model", "")), "bold"))
    if kind == "tool_call":
        text = Text()
        text.append(visible(p.get("name", "?")), style="bold cyan")
        text.append(f"({visible(p.get('args', ''))})")
        if p.get("id"):
            text.append(f"  id {visible(p['id'])}", style="dim")
        return text
    if kind == "tool_result":
        text = Text()
        text.append(visible(p.get("name", "?")), style="bold cyan")
        failed = bool(p.get("error"))
        text.append(" ✗ failed → " if failed else " → ", style="bold red" if failed else "dim")
        text.append(visible(p.get("result", ""), multiline=multiline), style="red" if failed else "")
        notes = []
        if p.get("duration_ms") is not None:
            notes.append(fmt_duration(float(p["duration_ms"])))
        if p.get("truncated"):
            notes.append("truncated")
        if p.get("id"):
            notes.append(f"id {visible(p['id'])}")
        if notes:
            text.append("  " + " · ".join(notes), style="dim")
        return text
    if kind == "error":
        return recorded(p.get("message", ""), "bold red", multiline=multiline)
    return recorded(json.dumps(p, ensure_ascii=False, sort_keys=True))


def event_line(event: Event, shown_id: str | None = None) -> Text:
    """One event as a single line, for ``agentaudit tail``; ``shown_id``: its run's
    id as `short_ids` shortens it."""
    line = Text()
    line.append(fmt_time(event.created_at), style="dim")
    line.append(f" {visible(shown_id or short_id(event.run_id))}", style="bold")
    line.append(f" #{event.sequence} ", style="dim")
    line.append(f"{visible(event.event_type):<12}", style=_type_style(event.event_type))
    line.append(" ")
    detail = event_detail(event, multiline=False)
    detail.truncate(_TAIL_DETAIL, overflow="ellipsis")
    line.append(detail)
    return line


def _type_style(kind: str) -> str:
    return {
        "step": "bold",
        "tool_call": "cyan",
        "tool_result": "cyan",
        "error": "bold red",
        "resolved_model": "dim",
    }.get(kind, "magenta")


# -- a whole run -----------------------------------------------------------------------


def render_run(store: Store, run_id: str, console: Console | None = None) -> Run:
    """Print a run as ``agentaudit show`` does: its header, its timeline (times
    relative to the run's start, step narration, tool arguments and results,
    errors), and its child runs. ``run_id`` may be a unique prefix on stores that
    support it (SQLite). Returns the run; raises `RunNotFoundError`."""
    console = console or Console()
    run = resolve_run(store, run_id)
    events = store.get_logs(run.run_id)
    children = store.children(run.run_id)
    console.print(_header(run, run_model(events)))
    console.print(_timeline(run, events))
    if children:
        console.print(_children_table(children))
    return run


def _header(run: Run, model: str) -> Group:
    title = Text()
    title.append("run ", style="dim")
    title.append(visible(run.run_id), style="bold")
    title.append("  ")
    title.append(visible(run.name), style="bold cyan")
    title.append("  ")
    title.append_text(status_text(run.status))

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim", no_wrap=True)
    facts.add_column()
    rows: list[tuple[str, str | Text]] = []  # a str: recorded text shown on one line
    if run.caller:
        rows.append(("caller", run.caller))
    if model:
        rows.append(("model", model))
    when = fmt_time(run.started_at) + " UTC"
    if run.finished_at is not None:
        when += f"  →  {fmt_time(run.finished_at)} UTC  ({fmt_duration(run.duration_ms)})"
    rows.append(("time", when))
    tokens = f"{run.input_tokens:,} in / {run.output_tokens:,} out"
    if run.thinking_tokens:
        tokens += f" ({run.thinking_tokens:,} thinking)"
    work = f"{_count(run.steps, 'step')} · {_count(run.tool_calls, 'tool call')} · {tokens}"
    rows.append(("work", f"{work} · cost {fmt_cost(run.cost_usd)}"))
    if run.parent_run_id:
        rows.append(("parent", run.parent_run_id))
    if run.host or run.pid:
        rows.append(("process", f"{run.host} pid {run.pid}"))
    if run.input:
        rows.append(("input", recorded(run.input, multiline=True)))
    if run.output:
        rows.append(("output", recorded(run.output, multiline=True)))
    if run.error:
        rows.append(("error", recorded(run.error, "bold red", multiline=True)))
    if run.metadata:
        rows.append(("metadata", json.dumps(run.metadata, ensure_ascii=False, sort_keys=True)))
    for label, value in rows:
        facts.add_row(label, value if isinstance(value, Text) else recorded(value))
    return Group(title, facts)


def _timeline(run: Run, events: list[Event]) -> Table | Text:
    if not events:
        return Text("no events recorded", style="dim italic")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
    table.add_column("time", style="dim", no_wrap=True, justify="right")
    table.add_column("#", style="dim", justify="right")
    table.add_column("event", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for event in events:
        offset = (event.created_at - run.started_at).total_seconds()
        table.add_row(
            fmt_offset(max(offset, 0.0)),
            str(event.sequence),
            recorded(event.event_type, _type_style(event.event_type)),
            event_detail(event),
        )
    return table


def _children_table(children: list[Run]) -> Table:
    table = Table(title="child runs", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("name")
    table.add_column("status")
    table.add_column("started", no_wrap=True)
    table.add_column("duration", justify="right")
    for child in children:
        table.add_row(
            recorded(child.run_id), recorded(child.name), status_text(child.status),
            fmt_time(child.started_at), fmt_duration(child.duration_ms),
        )
    return table


# -- lists -------------------------------------------------------------------------------


# Which columns `runs` keeps when the terminal is narrow, most wanted first; they
# print in the table's own order. A column is kept whole or left out (and named).
_RUN_COLUMN_ORDER = ("id", "name", "caller", "status", "started (UTC)", "duration", "steps", "tools",
                     "tokens", "cost", "model")
_RUN_COLUMN_PRIORITY = ("id", "name", "status", "started (UTC)", "caller", "duration", "tools", "tokens",
                        "cost", "steps", "model")
_NUMERIC = frozenset({"duration", "steps", "tools", "tokens", "cost"})
_GAP = 2  # cells between two columns of our fitted tables (collapsed padding and the rule)


def runs_table(
    runs: list[Run],
    models: Mapping[str, str] | None = None,
    shown_ids: Mapping[str, str] | None = None,
    *,
    width: int | None = None,
) -> tuple[Table, list[str]]:
    """The `runs` table, fitted to ``width`` cells: columns that do not fit whole are
    left out, least wanted first (see `_RUN_COLUMN_PRIORITY`). Returns the table and
    the names of the columns left out."""
    rows: list[dict[str, Text]] = []
    for run in runs:
        cells = {
            "id": recorded((shown_ids or {}).get(run.run_id) or short_id(run.run_id)),
            "name": recorded(run.name),
            "caller": recorded(run.caller or "—"),
            "status": status_text(run.status),
            "started (UTC)": Text(fmt_time(run.started_at)),
            "duration": Text(fmt_duration(run.duration_ms)),
            "steps": Text(str(run.steps)),
            "tools": Text(str(run.tool_calls)),
            "tokens": Text(fmt_int(run.input_tokens + run.output_tokens)),
            "cost": Text(fmt_cost(run.cost_usd)),
        }
        if models:
            cells["model"] = recorded(models.get(run.run_id, "") or "—")
        rows.append(cells)
    wanted = [name for name in _RUN_COLUMN_PRIORITY if name != "model" or models]
    needed = {name: max([len(name), *(row[name].cell_len for row in rows)]) for name in wanted}
    chosen, left_out = _fit(wanted, needed, width, keep=("id", "name", "status"))
    years = {run.started_at.astimezone(timezone.utc).year for run in runs}
    if left_out and len(years) == 1:  # narrow: the start without its year
        for row, run in zip(rows, runs, strict=True):
            row["started (UTC)"] = Text(fmt_time(run.started_at)[5:])
        needed["started (UTC)"] = len("started (UTC)")
        chosen, left_out = _fit(wanted, needed, width, keep=("id", "name", "status"))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    columns = [name for name in _RUN_COLUMN_ORDER if name in chosen]
    room = None if width is None else width - sum(needed[c] + _GAP for c in columns if c != "name")
    for name in columns:
        if name == "name":  # the one column that may give way when even the kept ones do not fit
            table.add_column(name, overflow="ellipsis", no_wrap=True,
                             max_width=None if room is None else max(8, min(needed[name], room)))
        else:
            table.add_column(name, no_wrap=True, justify="right" if name in _NUMERIC else "left",
                             style="bold" if name == "id" else None, min_width=needed[name])
    for row in rows:
        table.add_row(*(row[name] for name in columns))
    return table, left_out


def _fit(
    wanted: list[str], needed: Mapping[str, int], width: int | None, *, keep: Iterable[str]
) -> tuple[set[str], list[str]]:
    """The columns (by priority) that fit ``width`` whole, and those left out."""
    chosen = set(keep)
    used = sum(needed[name] for name in chosen) + _GAP * (len(chosen) - 1)
    left_out = []
    for name in wanted:
        if name in chosen:
            continue
        if width is None or used + _GAP + needed[name] <= width:
            chosen.add(name)
            used += _GAP + needed[name]
        else:
            left_out.append(name)
    return chosen, left_out


def left_out_note(left_out: list[str], width: int) -> str:
    return f"not shown at {width} columns: {', '.join(left_out)} (widen the terminal, or use --json)"


# `stats` columns in the table's order: title, key, format; and which to keep first.
_STATS_COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("runs", "runs", fmt_int),
    ("failed", "failed", fmt_int),
    ("failure rate", "failure_rate", fmt_rate),
    ("input tokens", "input_tokens", fmt_int),
    ("output tokens", "output_tokens", fmt_int),
    ("thinking", "thinking_tokens", fmt_int),
    ("cost", "cost_usd", fmt_cost),
    ("p50 time", "duration_p50_ms", fmt_duration),
    ("p95 time", "duration_p95_ms", fmt_duration),
    ("p50 step", "step_p50_ms", fmt_duration),
    ("p95 step", "step_p95_ms", fmt_duration),
    ("p50 tool", "tool_p50_ms", fmt_duration),
    ("p95 tool", "tool_p95_ms", fmt_duration),
)
_STATS_PRIORITY = ("runs", "failed", "failure rate", "cost", "p50 time", "p95 time", "input tokens",
                   "output tokens", "p50 step", "p95 step", "p50 tool", "p95 tool", "thinking")


def stats_table(
    rows: list[dict[str, Any]], by: str, total: Mapping[str, Any] | None = None, *, width: int | None = None
) -> tuple[Table, list[str]]:
    """The `stats` table with a total row (when given), fitted to ``width`` cells:
    numbers are never cut; columns that do not fit are left out, least wanted first.
    Returns the table and the titles of the columns left out."""
    labels = [recorded(row[by] if row[by] not in (None, "") else "(none)") for row in rows]
    cells = {title: [fmt(row.get(key)) for row in rows] for title, key, fmt in _STATS_COLUMNS}
    footers = {title: fmt(total.get(key)) for title, key, fmt in _STATS_COLUMNS} if total else {}
    needed = {
        title: max(len(title), *(cell_len(c) for c in cells[title]), cell_len(footers.get(title, "")))
        for title, _key, _fmt in _STATS_COLUMNS
    }
    needed[by] = min(max(len(by), 5, *(label.cell_len for label in labels)), 30)
    chosen, left_out = _fit([by, *_STATS_PRIORITY], needed, width, keep=(by,))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                  show_footer=total is not None)
    columns = [title for title, _key, _fmt in _STATS_COLUMNS if title in chosen]
    room = None if width is None else width - sum(needed[c] + _GAP for c in columns)
    table.add_column(by, footer="total", overflow="ellipsis", no_wrap=True,
                     max_width=None if room is None else max(8, min(needed[by], room)))
    for title in columns:
        table.add_column(title, justify="right", no_wrap=True, min_width=needed[title],
                         footer=footers.get(title, ""))
    for i, label in enumerate(labels):
        table.add_row(label, *(cells[title][i] for title in columns))
    return table, left_out
