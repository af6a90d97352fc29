"""The four attacks of issue 12, tried with the file and ordinary tools (sqlite3):
each one now shows in `verify`, and verification never raises on what it finds."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

import agentaudit as aa

STEP = aa.Response(
    text="paying bob", model="p/m", usage=aa.Usage(3, 2),
    tool_calls=(aa.ToolCall("pay", {"to": "bob", "usd": 10}, "c1"),),
)
FORGED = "paid $10000 to mallory"


def raw(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(db, isolation_level=None)


def record(db: Path, **store_options: object) -> str:
    with aa.SQLiteStore(db, **store_options) as store:  # type: ignore[arg-type]
        writer = aa.Auditor(store).start_run(
            "payments", caller="alice", input="pay bob $10", metadata={"ticket": 7}, parent_run_id=None
        )
        writer.on_step(1, STEP)
        writer.on_tool(STEP.tool_calls[0], "paid $10 to bob")
        writer.close(aa.RunStats(output="paid $10 to bob"))
        return writer.run_id


def verify(db: Path, run_id: str, **options: object) -> aa.VerifyResult:
    with aa.SQLiteStore(db, read_only=True) as store:
        return store.verify(run_id, **options)  # type: ignore[arg-type]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- 1. a finished run reset to running, edited, and sealed by whoever opens the file --


def test_a_finished_run_reset_to_running_and_edited_is_broken(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    run_id = record(db)
    raw(db).execute(
        "UPDATE runs SET status = 'running', seal = '', finished_at = NULL, output = ?, "
        "input_tokens = 999 WHERE run_id = ?",
        (FORGED, run_id),
    )
    result = verify(db, run_id)
    assert not result.ok and result.state == "broken"
    assert "reset to running" in result.reason


def test_opening_the_file_does_not_seal_a_forged_row(tmp_path: Path) -> None:
    """The attacker also makes the run look like a crash (a dead pid), so that the
    next process to open the file marks it abandoned and seals it."""
    db = tmp_path / "a.db"
    run_id = record(db)
    raw(db).execute(
        "UPDATE runs SET status = 'running', seal = '', finished_at = NULL, output = ?, "
        "caller = 'mallory', pid = ? WHERE run_id = ?",
        (FORGED, dead_pid(), run_id),
    )
    with aa.SQLiteStore(db) as store:  # opening for writing recovers dead runs
        assert store.recovered == [run_id]
        run = store.get_run(run_id)
        assert run is not None and run.status is aa.RunStatus.ABANDONED
        assert run.output == ""  # the forged output is not what got sealed
        result = store.verify(run_id)
    assert not result.ok
    assert "header" in result.reason  # the caller and pid were bound at the start


def test_a_reaped_run_is_sealed_with_what_its_chain_shows(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    run_id = record(db)
    raw(db).execute(
        "UPDATE runs SET status = 'running', seal = '', finished_at = NULL, output = ?, "
        "input_tokens = 999, cost_usd = 5.0 WHERE run_id = ?",
        (FORGED, run_id),
    )
    with aa.SQLiteStore(db) as store:
        assert store.reap(timedelta(microseconds=1)) == [run_id]
        run = store.get_run(run_id)
        assert run is not None and run.status is aa.RunStatus.ABANDONED
        assert (run.output, run.input_tokens, run.cost_usd, run.steps, run.tool_calls) == ("", 3, None, 1, 1)
        assert store.verify(run_id).ok  # an honest abandoned run: nothing forged is in it


# -- 2. a duplicate key in an event's JSON --------------------------------------------


def test_a_duplicate_key_in_a_payload_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    run_id = record(db)
    conn = raw(db)
    (payload,) = conn.execute(
        "SELECT payload FROM events WHERE run_id = ? AND event_type = 'tool_result'", (run_id,)
    ).fetchone()
    forged = f'{{"result":"{FORGED}",' + payload[1:]
    conn.execute(
        "UPDATE events SET payload = ? WHERE run_id = ? AND event_type = 'tool_result'", (forged, run_id)
    )
    # What SQLite's own JSON functions read from the row now:
    assert conn.execute("SELECT json_extract(?, '$.result')", (forged,)).fetchone()[0] == FORGED
    result = verify(db, run_id)
    assert not result.ok and result.broken_sequence == 4
    assert "duplicate key 'result'" in result.reason


def test_a_re_encoded_payload_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    run_id = record(db)
    conn = raw(db)
    (payload,) = conn.execute(
        "SELECT payload FROM events WHERE run_id = ? AND sequence = 1", (run_id,)
    ).fetchone()
    spaced = json.dumps(json.loads(payload), indent=1)
    conn.execute("UPDATE events SET payload = ? WHERE run_id = ? AND sequence = 1", (spaced, run_id))
    result = verify(db, run_id)
    assert not result.ok and result.broken_sequence == 1 and "canonical" in result.reason


# -- 3. malformed values: verify reports them and goes on -----------------------------

MALFORMED = {
    "status": "UPDATE runs SET status = 'bogus'",
    "payload": "UPDATE events SET payload = 'not json' WHERE sequence = 2",
    "created_at": "UPDATE events SET created_at = 'yesterday' WHERE sequence = 1",
    "started_at": "UPDATE runs SET started_at = 'soon'",
    "finished_at": "UPDATE runs SET finished_at = 42",
    "negative_count": "UPDATE runs SET input_tokens = -5",
    "text_count": "UPDATE runs SET tool_calls = 'many'",
    "metadata": "UPDATE runs SET metadata = '{not json'",
    "cost": "UPDATE runs SET cost_usd = 'free'",
    "sequence": "UPDATE events SET sequence = 'two' WHERE sequence = 2",
    "pid": "UPDATE runs SET pid = 'x'",
    "salt": "UPDATE runs SET salt = 'zz'",
    "event_salt": "UPDATE events SET salt = x'00ff' WHERE sequence = 3",
    "seal_blob": "UPDATE runs SET seal = x'0102'",
    "int_hash": "UPDATE events SET hash = 42 WHERE sequence = 1",
}


@pytest.mark.parametrize("edit", list(MALFORMED.values()), ids=list(MALFORMED))
def test_verify_never_raises_on_a_malformed_value(tmp_path: Path, edit: str) -> None:
    db = tmp_path / "a.db"
    run_id = record(db)
    raw(db).execute(edit)
    result = verify(db, run_id)
    assert not result.ok and result.state == "broken" and result.reason


def test_every_problem_of_a_run_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    run_id = record(db)
    conn = raw(db)
    conn.execute("UPDATE runs SET status = 'bogus', input_tokens = -5")
    conn.execute("UPDATE events SET payload = 'not json' WHERE sequence = 2")
    conn.execute("UPDATE events SET created_at = 'yesterday' WHERE sequence = 3")
    result = verify(db, run_id)
    text = "\n".join(result.problems)
    assert "status" in text and "input_tokens" in text
    assert "sequence 2: payload is malformed" in text and "sequence 3: created_at is malformed" in text
    assert result.broken_sequence == 2


# -- 4. what went unseen: orphans, runs.model, events.id --------------------------------


def test_a_deleted_run_row_leaves_its_events_reported(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    run_id, kept = record(db), record(db)
    raw(db).execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
    with aa.SQLiteStore(db, read_only=True) as store:
        assert store.orphaned_run_ids() == [run_id]
        result = store.verify(run_id)
        assert not result.ok and "row is missing" in result.reason and result.events == 4
        assert store.verify(kept).ok


def test_an_edited_model_is_caught(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    run_id = record(db)
    raw(db).execute("UPDATE runs SET model = 'cheap/model' WHERE run_id = ?", (run_id,))
    result = verify(db, run_id)
    assert not result.ok and "runs.model" in result.reason


def test_renumbered_event_ids_are_caught(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    run_id = record(db)
    conn = raw(db)
    ids = [row[0] for row in conn.execute("SELECT id FROM events WHERE run_id = ? ORDER BY sequence", (run_id,))]
    # Swap the positions of events 2 and 3 in the file's global order (what tail follows).
    conn.execute("UPDATE events SET id = -1 WHERE id = ?", (ids[1],))
    conn.execute("UPDATE events SET id = ? WHERE id = ?", (ids[1], ids[2]))
    conn.execute("UPDATE events SET id = ? WHERE id = -1", (ids[2],))
    result = verify(db, run_id)
    assert not result.ok and "events.id" in result.reason


def test_a_header_edit_shows_while_the_run_is_still_running(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db) as store:
        writer = aa.Auditor(store).start_run("agent", caller="alice", input="q", parent_run_id=None)
        writer.on_step(1, STEP)
        store.flush()
        raw(db).execute("UPDATE runs SET caller = 'mallory' WHERE run_id = ?", (writer.run_id,))
        result = store.verify(writer.run_id)
        assert not result.ok and "header" in result.reason
        raw(db).execute("UPDATE runs SET caller = 'alice' WHERE run_id = ?", (writer.run_id,))
        writer.close()
        assert store.verify(writer.run_id).ok
