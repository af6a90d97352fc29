"""The seal on a finished run's row: what makes an edited run row evident.

The hash chain covers a run's events and, from its header on, the fields fixed at its
start. The row in ``runs`` is written again when the run finishes (status, output,
totals), outside the chain, so it is sealed then: a hash (keyed when the run is) over
its final fields, the number of events and the last event's hash, so an edit of the
row shows, and so do events cut from the end of a run (a chain's prefix still
verifies). The formula is `_verify.seal_of`; `_verify.verify_run` checks it.

Runs written before chain v2 (no salt) keep the v1 seal: SHA-256 over their 19
original columns as stored; `reseal` (used by the v3 migration) makes those.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from .._keys import ChainKey
from .._serialize import canonical_json
from .._verify import RunRecord, seal_of

__all__ = ["SEALED_COLUMNS", "event_tail", "reseal", "run_record", "run_seal", "seal_run"]

# The columns a v1 seal covers (the runs table as version 3 left it, but model).
SEALED_COLUMNS = (
    "run_id, name, caller, parent_run_id, status, started_at, finished_at, input, output, "
    "error, tool_calls, steps, input_tokens, output_tokens, thinking_tokens, cost_usd, "
    "metadata, host, pid"
)
_PREFIX = "agentaudit run seal v1\n"


def run_seal(row: Sequence[Any], events: int, last_hash: str) -> str:
    """The v1 seal of a run row (``SEALED_COLUMNS`` values as stored) whose log has
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
    """Seal the run's row with the v1 formula as it stands now (the v3 migration)."""
    row = conn.execute(f"SELECT {SEALED_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is not None:
        seal = run_seal(row, *event_tail(conn, run_id))
        conn.execute("UPDATE runs SET seal = ? WHERE run_id = ?", (seal, run_id))


def run_record(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
    """The run's row as stored, named."""
    cursor = conn.execute(
        f"SELECT {', '.join(RunRecord._fields)} FROM runs WHERE run_id = ?", (run_id,)
    )
    row = cursor.fetchone()
    return RunRecord(*row) if row is not None else None


def seal_run(
    conn: sqlite3.Connection, run_id: str, keyring: Mapping[str, ChainKey] | None
) -> bool:
    """Seal the finished run's row as it stands now, with the key it names. False
    (and no seal) when that key is not in ``keyring``."""
    record = run_record(conn, run_id)
    if record is None:
        return False
    key = None
    if record.key_id:
        key = keyring.get(record.key_id) if keyring is not None else None
        if key is None:
            return False
    seal = seal_of(record, key, *event_tail(conn, run_id))
    conn.execute("UPDATE runs SET seal = ? WHERE run_id = ?", (seal, run_id))
    return True
