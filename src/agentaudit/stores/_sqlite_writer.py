"""The SQLite store's background writer: a bounded queue and one thread that commits.

Why: an agent's hook must not wait on disk. Hooks append an item to a deque and
return; one thread drains it and writes each batch in one transaction. Items keep
their order: a run's start, its events and its finish are written in the order they
were submitted. Only this thread writes to the file, so a commit that hangs (a frozen
disk) or fails (a full one) never holds up an agent's thread: `close` waits on the
finish's future for a bounded time, and that is all.

When to commit: an item someone waits for (a run's finish, a flush, an event in sync
mode) is committed at once, with everything queued before it. Other items wait up to
`COMMIT_DELAY` for company, which bounds what a killed process loses.

What can go wrong, and what the thread does:
- another process holds the file's lock: retry, backing off to 50 ms;
- the disk is full, read-only, or failing: roll back, keep the batch, retry backing
  off to 1 s, for as long as it takes (the queue keeps what fits, a full queue
  refuses new items at once and counts them); when the disk recovers, it resumes;
- the database refuses one item (a run id that already exists): write the batch
  again with each item on its own, so the refusal costs that item only; the run's
  later items are refused too, and its finish's future says why.
The thread itself only stops at `stop`; a bug in it fails every waiter loudly.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .._errors import RunNotFoundError, StoreError
from .._keys import Keyring
from .._model import Event, Run, RunStats
from .._verify import record_of_run, seal_of
from ..payloads import MODEL, RESOLVED_MODEL
from ._sqlite_rows import (
    INSERT_EVENT,
    INSERT_FINISHED_RUN,
    INSERT_RUN,
    UPDATE_FINISH,
    event_row,
    finish_row,
    format_ts,
    run_row,
)
from ._sqlite_schema import is_busy, needs_reopen
from ._sqlite_seal import seal_run

__all__ = ["COMMIT_DELAY", "SQLiteWriter"]

logger = logging.getLogger("agentaudit")


# -- what is queued ----------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class StartRun:
    run: Run
    done: Future[Any] | None = None


@dataclass(slots=True, eq=False)
class AppendEvents:
    events: Sequence[Event]  # one run's, in sequence order
    done: Future[Any] | None = None


@dataclass(slots=True, eq=False)
class FinishRun:
    run_id: str
    stats: RunStats
    finished_at: datetime
    done: Future[Any]


@dataclass(slots=True, eq=False)
class Maintenance:
    """``fn(connection)`` run inside a transaction of its own batch (purge, reap)."""

    fn: Callable[[sqlite3.Connection], Any]
    done: Future[Any]


@dataclass(slots=True, eq=False)
class Flush:
    done: Future[Any]


Item = StartRun | AppendEvents | FinishRun | Maintenance | Flush

# How long an item nobody waits for may sit in the queue before it is committed.
COMMIT_DELAY = 0.02
# A queue this long is committed at once, whatever its age.
_URGENT_LENGTH = 1000
# After its last item the writer keeps looking at the queue every commit_delay for
# this long, instead of sleeping until woken: back-to-back runs then cost no wake-up.
_STAY_AWAKE = 0.5
# The writing connection never checkpoints the WAL (that would charge milliseconds and
# two fsyncs to whichever commit crossed the threshold): the writer thread does it on
# a connection of its own when idle, at most every CHECKPOINT_INTERVAL, and takes a
# RESTART when the WAL still grew past RESTART_FRAMES pages (a PASSIVE checkpoint that
# overlaps commits never lets the WAL start over).
CHECKPOINT_INTERVAL = 0.05
RESTART_FRAMES = 2000
_RESTART_WAIT_MS = 50
# The longest pause between attempts on a file another process has locked (SQLite's
# own busy handler, which the writer does not use, sleeps up to 100 ms).
_MAX_BUSY_DELAY = 0.05
# The longest pause between attempts on a failing disk (full, read-only, I/O error).
_MAX_FAULT_DELAY = 1.0
# Runs whose start the database refused, remembered so their later items are refused
# too (bounded: a process refusing millions of runs must not grow).
_MAX_REMEMBERED = 10_000

_SET_MODEL = "UPDATE runs SET model = ? WHERE run_id = ? AND model = ''"

# The outcome of one attempt at a batch.
_DONE, _BUSY, _FAILING, _REFUSED = range(4)


def _refuses_item(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing one item (as opposed to the file or
    the disk failing, which the whole batch waits out)."""
    return isinstance(
        exc, (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
              OverflowError, ValueError, TypeError, StoreError)
    )


