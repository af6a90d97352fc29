"""Read commands never write (issue 13, item 6).

The real `agentaudit` command runs in a subprocess over a database that holds a run
left `running` by a process that was killed. Every read command must leave the file
exactly as it was (bytes, mtime, mode) and must not mark that run abandoned: that is
the job of the explicit `agentaudit reap` (a write) or of the next writer. A SQLite
file that is not an agentaudit database, an empty file and a missing file are
refused with one line and exit status 2, and are left as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

import agentaudit as aa
from agentaudit.stores._sqlite_schema import MIGRATIONS
from agentaudit.stores.sqlite import SQLiteStore
from tests.test_cli import record_agent_run

AGENTAUDIT = str(Path(sys.executable).with_name("agentaudit"))


def agentaudit(db: Path, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
    """The installed console script, in its own process."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run(
        [AGENTAUDIT, "--db", str(db), *args], capture_output=True, text=True, env=env, timeout=60,
        check=False,
    )
    if expect is not None:
        assert result.returncode == expect, (args, result.stdout, result.stderr)
    return result


def fingerprint(path: Path) -> tuple[str, int, int, str]:
    """What must not change: the file's bytes, mtime and mode, and its WAL's bytes."""
    wal = Path(f"{path}-wal")
    wal_digest = hashlib.sha256(wal.read_bytes()).hexdigest() if wal.exists() and wal.stat().st_size else ""
    info = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), info.st_mtime_ns, info.st_mode, wal_digest


