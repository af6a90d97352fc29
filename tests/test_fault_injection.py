"""Fault injection (issue 11): every promise of docs/guarantees.md against every fault.

For each fault, an agent (a hand-written loop: ``start_run``, ``on_step``,
``tool_started`` + ``tool_finished``, ``on_tool``, ``log_event``, ``close``; and
``async with auditor.run(...)``, whose exit is ``aclose``) records runs before,
during and after the fault, and the suite checks, run by run:

1. no exception reaches the agent;
2. ``close`` returns within ``finish_timeout`` + 1 s (``finish_timeout`` = 1 s here);
3. no acknowledged event is lost: an event is acknowledged when its hook returned
   without the auditor counting a fault; after the fault clears, the reopened store
   has every one of them, at its sequence (for SIGKILL, see the crash window in
   docs/storage.md: runs closed before the kill must be complete);
4. every run verifies, and every finished run is well formed
   (``agentaudit.testing.assert_run_well_formed``);
5. every fault is counted: what was not recorded, a fault on ``auditor.faults``
   says so (for the SQLite store, every event its queue refused is one fault).

The faults are real wherever the machine allows: a 512 KiB tmpfs filled by a filler
file, a loop-mounted ext4 image frozen with ``fsfreeze``, another process holding
the file's write lock, an immutable file (``chattr +i``), a file read-only for the
process that opens it, ``os.fork`` while another thread commits, ``SIGKILL``. These
need root (mount, fsfreeze, chattr, setuid), which this suite is run as.

Run with ``-s`` to see the figures table (docs/faults.md reports it).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import mmap
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import agentaudit as aa
from agentaudit.stores.sqlite import SQLiteStore
from agentaudit.testing import BlockingStore, RaisingStore, assert_run_well_formed
from tests import faultlib as fl

FINISH_TIMEOUT = 1.0
# The disk the full-disk tests fill: room for the empty schema (about 120 KiB with its
# search index), its WAL and a few runs, and small enough to fill in a moment.
DISK_SIZE = "2m"


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    yield
    if fl.FIGURES:
        print("\n\nfault-injection figures (finish_timeout = 1 s)\n" + fl.figures_table())


def _auditor(store: Any) -> aa.Auditor:
    return aa.Auditor(store, finish_timeout=FINISH_TIMEOUT)


def _timed_flush(store: SQLiteStore, timeout: float = 10.0) -> float:
    started = time.monotonic()
    store.flush(timeout=timeout)
    return round(time.monotonic() - started, 3)


def _reopened(path: Path) -> SQLiteStore:
    return SQLiteStore(path, create=False)


# -- a store method that raises --------------------------------------------------------
RAISING = {
    "start_run": ("start_run",),
    "append_log": ("append_log",),
    "finish_run": ("finish_run",),
    "every method": None,
}


@pytest.mark.parametrize("which", list(RAISING))
def test_a_store_that_raises(which: str) -> None:
    """``agentaudit.testing.RaisingStore`` raising ``OSError(EIO)`` from one method
    (or all) for the whole test; one tool is still running at each close. It raises
    the same exception object every time, as a store re-raising a saved error (or a
    failed ``Future``'s ``result()``) does: every one must be counted."""
    store = RaisingStore(OSError(errno.EIO, "disk on fire"), methods=RAISING[which])
    auditor = _auditor(store)
    agent = fl.Agent(auditor)
    agent.both(3, open_tools=1)
    tally = fl.check_runs(store.inner, agent.runs)
    counts = auditor.faults.counts()
    fl.record_figures(f"raises: {which}", agent, tally)
    fl.assert_promises(agent, tally, finish_timeout=FINISH_TIMEOUT)
    faulted_hooks = sum(h.faulted for r in agent.runs for h in r.hooks)
    if which in ("start_run", "every method"):
        # One start_run fault per run says it was not recorded; its hooks do nothing.
        assert counts == {"start_run": 2} and not any(r.recording for r in agent.runs)
    elif which == "append_log":
        assert counts == {"append_log": faulted_hooks} and faulted_hooks == len(agent.runs[0].hooks) * 2
    else:
        assert counts == {"finish_run": 2}
        assert all(store.inner.get_run(r.run_id).status is aa.RunStatus.RUNNING for r in agent.runs)


@pytest.mark.parametrize("batch", [False, True], ids=["one event per call", "append_events"])
def test_a_store_that_raises_now_and_then(batch: bool) -> None:
    """A flaky store: 30 % of event writes raise ``OSError(EIO)`` (a seeded pattern).
    Without ``append_events`` the Writer hands a hook's events over one by one, so a
    hook can be cut in the middle (``on_tool``: its ``tool_call`` taken, its
    ``tool_result`` refused)."""
    store = fl.BatchFlakyStore() if batch else fl.FlakyStore()
    auditor = _auditor(store)
    agent = fl.Agent(auditor)
    for _ in range(2):
        agent.both(4)
    # A store that refuses a tool's result, even the cancelled one close offers for a
    # tool still open, leaves that tool_call unanswered: allowed only when a fault at
    # close says so (checked below), so the runs are not held to well-formedness.
    tally = fl.check_runs(store.inner, agent.runs, well_formed=False)
    counts = auditor.faults.counts()
    fl.record_figures(f"raises now and then ({'append_events' if batch else 'append_log'})", agent, tally)
    assert counts == {"append_log": store.raised}, "one fault per refused write"
    fl.assert_promises(agent, tally, finish_timeout=FINISH_TIMEOUT)
    for rec in agent.runs:
        events = store.inner.get_logs(rec.run_id)
        calls = [e.payload["id"] for e in events if e.event_type == "tool_call"]
        answered = [e.payload["id"] for e in events if e.event_type == "tool_result"]
        unanswered = [c for c in calls if calls.count(c) > answered.count(c)]
        assert not unanswered or "append_log" in rec.close_faults, (rec.run_id, unanswered)


# -- a store that hangs, or crawls -----------------------------------------------------
def test_a_store_whose_finish_hangs() -> None:
    """``agentaudit.testing.BlockingStore``: ``finish_run`` blocks until released,
    released only after both runs' closes returned."""
    store = BlockingStore(aa.MemoryStore())
    auditor = _auditor(store)
    agent = fl.Agent(auditor)
    agent.both(3, open_tools=1)
    assert all(r.close_faults.get("finish_timeout") == 1 for r in agent.runs)
    store.release()
    landed = fl.wait_until(
        lambda: all(store.inner.get_run(r.run_id).status.is_terminal for r in agent.runs), 5.0
    )
    tally = fl.check_runs(store.inner, agent.runs, finish_lands=True)
    fl.record_figures("hangs: finish_run", agent, tally, finish_landed_after_release_s=round(landed or -1, 3))
    fl.assert_promises(agent, tally, finish_timeout=FINISH_TIMEOUT)
    assert auditor.faults.counts() == {"finish_timeout": 2}
    assert landed is not None


def test_a_store_whose_writes_hang_for_a_while() -> None:
    """``BlockingStore(block_appends=True)`` from the second iteration on, released
    0.5 s later by a timer: the Store protocol's ``append_log`` runs on the agent's
    thread ("must not wait on disk or network for long"), so the hook that meets the
    hang waits it out. Nothing is lost or counted; close is bounded."""
    store = BlockingStore(aa.MemoryStore())
    auditor = _auditor(store)
    agent = fl.Agent(auditor)
    timers: list[fl.Timer] = []

    def hang(i: int) -> None:
        if i == 2 and not timers:
            store.block_appends = True
            timers.append(fl.Timer(0.5, store.release))

    agent.loop(3, during=hang)
    asyncio.run(agent.arun(3))
    timers[0].join()
    tally = fl.check_runs(store.inner, agent.runs, finish_lands=True)
    fl.record_figures("hangs: append_log for 0.5 s", agent, tally)
    fl.assert_promises(agent, tally, finish_timeout=FINISH_TIMEOUT)
    assert auditor.faults.counts() == {}
    assert 0.4 <= agent.max_hook() < 1.5


def test_a_slow_store() -> None:
    """A store that crawls: 10 ms per write, 1.5 s per finish (past
    ``finish_timeout``); the finish lands later."""
    store = fl.SlowStore(append_delay=0.01, finish_delay=1.5)
    auditor = _auditor(store)
    agent = fl.Agent(auditor)
    agent.both(2)
    landed = fl.wait_until(lambda: store.finishes_landed == 2, 5.0)
    tally = fl.check_runs(store.inner, agent.runs, finish_lands=True)
    fl.record_figures("slow: 10 ms writes, 1.5 s finish", agent, tally)
    fl.assert_promises(agent, tally, finish_timeout=FINISH_TIMEOUT)
    assert auditor.faults.counts() == {"finish_timeout": 2} and landed is not None


# -- the SQLite store on a failing disk -------------------------------------------------
def _disk_fault_scenario(
    store: SQLiteStore,
    inject: Any,
    clear: Any,
    *,
    steps_during: int = 3,
) -> tuple[fl.Agent, dict[str, Any]]:
    """Healthy runs; a run the fault strikes mid-run (before its second iteration;
    it then ticks until the store refuses one, and goes on); an async run entirely
    under the fault; the fault cleared; later runs. Returns the agent and figures."""
    auditor = _auditor(store)
    agent = fl.Agent(auditor)
    agent.both(2)

    def strike(i: int) -> None:
        if i == 2:
            inject()

    agent.loop(steps_during, during=strike, flood=2)
    asyncio.run(agent.arun(2))
    counts = auditor.faults.counts()
    dropped = store.dropped
    cleared_at = time.monotonic()
    clear()
    resumed = _timed_flush(store)
    figures = {
        "dropped": dropped,
        "resumed_after_clear_s": round(time.monotonic() - cleared_at, 3),
        "flush_s": resumed,
        "faults_during": counts,
    }
    agent.both(2)  # later runs: recorded in full
    return agent, figures


@pytest.mark.parametrize("durability", ["batched", "sync"])
def test_full_disk(tmp_path: Path, durability: str) -> None:
    """A real small tmpfs; a filler file fills it to the last block mid-run, and is
    deleted after. The store keeps what fits in its queue, counts what it refuses,
    and resumes when space returns."""
    with fl.tmpfs(tmp_path / "disk", DISK_SIZE) as disk:
        path = disk / "audit.db"
        store = SQLiteStore(
            path, durability=durability, max_queue=20 if durability == "batched" else 6,
            queue_timeout=0.2, sync_timeout=0.1,
        )
        filler: list[Path] = []
        agent, figures = _disk_fault_scenario(
            store, lambda: filler.append(fl.fill(disk)), lambda: filler[0].unlink()
        )
        counts = agent.auditor.faults.counts()
        store.close()
        with _reopened(path) as again:
            tally = fl.check_runs(again, agent.runs, finish_lands=True)
            later = agent.runs[-2:]
            assert all(r.recording and again.get_run(r.run_id).status.is_terminal for r in later)
        fl.record_figures(f"full disk (tmpfs {DISK_SIZE}, {durability})", agent, tally, **figures)
    fl.assert_promises(agent, tally, finish_timeout=FINISH_TIMEOUT)
    during = figures["faults_during"]
    assert figures["dropped"] > 0, "the disk filled, the queue refused"
    refused = during.get("append_log", 0) + during.get("start_run", 0)
    if durability == "batched":
        assert refused == figures["dropped"], (during, figures["dropped"])
    else:  # a start that timed out in sync mode is a start_run fault too (it lands later)
        assert refused >= figures["dropped"] and during.get("commit_timeout", 0) > 0
    assert set(counts) <= {"append_log", "start_run", "finish_timeout", "commit_timeout"}


@contextlib.contextmanager
def _stalled_disk(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None], Callable[[], None], str]]:
    """A directory where writes can be made to stall, and how: yields (directory,
    stall, resume, label). A loop-mounted ext4 image frozen with ``fsfreeze`` where
    the machine allows it (here it does); else (no loop devices or fsfreeze: an
    unprivileged container) the database's write lock held by another process
    (``BEGIN EXCLUSIVE``), which stalls every commit the same way; the label says
    which."""
    if fl.freeze_available(tmp_path / "probe"):
        with fl.loop_ext4(tmp_path / "disk", tmp_path / "disk.img") as disk, fl.Frozen(disk) as frozen:
            yield disk, frozen.freeze, frozen.thaw, "frozen disk (fsfreeze, ext4 loop)"
    else:
        disk = tmp_path / "disk"
        disk.mkdir()
        with fl.LockHolder(disk / "audit.db") as holder:
            yield disk, holder.hold, holder.release, "frozen disk (fallback: write lock held elsewhere)"


