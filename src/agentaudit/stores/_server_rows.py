"""Model values to server rows and back, and server rows to the records `_verify` checks.

The chain and the seals are computed over a run's stored text form (`_verify.RunRecord`:
times in UTC with microseconds, metadata as canonical JSON text), which is SQLite's
column form. A server keeps times as timestamps, to the microsecond, so a row read
back is turned into that same text form before it is sealed or verified: a run
sealed in a SQLite spool and forwarded verifies on the server, and a run written to
the server verifies exactly as one written to SQLite. Event times and payloads are
stored as the text they were hashed with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from .._chain import format_time, utc_text
from .._model import Event, Run
from .._serialize import canonical_json
from .._verify import EventRecord, RunRecord, record_of_run
from ..payloads import DURATION_MS, STEP, STEP_MS, TOOL_RESULT

__all__ = [
    "EVENT_COLUMNS",
    "RUN_COLUMNS",
    "START_COLUMNS",
    "WRITTEN_EVENT_COLUMNS",
    "event_from_row",
    "event_record_of_row",
    "event_values",
    "record_of_row",
    "run_from_row",
    "run_values",
]

# A run's columns, in `_verify.RunRecord` order; a start writes all but model and seal.
RUN_COLUMNS = ", ".join(RunRecord._fields)
START_COLUMNS = ", ".join(RunRecord._fields[:-2])
_STARTED, _FINISHED = RunRecord._fields.index("started_at"), RunRecord._fields.index("finished_at")
EVENT_COLUMNS = "run_id, sequence, event_type, payload, created_at, prev_hash, hash, salt"
# What is written: the stored event and its timing, read from the payload once (see ms).
WRITTEN_EVENT_COLUMNS = EVENT_COLUMNS + ", ms"
_TIMED = {STEP: STEP_MS, TOOL_RESULT: DURATION_MS}


def run_values(run: Run, ts: Callable[[datetime], Any], *, model: str | None = None, seal: str | None = None) -> tuple[Any, ...]:
    """``run`` as the values of `START_COLUMNS` (with ``model`` and ``seal``, of
    `RUN_COLUMNS`): its stored text form, times as the driver takes them."""
    values = list(record_of_run(run))[:-2]
    values[_STARTED] = ts(run.started_at)
    values[_FINISHED] = ts(run.finished_at) if run.finished_at is not None else None
    if model is not None or seal is not None:
        values += [model or "", seal or ""]
    return tuple(values)


def record_of_row(row: Sequence[Any], from_ts: Callable[[Any], datetime]) -> RunRecord:
    """A `RUN_COLUMNS` row as the stored text form `_verify` checks."""
    values = list(row)
    for at in (_STARTED, _FINISHED):
        if values[at] is not None:
            values[at] = utc_text(from_ts(values[at]))
    for at, name in enumerate(RunRecord._fields):  # drivers hand back Decimal for some sums
        if name in ("tool_calls", "steps", "input_tokens", "output_tokens", "thinking_tokens", "pid"):
            values[at] = int(values[at])
    return RunRecord(*values)


def run_from_row(row: Sequence[Any], from_ts: Callable[[Any], datetime]) -> Run:
    record = record_of_row(row, from_ts)
    return Run(
        run_id=record.run_id,
        name=record.name,
        caller=record.caller,
        parent_run_id=record.parent_run_id,
        status=record.status,
        started_at=datetime.fromisoformat(record.started_at),
        finished_at=datetime.fromisoformat(record.finished_at) if record.finished_at is not None else None,
        input=record.input,
        output=record.output,
        error=record.error,
        tool_calls=record.tool_calls,
        steps=record.steps,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        thinking_tokens=record.thinking_tokens,
        cost_usd=record.cost_usd,
        metadata=json.loads(record.metadata) if record.metadata else {},
        host=record.host,
        pid=record.pid,
        key_id=record.key_id,
        salt=record.salt,
    )


def event_values(event: Event) -> tuple[Any, ...]:
    """The written event (`WRITTEN_EVENT_COLUMNS`): the payload text it was sealed
    with, its time as hashed, and its timing (a step's ``step_ms``, a tool result's
    ``duration_ms``; None for other events or a value that is not a number)."""
    timed = _TIMED.get(event.event_type)
    ms = event.payload.get(timed) if timed is not None else None
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms):
        ms = None
    return (
        event.run_id,
        event.sequence,
        event.event_type,
        event.payload_json or canonical_json(event.payload),
        format_time(event.created_at),
        event.prev_hash,
        event.hash,
        event.salt,
        None if ms is None else float(ms),
    )


def event_from_row(row: Sequence[Any]) -> Event:
    run_id, sequence, event_type, payload, created_at, prev_hash, hash_, salt = row
    return Event(
        run_id=run_id,
        sequence=int(sequence),
        event_type=event_type,
        payload=json.loads(payload),
        created_at=datetime.fromisoformat(created_at),
        prev_hash=prev_hash,
        hash=hash_,
        payload_json=payload,
        salt=salt,
    )


def event_record_of_row(row: Sequence[Any], id: int | None = None) -> EventRecord:
    run_id, sequence, event_type, payload, created_at, prev_hash, hash_, salt = row
    return EventRecord(run_id, int(sequence), event_type, payload, created_at, prev_hash, hash_, salt, id)
