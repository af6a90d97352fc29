"""The seal on a finished run's row: what makes an edited run row evident.

The hash chain covers a run's events. The run's row in ``runs`` (status, output,
totals) is written again when the run finishes, outside the chain, so an edit of it
would go unseen, and so would events cut from the end of a run (a chain's prefix
still verifies). The seal is SHA-256 over the finished row as stored (every column
but ``model``, which is derived from the ``resolved_model`` event), the number of
events and the last event's hash; `SQLiteStore.verify` checks it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from typing import Any

from .._serialize import canonical_json
from ._sqlite_rows import RUN_COLUMNS

__all__ = ["SEALED_COLUMNS", "event_tail", "reseal", "run_seal", "seal_problem"]

SEALED_COLUMNS = RUN_COLUMNS
_STATUS = 4  # the status column's place in SEALED_COLUMNS
# Versioned, so that a future formula can tell its seals from these.
_PREFIX = "agentaudit run seal v1\n"


def run_seal(row: Sequence[Any], events: int, last_hash: str) -> str:
    """The seal of a run row (``SEALED_COLUMNS`` values as stored) whose log has
    ``events`` events, the last one hashing to ``last_hash`` ("" when none)."""
    text = _PREFIX + canonical_json([list(row), events, last_hash])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def event_tail(conn: sqlite3.Connection, run_id: str) -> tuple[int, str]:
    """(sequence, hash) of the run's last stored event; (0, "") when it has none."""
    row = conn.execute(
        "SELECT sequence, hash FROM events WHERE run_id = ? ORDER BY sequence DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    return (row[0], row[1]) if row else (0, "")


def reseal(conn: sqlite3.Connection, run_id: str) -> None:
    """Seal the run's row as it stands now (once its finish is written)."""
    row = conn.execute(f"SELECT {SEALED_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is not None:
        seal = run_seal(row, *event_tail(conn, run_id))
        conn.execute("UPDATE runs SET seal = ? WHERE run_id = ?", (seal, run_id))


def seal_problem(conn: sqlite3.Connection, run_id: str) -> str:
    """Why the run's row does not hold up against its seal; "" when it does (or
    when it is still running, and so not sealed yet)."""
    row = conn.execute(
        f"SELECT {SEALED_COLUMNS}, seal FROM runs WHERE run_id = ?", (run_id,)
    ).fetchone()
    if row is None:
        return ""
    *values, seal = row
    if values[_STATUS] == "running":
        # A seal is only ever written with a final status.
        return "the run is marked running, yet its row was sealed as finished" if seal else ""
    if not seal:
        return "the run finished but its row carries no seal"
    if seal != run_seal(values, *event_tail(conn, run_id)):
        return (
            "the run's row does not match its seal: a field was edited, "
            "or events were removed from the end of its log"
        )
    return ""
