"""The ``agentaudit`` command: read, export, verify and prune an audit database."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click
from rich.console import Console

from .._errors import AgentAuditError
from .._model import TERMINAL_STATUSES, RunFilter, RunStatus
from ..stores.sqlite import SUMMARY_GROUPS, SQLiteStore
from . import _export
from ._params import DB_ENV, DEFAULT_DB, CliError, Moment, StaleAfter
from ._terminal import visible
from .render import (
    event_json,
    event_line,
    fmt_time,
    render_run,
    resolve_run,
    run_json,
    runs_table,
    show_json,
    stats_table,
)

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])
STATUS_NAMES = [s.value for s in RunStatus]


class _Group(click.Group):
    """Turns the library's errors into one line and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AgentAuditError as exc:
            raise CliError(str(exc)) from None
        except sqlite3.Error as exc:
            raise CliError(f"database error: {exc}") from None


def _out() -> Console:
    # Piped output has no width to fit: give tables room rather than 80 columns.
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=160 if wide else None)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


# -- shared options ------------------------------------------------------------------


def db_option(fn: F) -> F:
    return click.option(
        "--db",
        "db",
        default=None,
        metavar="PATH",
        help=f"The SQLite audit file (default: the group's --db, ${DB_ENV}, or {DEFAULT_DB}).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


def filter_options(fn: F) -> F:
    options = [
        click.option("--caller", help="Only runs of this caller (exact)."),
        click.option("--name", help="Only runs with this name (exact)."),
        click.option(
            "--status",
            "statuses",
            multiple=True,
            type=click.Choice(STATUS_NAMES),
            help="Only runs with this status; repeat for several.",
        ),
        click.option(
            "--since", type=Moment(), help="Only runs started at or after: 2h, 7d, or a date (UTC)."
        ),
        click.option("--until", type=Moment(), help="Only runs started before: 2h, 7d, or a date."),
        click.option("--parent", "parent", metavar="RUN", help="Only child runs of this run id."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _filter(
    *,
    caller: str | None = None,
    name: str | None = None,
    statuses: tuple[str, ...] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    parent: str | None = None,
    limit: int | None = None,
    **_: Any,
) -> RunFilter:
    return RunFilter(
        caller=caller,
        name=name,
        status=statuses or None,
        since=since,
        until=until,
        parent_run_id=parent,
        limit=limit,
    )


def _open(ctx: click.Context, db: str | None) -> SQLiteStore:
    path = db or (ctx.obj or {}).get("db") or DEFAULT_DB
    store = SQLiteStore(path, create=False)
    ctx.call_on_close(store.close)
    return store


# -- the commands ------------------------------------------------------------------------


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--db",
    "db",
    envvar=DB_ENV,
    default=DEFAULT_DB,
    show_default=True,
    metavar="PATH",
    help=f"The SQLite audit file to read (also ${DB_ENV}).",
)
@click.version_option(package_name="agentaudit", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, db: str) -> None:
    """Read, export, verify and prune an agentaudit database."""
    ctx.ensure_object(dict)["db"] = db


@cli.command()
@filter_options
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many runs to list.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many runs first.")
@json_option
@db_option
@click.pass_context
def runs(ctx: click.Context, as_json: bool, db: str | None, limit: int, offset: int, **filters: Any) -> None:
    """List runs, newest first."""
    store = _open(ctx, db)
    flt = _filter(limit=limit, **filters)
    flt = RunFilter(**{**_fields(flt), "offset": offset})
    found = store.list_runs(flt)
    models = store.run_models(run.run_id for run in found)
    if as_json:
        _print_json([run_json(run, model=models.get(run.run_id, "")) for run in found])
        return
    out = _out()
    if not found:
        out.print("no runs match", style="dim")
        return
    out.print(runs_table(found, models if any(models.values()) else None))
    total = store.count_runs(_filter(**filters))
    if total > len(found):
        out.print(f"{len(found)} of {total} runs shown (--limit, --offset)", style="dim")


@cli.command()
@click.argument("run")
@json_option
@db_option
@click.pass_context
def show(ctx: click.Context, run: str, as_json: bool, db: str | None) -> None:
    """Show one run: header, timeline and child runs. RUN may be a unique id prefix."""
    store = _open(ctx, db)
    if as_json:
        _print_json(show_json(store, run))
        return
    render_run(store, run, _out())


@cli.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they are written.")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=20, show_default=True,
              help="How many recent events to print first.")
@click.option("--run", "run_prefix", metavar="RUN", help="Only events of this run (a unique id prefix).")
@click.option("--type", "event_types", multiple=True, metavar="TYPE",
              help="Only events of this type; repeat for several.")
@click.option("--interval", type=click.FloatRange(min=0.05), default=0.5, show_default=True,
              help="Seconds between polls with --follow.")
@json_option
@db_option
@click.pass_context
def tail(
    ctx: click.Context,
    follow: bool,
    lines: int,
    run_prefix: str | None,
    event_types: tuple[str, ...],
    interval: float,
    as_json: bool,
    db: str | None,
) -> None:
    """Print the latest events across runs; with -f, follow new ones live."""
    store = _open(ctx, db)
    run_id = store.resolve_run_id(run_prefix) if run_prefix else None
    types = list(event_types) or None
    out = _out()

    def emit(batch: list[tuple[int, Any]]) -> None:
        for position, event in batch:
            if as_json:
                click.echo(json.dumps({"position": position, **event_json(event)}, ensure_ascii=False))
            else:
                out.print(event_line(event), soft_wrap=True)
        sys.stdout.flush()

    recent = store.recent_events(lines, run_id=run_id, event_types=types) if lines else []
    emit(recent)
    if not follow:
        return
    cursor = recent[-1][0] if recent else store.last_event_position()
    try:
        while True:
            batch = store.events_after(cursor, run_id=run_id, event_types=types)
            if batch:
                emit(batch)
                cursor = batch[-1][0]
            else:
                time.sleep(interval)
    except KeyboardInterrupt:
        return


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True,
              help="JSON Lines or CSV.")
