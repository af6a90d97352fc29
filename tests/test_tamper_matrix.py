"""The tamper matrix: every column of every row of ``runs`` and ``events`` edited,
events deleted, reordered and truncated, payloads re-encoded, and hashes recomputed
after an edit without the key; each one is caught. And the other side: honest runs
under concurrency, close races and crashes always verify.

What the chain cannot see without checkpoints (documented in docs/threat-model.md):
a whole run deleted with all its events, events cut from the end of a run that is
still running, ``events.id`` renumbered without changing the order, and, without a
key, an edit followed by recomputing every hash."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import agentaudit as aa

SECRET = "correct horse battery staple 1"
CALL = aa.ToolCall("lookup", {"q": "x"}, "c1")
STEP = aa.Response(text="checking", model="p/m", usage=aa.Usage(3, 2), tool_calls=(CALL,))
# The columns verification covers: every column of the two tables as chain v2 left them.
RUN_COLUMNS = [
    "run_id", "name", "caller", "parent_run_id", "status", "started_at", "finished_at", "input",
    "output", "error", "tool_calls", "steps", "input_tokens", "output_tokens", "thinking_tokens",
    "cost_usd", "metadata", "host", "pid", "model", "seal", "key_id", "salt",
]
EVENT_COLUMNS = ["run_id", "sequence", "event_type", "payload", "created_at", "prev_hash", "hash", "salt"]


def record(db: Path, key: object) -> str:
    with aa.SQLiteStore(db, key=key) as store:
        writer = aa.Auditor(store).start_run(
            "agent", caller="alice", input="question", metadata={"ticket": 7}, parent_run_id="parent-1"
        )
        writer.on_step(1, STEP)
        writer.on_tool(CALL, "found")
        writer.log_error("a hiccup")
        writer.close(aa.RunStats(output="answer", error="", cost_usd=0.25))
        return writer.run_id


def changed(value: Any, column: str) -> Any:
    """A different value of the same kind, as someone editing the file would write."""
    if column == "status":
        return "failed" if value != "failed" else "succeeded"
    if column == "payload":
        payload = json.loads(value)
        key = sorted(payload)[0]
        payload[key] = payload[key] + 1 if isinstance(payload[key], int) and not isinstance(payload[key], bool) else "x"
        return aa.canonical_json(payload)
    if column == "metadata":
        return '{"ticket":8}'
    if column in ("started_at", "finished_at", "created_at"):
        return value.replace(":", ":1", 1)[:-1] + value[-1] if value else "2026-01-01T00:00:00.000000+00:00"
    if column == "parent_run_id":
        return "parent-2"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 1.0
    if value is None:
        return "x"
    if value and all(c in "0123456789abcdef" for c in value):
        return ("0" if value[0] != "0" else "1") + value[1:]  # a hash, a salt, a key id
    return value + "!"


def all_results(db: Path, key: object) -> list[aa.VerifyResult]:
    with aa.SQLiteStore(db, read_only=True, key=key) as store:
        return list(store.verify_all())


def assert_caught(db: Path, key: object) -> None:
    results = all_results(db, key)
    assert results and any(r.state == "broken" for r in results), [(r.state, r.reason) for r in results]


@pytest.fixture(params=[False, SECRET], ids=["unkeyed", "keyed"])
def key(request: pytest.FixtureRequest) -> object:
    return request.param


@pytest.mark.parametrize("column", RUN_COLUMNS)
def test_every_runs_column_edited_is_caught(tmp_path: Path, key: object, column: str) -> None:
    db = tmp_path / "a.db"
    run_id = record(db, key)
    conn = sqlite3.connect(db, isolation_level=None)
    (value,) = conn.execute(f"SELECT {column} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if column == "key_id" and not value:
        value = "0" * 16  # unkeyed: claim a key
    conn.execute(f"UPDATE runs SET {column} = ? WHERE run_id = ?", (changed(value, column), run_id))
    conn.close()
    assert_caught(db, key)


# The run's events: step, resolved_model, tool_call, tool_result, error. A
# resolved_model event has no content (its model is in clear), so its salt salts
# nothing and an edit of it changes nothing the chain proves.
EVENT_CELLS = [
    (column, sequence) for column in EVENT_COLUMNS for sequence in range(1, 6)
    if (column, sequence) != ("salt", 2)
]


@pytest.mark.parametrize(("column", "sequence"), EVENT_CELLS)
def test_every_events_column_of_every_event_edited_is_caught(
    tmp_path: Path, key: object, column: str, sequence: int
) -> None:
    db = tmp_path / "a.db"
    run_id = record(db, key)
    conn = sqlite3.connect(db, isolation_level=None)
    row = conn.execute(
        f"SELECT {column} FROM events WHERE run_id = ? AND sequence = ?", (run_id, sequence)
    ).fetchone()
    assert row is not None, "the recorded run has 5 events"
    new = changed(row[0], column) if column != "sequence" else 100 + sequence
    conn.execute(f"UPDATE events SET {column} = ? WHERE run_id = ? AND sequence = ?", (new, run_id, sequence))
    conn.close()
    assert_caught(db, key)


def _swap_sequences(conn: sqlite3.Connection, run_id: str) -> None:
    conn.execute("UPDATE events SET sequence = -1 WHERE run_id = ? AND sequence = 2", (run_id,))
    conn.execute("UPDATE events SET sequence = 2 WHERE run_id = ? AND sequence = 3", (run_id,))
    conn.execute("UPDATE events SET sequence = 3 WHERE run_id = ? AND sequence = -1", (run_id,))


def _swap_ids(conn: sqlite3.Connection, run_id: str) -> None:
    a, b = (r[0] for r in conn.execute(
        "SELECT id FROM events WHERE run_id = ? AND sequence IN (3, 4) ORDER BY sequence", (run_id,)
    ))
    conn.execute("UPDATE events SET id = -1 WHERE id = ?", (a,))
    conn.execute("UPDATE events SET id = ? WHERE id = ?", (a, b))
    conn.execute("UPDATE events SET id = ? WHERE id = -1", (b,))


def _re_encode(ensure_ascii: bool, indent: int | None, sort: bool) -> Callable[[sqlite3.Connection, str], None]:
    def edit(conn: sqlite3.Connection, run_id: str) -> None:
        for event_id, payload in conn.execute(
            "SELECT id, payload FROM events WHERE run_id = ? AND sequence = 1", (run_id,)
        ).fetchall():
            value = json.loads(payload)
            if not sort:
                value = dict(reversed(list(value.items())))
            text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort)
            assert text != payload
            conn.execute("UPDATE events SET payload = ? WHERE id = ?", (text, event_id))
    return edit


STRUCTURAL: dict[str, Callable[[sqlite3.Connection, str], None]] = {
    "delete first": lambda c, r: c.execute("DELETE FROM events WHERE run_id = ? AND sequence = 1", (r,)),
    "delete middle": lambda c, r: c.execute("DELETE FROM events WHERE run_id = ? AND sequence = 3", (r,)),
    "delete last": lambda c, r: c.execute("DELETE FROM events WHERE run_id = ? AND sequence = 5", (r,)),
    "truncate": lambda c, r: c.execute("DELETE FROM events WHERE run_id = ? AND sequence > 2", (r,)),
    "delete all events": lambda c, r: c.execute("DELETE FROM events WHERE run_id = ?", (r,)),
    "delete the row": lambda c, r: c.execute("DELETE FROM runs WHERE run_id = ?", (r,)),
    "reorder sequences": _swap_sequences,
    "reorder ids": _swap_ids,
    "duplicate an event": lambda c, r: c.execute(
        "INSERT INTO events (run_id, sequence, event_type, payload, created_at, prev_hash, hash, salt) "
        "SELECT run_id, 6, event_type, payload, created_at, prev_hash, hash, salt FROM events "
        "WHERE run_id = ? AND sequence = 5", (r,),
    ),
    "re-encode with spaces": _re_encode(False, 1, True),
    "re-encode as ascii, unsorted": _re_encode(True, None, False),
    "reset to running": lambda c, r: c.execute(
        "UPDATE runs SET status = 'running', seal = '', finished_at = NULL WHERE run_id = ?", (r,)
    ),
}


@pytest.mark.parametrize("edit", list(STRUCTURAL.values()), ids=list(STRUCTURAL))
def test_deletions_reorders_truncation_and_re_encodings_are_caught(
    tmp_path: Path, key: object, edit: Callable[[sqlite3.Connection, str], None]
) -> None:
    db = tmp_path / "a.db"
    run_id = record(db, key)
    conn = sqlite3.connect(db, isolation_level=None)
    edit(conn, run_id)
    conn.close()
    assert_caught(db, key)


def test_recomputing_every_hash_after_an_edit_needs_the_key(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_integrity_chain_keys import forge_and_recompute

    unkeyed, keyed = tmp_path / "u.db", tmp_path / "k.db"
    forge_and_recompute(unkeyed, record(unkeyed, False))
    forge_and_recompute(keyed, record(keyed, SECRET))
    assert all(r.ok for r in all_results(unkeyed, False))  # the documented limit of no key
    assert_caught(keyed, SECRET)


# -- honest runs always verify --------------------------------------------------------


def test_concurrent_runs_and_close_races_always_verify(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db, key=SECRET) as store:
        auditor = aa.Auditor(store)
        writers: list[aa.Writer] = []
        lock = threading.Lock()

        def agent(n: int) -> None:
            for i in range(10):
                writer = auditor.start_run(f"agent-{n}", input=f"task {i}", parent_run_id=None)
                with lock:
                    writers.append(writer)
                writer.on_step(1, STEP)
                writer.tool_started(CALL)
                closers = [threading.Thread(target=writer.close) for _ in range(3)]
                late = threading.Thread(target=lambda w=writer: w.on_tool(CALL, "late"))
                for thread in (*closers, late):
                    thread.start()
                for thread in (*closers, late):
                    thread.join()

        threads = [threading.Thread(target=agent, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results = list(store.verify_all())
    assert len(results) == 80
    assert all(r.state == "intact" for r in results), [r.reason for r in results if not r.ok]


CRASHING_AGENT = """
import os, signal, sys
import agentaudit as aa
store = aa.SQLiteStore(sys.argv[1], key=sys.argv[2])
auditor = aa.Auditor(store)
done = auditor.start_run("finished", parent_run_id=None)
done.on_step(1, aa.Response(text="ok", model="p/m", usage=aa.Usage(1, 1)))
done.close()
for n in range(5):
    w = auditor.start_run(f"open-{n}", input="x", parent_run_id=None)
    w.on_step(1, aa.Response(text="working", model="p/m", usage=aa.Usage(2, 1)))
    w.log_event("progress", {"n": n})
