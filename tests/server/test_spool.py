"""Store-and-forward against a real PostgreSQL and a real MariaDB (issue 14, deliver 2,
3 and 6).

Every test starts a server of its own, once per kind (`spoolhelp.PgCluster`: initdb +
pg_ctl on a free port; `spoolhelp.MariaCluster`: mariadb-install-db + mariadbd), so
it can stop the server mid-stream without touching the machine's shared one. What
they check is what a fleet relies on:

- a database outage loses nothing acknowledged; the agent never waits for it; the
  backlog is visible (Python and ``agentaudit status``) and drains afterwards; every
  run verifies on the server;
- re-sending (a cursor lost, ``agentaudit forward`` again) never duplicates and never
  sends a finished run back to running;
- a process killed with SIGKILL: its run becomes ``abandoned`` after the lease
  expires, once, however many reapers race; a live worker does it on its own;
- a process cut off past its lease that comes back: its late events and finish are
  taken, and the run verifies (see docs/deployment.md, "A host that comes back");
- a process exiting drains its spool (atexit); one that cannot reach the server
  exits within its bound and ``agentaudit forward`` ships the rest later.
"""

from __future__ import annotations

import functools
import json
import operator
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agentaudit as aa
from agentaudit.stores._forwarder import _as_running
from agentaudit.stores.spool import SpooledStore
from tests.server.spoolhelp import (
    SERVERS,
    WORKER,
    Cluster,
    need_tools,
    read_ledger,
    server_cluster,
    wait_for,
)

AGENTAUDIT = [sys.executable, "-m", "agentaudit.cli"]


