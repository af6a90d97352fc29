"""`SpooledStore` over a real PostgreSQL and MariaDB passes the store conformance
suite, and a forked child ships through its own forwarder.

Writes go to the spool, reads to the server after this store's writes are shipped:
the suite checks that a user reading through the store sees what they wrote, as with
every other store. PostgreSQL: one throwaway cluster for the module, a database per
test; MariaDB: the shared server, a database per test (tests/server/conftest.py).
"""

from __future__ import annotations

import multiprocessing
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import agentaudit as aa
from agentaudit.testing import StoreConformance
from tests.server.spoolhelp import PgCluster, pg_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with pg_cluster() as pg:
        yield pg


@pytest.fixture
def database(cluster: PgCluster) -> str:
    import psycopg

    name = f"aa_{secrets.token_hex(4)}"
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return cluster.url.replace("/postgres?", f"/{name}?")


class TestSpooledStoreConformance(StoreConformance):
    @pytest.fixture
    def store(self, database: str, tmp_path: Path) -> Iterator[Any]:
        store = aa.open_store(database, spool=str(tmp_path / "spool.db"))
        yield store
        store.close()

    @pytest.fixture
    def reopen_store(self, database: str, tmp_path: Path) -> Callable[[], Any]:
        return lambda: aa.open_store(database, spool=str(tmp_path / "spool-again.db"))




class TestSpooledStoreConformanceMySQL(StoreConformance):
    """The same over MariaDB/MySQL (the shared server of tests/server/conftest.py)."""

    @pytest.fixture
    def store(self, mysql_url: str, tmp_path: Path) -> Iterator[Any]:
        store = aa.open_store(mysql_url, spool=str(tmp_path / "spool.db"))
        yield store
        store.close()

    @pytest.fixture
    def reopen_store(self, mysql_url: str, tmp_path: Path) -> Callable[[], Any]:
        return lambda: aa.open_store(mysql_url, spool=str(tmp_path / "spool-again.db"))


def test_a_forked_child_ships_through_a_forwarder_of_its_own(database: str, tmp_path: Path) -> None:
    store = aa.open_store(database, spool=str(tmp_path / "spool.db"))
    auditor = aa.Auditor(store)
    parent_run = auditor.start_run("parent")
    parent_run.close()
    assert store.sync(60)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child() -> None:
        writer = aa.Auditor(store).start_run("child-of-fork")
        writer.log_event("tick", {"from": "child"})
        writer.close()
        send.send((writer.run_id, store.sync(60), store.forwarder.pid))
        store.close()

    proc = context.Process(target=child)
    proc.start()
    run_id, synced, forwarder_pid = receive.recv()
    proc.join(60)
    assert proc.exitcode == 0
    assert synced and forwarder_pid == proc.pid  # the child's own forwarder shipped it
    assert store.forwarder.pid != proc.pid  # the parent's goes on
    run = store.get_run(run_id)
    assert run is not None and run.status is aa.RunStatus.SUCCEEDED and run.pid == proc.pid
    assert store.verify(run_id).ok
    assert store.reap_expired_leases() == []  # both processes' leases are alive or released
    store.close()


def _record_and_leave(database: str, spool: str, send: Any) -> None:
    store = aa.open_store(database, spool=spool, interval=30.0)  # idle forwarder: only the exit ships
    writer = aa.Auditor(store).start_run("multiprocessing-child")
    writer.log_event("tick", {})
    writer.close()
    send.send(writer.run_id)
    # no store.close(): the child leaves with os._exit, which skips atexit


def test_a_multiprocessing_child_drains_its_spool_on_exit(database: str, tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    proc = context.Process(target=_record_and_leave, args=(database, str(tmp_path / "child.db"), send))
    proc.start()
    run_id = receive.recv()
    proc.join(60)
    assert proc.exitcode == 0
    with aa.open_store(database) as server:  # on the server as soon as the child is gone
        run = server.get_run(run_id)
        assert run is not None and run.status is aa.RunStatus.SUCCEEDED
        assert server.verify(run_id).ok


def test_a_lease_that_cannot_be_taken_never_holds_up_the_records(database: str, tmp_path: Path) -> None:
    from agentaudit.stores.postgres import PostgresStore

    class NoLeases(PostgresStore):
        def acquire_lease(self, *args: Any, **kwargs: Any) -> Any:
            raise aa.StoreError("leases table unavailable")

    server = NoLeases(database)
    store = aa.SpooledStore(str(tmp_path / "spool.db"), server)
    writer = aa.Auditor(store).start_run("no-lease")
    writer.log_event("tick", {})
    writer.close()
    assert store.sync(60)
    assert "leases table unavailable" in store.forwarder.duty_errors["lease"]
    assert store.get_run(writer.run_id).status is aa.RunStatus.SUCCEEDED
    store.close()
    server.close()
