"""``agentaudit status`` and ``agentaudit forward``: a worker's spool, seen and drained.

Why commands of their own: the backlog of a spool (what its server does not have
yet) is what an operator watches during an outage, and a spool left behind by a
crashed process is shipped from the command line, without starting the agent again.
Both work on the spool file alone: ``status`` reads it without changing it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timezone
from typing import Any

import click

from .._errors import StoreError
from ..stores._forwarder import Backlog, Forwarder, read_backlog, spool_targets, target_key
from ._params import DB_ENV, CliError
from ._terminal import visible

__all__ = ["forward", "reap_leases", "register", "status"]


def register(group: click.Group) -> None:
    """Add this module's commands to the ``agentaudit`` group (one line in _app)."""
    group.add_command(status)
    group.add_command(forward)


def _server_url(db: str | None, ctx: click.Context) -> str | None:
    url = db or os.environ.get(DB_ENV)
    if url is None:
        root = (ctx.find_root().obj or {}).get("db")
        url = root if isinstance(root, str) and "://" in root else None
    if url is not None and ("://" not in url or url.startswith(("sqlite:", "memory:"))):
        raise CliError(f"--db must be a server URL (postgresql://… or mysql://…), got {visible(url)}")
    return url


def _read_only(path: str) -> sqlite3.Connection:
    if not os.path.exists(path):
        raise CliError(f"no spool at {visible(path)}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        conn.execute("SELECT count(*) FROM runs")
    except sqlite3.Error as exc:
        raise CliError(f"{visible(path)} is not an agentaudit spool: {exc}") from None
    return conn


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _backlog_json(backlog: Backlog) -> dict[str, Any]:
    return {
        "target": backlog.target,
        "runs": backlog.runs,
        "events": backlog.events,
        "oldest_at": backlog.oldest_at.isoformat() if backlog.oldest_at else None,
        "age_seconds": round(backlog.age_seconds, 3),
        "shipped_at": backlog.shipped_at.isoformat() if backlog.shipped_at else None,
    }


def _backlog_line(backlog: Backlog) -> str:
    shipped = backlog.shipped_at.strftime("%Y-%m-%d %H:%M:%S UTC") if backlog.shipped_at else "never"
    if backlog.empty:
        waiting = "nothing waiting"
    else:
        waiting = (
            f"{backlog.runs:,} runs and {backlog.events:,} events waiting, "
            f"the oldest for {_age(backlog.age_seconds)}"
        )
    return f"{visible(backlog.target)}: {waiting} (last shipped: {shipped})"


@click.command()
@click.option("--spool", "spool", required=True, metavar="FILE", help="The spool file of a worker.")
@click.option("--db", "db", default=None, metavar="URL",
              help=f"Only the backlog for this server (default: every server the spool ships to; ${DB_ENV}).")
@click.option("--max-age", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Exit with status 1 when something has waited longer than this (for health checks).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_context
def status(ctx: click.Context, spool: str, db: str | None, max_age: float | None, as_json: bool) -> None:
    """What a spool holds that its server does not have yet (read-only)."""
    url = _server_url(db, ctx)
    conn = _read_only(spool)
    try:
        targets = [target_key(url)] if url else spool_targets(conn) or ["(no server yet)"]
        now = datetime.now(timezone.utc)
        backlogs = [read_backlog(conn, target, now=now) for target in targets]
    except sqlite3.Error as exc:
        raise CliError(f"cannot read the spool {visible(spool)}: {exc}") from None
    finally:
        conn.close()
    if as_json:
        click.echo(json.dumps([_backlog_json(b) for b in backlogs], indent=2))
    else:
        for backlog in backlogs:
            click.echo(_backlog_line(backlog))
    if max_age is not None and any(not b.empty and b.age_seconds > max_age for b in backlogs):
        ctx.exit(1)


@click.command()
@click.option("--spool", "spool", required=True, metavar="FILE", help="The spool file to ship.")
@click.option("--db", "db", default=None, metavar="URL", help=f"The server to ship to (also ${DB_ENV}).")
@click.option("--timeout", type=click.FloatRange(min=0), default=60.0, show_default=True, metavar="SECONDS",
              help="Give up (exit status 1) when the server cannot take it all within this long.")
@click.pass_context
def forward(ctx: click.Context, spool: str, db: str | None, timeout: float) -> None:
    """Ship what a spool holds to its server (after a crash, say), then exit.

    Runs left running by processes of this host that are gone are marked abandoned
    in the spool first, and shipped so."""
    from ..stores import open_store
    from ..stores.sqlite import SQLiteStore

    url = _server_url(db, ctx)
    if url is None:
        raise CliError(f"forward needs --db URL (or ${DB_ENV}) naming the server")
    if not os.path.exists(spool):
        raise CliError(f"no spool at {visible(spool)}")
    local = SQLiteStore(spool, create=False)  # upgrades it, marks dead local runs abandoned
    try:
        if local.recovered:
            click.echo(f"marked {len(local.recovered):,} runs of ended processes abandoned in the spool")
        forwarder = Forwarder(
            local.path, lambda: open_store(url), target=target_key(url), lease_ttl=None, reap_interval=None
        )
        drained = forwarder.drain(timeout)
        left = forwarder.backlog()
        forwarder.stop(0.1)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        local.close()
    click.echo(
        f"shipped {forwarder.shipped_runs:,} finished runs and {forwarder.shipped_events:,} events "
        f"to {visible(left.target)} in {forwarder.batches:,} batches"
    )
    if not drained:
        click.echo(f"not done: {_backlog_line(left)}; {visible(forwarder.error)}", err=True)
        ctx.exit(1)


def reap_leases(store: Any) -> list[str]:
    """For ``agentaudit reap`` on a server: the runs of processes whose lease expired,
    marked abandoned (none on a store without leases, such as a SQLite file)."""
    reap = getattr(store, "reap_expired_leases", None)
    return list(reap()) if reap is not None else []