@pytest.fixture(params=SERVERS)
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A throwaway server of each kind in turn."""
    with server_cluster(request.param) as started:
        yield started


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "AGENTAUDIT_DB"}
    return subprocess.run(
        [*AGENTAUDIT, *args], capture_output=True, text=True, timeout=180, env={**clean, **(env or {})}
    )


def worker(cluster: Cluster, tmp: Path, name: str, *args: str) -> tuple[subprocess.Popen[str], Path, Path]:
    spool, ledger = tmp / f"{name}.spool.db", tmp / f"{name}.ledger"
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "--db", cluster.url, "--spool", str(spool), "--ledger", str(ledger),
         "--name", name, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    return proc, spool, ledger


def held_run(ledger: Path) -> dict[str, Any] | None:
    return next((entry for entry in read_ledger(ledger) if "held" in entry), None)


def check_on_server(server: Any, acked: dict[str, int]) -> None:
    """Every acknowledged run is on the server, finished, with exactly the events it
    was acknowledged for (no gap, no duplicate), and verifies."""
    missing = [run_id for run_id in acked if server.get_run(run_id) is None]
    assert not missing, f"{len(missing)} acknowledged runs never reached the server: {missing[:3]}"
    for run_id, count in acked.items():
        run = server.get_run(run_id)
        assert run.status is aa.RunStatus.SUCCEEDED, (run_id, run.status, run.error)
        events = server.get_logs(run_id)
        assert [e.sequence for e in events] == list(range(1, count + 1)), run_id
        result = server.verify(run_id)
        assert result.ok, (run_id, result.reason)


def backlog_json(spool: Path, url: str | None = None) -> list[dict[str, Any]]:
    args = ["status", "--spool", str(spool), "--json"] + (["--db", url] if url else [])
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


# -- the outage ------------------------------------------------------------------------


def test_outage_loses_nothing_acknowledged_and_the_backlog_drains(cluster: Cluster, tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    store = aa.open_store(cluster.url, spool=str(spool), max_backoff=0.5)
    assert isinstance(store, SpooledStore)
    auditor = aa.Auditor(store)
    acked: dict[str, int] = {}
    stop = threading.Event()

    def agent() -> None:
        i = 0
        while not stop.is_set():
            before = auditor.faults.total
            writer = auditor.start_run(f"job-{i}", caller="outage")
            for k in range(4):
                writer.log_event("tick", {"k": k})
            writer.close()
            if auditor.faults.total == before:
                acked[writer.run_id] = writer.events_count
            i += 1
            stop.wait(0.002)

    thread = threading.Thread(target=agent)
    thread.start()
    try:
        wait_for(lambda: store.forwarder.shipped_events >= 100, 60, "the first runs to ship")
        cluster.stop("immediate")  # a crash of the database server, mid-stream
        at_outage = len(acked)
        # The agent goes on while the server is down: its runs close against the spool.
        wait_for(lambda: len(acked) >= at_outage + 200, 60, "the agent to keep recording during the outage")
        wait_for(lambda: store.forwarder.error, 60, "the forwarder to notice the outage")
        backlog = store.backlog()
        assert backlog.runs > 0 and backlog.events > 0 and backlog.oldest_at is not None
        assert backlog.age_seconds > 0 and "connect" in backlog.error
        [shown] = backlog_json(spool)
        assert shown["runs"] > 0 and shown["events"] > 0 and shown["target"] == store.forwarder.target
        assert cli("status", "--spool", str(spool), "--max-age", "0").returncode == 1
        cluster.start()
        at_return = len(acked)
        wait_for(lambda: len(acked) >= at_return + 50, 60, "more runs after the server returned")
    finally:
        stop.set()
        thread.join()
    assert store.sync(timeout=120), store.forwarder.error
    assert store.backlog().empty
    assert auditor.faults.total == 0  # nothing of the outage reached the agent
    assert store.count_runs() == len(acked)
    store.close()
    with aa.open_store(cluster.url) as server:
        check_on_server(server, acked)
    [after] = backlog_json(spool)
    assert (after["runs"], after["events"]) == (0, 0)
    assert cli("status", "--spool", str(spool), "--max-age", "0").returncode == 0


def test_resending_never_duplicates_nor_reopens_a_finished_run(cluster: Cluster, tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    store = aa.open_store(cluster.url, spool=str(spool))
    auditor = aa.Auditor(store)
    acked = {}
    for i in range(30):
        writer = auditor.start_run(f"job-{i}")
        for k in range(i % 5):
            writer.log_event("tick", {"k": k})
        writer.close()
        acked[writer.run_id] = writer.events_count
    open_run = auditor.start_run("still-running")
    open_run.log_event("tick", {"k": 0})
    assert store.sync(timeout=60)
    store.close()
    with aa.open_store(cluster.url) as server:
        before = {run.run_id: (run.status, len(server.get_logs(run.run_id))) for run in server.iter_runs()}
    assert len(before) == 31

    # The cursor lost (a crash between the server's commit and the spool's): all again.
    conn = sqlite3.connect(spool)
    conn.execute("UPDATE spool_cursor SET run_rowid = 0, event_id = 0")
    conn.execute("DELETE FROM spool_open_runs")
    conn.commit()
    conn.close()
    done = cli("forward", "--spool", str(spool), "--db", cluster.url)
    assert done.returncode == 0, done.stderr
    assert "shipped 30 finished runs and" in done.stdout

    with aa.open_store(cluster.url) as server:
        after = {run.run_id: (run.status, len(server.get_logs(run.run_id))) for run in server.iter_runs()}
        assert after == before
        check_on_server(server, acked)
        # A finished run sent again as running (an old batch) stays finished.
        run_id = next(iter(acked))
        finished = server.get_run(run_id)
        server.import_records([_as_running(finished)], server.get_logs(run_id), {})
        assert server.get_run(run_id) == finished
        assert server.verify(run_id).ok
    assert backlog_json(spool)[0]["events"] == 0


# -- liveness: leases --------------------------------------------------------------------


def test_a_killed_process_runs_become_abandoned_once_after_its_lease(cluster: Cluster, tmp_path: Path) -> None:
    proc, _spool, ledger = worker(cluster, tmp_path, "victim", "--runs", "3", "--hold", "--lease-ttl", "1")
    try:
        held = wait_for(lambda: held_run(ledger), 60, "the worker to hold a run open")
        server = aa.open_store(cluster.url)
        wait_for(lambda: len(server.get_logs(held["held"])) == 3, 60, "the held run's events on the server")
        assert server.get_run(held["held"]).status is aa.RunStatus.RUNNING
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    acked = {e["run_id"]: e["events"] for e in read_ledger(ledger) if "run_id" in e}
    wait_for(lambda: [lease for lease in server.expired_leases() if lease.pid == held["pid"]], 60,
             "the killed process's lease to expire")

    # Four reapers at once, each with its own connection: the run is marked once.
    reapers = [aa.open_store(cluster.url) for _ in range(4)]
    start = threading.Barrier(len(reapers))
    marked: list[list[str]] = []

    def reap(store: Any) -> None:
        start.wait()
        marked.append(store.reap_expired_leases())

    threads = [threading.Thread(target=reap, args=(store,)) for store in reapers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in reapers:
        store.close()
    assert sorted(functools.reduce(operator.iadd, marked, [])) == [held["held"]]
    run = server.get_run(held["held"])
    assert run.status is aa.RunStatus.ABANDONED
    assert f"process {held['pid']}" in run.error and "lease" in run.error
    assert server.verify(held["held"]).ok
    assert [lease for lease in server.expired_leases() if lease.pid == held["pid"]] == []
    done = cli("reap", "--db", cluster.url)  # nothing left to reap
    assert done.returncode == 0 and "marked 0 runs abandoned" in done.stdout, done.stderr + done.stdout
    check_on_server(server, acked)  # the finished runs are untouched
    server.close()


def test_a_live_worker_reaps_and_a_host_that_comes_back_delivers_late(cluster: Cluster, tmp_path: Path) -> None:
    go = tmp_path / "go"
    sleeper, _, sleeper_ledger = worker(
        # --drain: a bound on a hang (close returns as soon as all is shipped); the
        # default 5 s was once too short for a loaded CI machine.
        cluster, tmp_path, "sleeper", "--runs", "2", "--hold", "--hold-until", str(go), "--lease-ttl", "1",
        "--drain", "60",
    )
    watcher, _, _ = worker(cluster, tmp_path, "watcher", "--runs", "0", "--hold", "--lease-ttl", "1")
    server = aa.open_store(cluster.url)
    try:
        held = wait_for(lambda: held_run(sleeper_ledger), 60, "the sleeper to hold a run open")
        run_id = held["held"]
        wait_for(lambda: len(server.get_logs(run_id)) == 3, 60, "the held run's events on the server")
        os.kill(sleeper.pid, signal.SIGSTOP)  # cut off: no heartbeat, no shipping
        # Nobody here calls reap: the watcher's forwarder does, once the lease expired.
        wait_for(lambda: server.get_run(run_id).status is aa.RunStatus.ABANDONED, 60,
                 "a live worker to mark the silent process's run abandoned")
        assert server.verify(run_id).ok
        os.kill(sleeper.pid, signal.SIGCONT)  # it comes back, and finishes the run
        go.touch()
        out, err = sleeper.communicate(timeout=120)
        assert sleeper.returncode == 0, err
        log = Path(f"{sleeper_ledger}.log")
        assert json.loads(out.splitlines()[-1]) == {"runs": 0, "events": 0}, log.read_text() if log.exists() else err
    finally:
        for proc in (sleeper, watcher):
            proc.kill()
            proc.wait()
    # Its late event and its own finish were taken: the host's row and seal, the whole
    # chain; the run verifies.
    late = server.get_run(run_id)
    assert late.status is aa.RunStatus.SUCCEEDED
    assert [e.sequence for e in server.get_logs(run_id)] == [1, 2, 3, 4]
    assert server.get_logs(run_id)[-1].payload.get("late") is True
    assert server.verify(run_id).ok
    acked = {e["run_id"]: e["events"] for e in read_ledger(sleeper_ledger) if "run_id" in e}
    check_on_server(server, acked)
    server.close()


# -- exit and crash: what the spool keeps, and `agentaudit forward` -------------------------


def test_exit_drains_and_forward_ships_what_a_dead_process_left(cluster: Cluster, tmp_path: Path) -> None:
    # A process exiting without close: the exit hook ships its spool before it ends.
    proc, _, ledger = worker(cluster, tmp_path, "leaver", "--runs", "20", "--no-close")
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    acked = {e["run_id"]: e["events"] for e in read_ledger(ledger) if "run_id" in e}
    assert len(acked) == 20
    with aa.open_store(cluster.url) as server:
        check_on_server(server, acked)

    # The server down for the whole life of a process, which is then killed: its spool
    # keeps everything, and `agentaudit forward` ships it once the server is back.
    cluster.stop("fast")
    proc, spool, ledger = worker(cluster, tmp_path, "stranded", "--runs", "15", "--hold", "--drain", "1")
    try:
        held = wait_for(lambda: held_run(ledger), 60, "the stranded worker to record")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    acked = {e["run_id"]: e["events"] for e in read_ledger(ledger) if "run_id" in e}
    assert len(acked) == 15
    [waiting] = backlog_json(spool, cluster.url)
    assert waiting["runs"] == 16 and waiting["events"] >= 15 * 5 + 3
    down = cli("forward", "--spool", str(spool), "--db", cluster.url, "--timeout", "2")
    assert down.returncode == 1 and "not done: " in down.stderr  # still down: says so, keeps it
    # Opening the spool marked the dead process's run abandoned there (this host, its pid gone).
    assert "marked 1 runs of ended processes abandoned in the spool" in down.stdout
    cluster.start()
    done = cli("forward", "--spool", str(spool), "--db", cluster.url)
    assert done.returncode == 0, done.stderr
    assert "shipped 16 finished runs" in done.stdout
    with aa.open_store(cluster.url) as server:
        check_on_server(server, acked)
        dead = server.get_run(held["held"])
        assert dead.status is aa.RunStatus.ABANDONED and str(held["pid"]) in dead.error
        assert server.verify(held["held"]).ok
    assert backlog_json(spool, cluster.url)[0]["runs"] == 0


def test_a_process_that_cannot_reach_the_server_exits_within_its_bound(cluster: Cluster, tmp_path: Path) -> None:
    cluster.stop("fast")
    proc, _spool, ledger = worker(cluster, tmp_path, "unlucky", "--runs", "5", "--drain", "1")
    out, err = proc.communicate(timeout=120)  # a hang here would fail the test
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"runs": 5, "events": 25}
    assert len(read_ledger(ledger)) == 5  # acknowledged: in the spool


# -- the API boundary ------------------------------------------------------------------------


def test_bad_spool_setups_are_refused_where_they_are_given(tmp_path: Path) -> None:
    need_tools()  # psycopg
    spool = str(tmp_path / "s.db")
    with pytest.raises(ValueError, match="server store"):
        aa.open_store("sqlite:///x.db", spool=spool)
    with pytest.raises(aa.StoreError, match="cannot be a spool's target"):
        SpooledStore(spool, aa.MemoryStore())
    with pytest.raises(ValueError, match="drain_timeout"):
        SpooledStore(spool, "postgresql://nobody@127.0.0.1:1/x", drain_timeout=-1)
    with pytest.raises(ValueError, match="spool= is for writing"):
        aa.open_store("postgresql://nobody@127.0.0.1:1/x", spool=spool, read_only=True)
    assert not os.path.exists(spool)


@pytest.mark.parametrize(("driver", "url"), [
    ("psycopg", "postgresql://nobody@127.0.0.1:1/x?connect_timeout=1"),
    ("pymysql", "mysql://nobody@127.0.0.1:1/x"),
], ids=SERVERS)
def test_a_store_opened_while_the_server_is_down_records_at_once(driver: str, url: str, tmp_path: Path) -> None:
    need_tools(driver=driver)
    # port 1: nothing listens there, the server is "down" from the start
    store = aa.open_store(url, spool=str(tmp_path / "s.db"), drain_timeout=0.5)
    auditor = aa.Auditor(store)
    writer = auditor.start_run("offline")
    writer.log_event("tick", {})
    writer.close()
    assert auditor.faults.total == 0
    backlog = store.backlog()
    assert (backlog.runs, backlog.events) == (1, 1)
    store.close()
    with aa.SQLiteStore(tmp_path / "s.db") as local:
        assert local.get_run(writer.run_id).status is aa.RunStatus.SUCCEEDED
        assert local.verify(writer.run_id).ok


def test_a_host_that_died_during_an_outage_delivers_its_tail_after_the_reaper(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The server abandoned the run (lease expired); the spool, forwarded later, holds
    more events of it and its own abandoned row: both arrive, the run verifies."""
    more = tmp_path / "more"
    proc, spool, ledger = worker(cluster, tmp_path, "doomed", "--runs", "0", "--hold", "--hold-more", str(more),
                                 "--lease-ttl", "1")
    server = aa.open_store(cluster.url)
    try:
        held = wait_for(lambda: held_run(ledger), 60, "the worker to hold a run open")
        run_id = held["held"]
        wait_for(lambda: len(server.get_logs(run_id)) == 3, 60, "the held run's events on the server")
        server.close()
        cluster.stop("fast")
        more.touch()
        wait_for(lambda: any("more" in e for e in read_ledger(ledger)), 60, "two more events in the spool")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    cluster.start()
    server = aa.open_store(cluster.url)
    wait_for(lambda: server.expired_leases(), 60, "the dead process's lease to expire")
    assert server.reap_expired_leases() == [run_id]
    assert server.verify(run_id).ok and len(server.get_logs(run_id)) == 3
    done = cli("forward", "--spool", str(spool), "--db", cluster.url)
    assert done.returncode == 0, done.stderr
    run = server.get_run(run_id)
    assert run.status is aa.RunStatus.ABANDONED
    assert [e.sequence for e in server.get_logs(run_id)] == [1, 2, 3, 4, 5]
    result = server.verify(run_id)
    assert result.ok, result.reason
    server.close()
