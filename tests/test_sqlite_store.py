"""SQLiteStore on a real file: what is written comes back exactly, the filters, the
background writer's promises (read-through, finish is durable, sync mode, a full
queue), migrations, file permissions, purge, recovery of dead runs, reap, fork."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import agentaudit as aa
from agentaudit.stores import _sqlite_schema
from agentaudit.stores import sqlite as sqlite_store_module
from agentaudit.stores.sqlite import SQLiteStore

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def make_run(run_id: str = "run-1", **fields: object) -> aa.Run:
    values: dict[str, object] = {"name": "agent", "started_at": T0, "host": "elsewhere", "pid": 1}
    values.update(fields)
    return aa.Run(run_id=run_id, **values)  # type: ignore[arg-type]


def make_event(run_id: str, sequence: int, event_type: str = "step", **payload: object) -> aa.Event:
    return aa.Event(
        run_id=run_id,
        sequence=sequence,
        event_type=event_type,
        payload=payload or {"iter": sequence},
        created_at=T0 + timedelta(seconds=sequence, microseconds=sequence * 7),
        prev_hash=f"prev{sequence}",
        hash=f"hash{sequence}",
    )


def raw(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection: what another program sees in the file."""
    return sqlite3.connect(path, isolation_level=None)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def store(db: Path):
    s = SQLiteStore(db)
    yield s
    s.close()


# -- what goes in comes back ----------------------------------------------------------


def test_run_and_events_round_trip_exactly(store: SQLiteStore) -> None:
    run = make_run(
        caller="user:42",
        input="question ✓",
        metadata={"env": "prod", "n": [1, 2.5, None]},
        parent_run_id=None,
        host="box",
        pid=4242,
    )
    store.start_run(run)
    events = [
        make_event("run-1", 1, "step", iter=1, text="héllo 🌍", in_tokens=10, out_tokens=2),
        make_event("run-1", 2, "tool_call", name="search", args='{"q":"x"}', id="c1"),
        # microsecond 0: a naive isoformat() would drop the fraction
        aa.Event("run-1", 3, "custom", {"nested": {"b": 1, "a": [True, 0.1]}},
                 datetime(2024, 5, 1, 12, 0, 9, tzinfo=timezone.utc), "p3", "h3"),
    ]
    for event in events:
        store.append_log(event)
    assert store.get_run("run-1") == run
    assert store.get_logs("run-1") == events
    assert store.get_logs("run-1")[2].created_at.microsecond == 0


