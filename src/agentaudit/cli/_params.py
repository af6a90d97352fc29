"""Reading the command line's values: moments ("2h", "7d", a date), the database path,
and the one-line errors the command exits with."""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import click

from ._terminal import visible

__all__ = [
    "DB_ENV",
    "DEFAULT_DB",
    "CliError",
    "Moment",
    "StaleAfter",
    "open_reader",
    "open_writer",
    "parse_duration",
    "parse_moment",
]

DB_ENV = "AGENTAUDIT_DB"
DEFAULT_DB = "agentaudit.db"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


class CliError(click.ClickException):
    """A problem the user can fix (unknown run, missing file, newer schema): one line
    on stderr, exit status 2, no traceback. The message may quote recorded text (the
    run ids an ambiguous prefix matches): it is printed `visible`."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"agentaudit: {visible(self.format_message())}", file=file, err=file is None)


def parse_duration(text: str) -> timedelta | None:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"7d"``, ``"1w"`` as a timedelta; None if not one."""
    match = _DURATION.match(text)
    if not match:
        return None
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])


def parse_moment(text: str, *, now: datetime | None = None) -> datetime:
    """A duration back from now (``2h``, ``7d``) or a date / ISO 8601 time. Times
    without an offset are UTC, as every time the command prints."""
    delta = parse_duration(text)
    if delta is not None:
        return (now or datetime.now(timezone.utc)) - delta
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (90s, 30m, 2h, 7d, 1w) nor a date (2024-05-01, "
            "2024-05-01T12:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


if TYPE_CHECKING:  # generic in click's newer stubs, and not subscriptable in click 8.1
    _MomentType = click.ParamType[datetime]
    _DurationType = click.ParamType[timedelta]
else:
    _MomentType = _DurationType = click.ParamType


class Moment(_MomentType):
    """A point in time: ``2h`` / ``7d`` ago, or a date."""

    name = "WHEN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_moment(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class StaleAfter(_DurationType):
    """A positive duration: ``30m``, ``2h``, ``1d``."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        delta = parse_duration(str(value))
        if delta is None or delta <= timedelta(0):
            self.fail(f"{value!r} is not a duration like 30m, 2h or 1d", param, ctx)
        return delta


def resolve_db(path: str | None) -> str:
    return path or os.environ.get(DB_ENV) or DEFAULT_DB


def open_reader(ctx: click.Context, db: str | None) -> Any:
    """The database a read command reads: opened read-only, so looking never changes
    the file (no migration, no marking of dead runs). Closed with the command."""
    return _open(ctx, db, read_only=True)


def open_writer(ctx: click.Context, db: str | None) -> Any:
    """The database a write command (purge, delete, reap) changes: it must exist
    and be an agentaudit database already; it is upgraded if older."""
    return _open(ctx, db, read_only=False)


def _open(ctx: click.Context, db: str | None, *, read_only: bool) -> Any:
    from ..stores import open_store
    from ..stores.sqlite import SQLiteStore

    path = db or (ctx.find_root().obj or {}).get("db") or DEFAULT_DB
    if "://" in path:
        store = open_store(path, read_only=read_only)
    elif read_only:
        store = SQLiteStore(path, read_only=True)
    else:
        store = SQLiteStore(path, create=False)
    ctx.call_on_close(store.close)
    return store
