"""Many processes against one database at once: twenty starting on an empty database
create the schema once (the migration lock), and many writing at once lose nothing
and break no chain. Real processes, each with its own connections."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agentaudit as aa
from agentaudit.stores._server_dialect import MySQLDialect, PostgresDialect
from agentaudit.stores._server_schema import migrate, schema_version

from .conftest import admin_sql

WORKER = Path(__file__).with_name("server_worker.py")


def _start_together(url: str, mode: str, count: int, gate: Path, *extra: str) -> list[str]:
    """Start ``count`` workers, wait until each is ready, open the gate, and return
    what each printed (failing on any worker's error)."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), mode, url, str(gate), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(count)
    ]
    deadline = time.monotonic() + 120
    while len(list(gate.parent.glob(f"{gate.name}.*.ready"))) < count:
        assert time.monotonic() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
        time.sleep(0.02)
    gate.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        outputs.append(out)
    return outputs


def test_twenty_processes_migrate_an_empty_database_once(server_url: str, tmp_path: Path) -> None:
    _start_together(server_url, "migrate", 20, tmp_path / "gate")
    versions = admin_sql(server_url, "SELECT version FROM schema_version ORDER BY version")
    dialect = (PostgresDialect if server_url.startswith("postgresql") else MySQLDialect)(server_url)
    assert [v for (v,) in versions] == list(range(1, schema_version(dialect) + 1))
    store = aa.open_store(server_url)
    try:
        assert store.count_runs() == 0
    finally:
        store.close()


def test_many_processes_write_at_once(server_url: str, tmp_path: Path) -> None:
    aa.open_store(server_url).close()  # the schema, first
    outputs = _start_together(server_url, "write", 8, tmp_path / "gate", "15")
    ids = [run_id for out in outputs for run_id in json.loads(out)]
    assert len(ids) == 8 * 15 == len(set(ids))
    store = aa.open_store(server_url, read_only=True)
    try:
        assert store.count_runs() == len(ids)
        assert store.count_runs(aa.RunFilter(status="succeeded")) == len(ids)
        for run_id in ids:
            result = store.verify(run_id)
            assert result.ok and result.events == 7, result
        (by_model,) = store.summary("model")
        assert by_model["runs"] == len(ids) and by_model["input_tokens"] == 6 * len(ids)
    finally:
        store.close()


def test_an_older_schema_is_upgraded_with_its_runs(server_url: str) -> None:
    dialect = (PostgresDialect if server_url.startswith("postgresql") else MySQLDialect)(server_url)
    conn = dialect.connect()
    try:
        assert migrate(conn, dialect, to=1) == 0  # a database as the first release left it
        cur = conn.cursor()
        cur.execute("SELECT max(version) FROM schema_version")
        assert cur.fetchone()[0] == 1
    finally:
        conn.close()
    store = aa.open_store(server_url)
    try:
        with aa.Auditor(store, strict=True).run("agent", input="after the upgrade") as writer:
            writer.log_event("custom", {"n": 1})
        assert store.verify(writer.run_id).ok
        assert [r.run_id for r in store.list_runs(aa.RunFilter(text="upgrade"))] == [writer.run_id]
    finally:
        store.close()
    versions = admin_sql(server_url, "SELECT version FROM schema_version ORDER BY version")
    assert [v for (v,) in versions] == list(range(1, schema_version(dialect) + 1))


def test_a_newer_schema_is_refused(server_url: str) -> None:
    aa.open_store(server_url).close()
    admin_sql(server_url, "INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)", (99, "later"))
    for read_only in (False, True):
        with pytest.raises(aa.SchemaVersionError, match="version 99, newer"):
            aa.open_store(server_url, read_only=read_only)


def test_a_forked_child_writes_through_the_parents_store(server_url: str) -> None:
    """A child forked while the store is open gets its own connections on first use;
    its exit never ends the parent's sessions."""
    store = aa.open_store(server_url)
    try:
        auditor = aa.Auditor(store, strict=True)
        with auditor.run("before-fork") as before:
            before.log_event("custom", {"who": "parent"})
        store.get_run(before.run_id)  # the parent's read connection is open
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                with auditor.run("in-child") as child:
                    child.log_event("custom", {"who": "child"})
                store.close()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        with auditor.run("after-fork") as after:  # the parent's sessions still work
            after.log_event("custom", {"who": "parent again"})
        names = sorted(run.name for run in store.list_runs())
        assert names == ["after-fork", "before-fork", "in-child"]
        for run in store.list_runs():
            assert store.verify(run.run_id).ok
    finally:
        store.close()
