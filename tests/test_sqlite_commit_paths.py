"""When SQLiteStore commits: events nobody waits for still reach the file on their
own; a run's close waits for the writer thread's commit, stays bounded by
finish_timeout while another process holds the file, and the finish still lands once
the file is free; many threads closing runs at once lose nothing."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

import agentaudit as aa
from agentaudit.stores import _sqlite_writer
from agentaudit.testing import BlockingStore, RaisingStore, assert_run_well_formed

RESPONSE = aa.Response(
    text="checking", model="p/m", usage=aa.Usage(3, 2),
    tool_calls=(aa.ToolCall("lookup", {"q": "x"}, "c1"),),
)


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def wait_for(query: str, path: Path, expected: object, seconds: float = 10.0) -> object:
    other = raw(path)
    deadline = time.monotonic() + seconds
    while True:
        found = other.execute(query).fetchone()[0]
        if found == expected or time.monotonic() > deadline:
            other.close()
            return found
        time.sleep(0.01)


def test_events_of_an_open_run_reach_the_file_without_a_close_or_a_read(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    store = aa.SQLiteStore(db)
    w = aa.Auditor(store).start_run("agent", parent_run_id=None)
    w.on_step(1, RESPONSE)
    w.on_tool(RESPONSE.tool_calls[0], "found")
    # Another connection (another program, or what survives a kill) sees them.
    assert wait_for("SELECT count(*) FROM events", db, 4) == 4
    assert wait_for("SELECT status FROM runs", db, "running") == "running"
    w.close()
    store.close()


def test_commit_delay_holds_events_nobody_waits_for_until_it_passes(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    store = aa.SQLiteStore(db, commit_delay=60.0)  # longer than this test
    w = aa.Auditor(store).start_run("agent", parent_run_id=None)
    w.on_step(1, RESPONSE)
    time.sleep(0.2)
    other = raw(db)
    assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 0  # still queued
    store.flush()  # somebody waits now: committed at once
    assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 2
    w.close()
    assert other.execute("SELECT status FROM runs").fetchone()[0] == "succeeded"
    other.close()
    store.close()


def test_commit_delay_zero_commits_each_event_without_waiting(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    store = aa.SQLiteStore(db, commit_delay=0)
    w = aa.Auditor(store).start_run("agent", parent_run_id=None)
    w.on_step(1, RESPONSE)
    assert wait_for("SELECT count(*) FROM events", db, 2, seconds=5.0) == 2
    w.close()
    store.close()


def test_close_while_another_process_holds_the_file_is_bounded_and_the_finish_lands(
    tmp_path: Path,
) -> None:
    db = tmp_path / "a.db"
    store = aa.SQLiteStore(db)
    auditor = aa.Auditor(store, finish_timeout=0.3)
    w = auditor.start_run("agent", parent_run_id=None)
    w.on_step(1, RESPONSE)
    store.flush()
    blocker = raw(db)
    blocker.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    w.close()
    assert time.monotonic() - started < 3.0
    assert auditor.faults.counts() == {"finish_timeout": 1}
    blocker.execute("COMMIT")
    assert wait_for("SELECT status FROM runs", db, "succeeded") == "succeeded"
    store.close()


def test_many_threads_closing_runs_at_once_lose_nothing(tmp_path: Path) -> None:
    store = aa.SQLiteStore(tmp_path / "a.db")
    auditor = aa.Auditor(store, strict=True)
    run_ids: list[str] = []
    lock = threading.Lock()

    def agent() -> None:
        for _ in range(25):
            w = auditor.start_run("agent", parent_run_id=None)
            for i in (1, 2):
                w.on_step(i, RESPONSE)
                w.on_tool(RESPONSE.tool_calls[0], f"result {i}")
            w.close()
            with lock:
                run_ids.append(w.run_id)

    threads = [threading.Thread(target=agent) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(run_ids) == 200
    other = raw(tmp_path / "a.db")  # committed when close returned, not after a flush
    assert other.execute("SELECT count(*) FROM runs WHERE status = 'succeeded'").fetchone()[0] == 200
    assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 200 * 7
    for run_id in run_ids:
        assert_run_well_formed(store, run_id)
    store.close()


def test_a_wrapping_store_is_not_bypassed_by_the_optional_methods(tmp_path: Path) -> None:
    # BlockingStore forwards every other attribute to SQLiteStore with __getattr__:
    # its blocking finish_run must still be what close calls (and times out on).
    inner = aa.SQLiteStore(tmp_path / "a.db")
    blocking = BlockingStore(inner)
    auditor = aa.Auditor(blocking, finish_timeout=0.2)
    w = auditor.start_run("agent", parent_run_id=None)
    w.on_step(1, RESPONSE)
    w.close()
    assert auditor.faults.counts() == {"finish_timeout": 1}
    blocking.release()
    assert wait_for("SELECT status FROM runs", tmp_path / "a.db", "succeeded") == "succeeded"
    # append_log through a wrapper that refuses it is refused, not routed around it
    refusing = RaisingStore(methods={"append_log"}, inner=inner)
    auditor = aa.Auditor(refusing)
    w = auditor.start_run("agent", parent_run_id=None)
    w.on_step(1, RESPONSE)
    w.close()
    assert auditor.faults.counts().get("append_log") == 1  # the step; its resolved_model not offered
    assert inner.get_logs(w.run_id) == []
    inner.close()


def test_a_run_written_in_one_batch_has_the_row_of_one_written_in_several(tmp_path: Path) -> None:
    # A short run's start, events and finish usually land in one transaction, as one
    # final row; a long run's start, events and finish in several. Same row either way.
    db = tmp_path / "a.db"
    store = aa.SQLiteStore(db)
    auditor = aa.Auditor(store, strict=True)
    ids = []
    for split in (False, True):
        w = auditor.start_run("agent", input="question", metadata={"k": 1}, parent_run_id=None)
        if split:
            store.flush()
        w.on_step(1, RESPONSE)
        w.on_tool(RESPONSE.tool_calls[0], "found")
        if split:
            store.flush()
        w.on_step(2, aa.Response(text="done", model="p/other", usage=aa.Usage(4, 1)))
        w.close(aa.RunStats(output="answer"))
        ids.append(w.run_id)
    other = raw(db)
    columns = (
        "name, caller, parent_run_id, status, input, output, error, tool_calls, steps, "
        "input_tokens, output_tokens, thinking_tokens, cost_usd, metadata, host, pid, model"
    )
    rows = [other.execute(f"SELECT {columns} FROM runs WHERE run_id = ?", (i,)).fetchone() for i in ids]
    assert rows[0] == rows[1]
    assert rows[0][3] == "succeeded" and rows[0][-1] == "p/m"  # the first model named
    for run_id in ids:
        assert_run_well_formed(store, run_id)
    store.close()


def test_the_wal_stays_bounded_while_runs_close_back_to_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Closing threads commit and never checkpoint; the writer thread copies the WAL
    # into the file behind them. Thresholds made small so a few hundred runs cross them.
    monkeypatch.setattr(_sqlite_writer, "CHECKPOINT_INTERVAL", 0.0)
    monkeypatch.setattr(_sqlite_writer, "RESTART_FRAMES", 100)
    db = tmp_path / "a.db"
    store = aa.SQLiteStore(db)
    auditor = aa.Auditor(store)
    runs = 400  # ~13 pages each: about 21 MB of WAL if nothing were ever copied back
    for i in range(runs):
        time.sleep(0.001)  # the model call
        with auditor.run(f"agent-{i}", parent_run_id=None) as w:
            w.on_step(1, RESPONSE)
            w.on_tool(RESPONSE.tool_calls[0], "found")
    wal = Path(f"{db}-wal")
    assert wal.stat().st_size < 5_000_000
    assert wait_for("SELECT count(*) FROM runs WHERE status = 'succeeded'", db, runs) == runs
    store.close()
    assert aa.SQLiteStore(db).count_runs() == runs


def test_values_changed_after_a_hook_returns_are_recorded_as_they_were(tmp_path: Path) -> None:
    # The store seals events when it commits them, well after the hook returned;
    # what the agent mutates meanwhile must not leak into the record.
    store = aa.SQLiteStore(tmp_path / "a.db", commit_delay=60.0)
    w = aa.Auditor(store).start_run("agent", parent_run_id=None)
    result = {"rows": [1, 2]}
    extra = {"plan": ["search"]}
    w.on_step(1, RESPONSE, extra=extra)
    w.on_tool(RESPONSE.tool_calls[0], result)
    result["rows"].append(3)
    extra["plan"].append("leak")
    w.close()
    step, _model, _call, tool_result = store.get_logs(w.run_id)
    assert step.payload["plan"] == ["search"]
    assert tool_result.payload["result"] == '{"rows":[1,2]}'
    assert store.verify(w.run_id).ok
    store.close()