@click.option("--output", "-o", default="-", metavar="FILE",
              help="Write here instead of standard output (created readable by you only).")
@click.option("--events", "per_event", is_flag=True,
              help="One record per event instead of one per run.")
@filter_options
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Export at most this many runs.")
@db_option
@click.pass_context
def export(
    ctx: click.Context, fmt: str, output: str, per_event: bool, limit: int | None, db: str | None,
    **filters: Any,
) -> None:
    """Export runs (with their events) as JSONL or CSV, streaming, newest first."""
    store = _open(ctx, db)
    flt = _filter(limit=limit, **filters)
    written = _export.export(store, flt, fmt=fmt, output=output, per_event=per_event)
    if output != "-":
        click.echo(f"exported {written} {'events' if per_event else 'runs'} to {output}", err=True)


@cli.command()
@click.option("--before", type=Moment(), required=True,
              help="Delete runs started before this: 30d, 12h, or a date.")
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUS_NAMES),
              help="Only runs with this status; repeat for several (default: every finished status).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@db_option
@click.pass_context
def purge(ctx: click.Context, before: datetime, statuses: tuple[str, ...], yes: bool, db: str | None) -> None:
    """Delete old runs and their events."""
    store = _open(ctx, db)
    chosen = statuses or tuple(s.value for s in TERMINAL_STATUSES)
    count = store.count_runs(RunFilter(until=before, status=chosen))
    if count == 0:
        click.echo(f"no {'/'.join(chosen) if statuses else 'finished'} runs started before {fmt_time(before)} UTC")
        return
    if not yes:
        click.confirm(
            f"Delete {count} runs started before {fmt_time(before)} UTC "
            f"(status {', '.join(chosen)}) and their events?",
            abort=True,
        )
    deleted = store.purge(before, chosen)
    click.echo(f"deleted {deleted} runs")


@cli.command()
@click.argument("run", required=False)
@click.option("--all", "all_runs", is_flag=True, help="Verify every run.")
@json_option
@db_option
@click.pass_context
def verify(ctx: click.Context, run: str | None, all_runs: bool, as_json: bool, db: str | None) -> None:
    """Check hash chains; exit status 1 when one is broken."""
    if bool(run) == all_runs:
        raise click.UsageError("give a RUN or --all (not both)")
    store = _open(ctx, db)
    one = resolve_run(store, run) if run else None
    if one is not None:
        results = [store.verify(one.run_id)]
    else:
        results = (store.verify(r.run_id) for r in store.iter_runs())
    broken = 0
    checked = 0
    records = []
    for result in results:
        checked += 1
        if not result.ok:
            broken += 1
        if as_json:
            records.append(
                {
                    "run_id": result.run_id,
                    "ok": result.ok,
                    "events": result.events,
                    "broken_sequence": result.broken_sequence,
                    "reason": result.reason,
                }
            )
        elif not result.ok:
            where = "" if result.broken_sequence is None else f" at sequence {result.broken_sequence}"
            click.echo(f"BROKEN run {visible(result.run_id)}{where}: {visible(result.reason)}")
        elif one is not None:
            sealed = ", row sealed" if one.status.is_terminal else " (running: its row is sealed when it ends)"
            click.echo(f"ok: run {visible(result.run_id)}, {result.events} events, chain intact{sealed}")
    if as_json:
        _print_json(records if all_runs else records[0])
    elif all_runs:
        click.echo(f"verified {checked} runs: {checked - broken} intact, {broken} broken")
    if broken:
        ctx.exit(1)


@cli.command()
@click.option("--by", type=click.Choice(SUMMARY_GROUPS), default="day", show_default=True,
              help="Group runs by the model that served them, caller, UTC day, name or status.")
@filter_options
@json_option
@db_option
@click.pass_context
def stats(ctx: click.Context, by: str, as_json: bool, db: str | None, **filters: Any) -> None:
    """Runs, failure rate, tokens and cost, grouped."""
    store = _open(ctx, db)
    rows = store.summary(by, _filter(**filters))
    if as_json:
        _print_json(rows)
        return
    out = _out()
    if not rows:
        out.print("no runs match", style="dim")
        return
    out.print(stats_table(rows, by))


@cli.command()
@click.option("--stale-after", type=StaleAfter(), required=True,
              help="Mark running runs with no event for this long: 30m, 2h, 1d.")
@db_option
@click.pass_context
def reap(ctx: click.Context, stale_after: timedelta, db: str | None) -> None:
    """Mark silent `running` runs (any host) abandoned."""
    store = _open(ctx, db)
    marked = store.reap(stale_after)
    for run_id in marked:
        click.echo(f"abandoned {visible(run_id)}")
    click.echo(f"marked {len(marked)} runs abandoned")


def _fields(flt: RunFilter) -> dict[str, Any]:
    return {name: getattr(flt, name) for name in RunFilter.__dataclass_fields__}


def iter_commands() -> Iterator[tuple[str, click.Command]]:
    """Every command of the tree, by its full name (for the docs check)."""
    yield "agentaudit", cli
    for name, command in sorted(cli.commands.items()):
        yield f"agentaudit {name}", command


def main(argv: list[str] | None = None) -> None:
    """The console script's entry point."""
    cli.main(args=argv, prog_name="agentaudit")