def kill_mid_run(db: Path) -> str:
    """A process that records part of a run, commits it, and dies without closing."""
    code = textwrap.dedent(
        f"""
        import os, agentaudit as aa
        from agentaudit.stores.sqlite import SQLiteStore
        store = SQLiteStore({str(db)!r}, durability="sync")
        w = aa.Auditor(store, strict=True).start_run("doomed-agent", input="never finished")
        w.log_event("note", {{"text": "half way"}})
        store.flush()
        print(w.run_id, flush=True)
        os._exit(9)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 9, done.stderr
    return done.stdout.strip()


@pytest.fixture
def dead_run_db(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "audit.db"
    with SQLiteStore(path) as store:
        auditor = aa.Auditor(store, strict=True)
        ok = record_agent_run(auditor)
        record_agent_run(auditor, name="sub-agent", parent=ok)
    return path, kill_mid_run(path)


READ_COMMANDS: list[list[str]] = [
    ["runs"],
    ["runs", "--json"],
    ["runs", "--status", "running"],
    ["runs", "--search", "sunny", "--errors", "--sort", "cost"],
    ["search", "weather"],
    ["stats"],
    ["stats", "--by", "model", "--json"],
    ["tail", "-n", "50"],
    ["tail", "-n", "5", "--json"],
    ["export"],
    ["export", "--events", "--format", "csv"],
    ["verify", "--all"],
]


def test_no_read_command_changes_the_file_or_marks_the_dead_run(
    dead_run_db: tuple[Path, str], tmp_path: Path
) -> None:
    db, dead = dead_run_db
    before = fingerprint(db)
    commands = [*READ_COMMANDS, ["show", dead], ["show", dead[:10], "--json"], ["verify", dead],
                ["tail", "--run", dead, "-n", "3"], ["export", "-o", str(tmp_path / "out.jsonl")]]
    for args in commands:
        agentaudit(db, *args)
        assert fingerprint(db) == before, f"`agentaudit {' '.join(args)}` changed the file"
    runs = json.loads(agentaudit(db, "runs", "--json").stdout)
    assert {r["run_id"]: r["status"] for r in runs}[dead] == "running"

    # Recovery is the explicit write.
    reaped = agentaudit(db, "reap")
    assert f"abandoned {dead}" in reaped.stdout and "marked 1 run abandoned" in reaped.stdout
    runs = json.loads(agentaudit(db, "runs", "--json").stdout)
    assert {r["run_id"]: r["status"] for r in runs}[dead] == "abandoned"


def foreign_sqlite_file(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('my own data')")
    conn.commit()
    conn.close()
    os.chmod(path, 0o644)
    return path


@pytest.mark.parametrize(
    "args",
    [["runs"], ["show", "abc"], ["stats"], ["tail"], ["export"], ["verify", "--all"],
     ["purge", "--before", "1d", "--yes"], ["reap"]],
    ids=lambda args: args[0],
)
def test_a_sqlite_file_that_is_not_agentaudit_is_refused_and_left_alone(tmp_path: Path, args: list[str]) -> None:
    other = foreign_sqlite_file(tmp_path / "other.db")
    before = fingerprint(other)
    result = agentaudit(other, *args, expect=2)
    assert result.stdout == ""
    assert result.stderr == f"agentaudit: {other} is not an agentaudit database (a SQLite file without its tables)\n"
    assert fingerprint(other) == before
    conn = sqlite3.connect(other)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # never switched to WAL
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]
    conn.close()


@pytest.mark.parametrize("args", [["runs"], ["stats"], ["purge", "--before", "1d", "--yes"]], ids=lambda a: a[0])
def test_an_empty_file_is_refused_and_stays_empty(tmp_path: Path, args: Sequence[str]) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    result = agentaudit(empty, *args, expect=2)
    assert result.stderr == f"agentaudit: {empty} is an empty file, not an agentaudit database\n"
    assert empty.stat().st_size == 0


def test_a_missing_file_is_refused_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    for args in (["runs"], ["reap"], ["purge", "--before", "1d", "--yes"]):
        result = agentaudit(missing, *args, expect=2)
        assert result.stderr == f"agentaudit: no agentaudit database at {missing}\n"
    assert not missing.exists()


def old_file(path: Path, version: int) -> Path:
    """A file as an older agentaudit left it: the first ``version`` migrations, one run."""
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:version]:
        migration(conn)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute(
        "INSERT INTO runs (run_id, name, status, started_at, input) VALUES ('old-1', 'legacy', "
        "'succeeded', '2024-05-01T12:00:00.000000+00:00', 'a question about zebras')"
    )
    conn.close()
    return path


def test_an_older_schema_is_read_as_it_stands_or_refused_clearly(tmp_path: Path) -> None:
    # Version 4 has every column the reads use: it is read, and not upgraded.
    v4 = old_file(tmp_path / "v4.db", 4)
    before = fingerprint(v4)
    runs = json.loads(agentaudit(v4, "runs", "--json").stdout)
    assert [(r["run_id"], r["name"]) for r in runs] == [("old-1", "legacy")]
    agentaudit(v4, "show", "old-1")
    # Search came with version 5: asked of a version 4 file, it says how to get it.
    refused = agentaudit(v4, "search", "zebras", expect=2)
    assert "schema version 4, from before full-text search" in refused.stderr
    assert "open it once for writing" in refused.stderr
    assert fingerprint(v4) == before
    assert sqlite3.connect(v4).execute("PRAGMA user_version").fetchone()[0] == 4

    # Version 3 lacks columns the reads use: refused, with the way out; a write upgrades.
    v3 = old_file(tmp_path / "v3.db", 3)
    before = fingerprint(v3)
    refused = agentaudit(v3, "runs", expect=2)
    assert refused.stderr.startswith(f"agentaudit: {v3} has schema version 3, too old to read")
    assert len(refused.stderr.splitlines()) == 1
    assert fingerprint(v3) == before
    agentaudit(v3, "reap")
    assert json.loads(agentaudit(v3, "runs", "--json").stdout)[0]["run_id"] == "old-1"
    # The upgrade indexed the run written before search existed.
    assert [r["run_id"] for r in json.loads(agentaudit(v3, "search", "zebra", "--json").stdout)] == ["old-1"]


def test_the_library_opens_read_only_too(dead_run_db: tuple[Path, str], tmp_path: Path) -> None:
    db, dead = dead_run_db
    before = fingerprint(db)
    store = aa.open_store(str(db), read_only=True)
    try:
        assert store.get_run(dead).status is aa.RunStatus.RUNNING  # type: ignore[union-attr]
        with pytest.raises(aa.StoreError, match="read-only"):
            store.start_run(aa.Run(run_id="new", name="x"))
    finally:
        store.close()
    assert fingerprint(db) == before
    with pytest.raises(aa.StoreError, match="not an agentaudit database"):
        aa.open_store(str(foreign_sqlite_file(tmp_path / "x.db")), read_only=True)
    with pytest.raises(aa.StoreError, match="not a usable SQLite database"):
        (tmp_path / "junk.db").write_text("hello\n" * 500)
        aa.open_store(str(tmp_path / "junk.db"), read_only=True)
    with pytest.raises(ValueError, match="memory"):
        aa.open_store("memory://", read_only=True)


def test_the_writer_refuses_to_take_over_another_programs_database(tmp_path: Path) -> None:
    other = foreign_sqlite_file(tmp_path / "other.db")
    before = fingerprint(other)
    with pytest.raises(aa.StoreError, match="not an agentaudit database"):
        SQLiteStore(other)
    assert fingerprint(other) == before
