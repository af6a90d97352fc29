"""The seal on a finished run's row: `verify` catches an edited status, output or
total, a seal removed, and events cut from the end of a run, on every path a run
ends by (one batch, several batches, abandoned on open, reaped), and on files
written before seals existed once they are upgraded."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

import agentaudit as aa
from agentaudit import _chain
from agentaudit.cli import cli
from agentaudit.stores import _sqlite_schema

RESPONSE = aa.Response(
    text="checking", model="p/m", usage=aa.Usage(3, 2),
    tool_calls=(aa.ToolCall("lookup", {"q": "x"}, "c1"),),
)


def raw(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(db, isolation_level=None)


def record_run(store: aa.SQLiteStore, *, status: str = "failed", flush_between: bool = False) -> str:
    writer = aa.Auditor(store).start_run("agent", input="q", parent_run_id=None)
    writer.on_step(1, RESPONSE)
    if flush_between:  # the run's start and first events committed before its finish
        store.flush()
    writer.on_tool(RESPONSE.tool_calls[0], "found")
    writer.close(aa.RunStats(status=status, output="answer", error="boom" if status == "failed" else ""))
    return writer.run_id


def verify(db: Path, run_id: str) -> aa.VerifyResult:
    with aa.SQLiteStore(db) as store:
        return store.verify(run_id)


@pytest.mark.parametrize("flush_between", [False, True], ids=["one batch", "several batches"])
@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE runs SET status = 'succeeded', error = ''",
        "UPDATE runs SET output = 'a better answer'",
        "UPDATE runs SET input_tokens = 0",
        "UPDATE runs SET finished_at = '2020-01-01T00:00:00.000000+00:00'",
        "UPDATE runs SET metadata = '{\"reviewed\":true}'",
    ],
    ids=["status", "output", "tokens", "finished_at", "metadata"],
)
def test_an_edited_run_row_is_caught(tmp_path: Path, flush_between: bool, edit: str) -> None:
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db) as store:
        run_id = record_run(store, flush_between=flush_between)
    assert verify(db, run_id).ok
    raw(db).execute(edit)
    result = verify(db, run_id)
    assert not result.ok
    assert result.events == 4 and result.broken_sequence is None
    assert "does not match its seal" in result.reason


def test_events_cut_from_the_end_of_a_run_are_caught(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db) as store:
        run_id = record_run(store)
    # What is left is a valid chain prefix: only the seal knows there were four.
    raw(db).execute("DELETE FROM events WHERE sequence > 2")
    result = verify(db, run_id)
    assert not result.ok and "removed from the end" in result.reason


def test_a_removed_seal_and_a_finished_run_marked_running_are_caught(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db) as store:
        first, second = record_run(store), record_run(store)
    raw(db).execute("UPDATE runs SET seal = '' WHERE run_id = ?", (first,))
    raw(db).execute("UPDATE runs SET status = 'running' WHERE run_id = ?", (second,))
    assert "carries no seal" in verify(db, first).reason
    assert "marked running" in verify(db, second).reason


def test_a_running_run_verifies_on_its_events_until_it_ends(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db) as store:
        writer = aa.Auditor(store).start_run("agent", parent_run_id=None)
        writer.on_step(1, RESPONSE)
        assert store.verify(writer.run_id).ok
        writer.close()
        assert store.verify(writer.run_id).ok


DIES_MID_RUN = """
import os, sys
import agentaudit as aa
store = aa.SQLiteStore(sys.argv[1])
writer = aa.Auditor(store).start_run("dead", parent_run_id=None)
writer.on_step(1, aa.Response(text="checking", model="p/m", usage=aa.Usage(3, 2)))
store.flush()
print(writer.run_id, flush=True)
os._exit(0)  # the process ends without closing its run
"""


def test_runs_abandoned_on_open_and_reaped_are_sealed(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    child = subprocess.run(
        [sys.executable, "-c", DIES_MID_RUN, str(db)], capture_output=True, text=True, check=True
    )
    dead = child.stdout.strip()
    with aa.SQLiteStore(db) as store:
        assert store.recovered == [dead]
        silent = aa.Auditor(store).start_run("silent", parent_run_id=None)  # alive, but quiet
        silent.on_step(1, RESPONSE)
        store.flush()
        assert store.reap(timedelta(microseconds=1)) == [silent.run_id]
        for run_id in (dead, silent.run_id):
            run = store.get_run(run_id)
            assert run is not None and run.status is aa.RunStatus.ABANDONED
            assert run.input_tokens == 3 and run.steps == 1
            assert store.verify(run_id).ok
    raw(db).execute("UPDATE runs SET error = '' WHERE run_id = ?", (dead,))
    assert not verify(db, dead).ok


def _version_2_file(db: Path) -> tuple[str, str]:
    """A file as version 2 wrote it (no seals, chain v1): one finished run, one
    running."""
    conn = raw(db)
    for migration in _sqlite_schema.MIGRATIONS[:2]:
        migration(conn)
    conn.execute("PRAGMA user_version = 2")
    started = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ids = []
    for status in ("failed", "running"):
        run_id = f"old-{status}"
        finished = status != "running"
        conn.execute(
            "INSERT INTO runs (run_id, name, status, started_at, finished_at, output, steps) "
            "VALUES (?, 'agent', ?, ?, ?, ?, ?)",
            (run_id, status, started.isoformat(timespec="microseconds"),
             started.isoformat(timespec="microseconds") if finished else None,
             "answer" if finished else "", 1 if finished else 0),
        )
        for event in _chain.seal_events(run_id, 0, "", [("step", {"iter": 1, "text": "hi"})], started):
            conn.execute(
                "INSERT INTO events (run_id, sequence, event_type, payload, created_at, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (event.run_id, event.sequence, event.event_type, event.payload_json,
                 _chain.format_time(event.created_at), event.prev_hash, event.hash),
            )
        ids.append(run_id)
    conn.close()
    return ids[0], ids[1]


def test_runs_finished_before_the_upgrade_are_sealed_by_it(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    finished, running = _version_2_file(db)
    assert verify(db, finished).ok
    assert verify(db, running).ok
    assert raw(db).execute("PRAGMA user_version").fetchone()[0] == _sqlite_schema.SCHEMA_VERSION
    raw(db).execute("UPDATE runs SET status = 'succeeded' WHERE run_id = ?", (finished,))
    assert not verify(db, finished).ok


def test_the_cli_names_a_run_whose_row_was_edited(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db) as store:
        edited, intact = record_run(store), record_run(store)
    runner = CliRunner()
    ok = runner.invoke(cli, ["--db", str(db), "verify", intact])
    assert ok.exit_code == 0 and "chain intact, row sealed" in ok.output
    raw(db).execute("UPDATE runs SET status = 'succeeded', error = '' WHERE run_id = ?", (edited,))
    result = runner.invoke(cli, ["--db", str(db), "verify", "--all"])
    assert result.exit_code == 1
    assert f"BROKEN run {edited}: the run's row does not match its seal" in result.output
    assert "verified 2 runs: 1 intact, 1 broken" in result.output