def test_frozen_disk(tmp_path: Path) -> None:
    """A loop-mounted ext4 image frozen with ``fsfreeze --freeze`` mid-run (writes to
    it block in the kernel: the writer thread hangs in its commit), thawed after the
    closes returned: they return within ``finish_timeout`` + 1 s and the finishes
    land after the thaw. Where loop devices or fsfreeze are unavailable, the write
    lock held by another process stands in (see `_stalled_disk`)."""
    with _stalled_disk(tmp_path) as (disk, stall, resume, label):
        path = disk / "audit.db"
        store = SQLiteStore(path, max_queue=20, queue_timeout=0.2)
        agent, figures = _disk_fault_scenario(store, stall, resume)
        store.close()
        with _reopened(path) as again:
            tally = fl.check_runs(again, agent.runs, finish_lands=True)
        fl.record_figures(label, agent, tally, **figures)
    fl.assert_promises(agent, tally, finish_timeout=FINISH_TIMEOUT)
    during = figures["faults_during"]
    assert during.get("finish_timeout", 0) >= 1 and figures["dropped"] > 0
    assert during.get("append_log", 0) + during.get("start_run", 0) == figures["dropped"]


def test_locked_file(tmp_path: Path) -> None:
    """Another process holds the file's write lock (``BEGIN EXCLUSIVE``) from mid-run
    until the closes returned, then commits."""
    path = tmp_path / "audit.db"
    store = SQLiteStore(path, max_queue=20, queue_timeout=0.2)
    with fl.LockHolder(path) as holder:
        agent, figures = _disk_fault_scenario(store, holder.hold, holder.release)
    store.close()
    with _reopened(path) as again:
        tally = fl.check_runs(again, agent.runs, finish_lands=True)
    fl.record_figures("locked file (BEGIN EXCLUSIVE elsewhere)", agent, tally,
                      lock_held_s=round(holder.held_for, 3), **figures)
    fl.assert_promises(agent, tally, finish_timeout=FINISH_TIMEOUT)
    during = figures["faults_during"]
    assert during.get("finish_timeout", 0) >= 1 and figures["dropped"] > 0
    assert during.get("append_log", 0) + during.get("start_run", 0) == figures["dropped"]


