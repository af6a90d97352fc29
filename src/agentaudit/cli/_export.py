"""Streaming export: runs (or events) to JSON Lines or CSV, one record at a time.

Memory stays constant in the number of runs: runs are walked a page at a time and
each record is written as soon as it is read. A progress bar goes to stderr when
stderr is a terminal.

Exports get read raw (``head``, ``less``, a spreadsheet), and recorded text is
untrusted: JSON escapes every control, bidi and separator character (``\\u202e``,
exact either way), CSV shows them as visible escapes (``\\x1b``) and defuses cells
a spreadsheet would run as formulas.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .._model import RunFilter
from ..stores.sqlite import SQLiteStore
from ._terminal import json_safe, visible
from .render import event_json, json_text, run_json

__all__ = ["EVENT_FIELDS", "RUN_FIELDS", "export"]

RUN_FIELDS = [
    "run_id", "name", "caller", "parent_run_id", "status", "model", "started_at", "finished_at",
    "duration_ms", "steps", "tool_calls", "input_tokens", "output_tokens", "thinking_tokens",
    "cost_usd", "input", "output", "error", "metadata", "host", "pid",
]
EVENT_FIELDS = ["run_id", "sequence", "event_type", "created_at", "payload", "prev_hash", "hash"]


@contextlib.contextmanager
def _open_output(output: str) -> Iterator[IO[str]]:
    """Where the records go. A file is written beside its final name and renamed
    into place once complete, so a failed export never leaves half a file (nor
    clobbers the one that was there); a device or pipe (``/dev/stdout``) is written
    as it is. Raises OSError (the command reports it in one line)."""
    if output == "-":
        yield sys.stdout
        return
    if os.path.isdir(output):
        raise IsADirectoryError(errno.EISDIR, "is a directory (give a file name)", output)
    if os.path.exists(output) and not os.path.isfile(output):
        with open(output, "w", encoding="utf-8", newline="") as handle:
            yield handle
        return
    # An export holds prompts and tool results: readable by its owner only, like the db.
    fd, partial = tempfile.mkstemp(prefix=".agentaudit-export-", dir=os.path.dirname(os.path.abspath(output)))
    try:
        with open(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(partial, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


# A cell a spreadsheet would run as a formula (=HYPERLINK(...), +cmd|...) starts with
# one of these: such recorded text is written with a leading apostrophe, as OWASP
# advises, so that opening the export never runs what an agent recorded.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell: JSON for structures (control characters as JSON escapes), recorded
    text with control characters as visible escapes (``\\x1b``) and formulas defused;
    numbers as they are."""
    if isinstance(value, (dict, list)):
        return json_safe(json.dumps(value, ensure_ascii=False, sort_keys=True))
    if value is None:
        return ""
    if isinstance(value, str):
        text = visible(value, multiline=True)
        return "'" + text if text.startswith(_FORMULA_START) else text
    return value


def export(store: SQLiteStore, flt: RunFilter, *, fmt: str, output: str, per_event: bool) -> int:
    """Write the runs ``flt`` selects to ``output`` (``-``: stdout); return how many
    records (runs, or events with ``per_event``) were written."""
    total = store.count_runs(flt)
    if flt.limit is not None:
        total = min(total, flt.limit)
    written = 0
    with _open_output(output) as handle, _progress(total, output) as advance:
        fields = EVENT_FIELDS if per_event else RUN_FIELDS
        writer = csv.DictWriter(handle, fieldnames=fields) if fmt == "csv" else None
        if writer is not None:
            writer.writeheader()
        for run in store.iter_runs(flt):
            events = store.get_logs(run.run_id) if (per_event or fmt == "jsonl") else None
            if per_event:
                records: list[dict[str, Any]] = [event_json(e) for e in events or []]
            else:
                record = run_json(run, model=store.run_models([run.run_id]).get(run.run_id, ""))
                if fmt == "jsonl":
                    record["events"] = [event_json(e) for e in events or []]
                records = [record]
            for record in records:
                if writer is not None:
                    writer.writerow({key: _cell(record.get(key)) for key in fields})
                else:
                    handle.write(json_text(record) + "\n")
                written += 1
            advance()
        handle.flush()
    return written


@contextlib.contextmanager
def _progress(total: int, output: str) -> Iterator[Any]:
    # Only on a terminal, and not when the records themselves scroll past on it.
    if not sys.stderr.isatty() or (output == "-" and sys.stdout.isatty()):
        yield lambda: None
        return
    progress = Progress(
        TextColumn("exporting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        redirect_stdout=False,
    )
    with progress:
        task = progress.add_task("runs", total=total)
        yield lambda: progress.advance(task)