class SQLiteWriter:
    """One writer thread over one connection, fed by a bounded deque."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        path: str,
        max_queue: int,
        queue_timeout: float,
        max_batch: int = 5000,
        commit_delay: float = COMMIT_DELAY,
        connection: sqlite3.Connection | None = None,
        on_start: Callable[[], None] | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self._connect = connect
        self._keyring = keyring  # seals finished runs with the key each names
        self._on_start = on_start
        self._conn = connection
        self._path = path
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.max_batch = max_batch
        self.commit_delay = commit_delay
        self._pending: collections.deque[Item] = collections.deque()
        self._wake = threading.Event()
        self._space = threading.Event()
        self._urgent = False  # an item is waited for: commit without delay
        self._polling = False  # the thread looks at the queue on its own every commit_delay
        self._first_queued = 0.0  # when the queue last went from empty to not
        self._inflight = False
        self._stopping = False
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Held while the connection is in use (a transaction, a checkpoint): a fork
        # waits for it, so a child never inherits a connection mid-transaction.
        self._commit_lock = threading.Lock()
        self._fatal: BaseException | None = None
        # The disk fault the thread is waiting out, or None while commits succeed.
        self.failing: BaseException | None = None
        self._reopen = False  # the connection is read-only: open a new one before retrying
        # itertools.count: next() is atomic under the GIL, a += on an int is not.
        self._dropped = itertools.count(1)
        self._failed = itertools.count(1)
        self.dropped = 0  # items refused because the queue was full
        self.failed = 0  # items the database refused
        self.committed_batches = 0
        self.checkpoints = 0
        # Checkpoints run on a thread of their own, so a checkpoint's fsyncs never
        # hold up a commit (a run's close waits for those).
        self._uncheckpointed = 0
        self._last_checkpoint = 0.0
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._checkpoint_lock = threading.Lock()
        self._checkpoint_wake = threading.Event()
        self._checkpointer: threading.Thread | None = None
        # Why the database refused a run's start (its later items are refused too) or
        # some of its events: told to the run's finish, which reaches its Writer.
        self._rejected: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._lost: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._logged: set[str] = set()

    # -- caller side ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer thread (its connection is opened on that thread)."""
        with self._start_lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._loop, name="agentaudit-sqlite-writer", daemon=True)
            checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="agentaudit-sqlite-checkpoint", daemon=True
            )
            _WRITERS.add(self)
            thread.start()
            checkpointer.start()
            self._thread, self._checkpointer = thread, checkpointer
        if self._on_start is not None:
            self._on_start()

    def submit(self, item: Item, *, bounded: bool = True) -> None:
        """Queue one item. A bounded item (a run's start, events) finding the queue
        full waits up to ``queue_timeout`` for room while the writer is healthy, and
        not at all while it waits out a disk fault; then `StoreError` (counted)."""
        if self._thread is None:
            self.start()
        if self._fatal is not None or self._stopping:
            raise StoreError(self._unavailable())
        pending = self._pending
        if bounded and len(pending) >= self.max_queue:
            self._wait_for_room()
        if not pending:
            self._first_queued = time.monotonic()
        pending.append(item)
        waited_for = not isinstance(item, (StartRun, AppendEvents)) or item.done is not None
        if waited_for or len(pending) >= _URGENT_LENGTH:
            self._urgent = True
            self._wake.set()
        elif not self._polling and len(pending) == 1:
            # Asleep: wake it to start the commit_delay clock. While it polls (busy
            # lately), it finds the item itself: no thread switch per run.
            self._wake.set()

    def _wait_for_room(self) -> None:
        deadline = time.monotonic() + (0.0 if self.failing is not None else self.queue_timeout)
        while len(self._pending) >= self.max_queue:
            self._space.clear()
            if len(self._pending) < self.max_queue:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._space.wait(remaining) or self.failing is not None:
                if len(self._pending) < self.max_queue:
                    return
                self.dropped = next(self._dropped)
                why = f" while the disk fails ({self.failing})" if self.failing is not None else ""
                raise StoreError(
                    f"the SQLite writer queue for {self._path} is full ({self.max_queue} items)"
                    f"{why}; not recorded ({self.dropped} refused so far)"
                )
            if self._fatal is not None:
                raise StoreError(self._unavailable())

    def has_unwritten(self) -> bool:
        # _inflight is set before items leave the deque and cleared after commit.
        return bool(self._pending) or self._inflight

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float) -> int:
        """Write what is queued (for up to ``timeout`` seconds), then end the thread.
        Returns how many items were left unwritten."""
        self._deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        self._checkpoint_wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout + 0.5)
        checkpointer = self._checkpointer
        if checkpointer is not None and checkpointer is not threading.current_thread():
            checkpointer.join(0.5)
        left = len(self._pending) + (1 if self._inflight else 0)
        if thread is None and self._conn is not None:
            self._conn.close()
            self._conn = None
        return left

    # -- fork ----------------------------------------------------------------------------
    def quiesce(self, timeout: float) -> bool:
        """Before a fork: wait (up to ``timeout``) until the thread is not inside
        SQLite, and keep it out until `resume`. True when it is held. Every writer,
        not only those of open stores: a store dropped without ``close`` leaves its
        thread writing, and a fork while any thread holds SQLite's process-wide mutex
        leaves the child's copy locked for ever."""
        if not self._commit_lock.acquire(timeout=timeout):
            return False
        if not self._checkpoint_lock.acquire(timeout=timeout):
            self._commit_lock.release()
            return False
        return True

    def resume(self) -> None:
        self._checkpoint_lock.release()
        self._commit_lock.release()

    def request_stop(self, timeout: float) -> None:
        """`stop` without waiting: the thread writes what is queued (for up to
        ``timeout`` seconds) and ends. For a store garbage-collected unclosed."""
        self._deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        self._checkpoint_wake.set()

    def abandon_after_fork(self) -> list[sqlite3.Connection | None]:
        """In a forked child: this writer's thread does not exist here and its
        connections belong to the parent. Forget them without touching the file;
        returns them, to be kept referenced (closing would touch the parent's locks)."""
        self._fatal = StoreError("writer inherited across fork")
        self._pending.clear()
        inherited = [self._conn, self._checkpoint_conn]
        self._conn = None
        self._checkpoint_conn = None
        return inherited

    def _unavailable(self) -> str:
        if self._fatal is not None:
            return f"the SQLite writer for {self._path} stopped: {self._fatal}"
        return f"the SQLite store for {self._path} is closed"

    # -- writer thread -------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        conn = self._conn if self._conn is not None else self._connect()
        _writing_pragmas(conn)
        self._conn = conn
        return conn

    def _loop(self) -> None:
        try:
            with self._commit_lock:  # opening takes SQLite's locks too (see quiesce)
                self._open_retrying()
            while True:
                batch = self._next_batch()
                if batch is None:
                    break
                self._write(batch)
        except BaseException as exc:  # a bug: fail loudly, not silently
            self._fatal = exc
            logger.error("agentaudit: the SQLite writer for %s stopped: %r", self._path, exc)
        finally:
            with self._commit_lock:
                self._space.set()
                self._fail_pending()
                try:
                    if self._conn is not None:
                        self._conn.close()
                except sqlite3.Error:
                    pass
                self._conn = None
            self._stopping = True  # the checkpointer ends too
            self._checkpoint_wake.set()

    def _reconnect(self) -> None:
        """A connection SQLite opened read-only stays read-only after the file becomes
        writable: a new one is opened for the next attempt (the old one is kept until
        then, and closed once the new one is open)."""
        old = self._conn
        try:
            fresh = _writing_pragmas(self._connect())
        except (sqlite3.Error, StoreError) as exc:
            self._note_failing(exc)
            return
        self._reopen = False
        self._conn = fresh
        try:
            if old is not None:
                old.close()
        except sqlite3.Error:
            pass

    def _open_retrying(self) -> sqlite3.Connection:
        delay = 0.01
        while True:
            try:
                return self._open()
            except (sqlite3.Error, StoreError) as exc:
                self._note_failing(exc)
                if self._stopping:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, _MAX_FAULT_DELAY)

    def _next_batch(self) -> list[Item] | None:
        """Wait for items, let them gather for up to ``commit_delay`` unless one is
        waited for, and take up to ``max_batch``. None once stopping and empty."""
        idle_since = time.monotonic()
        while not self._pending:
            if self._stopping:
                return None
            now = time.monotonic()
            # Busy lately: look again every commit_delay rather than be woken by each
            # new run; then sleep until woken. The flag goes down before the queue is
            # checked again, so an item queued after that wakes the thread itself.
            self._polling = now - idle_since < _STAY_AWAKE
            if not self._polling and self._pending:
                break
            self._wake.wait(max(self.commit_delay, 0.001) if self._polling else 0.5)
            self._wake.clear()
        self._polling = True
        while not self._urgent and not self._stopping:
            remaining = self._first_queued + self.commit_delay - time.monotonic()
            if remaining <= 0:
                break
            self._wake.wait(remaining)
            self._wake.clear()
        self._inflight = True
        self._urgent = False  # before the take: a later waiter wakes us again
        pending = self._pending
        batch = [pending.popleft() for _ in range(min(len(pending), self.max_batch))]
        if pending:
            self._first_queued = time.monotonic()
        self._space.set()
        return batch

    def _write(self, batch: list[Item]) -> None:
        """Commit ``batch``, waiting out a locked file or a failing disk, and settle
        its futures."""
        delay = 0.002
        isolate = False
        try:
            while True:
                with self._commit_lock:
                    if self._reopen:
                        self._reconnect()
                    assert self._conn is not None
                    outcome = self._attempt(self._conn, batch, isolate)
                if outcome == _DONE:
                    return
                if outcome == _REFUSED:
                    isolate = True
                    continue
                if self._expired():
                    self._give_up(batch)
                    return
                limit = _MAX_BUSY_DELAY if outcome == _BUSY else _MAX_FAULT_DELAY
                self._wake.wait(delay)  # a stop cuts the wait short
                self._wake.clear()
                delay = min(delay * 2, limit)
        finally:
            self._inflight = False

    def _attempt(self, conn: sqlite3.Connection, batch: list[Item], isolate: bool) -> int:
        settle: list[tuple[Future[Any] | None, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            if isolate:
                self._apply_isolated(conn, batch, settle)
            else:
                self._apply(conn, batch, settle)
            conn.execute("COMMIT")
        except Exception as exc:
            _rollback(conn)
            if is_busy(exc):
                return _BUSY
            if _refuses_item(exc) and not isolate:
                return _REFUSED
            self._note_failing(exc)
            self._reopen = needs_reopen(exc)
            return _FAILING
        if self.failing is not None:
            logger.warning("agentaudit: %s is writable again; the writer resumed", self._path)
            self.failing = None
        self.committed_batches += 1
        self._uncheckpointed += 1
        if not self._checkpoint_wake.is_set():
            self._checkpoint_wake.set()
        for future, result, error in settle:
            if future is not None:
                _settle(future, result, error)
        return _DONE

    def _apply(
        self, conn: sqlite3.Connection, batch: Sequence[Item], settle: list[Any]
    ) -> None:
        """Write ``batch`` in the open transaction: runs of consecutive events in one
        ``executemany``; the outcome of each waited-for item into ``settle``."""
        rows: list[tuple[Any, ...]] = []
        models: list[tuple[str, str]] = []
        whole = _whole_runs(batch, self._keyring)
        for item in batch:
            if isinstance(item, StartRun) and item.run.run_id in whole:
                settle.append((item.done, None, None))  # written whole at its finish
                continue
            if isinstance(item, FinishRun) and item.run_id in whole:
                if rows:
                    self._insert_events(conn, rows, models)
                conn.execute(INSERT_FINISHED_RUN, whole[item.run_id].row(item))
                settle.append((item.done, None, None))
                continue
            if isinstance(item, AppendEvents):
                run_id = item.events[0].run_id if item.events else ""
                if run_id in self._rejected:
                    self._refuse(item, StoreError(self._rejected[run_id]), settle)
                    continue
                created = format_ts(item.events[0].created_at) if item.events else ""
                for event in item.events:
                    rows.append(event_row(event, created if event.created_at is item.events[0].created_at else None))
                    if (
                        event.event_type == RESOLVED_MODEL
                        and isinstance(event.payload.get(MODEL), str)
                        and event.run_id not in whole
                    ):
                        models.append((event.payload[MODEL], event.run_id))
                settle.append((item.done, None, None))
                continue
            if rows:
                self._insert_events(conn, rows, models)
            settle.append(self._apply_one(conn, item))
        if rows:
            self._insert_events(conn, rows, models)

    @staticmethod
    def _insert_events(
        conn: sqlite3.Connection, rows: list[tuple[Any, ...]], models: list[tuple[str, str]]
    ) -> None:
        conn.executemany(INSERT_EVENT, rows)
        if models:
            conn.executemany(_SET_MODEL, models)
        rows.clear()
        models.clear()

    def _apply_one(self, conn: sqlite3.Connection, item: Item) -> tuple[Future[Any] | None, Any, Any]:
        if isinstance(item, StartRun):
            conn.execute(INSERT_RUN, run_row(item.run))
            return (item.done, None, None)
        if isinstance(item, FinishRun):
            rejected = self._rejected.get(item.run_id)
            if rejected is not None:
                return (item.done, None, StoreError(rejected))
            cursor = conn.execute(UPDATE_FINISH, finish_row(item.run_id, item.stats, item.finished_at))
            if cursor.rowcount == 0:
                return (item.done, None, RunNotFoundError(f"no run {item.run_id!r} to finish in {self._path}"))
            seal_run(conn, item.run_id, self._keyring)
            lost = self._lost.pop(item.run_id, None)
            return (item.done, None, StoreError(f"the run finished, but {lost}") if lost else None)
        if isinstance(item, Maintenance):
            return (item.done, item.fn(conn), None)
        if isinstance(item, AppendEvents):
            settle: list[Any] = []
            self._apply(conn, [item], settle)
            return settle[0]  # type: ignore[no-any-return]
        return (item.done, None, None)  # Flush: written with everything before it

    def _apply_isolated(self, conn: sqlite3.Connection, batch: Sequence[Item], settle: list[Any]) -> None:
        """Each item under its own savepoint: a refused item is counted, its run
        remembered (a refused start), its waiter told why; the rest is written."""
        for item in batch:
            conn.execute("SAVEPOINT one")
            try:
                outcome = self._apply_one(conn, item)
            except Exception as exc:
                if not _refuses_item(exc):
                    raise  # the file or the disk: the whole batch waits it out
                conn.execute("ROLLBACK TO one")
                conn.execute("RELEASE one")
                self._refuse(item, exc, settle)
                continue
            conn.execute("RELEASE one")
            settle.append(outcome)

    def _refuse(self, item: Item, exc: BaseException, settle: list[Any]) -> None:
        self.failed = next(self._failed)
        why = f"{self._path} refused the {_describe(item)}: {exc}"
        if isinstance(item, StartRun):
            _remember(self._rejected, item.run.run_id, f"{why}; the run's events and finish were not recorded")
        elif isinstance(item, AppendEvents) and item.events:
            _remember(self._lost, item.events[0].run_id, why)
        logger.debug("agentaudit: %s", why)
        error = exc if isinstance(exc, StoreError) else StoreError(why)
        settle.append((getattr(item, "done", None), None, error))

    def _note_failing(self, exc: BaseException) -> None:
        if self.failing is None:
            logger.error(
                "agentaudit: cannot write to %s: %s; holding what fits in the queue and "
                "retrying", self._path, exc,
            )
        self.failing = exc

    def _checkpoint_loop(self) -> None:
        """The checkpointer thread: after commits, at most every CHECKPOINT_INTERVAL."""
        try:
            while True:
                self._checkpoint_wake.wait()
                if self._stopping:
                    return
                pause = self._last_checkpoint + CHECKPOINT_INTERVAL - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                self._checkpoint_wake.clear()
                if self._uncheckpointed:
                    self._checkpoint()
        finally:
            with self._checkpoint_lock:
                try:
                    if self._checkpoint_conn is not None:
                        self._checkpoint_conn.close()
                except sqlite3.Error:
                    pass
                self._checkpoint_conn = None

    def _checkpoint(self) -> None:
        """Copy the WAL's committed pages into the database file (see
        CHECKPOINT_INTERVAL)."""
        self._uncheckpointed = 0
        self._last_checkpoint = time.monotonic()
        with self._checkpoint_lock:
            try:
                conn = self._checkpoint_conn
                if conn is None:
                    # Its busy timeout only applies to the RESTART: long enough to get
                    # between two commits, short enough not to stall them for long.
                    conn = self._checkpoint_conn = self._connect()
                    conn.execute(f"PRAGMA busy_timeout = {_RESTART_WAIT_MS}")
                _busy, log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if log >= RESTART_FRAMES and copied == log:
                    conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                self.checkpoints += 1
            except (sqlite3.Error, StoreError) as exc:  # a reader in the way, a full disk
                if "checkpoint" not in self._logged:
                    self._logged.add("checkpoint")
                    logger.warning("agentaudit: checkpoint of %s failed: %s (retried later)", self._path, exc)

    def _expired(self) -> bool:
        return self._stopping and self._deadline is not None and time.monotonic() > self._deadline

    def _give_up(self, batch: list[Item]) -> None:
        error = StoreError(f"{self._path} could not be written before close gave up: {self.failing}")
        logger.error("agentaudit: %d items not written to %s at close: %s", len(batch), self._path, self.failing)
        for item in batch:
            done = getattr(item, "done", None)
            if done is not None:
                _settle(done, None, error)

    def _fail_pending(self) -> None:
        left = 0
        while self._pending:
            item = self._pending.popleft()
            left += 1
            done = getattr(item, "done", None)
            if done is not None:
                _settle(done, None, StoreError(self._unavailable()))
        if left:
            logger.error("agentaudit: %d items were not written to %s", left, self._path)


# Every writer whose thread was started, for the fork hooks (see quiesce).
_WRITERS: weakref.WeakSet[SQLiteWriter] = weakref.WeakSet()
_fork_quiesced: list[SQLiteWriter] = []
# How long a fork waits for a writer to come out of SQLite (a commit on a frozen disk
# must not hang the fork for ever: past it, the child may find the file locked).
FORK_WAIT = 1.0


def _quiesce_writers() -> None:
    _fork_quiesced.clear()
    for writer in list(_WRITERS):
        if writer.alive and writer.quiesce(FORK_WAIT):
            _fork_quiesced.append(writer)


def _resume_writers() -> None:
    for writer in _fork_quiesced:
        writer.resume()
    _fork_quiesced.clear()


def _forget_writers_in_child() -> None:
    # The threads do not exist here; their locks, held by the parent's quiesce, are
    # copies nobody will release. Each store makes a new writer on its first write.
    _fork_quiesced.clear()
    _WRITERS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_quiesce_writers, after_in_parent=_resume_writers, after_in_child=_forget_writers_in_child
    )


class _WholeRun:
    """A run whose start and finish are in one batch (a short run's whole life
    usually is): written as its final, sealed row in one INSERT, where a longer run
    takes an INSERT, an UPDATE and a seal read back from the file."""

    __slots__ = ("events", "keyring", "last_hash", "model", "run")

    def __init__(self, run: Run, keyring: Keyring | None) -> None:
        self.run = run
        self.keyring = keyring
        self.events = 0
        self.last_hash = ""
        self.model = ""

    def row(self, finish: FinishRun) -> tuple[Any, ...]:
        record = record_of_run(self.run.finished(finish.stats, finish.finished_at), model=self.model)
        key_id = self.run.key_id
        key = self.keyring.get(key_id) if key_id and self.keyring is not None else None
        seal = seal_of(record, key, self.events, self.last_hash) if key or not key_id else ""
        return (*record[:21], self.model, seal)


def _whole_runs(batch: Sequence[Item], keyring: Keyring | None) -> dict[str, _WholeRun]:
    """The runs started and finished within ``batch``, with their event tails and
    models. None when the batch holds a maintenance call, which could touch a run in
    between."""
    found: dict[str, _WholeRun] = {}
    finished: set[str] = set()
    for item in batch:
        if isinstance(item, StartRun):
            found[item.run.run_id] = _WholeRun(item.run, keyring)
        elif isinstance(item, AppendEvents):
            for event in item.events:
                whole = found.get(event.run_id)
                if whole is not None:
                    whole.events, whole.last_hash = event.sequence, event.hash
                    if event.event_type == RESOLVED_MODEL and not whole.model:
                        model = event.payload.get(MODEL)
                        whole.model = model if isinstance(model, str) else ""
        elif isinstance(item, FinishRun):
            finished.add(item.run_id)
        elif isinstance(item, Maintenance):
            return {}
    return {run_id: whole for run_id, whole in found.items() if run_id in finished}


def _writing_pragmas(conn: sqlite3.Connection) -> sqlite3.Connection:
    # No busy handler: the writer thread retries a locked file itself, with back-off.
    # No automatic checkpoints either (see CHECKPOINT_INTERVAL).
    conn.execute("PRAGMA busy_timeout = 0")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn


def _remember(memory: collections.OrderedDict[str, str], run_id: str, why: str) -> None:
    memory.setdefault(run_id, why)
    while len(memory) > _MAX_REMEMBERED:
        memory.popitem(last=False)


def _describe(item: Item) -> str:
    if isinstance(item, StartRun):
        return f"start of run {item.run.run_id}"
    if isinstance(item, AppendEvents):
        return f"events {[f'{e.run_id}#{e.sequence}' for e in item.events]}"
    if isinstance(item, FinishRun):
        return f"finish of run {item.run_id}"
    return "maintenance call" if isinstance(item, Maintenance) else "flush"


def _settle(future: Future[Any], result: Any, error: BaseException | None) -> None:
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:  # settled already (given up on at close, say)
        pass


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
