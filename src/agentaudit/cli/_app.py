"""The ``agentaudit`` command: read, export, verify and prune an audit database."""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click
from click.shell_completion import CompletionItem
from rich.console import Console

from .._errors import AgentAuditError
from .._model import TERMINAL_STATUSES, RunFilter, RunStatus
from ..stores._follow import Follower
from ..stores.sqlite import SUMMARY_GROUPS, SQLiteStore
from . import _checkpoints, _export, _fleet, _integrity, _ui
from ._params import (
    DB_ENV,
    DEFAULT_DB,
    CliError,
    Moment,
    StaleAfter,
    open_reader,
    open_writer,
    resolve_db,
)
from ._terminal import visible
from .render import (
    SORT_KEYS,
    event_json,
    event_line,
    fmt_time,
    json_text,
    left_out_note,
    render_run,
    resolve_run,
    run_json,
    runs_table,
    short_ids,
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
        except BrokenPipeError:  # `agentaudit export | head`: the reader has what it wanted
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
            ctx.exit(141)


def _out() -> Console:
    # Piped output has no width to fit: give tables room rather than 80 columns.
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=160 if wide else None)


def _print_json(value: Any) -> None:
    click.echo(json_text(value, indent=2))


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


def _complete_run(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Shell completion of a RUN: the newest run ids that start with what is typed."""
    try:
        path = ctx.params.get("db") or (ctx.find_root().params.get("db")) or resolve_db(None)
        with SQLiteStore(path, read_only=True) as store:
            ids = [run.run_id for run in store.list_runs(RunFilter(limit=200))]
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [CompletionItem(run_id) for run_id in ids if run_id.startswith(incomplete)][:50]


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
        click.option("--parent", "parent", metavar="RUN", shell_complete=_complete_run,
                     help="Only child runs of this run (an id prefix)."),
        click.option("--model", metavar="MODEL",
                     help="Only runs first served by this model (exact): openai/gpt-4o-mini."),
        click.option("--errors", "has_error", flag_value=True, default=None,
                     help="Only runs that failed, timed out, were abandoned or carry an error."),
        click.option("--min-cost", "min_cost", type=click.FloatRange(min=0), metavar="USD",
                     help="Only runs that cost at least this many dollars."),
        click.option("--search", "search", metavar="TEXT",
                     help="Only runs whose text holds every word of TEXT (input, output, steps, tools)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def sort_options(fn: F) -> F:
    options = [
        click.option("--sort", "order_by", type=click.Choice(list(SORT_KEYS)), default="start",
                     show_default=True, help="Order by start time, duration, tokens or cost."),
        click.option("--asc", "ascending", is_flag=True, help="Smallest (oldest) first."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _filter(
    store: Any,
    *,
    caller: str | None = None,
    name: str | None = None,
    statuses: tuple[str, ...] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    parent: str | None = None,
    model: str | None = None,
    has_error: bool | None = None,
    min_cost: float | None = None,
    search: str | None = None,
    order_by: str = "start",
    ascending: bool = False,
    limit: int | None = None,
    offset: int = 0,
    **_: Any,
) -> RunFilter:
    """The filter the options describe; RUN prefixes resolved against ``store``."""
    try:
        return RunFilter(
            caller=caller,
            name=name,
            status=statuses or None,
            since=since,
            until=until,
            parent_run_id=store.resolve_run_id(parent) if parent else None,
            model=model,
            has_error=has_error,
            min_cost_usd=min_cost,
            text=search,
            order_by=SORT_KEYS[order_by],
            ascending=ascending,
            limit=limit,
            offset=offset,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _open(ctx: click.Context, db: str | None, *, write: bool = False) -> SQLiteStore:
    """The database: read-only for every read command (see `open_reader`)."""
    store: SQLiteStore = open_writer(ctx, db) if write else open_reader(ctx, db)
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
@sort_options
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many runs to list.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many runs first.")
@json_option
@db_option
@click.pass_context
def runs(ctx: click.Context, /, as_json: bool, db: str | None, **filters: Any) -> None:
    """List runs, newest first (or as --sort says)."""
    _list_runs(ctx, db, as_json, filters)


@cli.command()
@click.argument("text")
@filter_options
@sort_options
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many runs to list.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many runs first.")
@json_option
@db_option
@click.pass_context
def search(ctx: click.Context, /, text: str, as_json: bool, db: str | None, **filters: Any) -> None:
    """List the runs whose text holds every word of TEXT (same as `runs --search TEXT`)."""
    if filters.get("search"):
        text = f"{text} {filters['search']}"
    _list_runs(ctx, db, as_json, {**filters, "search": text})


def _list_runs(ctx: click.Context, db: str | None, as_json: bool, filters: dict[str, Any]) -> None:
    store = _open(ctx, db)
    flt = _filter(store, **filters)
    found = store.list_runs(flt)
    models = store.run_models(run.run_id for run in found)
    if as_json:
        _print_json([run_json(run, model=models.get(run.run_id, "")) for run in found])
        return
    out = _out()
    if not found:
        out.print("no runs match", style="dim")
        return
    shown = short_ids(store, (run.run_id for run in found))
    table, left_out = runs_table(found, models if any(models.values()) else None, shown, width=out.width)
    out.print(table)
    if left_out:
        out.print(left_out_note(left_out, out.width), style="dim")
    total = store.count_runs(_filter(store, **{**filters, "limit": None, "offset": 0}))
    if total > len(found):
        out.print(f"{len(found)} of {total:,} runs shown (--limit, --offset)", style="dim")


@cli.command()
@click.argument("run", shell_complete=_complete_run)
@json_option
@db_option
@click.pass_context
def show(ctx: click.Context, run: str, as_json: bool, db: str | None) -> None:
    """Show one run: header, timeline and child runs. RUN may be an id prefix."""
    store = _open(ctx, db)
    if as_json:
        _print_json(show_json(store, run))
        return
    render_run(store, run, _out())


@cli.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they are written.")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=20, show_default=True,
              help="How many recent events to print first.")
@click.option("--run", "run_prefix", metavar="RUN", shell_complete=_complete_run,
              help="Only events of this run (an id prefix).")
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
        shown = {} if as_json else short_ids(store, {event.run_id for _position, event in batch})
        for position, event in batch:
            if as_json:
                click.echo(json_text({"position": position, **event_json(event)}))
            else:
                out.print(event_line(event, shown.get(event.run_id)), soft_wrap=True)
        sys.stdout.flush()

    # The follower takes its place (the newest position, and the empty ones below it)
    # before the recent events are read: on a server an event whose transaction commits
    # late lands behind positions already there, and is shown when it does (see _follow).
    follower = Follower(store, store.last_event_position(), run_id=run_id, event_types=types) if follow else None
    recent = store.recent_events(lines, run_id=run_id, event_types=types) if lines else []
    if follower is not None:
        recent = [(position, event) for position, event in recent if position <= follower.cursor]
        follower.seen(position for position, _event in recent)  # not shown twice
    emit(recent)
    if follower is None:
        return
    try:
        while True:
            batch = follower.poll()
            if batch:
                emit(batch)
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
@_checkpoints.bundle_options
@db_option
@click.pass_context
def export(
    ctx: click.Context, /, fmt: str, output: str, per_event: bool, limit: int | None, db: str | None,
    **filters: Any,
) -> None:
    """Export runs (with their events) as JSONL or CSV, streaming, newest first."""
    store = _open(ctx, db)
    flt = _filter(store, limit=limit, **filters)
    if _checkpoints.export_bundle(ctx, db, flt, **filters):
        return
    try:
        written = _export.export(store, flt, fmt=fmt, output=output, per_event=per_event)
    except BrokenPipeError:
        raise
    except OSError as exc:
        where = output if output != "-" else "standard output"
        raise CliError(f"cannot write {where}: {exc.strerror or exc}") from None
    if output != "-":
        click.echo(f"exported {_count(written, 'event' if per_event else 'run')} to {output}", err=True)


@cli.command()
@click.argument("run", shell_complete=_complete_run)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@db_option
@click.pass_context
def delete(ctx: click.Context, run: str, yes: bool, db: str | None) -> None:
    """Delete one run and its events (its child runs are kept)."""
    store = _open(ctx, db, write=True)
    found = resolve_run(store, run)
    if not found.status.is_terminal:
        raise CliError(
            f"run {found.run_id} is still running; delete it once it ends (or `agentaudit reap` it)"
        )
    events = len(store.get_logs(found.run_id))
    what = (f"run {visible(found.run_id)} ({visible(found.name)}, {found.status.value}, started "
            f"{fmt_time(found.started_at)} UTC) and its {_count(events, 'event')}")
    if not yes:
        click.confirm(f"Delete {what}?", abort=True)
    store.delete_run(found.run_id)
    click.echo(f"deleted {what}")


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
    store = _open(ctx, db, write=True)
    chosen = statuses or tuple(s.value for s in TERMINAL_STATUSES)
    count = store.count_runs(RunFilter(until=before, status=chosen))
    if count == 0:
        click.echo(f"no {'/'.join(chosen) if statuses else 'finished'} runs started before {fmt_time(before)} UTC")
        return
    if not yes:
        click.confirm(
            f"Delete {_count(count, 'run')} started before {fmt_time(before)} UTC "
            f"(status {', '.join(chosen)}) and their events?",
            abort=True,
        )
    deleted = store.purge(before, chosen)
    click.echo(f"deleted {_count(deleted, 'run')}")


@cli.command()
@click.option("--by", type=click.Choice(SUMMARY_GROUPS), default="day", show_default=True,
              help="Group runs by the model that served them, caller, UTC day, name or status.")
@filter_options
@json_option
@db_option
@click.pass_context
def stats(ctx: click.Context, /, by: str, as_json: bool, db: str | None, **filters: Any) -> None:
    """Runs, failure rate, tokens, cost and time percentiles, grouped."""
    store = _open(ctx, db)
    flt = _filter(store, **filters)
    rows = store.summary(by, flt)
    if as_json:
        _print_json(rows)
        return
    out = _out()
    if not rows:
        out.print("no runs match", style="dim")
        return
    total = store.summary_total(flt) if len(rows) > 1 else None
    table, left_out = stats_table(rows, by, total, width=out.width)
    out.print(table)
    if left_out:
        out.print(left_out_note(left_out, out.width), style="dim")


@cli.command()
@click.option("--stale-after", type=StaleAfter(), default=None,
              help="Also mark running runs (any host) with no event for this long: 30m, 2h, 1d.")
@db_option
@click.pass_context
def reap(ctx: click.Context, stale_after: timedelta | None, db: str | None) -> None:
    """Mark runs of dead local processes, and silent `running` runs, abandoned."""
    store = _open(ctx, db, write=True)  # opening for writing marks the dead local ones
    marked = list(getattr(store, "recovered", ())) + _fleet.reap_leases(store)  # leases: on a server
    if stale_after is not None:
        marked += store.reap(stale_after)
    for run_id in marked:
        click.echo(f"abandoned {visible(run_id)}")
    click.echo(f"marked {_count(len(marked), 'run')} abandoned")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


cli.add_command(_ui.ui)
_checkpoints.register(cli)
_integrity.register(cli)
_fleet.register(cli)


def iter_commands() -> Iterator[tuple[str, click.Command]]:
    """Every command of the tree, by its full name (for the docs check)."""
    yield "agentaudit", cli
    for name, command in sorted(cli.commands.items()):
        yield f"agentaudit {name}", command


def main(argv: list[str] | None = None) -> None:
    """The console script's entry point."""
    cli.main(args=argv, prog_name="agentaudit")
