"""Model values to SQLite rows and back.

Timestamps are text: ISO 8601 with microseconds and the UTC offset. A run's times are
normalised to UTC so that text order is time order (the filters compare them as
text); an event's ``created_at`` keeps the offset it was written with, so the value
read back is the one the hash chain was computed over, to the microsecond.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .._chain import utc_text
from .._model import Event, Run, RunStats, RunStatus
from .._serialize import canonical_json, safe_text
from .._verify import record_of_run

__all__ = [
    "EVENT_COLUMNS",
    "INSERT_EVENT",
    "INSERT_FINISHED_RUN",
    "INSERT_RUN",
    "RUN_COLUMNS",
    "UPDATE_FINISH",
    "event_from_row",
    "event_row",
    "finish_row",
    "format_ts",
    "parse_ts",
    "run_from_row",
    "run_row",
    "utc_ts",
]

RUN_COLUMNS = (
    "run_id, name, caller, parent_run_id, status, started_at, finished_at, input, output, "
    "error, tool_calls, steps, input_tokens, output_tokens, thinking_tokens, cost_usd, "
    "metadata, host, pid, key_id, salt"
)
EVENT_COLUMNS = "run_id, sequence, event_type, payload, created_at, prev_hash, hash, salt"

INSERT_RUN = f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join('?' * 21)})"
# A run whose start and finish are written in one batch: its final row, sealed.
INSERT_FINISHED_RUN = f"INSERT INTO runs ({RUN_COLUMNS}, model, seal) VALUES ({', '.join('?' * 23)})"
INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
UPDATE_FINISH = (
    "UPDATE runs SET status = ?, finished_at = ?, output = ?, error = ?, tool_calls = ?, "
    "steps = ?, input_tokens = ?, output_tokens = ?, thinking_tokens = ?, cost_usd = ? "
    "WHERE run_id = ?"
)


def format_ts(value: datetime) -> str:
    """``value`` as stored, keeping its offset (event times)."""
    return value.isoformat(timespec="microseconds")


def utc_ts(value: datetime) -> str:
    """``value`` in UTC as stored (run times, filter bounds): text order is time order."""
    return utc_text(value)


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def event_row(event: Event, created_text: str | None = None) -> tuple[Any, ...]:
    """The stored row: the payload text the event was sealed with, when it carries
    it. ``created_text``: its time already formatted (events of one hand-over share
    one)."""
    return (
        event.run_id,
        event.sequence,
        event.event_type,
        event.payload_json or canonical_json(event.payload),
        created_text or format_ts(event.created_at),
        event.prev_hash,
        event.hash,
        event.salt,
    )


def event_from_row(row: tuple[Any, ...]) -> Event:
    run_id, sequence, event_type, payload, created_at, prev_hash, hash_, salt = row
    return Event(
        run_id=run_id,
        sequence=sequence,
        event_type=event_type,
        payload=json.loads(payload),
        created_at=datetime.fromisoformat(created_at),
        prev_hash=prev_hash,
        hash=hash_,
        payload_json=payload,
        salt=salt,
    )


def run_row(run: Run) -> tuple[Any, ...]:
    """The values of `RUN_COLUMNS` (the one stored form, `_verify.record_of_run`)."""
    return tuple(record_of_run(run))[:21]


def finish_row(run_id: str, stats: RunStats, finished_at: datetime) -> tuple[Any, ...]:
    return (
        RunStatus.parse(stats.status).value,
        utc_ts(finished_at),
        safe_text(stats.output),
        safe_text(stats.error),
        stats.tool_calls or 0,
        stats.steps or 0,
        stats.input_tokens or 0,
        stats.output_tokens or 0,
        stats.thinking_tokens or 0,
        stats.cost_usd,
        run_id,
    )


def run_from_row(row: tuple[Any, ...]) -> Run:
    (
        run_id,
        name,
        caller,
        parent_run_id,
        status,
        started_at,
        finished_at,
        input_,
        output,
        error,
        tool_calls,
        steps,
        input_tokens,
        output_tokens,
        thinking_tokens,
        cost_usd,
        metadata,
        host,
        pid,
        key_id,
        salt,
    ) = row
    return Run(
        run_id=run_id,
        name=name,
        caller=caller,
        parent_run_id=parent_run_id,
        status=status,
        started_at=parse_ts(started_at),
        finished_at=parse_ts(finished_at) if finished_at is not None else None,
        input=input_,
        output=output,
        error=error,
        tool_calls=tool_calls,
        steps=steps,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        thinking_tokens=thinking_tokens,
        cost_usd=cost_usd,
        metadata=json.loads(metadata) if metadata else {},
        host=host,
        pid=pid,
        key_id=key_id,
        salt=salt,
    )