def test_immutable_file(tmp_path: Path) -> None:
    """Read-only, made real: ``chattr +i`` on the database and its WAL on an ext4
    image mid-run (the kernel refuses every write, EPERM, as a read-only mount
    refuses with EROFS), ``chattr -i`` after the closes returned.

    (A remount read-only is refused while the file is open for writing, EBUSY, for
    tmpfs and ext4 alike; ``chmod 0444`` does not touch an open file: see
    `test_chmod_0444_after_open_changes_nothing`.)"""
    with fl.loop_ext4(tmp_path / "disk", tmp_path / "disk.img") as disk:
        path = disk / "audit.db"
        store = SQLiteStore(path, max_queue=20, queue_timeout=0.2)
        lock = fl.Immutable(path, Path(f"{path}-wal"))
        with lock:
            agent, figures = _disk_fault_scenario(store, lock.apply, lock.restore)
        store.close()
        with _reopened(path) as again:
            tally = fl.check_runs(again, agent.runs, finish_lands=True)
        fl.record_figures("read-only: immutable file (chattr +i)", agent, tally, **figures)
    fl.assert_promises(agent, tally, finish_timeout=FINISH_TIMEOUT)
    during = figures["faults_during"]
    assert during.get("finish_timeout", 0) >= 1 and figures["dropped"] > 0
    assert during.get("append_log", 0) + during.get("start_run", 0) == figures["dropped"]