store.flush()
print("ready", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_runs_of_a_killed_process_verify_once_abandoned(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    child = subprocess.run(
        [sys.executable, "-c", CRASHING_AGENT, str(db), SECRET], capture_output=True, text=True
    )
    assert child.returncode == -signal.SIGKILL and "ready" in child.stdout
    with aa.SQLiteStore(db, key=SECRET) as store:
        assert len(store.recovered) == 5
        results = list(store.verify_all())
        runs = [store.get_run(r.run_id) for r in results]
    assert len(results) == 6 and all(r.state == "intact" for r in results), [r.reason for r in results]
    assert sorted(str(run.status) for run in runs if run) == ["abandoned"] * 5 + ["succeeded"]


def test_processes_sharing_one_file_all_verify(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    script = (
        "import sys, agentaudit as aa\n"
        "with aa.SQLiteStore(sys.argv[1], key=sys.argv[2]) as s:\n"
        "    a = aa.Auditor(s)\n"
        "    for i in range(20):\n"
        "        w = a.start_run('p', input=str(i), parent_run_id=None)\n"
        "        w.on_step(1, aa.Response(text='t', model='p/m', usage=aa.Usage(1, 1)))\n"
        "        w.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTAUDIT_")}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(db), SECRET], env=env) for _ in range(4)]
    assert [p.wait(120) for p in procs] == [0] * 4
    results = all_results(db, SECRET)
    assert len(results) == 80 and all(r.state == "intact" for r in results)