def test_event_time_keeps_its_offset(store: SQLiteStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    event = aa.Event("run-1", 1, "step", {"iter": 1}, datetime(2024, 5, 1, 14, 0, tzinfo=plus_two))
    store.start_run(make_run())
    store.append_log(event)
    (back,) = store.get_logs("run-1")
    assert back.created_at.isoformat() == event.created_at.isoformat()


def test_finish_records_terminal_status_and_totals(store: SQLiteStore) -> None:
    store.start_run(make_run())
    end = T0 + timedelta(seconds=3)
    stats = aa.RunStats(status="failed", output={"answer": 42}, error="boom", input_tokens=10,
                        output_tokens=5, thinking_tokens=1, cost_usd=0.25, tool_calls=2, steps=3)
    store.finish_run("run-1", stats, end)
    run = store.get_run("run-1")
    assert run is not None
    assert (run.status, run.finished_at, run.error) == (aa.RunStatus.FAILED, end, "boom")
    assert run.output == '{"answer":42}'
    assert (run.input_tokens, run.output_tokens, run.thinking_tokens) == (10, 5, 1)
    assert (run.cost_usd, run.tool_calls, run.steps, run.duration_ms) == (0.25, 2, 3, 3000.0)


def test_finishing_an_unknown_run_raises(store: SQLiteStore) -> None:
    with pytest.raises(aa.RunNotFoundError):
        store.finish_run("nope", aa.RunStats(), T0)


def test_get_logs_filters(store: SQLiteStore) -> None:
    store.start_run(make_run())
    kinds = ["step", "tool_call", "tool_result", "step", "error"]
    for seq, kind in enumerate(kinds, 1):
        store.append_log(make_event("run-1", seq, kind))
    assert [e.sequence for e in store.get_logs("run-1", event_types=["step"])] == [1, 4]
    assert [e.sequence for e in store.get_logs("run-1", after=2)] == [3, 4, 5]
    assert [e.sequence for e in store.get_logs("run-1", after=1, limit=2)] == [2, 3]
    assert store.get_logs("run-1", event_types=[]) == []
    assert store.get_logs("unknown") == []


def test_list_runs_filters_newest_first(store: SQLiteStore) -> None:
    specs = [("a", "alice", "x", 0), ("b", "bob", "x", 1), ("c", "alice", "y", 2), ("d", "alice", "x", 3)]
    for run_id, caller, name, minutes in specs:
        store.start_run(make_run(run_id, caller=caller, name=name, started_at=T0 + timedelta(minutes=minutes)))
    store.finish_run("b", aa.RunStats(status="failed"), T0 + timedelta(minutes=5))
    store.start_run(make_run("child", parent_run_id="a", started_at=T0 + timedelta(minutes=4)))

    def ids(**kw: object) -> list[str]:
        return [r.run_id for r in store.list_runs(aa.RunFilter(**kw))]  # type: ignore[arg-type]

    assert ids() == ["child", "d", "c", "b", "a"]
    assert ids(caller="alice") == ["d", "c", "a"]
    assert ids(caller="alice", name="x") == ["d", "a"]
    assert ids(status="failed") == ["b"]
    assert ids(status=["failed", "running"], caller="bob") == ["b"]
    assert ids(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == ["c", "b"]
    assert ids(parent_run_id="a") == ["child"]
    assert ids(limit=2, offset=1) == ["d", "c"]
    assert store.count_runs(aa.RunFilter(caller="alice")) == 3
    assert [r.run_id for r in store.children("a")] == ["child"]


def test_walking_many_runs_pages_without_losing_or_repeating(store: SQLiteStore) -> None:
    # more than one page, with ties on started_at (several runs in the same microsecond)
    for i in range(1234):
        store.start_run(make_run(f"r{i:05d}", started_at=T0 + timedelta(seconds=i // 3)))
    walked = [r.run_id for r in store.iter_runs()]
    assert len(walked) == len(set(walked)) == 1234
    starts = [store.get_run(i).started_at for i in walked[:: 97]]  # type: ignore[union-attr]
    assert starts == sorted(starts, reverse=True)
    assert [r.run_id for r in store.iter_runs(aa.RunFilter(limit=700, offset=10))] == walked[10:710]


def test_resolve_run_id_by_unique_prefix(store: SQLiteStore) -> None:
    for run_id in ("abc123", "abd456", "abc"):
        store.start_run(make_run(run_id))
    assert store.resolve_run_id("abd") == "abd456"
    assert store.resolve_run_id("abc") == "abc"  # an exact id wins over longer ones
    with pytest.raises(aa.RunNotFoundError, match="ambiguous"):
        store.resolve_run_id("ab")
    with pytest.raises(aa.RunNotFoundError, match="no run"):
        store.resolve_run_id("zz")


# -- the file ---------------------------------------------------------------------------


def test_file_is_private_and_in_wal_mode(store: SQLiteStore, db: Path) -> None:
    store.start_run(make_run())
    store.append_log(make_event("run-1", 1))
    store.flush()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    wal = Path(f"{db}-wal")
    assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600
    assert raw(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_create_false_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(aa.StoreError, match="no agentaudit database"):
        SQLiteStore(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(aa.StoreError, match="not a usable SQLite database"):
        SQLiteStore(junk)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        SQLiteStore(tmp_path / "a.db", durability="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="MemoryStore"):
        SQLiteStore(":memory:")
    with pytest.raises(ValueError, match="max_queue"):
        SQLiteStore(tmp_path / "a.db", max_queue=0)


def test_a_newer_schema_is_refused(db: Path) -> None:
    SQLiteStore(db).close()
    raw(db).execute(f"PRAGMA user_version = {_sqlite_schema.SCHEMA_VERSION + 1}")
    with pytest.raises(aa.SchemaVersionError, match="newer than this agentaudit"):
        SQLiteStore(db)


def test_an_older_file_is_upgraded_on_open_and_keeps_its_data(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SQLiteStore(db) as old:
        old.start_run(make_run())
        old.append_log(make_event("run-1", 1))
    old_version = _sqlite_schema.SCHEMA_VERSION

    def add_labels(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE runs ADD COLUMN labels TEXT NOT NULL DEFAULT '[]'")

    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", (*_sqlite_schema.MIGRATIONS, add_labels))
    monkeypatch.setattr(_sqlite_schema, "SCHEMA_VERSION", old_version + 1)
    with SQLiteStore(db) as upgraded:
        assert upgraded.get_logs("run-1") == [make_event("run-1", 1)]
    conn = raw(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == old_version + 1
    assert conn.execute("SELECT labels FROM runs").fetchone()[0] == "[]"


def test_a_version_1_file_gets_partial_indexes_and_its_filters_stay_indexed(db: Path) -> None:
    conn = raw(db)
    conn.execute("BEGIN")
    _sqlite_schema.MIGRATIONS[0](conn)  # the file as the first release left it
    conn.execute("PRAGMA user_version = 1")
    conn.execute("COMMIT")
    conn.close()
    with SQLiteStore(db) as store:
        store.start_run(make_run("r-alice", caller="alice"))
        store.start_run(make_run("r-child", parent_run_id="r-alice"))
        store.start_run(make_run("r-plain"))
        store.finish_run("r-child", aa.RunStats(status="failed", error="x"), T0)
        store.finish_run("r-plain", aa.RunStats(), T0)
        assert [r.run_id for r in store.list_runs(aa.RunFilter(caller="alice"))] == ["r-alice"]
        assert [r.run_id for r in store.list_runs(aa.RunFilter(status="failed"))] == ["r-child"]
        # Same start time: their order is the order their rows were written in.
        assert {r.run_id for r in store.list_runs(aa.RunFilter(caller=""))} == {"r-plain", "r-child"}
        assert {r.run_id for r in store.list_runs(aa.RunFilter(status="succeeded"))} == {"r-plain"}
        assert [r.run_id for r in store.children("r-alice")] == ["r-child"]
    conn = raw(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == _sqlite_schema.SCHEMA_VERSION
    for flt, index in (
        (aa.RunFilter(caller="alice"), "runs_caller"),
        (aa.RunFilter(status=("failed", "timeout")), "runs_status"),
        (aa.RunFilter(parent_run_id="r-alice"), "runs_parent"),
        (aa.RunFilter(name="agent"), "runs_name"),
    ):
        where, params = sqlite_store_module._where(flt)
        plan = conn.execute(f"EXPLAIN QUERY PLAN SELECT * FROM runs{where}", params).fetchall()
        assert index in str(plan), (flt, plan)


def test_a_failing_migration_leaves_the_file_as_it_was(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    SQLiteStore(db).close()
    version = _sqlite_schema.SCHEMA_VERSION

    def half_done(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE runs ADD COLUMN half TEXT")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", (*_sqlite_schema.MIGRATIONS, half_done))
    monkeypatch.setattr(_sqlite_schema, "SCHEMA_VERSION", version + 1)
    with pytest.raises(RuntimeError, match="migration bug"):
        SQLiteStore(db)
    conn = raw(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == version
    assert "half" not in [row[1] for row in conn.execute("PRAGMA table_info(runs)")]


# -- the background writer's promises ---------------------------------------------------------


def test_reads_see_earlier_writes_without_a_flush(store: SQLiteStore) -> None:
    store.start_run(make_run())
    for seq in range(1, 501):
        store.append_log(make_event("run-1", seq))
    assert len(store.get_logs("run-1")) == 500
    assert store.get_run("run-1") is not None


def test_finish_returns_only_when_events_and_finish_are_committed(store: SQLiteStore, db: Path) -> None:
    store.start_run(make_run())
    for seq in range(1, 2001):
        store.append_log(make_event("run-1", seq))
    store.finish_run("run-1", aa.RunStats(), T0 + timedelta(seconds=1))
    other = raw(db)  # another connection: sees only what is committed
    assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 2000
    assert other.execute("SELECT status FROM runs").fetchone()[0] == "succeeded"


def test_sync_mode_commits_each_event_before_append_returns(db: Path) -> None:
    with SQLiteStore(db, durability="sync") as store:
        other = raw(db)
        store.start_run(make_run())
        assert other.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
        for seq in (1, 2, 3):
            store.append_log(make_event("run-1", seq))
            assert other.execute("SELECT max(sequence) FROM events").fetchone()[0] == seq


def test_a_full_queue_waits_a_bounded_time_then_raises_and_counts(db: Path) -> None:
    store = SQLiteStore(db, max_queue=50, queue_timeout=0.2)
    store.start_run(make_run())
    store.flush()
    blocker = raw(db)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    accepted = 0
    with pytest.raises(aa.StoreError, match="is full"):
        for seq in range(1, 1000):
            store.append_log(make_event("run-1", seq))
            accepted = seq
    assert store.dropped == 1
    assert accepted >= 50
    blocker.execute("COMMIT")
    store.flush()
    # everything accepted is written, nothing refused is: no gap for the Writer to explain
    assert [e.sequence for e in store.get_logs("run-1")] == list(range(1, accepted + 1))
    store.close()


def test_one_refused_event_costs_only_itself(store: SQLiteStore) -> None:
    store.start_run(make_run())
    store.append_log(make_event("run-1", 1))
    store.append_log(make_event("run-1", 2))
    store.append_log(make_event("run-1", 2, "duplicate"))  # a repeated sequence: refused
    store.append_log(make_event("run-1", 3))
    store.flush()
    assert [(e.sequence, e.event_type) for e in store.get_logs("run-1")] == [(1, "step"), (2, "step"), (3, "step")]
    assert store.failed == 1
    # The run's finish lands, and says what its log lost (its Writer counts a fault).
    with pytest.raises(aa.StoreError, match=r"refused the events \['run-1#2'\]"):
        store.finish_run("run-1", aa.RunStats(), T0)
    assert store.get_run("run-1").status is aa.RunStatus.SUCCEEDED  # type: ignore[union-attr]


def test_threads_append_concurrently(store: SQLiteStore) -> None:
    def work(n: int) -> None:
        store.start_run(make_run(f"t{n}"))
        for seq in range(1, 301):
            store.append_log(make_event(f"t{n}", seq))
        store.finish_run(f"t{n}", aa.RunStats(), T0)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in range(8):
        assert [e.sequence for e in store.get_logs(f"t{n}")] == list(range(1, 301))
        assert store.get_run(f"t{n}").status is aa.RunStatus.SUCCEEDED  # type: ignore[union-attr]


def test_close_flushes_and_then_refuses(db: Path) -> None:
    store = SQLiteStore(db)
    store.start_run(make_run())
    for seq in range(1, 101):
        store.append_log(make_event("run-1", seq))
    store.close()
    store.close()  # idempotent
    assert raw(db).execute("SELECT count(*) FROM events").fetchone()[0] == 100
    with pytest.raises(aa.StoreError, match="closed"):
        store.append_log(make_event("run-1", 101))
    with pytest.raises(aa.StoreError, match="closed"):
        store.get_run("run-1")


def run_python(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def test_events_queued_at_exit_are_flushed(db: Path) -> None:
    done = run_python(
        """
        import sys
        from datetime import datetime, timezone
        import agentaudit as aa
        from agentaudit.stores.sqlite import SQLiteStore
        store = SQLiteStore(sys.argv[1])
        now = datetime.now(timezone.utc)
        store.start_run(aa.Run(run_id="r", name="n", started_at=now))
        for seq in range(1, 5001):
            store.append_log(aa.Event("r", seq, "step", {"iter": seq}, now))
        # no close, no flush: the exit hook must write what is queued
        """,
        str(db),
    )
    assert done.returncode == 0, done.stderr
    assert raw(db).execute("SELECT count(*), max(sequence) FROM events").fetchone() == (5000, 5000)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_child_gets_its_own_writer(store: SQLiteStore) -> None:
    store.start_run(make_run("parent"))
    store.append_log(make_event("parent", 1))
    pid = os.fork()
    if pid == 0:  # the child: write through the inherited store object, then leave
        code = 1
        try:
            store.start_run(make_run("child"))
            for seq in range(1, 51):
                store.append_log(make_event("child", seq))
            store.finish_run("child", aa.RunStats(), T0)
            store.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store.append_log(make_event("parent", 2))
    assert [e.sequence for e in store.get_logs("parent")] == [1, 2]  # not written twice
    assert len(store.get_logs("child")) == 50
    assert store.get_run("child").status is aa.RunStatus.SUCCEEDED  # type: ignore[union-attr]


CHILD_MODULE = """
from agentaudit.stores.sqlite import SQLiteStore
import agentaudit as aa
from datetime import datetime, timezone

def write_without_closing(path):
    store = SQLiteStore(path)
    now = datetime.now(timezone.utc)
    store.start_run(aa.Run(run_id="mp-child", name="n", started_at=now))
    for seq in range(1, 301):
        store.append_log(aa.Event("mp-child", seq, "step", {"iter": seq}, now))
"""


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing_children_flush_when_they_end(
    db: Path, tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import multiprocessing

    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    (tmp_path / "aa_mp_child.py").write_text(CHILD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))  # the children import the target from here
    target = importlib.import_module("aa_mp_child").write_without_closing
    # fork and forkserver children leave through os._exit, which skips atexit hooks
    child = multiprocessing.get_context(method).Process(target=target, args=(str(db),))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert raw(db).execute("SELECT count(*) FROM events").fetchone()[0] == 300
    sys.modules.pop("aa_mp_child", None)


# -- purge, delete, recovery, reap --------------------------------------------------------------


def test_purge_deletes_old_finished_runs_and_their_events_only(store: SQLiteStore) -> None:
    for run_id, minutes, status in [("old-ok", 0, "succeeded"), ("old-bad", 1, "failed"),
                                    ("old-running", 2, None), ("new", 60, "succeeded")]:
        store.start_run(make_run(run_id, started_at=T0 + timedelta(minutes=minutes)))
        store.append_log(make_event(run_id, 1))
        if status:
            store.finish_run(run_id, aa.RunStats(status=status), T0 + timedelta(minutes=minutes + 1))
    cutoff = T0 + timedelta(minutes=30)
    assert store.purge(cutoff, statuses=["failed"]) == 1
    assert store.purge(cutoff) == 1  # default: every terminal status, never running
    assert sorted(r.run_id for r in store.list_runs()) == ["new", "old-running"]
    assert store.get_logs("old-ok") == [] and len(store.get_logs("old-running")) == 1


def test_delete_run(store: SQLiteStore) -> None:
    store.start_run(make_run())
    store.append_log(make_event("run-1", 1))
    assert store.delete_run("run-1") is True
    assert store.delete_run("run-1") is False
    assert store.get_run("run-1") is None and store.get_logs("run-1") == []


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_open_marks_runs_of_dead_local_processes_abandoned(db: Path) -> None:
    import socket

    here = socket.gethostname()
    gone = dead_pid()
    with SQLiteStore(db) as store:
        store.start_run(make_run("dead", host=here, pid=gone))
        store.append_log(make_event("dead", 1, "step", iter=1, in_tokens=7, out_tokens=3))
        store.append_log(make_event("dead", 2, "tool_call", name="t", args="{}", id="1"))
        store.start_run(make_run("alive", host=here, pid=os.getpid()))
        store.start_run(make_run("remote", host="another-host", pid=gone))
    with SQLiteStore(db) as store:
        assert store.recovered == ["dead"]
        dead = store.get_run("dead")
        assert dead is not None and dead.status is aa.RunStatus.ABANDONED
        assert dead.finished_at == make_event("dead", 2).created_at  # last sign of life
        assert (dead.steps, dead.tool_calls, dead.input_tokens, dead.output_tokens) == (1, 1, 7, 3)
        assert f"process {gone}" in dead.error
        assert store.get_run("alive").status is aa.RunStatus.RUNNING  # type: ignore[union-attr]
        assert store.get_run("remote").status is aa.RunStatus.RUNNING  # type: ignore[union-attr]


def test_reap_marks_silent_runs_on_any_host(store: SQLiteStore) -> None:
    store.start_run(make_run("silent", host="far-away", pid=1))
    store.append_log(make_event("silent", 1))  # last event at T0 + 1 s
    store.start_run(make_run("busy", host="far-away", pid=2))
    store.append_log(aa.Event("busy", 1, "step", {"iter": 1}, T0 + timedelta(hours=2)))
    store.start_run(make_run("quiet-start", started_at=T0 + timedelta(hours=2, minutes=5)))
    now = T0 + timedelta(hours=2, minutes=30)
    assert sorted(store.reap(timedelta(hours=1), now=now)) == ["silent"]
    assert store.get_run("silent").status is aa.RunStatus.ABANDONED  # type: ignore[union-attr]
    assert sorted(store.reap(timedelta(minutes=20), now=now)) == ["busy", "quiet-start"]
    with pytest.raises(ValueError, match="positive"):
        store.reap(timedelta(0))


def test_summary_groups_runs(store: SQLiteStore) -> None:
    for run_id, caller, model, status, cost in [
        ("a", "u1", "openai/gpt-4o", "succeeded", 0.5),
        ("b", "u1", "openai/gpt-4o", "failed", None),
        ("c", "u2", "anthropic/claude", "succeeded", 0.25),
    ]:
        store.start_run(make_run(run_id, caller=caller))
        store.append_log(make_event(run_id, 1, "resolved_model", model=model))
        store.finish_run(run_id, aa.RunStats(status=status, input_tokens=10, output_tokens=1, cost_usd=cost), T0)
    by_model = {row["model"]: row for row in store.summary("model")}
    assert by_model["openai/gpt-4o"]["runs"] == 2
    assert by_model["openai/gpt-4o"]["failure_rate"] == 0.5
    assert by_model["openai/gpt-4o"]["input_tokens"] == 20
    assert by_model["openai/gpt-4o"]["cost_usd"] == 0.5
    assert by_model["anthropic/claude"]["failed"] == 0
    assert [row["caller"] for row in store.summary("caller")] == ["u1", "u2"]
    assert store.summary("day") == [dict(store.summary("day")[0], day="2024-05-01")]
    with pytest.raises(ValueError, match="groups by"):
        store.summary("weekday")