def test_chmod_0444_after_open_changes_nothing(tmp_path: Path) -> None:
    """``chmod 0444`` on the database, its WAL and shm while the store has them open,
    restored after: an open file descriptor keeps its access mode (and root ignores
    file modes anyway), so nothing is refused and nothing is counted."""
    path = tmp_path / "audit.db"
    store = SQLiteStore(path)
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    auditor = _auditor(store)
    agent = fl.Agent(auditor)
    agent.both(2)
    try:
        for f in files:
            f.chmod(0o444)
        agent.both(3)
    finally:
        for f in files:
            f.chmod(0o600)
    store.close()
    with _reopened(path) as again:
        tally = fl.check_runs(again, agent.runs, finish_lands=True)
    fl.record_figures("read-only: chmod 0444 after open", agent, tally)
    fl.assert_promises(agent, tally, finish_timeout=FINISH_TIMEOUT)
    assert auditor.faults.counts() == {}


READ_ONLY_AT_OPEN = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    import agentaudit as aa
    from agentaudit.stores.sqlite import SQLiteStore
    from tests import faultlib as fl

    path, uid = sys.argv[1], int(sys.argv[2])
    os.setgid(uid)
    os.setuid(uid)  # no longer root: file modes apply
    store = SQLiteStore(path, max_queue=20, queue_timeout=0.2, close_timeout=1.0)
    agent = fl.Agent(aa.Auditor(store, finish_timeout=1.0))
    agent.both(2)  # the file is read-only for this process
    os.chmod(path, 0o600)  # the file is made writable again
    time.sleep(1.5)  # the writer's longest pause between attempts is 1 s
    agent.both(2)
    out = {"runs": [r.__dict__ | {"hooks": [h.__dict__ for h in r.hooks]} for r in agent.runs],
           "faults": agent.auditor.faults.counts(), "exceptions": [repr(e) for e in agent.exceptions],
           "dropped": store.dropped}
    store.close()
    print(json.dumps(out))
    """
)


def test_file_read_only_at_open_then_made_writable(tmp_path: Path) -> None:
    """Read-only at open: a process that is not root opens a database of mode 0444
    (SQLite then opens it read-only, silently), records runs, makes the file
    writable again (``chmod 0600``) and records more. The runs recorded after the
    restore must be in the file, as after a full disk clears."""
    home = Path(tempfile.mkdtemp(prefix="aa-ro-", dir="/tmp"))
    try:
        nobody = 65534
        path = home / "audit.db"
        with SQLiteStore(path) as seed:  # an existing file, as root
            aa.Auditor(seed).start_run("seed").close()
        for f in (home, *home.iterdir()):
            os.chown(f, nobody, nobody)
        home.chmod(0o755)
        path.chmod(0o444)
        child = subprocess.run(
            [sys.executable, "-c", READ_ONLY_AT_OPEN, str(path), str(nobody)],
            capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent,
        )
        assert child.returncode == 0, child.stderr
        out = json.loads(child.stdout)
        runs = [_record_from_json(r) for r in out["runs"]]
        with _reopened(path) as again:
            tally = fl.check_runs(again, runs)
            later = [again.get_run(r.run_id) for r in runs[-2:]]
        agent = fl.Agent(aa.Auditor(None))
        agent.runs = runs
        fl.record_figures("read-only at open (mode 0444, not root), then 0600", agent, tally,
                          faults_in_child=out["faults"], dropped=out["dropped"],
                          later_runs_recorded=sum(r is not None for r in later))
        assert out["exceptions"] == []
        assert max(r.close_seconds for r in runs) <= FINISH_TIMEOUT + 1.0
        assert tally.problems() == {}, tally.problems()
        assert all(r.recording and r.close_clean for r in runs[-2:]), (
            f"runs after the file became writable again were not recorded: faults {out['faults']}"
        )
        assert all(run is not None and run.status.is_terminal for run in later)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _record_from_json(data: dict[str, Any]) -> fl.RunRecord:
    hooks = [
        fl.Hook(h["kind"], h["marker"], [tuple(x) for x in h["expected"]], h["faulted"],
                [tuple(a) for a in h["acked"]], h["seconds"])
        for h in data["hooks"]
    ]
    return fl.RunRecord(**{**data, "hooks": hooks})


# -- tools in flight when the queue is full ---------------------------------------------
@pytest.mark.parametrize("fault", ["full disk", "frozen disk"])
def test_tools_in_flight_at_close_on_a_failing_disk(tmp_path: Path, fault: str) -> None:
    """Three parallel tool calls started (and committed) before the fault; the fault
    strikes, the agent ticks until the store's queue is full and closes the run with
    the three tools still running: ``close`` owes each a cancelled ``tool_result``.
    The store's default ``queue_timeout`` (1 s). The full disk is a 512 KiB tmpfs
    filled by a filler file; the frozen disk as in `test_frozen_disk` (with its
    fallback)."""
    stalled: Any = (
        _stalled_disk(tmp_path) if fault == "frozen disk"
        else _filled_tmpfs(tmp_path)
    )
    with stalled as (disk, strike, clear, label):
        path = disk / "audit.db"
        store = SQLiteStore(path, max_queue=20)
        agent = fl.Agent(_auditor(store))

        def before_close() -> None:
            store.flush()  # the three tool calls are on disk
            strike()

        rec = agent.loop(1, open_tools=3, before_close=before_close, flood=0)
        clear()
        _timed_flush(store)
        store.close()
        with _reopened(path) as again:
            tally = fl.check_runs(again, agent.runs, finish_lands=True)
        fl.record_figures(f"tools in flight at close, {label}", agent, tally, close_faults=rec.close_faults)
    fl.assert_promises(agent, tally, finish_timeout=FINISH_TIMEOUT)


@contextlib.contextmanager
def _filled_tmpfs(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None], Callable[[], None], str]]:
    """A small tmpfs, filled (strike) and emptied (clear) by a filler file."""
    with fl.tmpfs(tmp_path / "disk", DISK_SIZE) as disk:
        filler: list[Path] = []
        yield disk, lambda: filler.append(fl.fill(disk)), lambda: filler.pop().unlink(), f"full disk (tmpfs {DISK_SIZE})"


# -- fork mid-commit --------------------------------------------------------------------
def _child_of_fork(store: SQLiteStore, auditor: aa.Auditor, out: int) -> int:
    agent = fl.Agent(auditor, "forked-child")
    before = auditor.faults.total
    rec = agent.loop(2, open_tools=1)
    tally = fl.check_runs(store, [rec])
    faults = auditor.faults.total - before
    store.close()  # the child's store only: the parent's goes on
    report = {"run_id": rec.run_id, "close_s": rec.close_seconds, "faults": faults,
              "problems": tally.problems(), "exceptions": [repr(e) for e in agent.exceptions]}
    os.write(out, json.dumps(report).encode())
    ok = rec.close_clean and faults == 0 and not tally.problems() and not agent.exceptions
    return 0 if ok and rec.close_seconds <= FINISH_TIMEOUT + 1.0 else 1


def _wait_child(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -999  # hung


def test_fork_mid_commit(tmp_path: Path) -> None:
    """A thread records runs back to back (``commit_delay=0``: the writer thread is
    committing nearly all the time) while the main thread forks 20 times. Each child
    records a run through the inherited store and auditor, checks it landed and
    verifies, closes the inherited store, and exits 0 only then."""
    path = tmp_path / "audit.db"
    store = SQLiteStore(path, commit_delay=0)
    parent = fl.Agent(aa.Auditor(store, finish_timeout=FINISH_TIMEOUT), "parent")
    inherited = _auditor(store)
    stop = threading.Event()

    def record() -> None:
        while not stop.is_set():
            parent.loop(2)

    thread = threading.Thread(target=record, name="parent-agent")
    thread.start()
    rng = random.Random(11)
    children: list[tuple[int, int, dict[str, Any]]] = []
    try:
        time.sleep(0.05)
        for _ in range(20):
            time.sleep(rng.random() * 0.01)
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: never back into pytest
                code = 70
                try:
                    os.close(read)
                    code = _child_of_fork(store, inherited, write)
                except BaseException:
                    code = 71
                finally:
                    os._exit(code)
            os.close(write)
            code = _wait_child(pid, 15.0)
            with os.fdopen(read, "rb") as r:
                raw = r.read()
            children.append((pid, code, json.loads(raw) if raw else {}))
    finally:
        stop.set()
        thread.join(30)
    store.close()
    with _reopened(path) as again:
        tally = fl.check_runs(again, parent.runs)
        child_ok = 0
        for _pid, _code, report in children:
            run_id = report.get("run_id")
            if run_id and again.get_run(run_id) is not None:
                assert_run_well_formed(again, run_id)
                child_ok += 1
    fl.record_figures("fork mid-commit (20 forks)", parent, tally,
                      children_ok=sum(code == 0 for _p, code, _r in children), child_runs_in_file=child_ok,
                      child_max_close_s=round(max((r.get("close_s", 0) for _p, _c, r in children), default=0), 3))
    assert [(pid, code, report) for pid, code, report in children if code != 0] == []
    assert child_ok == 20
    fl.assert_promises(parent, tally, finish_timeout=FINISH_TIMEOUT)
    assert parent.auditor.faults.counts() == {}


# -- SIGKILL ----------------------------------------------------------------------------
VICTIM = textwrap.dedent(
    """
    import mmap, os, random, sys, time, zlib
    import agentaudit as aa
    from agentaudit.stores.sqlite import SQLiteStore

    path, ledger_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(seed)
    with open(ledger_path, "r+b") as f:
        ledger = mmap.mmap(f.fileno(), 1024)
    entries = []

    def acked(run_id, seq):  # what the agent was told, and when, for the parent to read after the kill
        entries.append(f"{seq}:{time.time():.6f}")
        body = f"{run_id}|{';'.join(entries)}|".encode()
        ledger[:1024] = (body + f"{zlib.crc32(body):010d}".encode()).ljust(1024, b" ")

    store = SQLiteStore(path)
    auditor = aa.Auditor(store)
    while True:
        w = auditor.start_run("victim", caller="sigkill", parent_run_id=None)
        entries.clear()
        for i in range(1, rng.randint(2, 8) + 1):
            before = auditor.faults.total
            call = aa.ToolCall("search", {"q": i}, f"call_{i}")
            w.on_step(w.steps_count() + 1, aa.Response(
                text="thinking", model="openai/gpt-4o-mini",
                usage=aa.Usage(input_tokens=10, output_tokens=i), tool_calls=(call,)))
            w.tool_started(call)
            w.tool_finished(call, f"result {i}")
            w.log_event("tick", {"i": i})
            if auditor.faults.total == before:
                acked(w.run_id, w.events_count)
            time.sleep(rng.random() * 0.02)  # runs outlive commit_delay: partly committed
        if rng.random() < 0.3:  # sometimes a tool is still running at close
            w.tool_started(aa.ToolCall("fetch", {}, "call_open"))
        w.close()
        print(w.run_id, auditor.faults.total, flush=True)
    """
)


def _ledger(raw: bytes) -> tuple[str, list[tuple[int, float]]] | None:
    """The run in progress at the kill and its acknowledged sequences with their
    times, or None (no run yet, or the record torn by the kill)."""
    parts = raw.decode("ascii", "replace").strip().split("|")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    if int(parts[2]) != zlib.crc32(f"{parts[0]}|{parts[1]}|".encode()):
        return None
    acks = [(int(seq), float(t)) for seq, t in (e.split(":") for e in parts[1].split(";"))]
    return parts[0], acks


def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    """A process records runs in a loop (default batched mode) and is killed with
    SIGKILL at a random moment, 20 times, on one file. After each kill, reopening the
    file: every run the process reported closed (it prints the run id once ``close``
    returned) is there, complete, and verifies; every run it left running is marked
    abandoned; every run verifies. Events of the run in progress that were
    acknowledged but not yet committed are the documented crash window
    (docs/storage.md): counted here, not asserted."""
    path = tmp_path / "audit.db"
    ledger = tmp_path / "ledger"
    rng = random.Random(20)
    closed_total = abandoned_total = 0
    window: list[int] = []  # acknowledged events lost by the run in progress
    ages: list[float] = []  # age at the kill of the oldest of them, seconds
    problems: list[str] = []
    for trial in range(20):
        ledger.write_bytes(b" " * 1024)
        proc = subprocess.Popen(
            [sys.executable, "-c", VICTIM, str(path), str(ledger), str(trial)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        time.sleep(0.3 + rng.random() * 0.5)  # during start-up, open or recording
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err
        assert "Traceback" not in err, err
        closed = [line.split() for line in out.splitlines() if line.strip()]
        assert all(faults == "0" for _run, faults in closed), closed
        with mmap_read(ledger) as raw:
            last = _ledger(raw)
        if not path.exists():
            continue  # killed before the store created the file
        with SQLiteStore(path) as store:
            recovered = set(store.recovered)
            for run_id, _faults in closed:
                run = store.get_run(run_id)
                if run is None or run.status is not aa.RunStatus.SUCCEEDED:
                    problems.append(f"trial {trial}: closed run {run_id} is {run and run.status}")
                    continue
                try:
                    assert_run_well_formed(store, run_id)
                except AssertionError as exc:
                    problems.append(f"trial {trial}: closed run {run_id}: {exc}")
            closed_total += len(closed)
            abandoned_total += len(recovered)
            for run in store.iter_runs():
                if run.status is aa.RunStatus.RUNNING:
                    problems.append(f"trial {trial}: run {run.run_id} left running after reopen")
                if not store.verify(run.run_id).ok:
                    problems.append(f"trial {trial}: run {run.run_id} fails verify")
            if last is not None and last[0] not in {r for r, _f in closed}:
                run_id, acks = last
                kept = len(store.get_logs(run_id))
                window.append(max(0, acks[-1][0] - kept))
                lost_at = [t for seq, t in acks if seq > kept]
                ages.append(killed_at - lost_at[0] if lost_at else 0.0)
    fl.record_figures("SIGKILL (20 kills, batched)", None, None, runs_closed=closed_total,
                      runs_abandoned=abandoned_total, events_lost_by_closed_runs=0 if not problems else "see failure",
                      crash_window_events_lost_max=max(window, default=0),
                      crash_window_events_lost_median=sorted(window)[len(window) // 2] if window else 0,
                      crash_window_ms_median=round(1000 * sorted(ages)[len(ages) // 2], 1) if ages else 0,
                      crash_window_ms_max=round(1000 * max(ages, default=0), 1),
                      crash_window_trials=len(window))
    assert problems == []
    assert closed_total > 0 and abandoned_total > 0


@contextlib.contextmanager
def mmap_read(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 1024, access=mmap.ACCESS_READ) as m:
        yield bytes(m[:1024])
