"""The SQLite store's background writer: a bounded queue and one thread that commits.

Why: an agent's hook must not wait on disk. Hooks append to a deque (a few hundred
nanoseconds); one thread drains it and writes each batch in one transaction with
``executemany``. Operations keep their order: a run's start, its events and its
finish are written in the order they were submitted.

When to commit: an item someone waits for (a run's finish, a flush, an event in
sync mode) is committed at once, with everything queued before it. Other items wait
up to `COMMIT_DELAY` for company: a commit while the agent runs costs the agent its
thread (the writer's Python work takes the GIL), so a short run's start and events
ride along with its finish in one transaction, and a long run's events are
committed every few tens of milliseconds, which bounds what a killed process loses.

A `Ticket` lets a caller wait for its item to be committed (a run's finish,
a flush, an event in sync mode, purge and other maintenance calls).

A run's finish is committed by the thread that closes the run when the writer
thread is idle (`SQLiteWriter.commit_now`): that thread is waiting for the commit
anyway, and two thread hand-offs cost more than the commit. It takes the file's
lock without waiting (another process holding it sends the item to the writer
thread, whose wait is bounded) and writes everything queued before its item, so the
order of operations is the same whoever commits.
"""

from __future__ import annotations

import collections
import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .._errors import AgentAuditError, RunNotFoundError, StoreError
from .._model import Run, RunStats
from ._sqlite_rows import (
    INSERT_EVENT,
    INSERT_FINISHED_RUN,
    INSERT_RUN,
    UPDATE_FINISH,
    UPDATE_FINISH_SEALED,
    event_row,
    finish_row,
    finished_run_row,
    run_row,
)
from ._sqlite_schema import is_busy
from ._sqlite_seal import reseal, run_seal

__all__ = [
    "OP_CALL",
    "OP_EVENT",
    "OP_FINISH",
    "OP_FLUSH",
    "OP_ROW",
    "OP_SEAL",
    "OP_START",
    "CommitTimeout",
    "SQLiteWriter",
    "Ticket",
]

logger = logging.getLogger("agentaudit")

# OP_ROW: an event as its row already made (see INSERT_EVENT) and its payload.
# OP_SEAL: (seal, items, created_at), events a Writer handed over unsealed: taking
# them for a commit turns them into OP_ROW items with seal(items, created_at).
OP_START, OP_EVENT, OP_FINISH, OP_FLUSH, OP_CALL, OP_ROW, OP_SEAL = range(7)
_OP_NAMES = {OP_START: "run start", OP_EVENT: "event", OP_FINISH: "run finish",
             OP_FLUSH: "flush", OP_CALL: "maintenance", OP_ROW: "event", OP_SEAL: "event"}

# (op, data, ticket or None)
Item = tuple[int, Any, "Ticket | None"]

# How long an item nobody waits for may sit in the queue before it is committed.
COMMIT_DELAY = 0.02
# A queue this long is committed at once, whatever its age.
_URGENT_LENGTH = 1000
# After its last item, the writer keeps looking every COMMIT_DELAY for this long
# instead of sleeping until woken: back-to-back runs then cost it no wake-up each.
_STAY_AWAKE = 0.5
# The writing connections never checkpoint the WAL: a checkpoint takes milliseconds
# and two fsyncs, which SQLite would charge to whichever commit crossed its threshold,
# often a run's close on the agent's thread. The writer thread does it instead, on a
# connection of its own, without the GIL: every CHECKPOINT_INTERVAL while commits
# come in, small enough to finish between two of them (only then can the next commit
# start the WAL over), and a RESTART, which waits for no reader but takes the write
# lock, when the WAL still grew past RESTART_FRAMES pages.
CHECKPOINT_INTERVAL = 0.05
RESTART_FRAMES = 2000
_RESTART_WAIT_MS = 50
# The longest pause between the writer thread's attempts on a file another process
# has locked (SQLite's own busy handler, which the writer does not use, sleeps <= 100 ms).
_MAX_RETRY_DELAY = 0.05

_SET_MODEL = "UPDATE runs SET model = ? WHERE run_id = ? AND model = ''"


class CommitTimeout(StoreError, TimeoutError):
    """An item was not committed in the time its waiter had; it stays queued."""


class Ticket:
    """A handle on one submitted item: set once the item is committed or failed.

    An item whose waiter gave up before the writer claimed it for a transaction is
    skipped (``cancel``), so a caller that was told "not written" is never wrong."""

    __slots__ = ("_cancelled", "_claimed", "_done", "_event", "_lock", "error", "result")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Made only for a waiter that finds the item not done yet: a run's close
        # usually commits its own ticket, and an Event costs more than the rest.
        self._event: threading.Event | None = None
        self._done = False
        self._claimed = False
        self._cancelled = False
        self.result: Any = None
        self.error: BaseException | None = None

    def claim(self) -> bool:
        with self._lock:
            if self._cancelled:
                return False
            self._claimed = True
            return True

    def unclaim(self) -> None:
        with self._lock:
            self._claimed = False

    def cancel(self) -> bool:
        """Withdraw the item if the writer has not claimed it; True when withdrawn."""
        with self._lock:
            if self._claimed or self._done:
                return False
            self._cancelled = True
            return True

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        with self._lock:
            self._done = True
            event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout: float | None) -> bool:
        if self._done:
            return True
        with self._lock:
            if self._done:
                return True
            event = self._event
            if event is None:
                event = self._event = threading.Event()
        return event.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done


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
    ) -> None:
        self._connect = connect
        self._on_start = on_start
        self._conn = connection
        self._path = path
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.max_batch = max_batch
        self._pending: collections.deque[Item] = collections.deque()
        self._wake = threading.Event()
        self._signalled = False  # the writer was woken for the items queued now
        self._urgent = False  # an item is waited for: commit without delay
        self.commit_delay = commit_delay
        self._first_queued = 0.0  # when the queue last went from empty to not
        self._space = threading.Event()
        self._inflight = False
        self._stopping = False
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Held by whoever writes to the connection: the writer thread, or a closing
        # thread committing its run's finish itself (commit_now).
        self._commit_lock = threading.Lock()
        self._fatal: BaseException | None = None
        # itertools.count: next() is atomic under the GIL, a += on an int is not.
        self._dropped = itertools.count()
        self._failed = itertools.count()
        self.dropped = 0  # events refused because the queue stayed full
        self.failed = 0  # items the database refused (logged once per kind)
        self.committed_batches = 0
        # Commits since the last checkpoint: counted under _commit_lock, read and reset
        # by the writer thread without it (a count lost to a race only delays one).
        self._uncheckpointed = 0
        self._last_checkpoint = 0.0
        self._checkpoint_conn: sqlite3.Connection | None = None
        # Runs this writer started and has not finished, and their last event so far:
        # a finish then writes its seal with the row, without reading the run back.
        # Touched only under _commit_lock; bounded (a run past it is sealed by query).
        self._live: dict[str, Run] = {}
        self._tails: dict[str, tuple[int, str]] = {}
        self.checkpoints = 0
        self._logged: set[str] = set()

    # -- caller side ---------------------------------------------------------------

    def submit(
        self, op: int, data: Any, ticket: Ticket | None = None, *, bounded: bool = True,
        wake: bool = True,
    ) -> None:
        """Queue one item. When the queue is full, wait up to ``queue_timeout`` for
        room, then raise `StoreError` (the caller counts the event dropped)."""
        if self._thread is None:
            self._start()
        if self._fatal is not None or self._stopping:
            raise StoreError(self._unavailable())
        if bounded and len(self._pending) >= self.max_queue:
            self._wait_for_room()
        pending = self._pending
        if not pending:
            self._first_queued = time.monotonic()
        pending.append((op, data, ticket))
        if not wake:
            return
        if ticket is not None or len(pending) >= _URGENT_LENGTH:
            self._urgent = True
            self._wake.set()
        elif not self._signalled:
            self._signalled = True
            self._wake.set()

    def _wait_for_room(self) -> None:
        deadline = time.monotonic() + self.queue_timeout
        while len(self._pending) >= self.max_queue:
            self._space.clear()
            if len(self._pending) < self.max_queue:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._space.wait(remaining):
                if len(self._pending) < self.max_queue:
                    break
                self.dropped = next(self._dropped) + 1
                raise StoreError(
                    f"the SQLite writer queue for {self._path} stayed full "
                    f"({self.max_queue} items) for {self.queue_timeout:g} s; event not recorded "
                    f"({self.dropped} dropped so far)"
                )
            if self._fatal is not None:
                raise StoreError(self._unavailable())

    def commit_now(self, op: int, data: Any, timeout: float | None, *, what: str) -> Any:
        """Queue one item and return once it is committed, with everything queued
        before it; raise the item's error. Written on this thread when the writer
        thread is idle, else by the writer thread. After ``timeout`` seconds raise
        `CommitTimeout`; the item is not withdrawn and lands when the file allows."""
        ticket = Ticket()
        self.submit(op, data, ticket, bounded=False, wake=False)
        if self._commit_lock.acquire(blocking=False):
            try:
                done = self._commit_here()
            finally:
                self._commit_lock.release()
            if done and ticket.done:
                if ticket.error is not None:
                    raise ticket.error
                return ticket.result
        self._urgent = True
        self._wake.set()
        return self.wait(ticket, timeout, what=what, withdraw=False)

    def _commit_here(self) -> bool:
        """Commit what is queued on the calling thread (holding the commit lock).
        False, with the queue as it was, when the file is locked by another process
        or anything else goes wrong: the writer thread then does it as usual."""
        conn = self._conn
        pending = self._pending
        if conn is None or self._fatal is not None or self._stopping or len(pending) > self.max_batch:
            return False
        self._inflight = True
        batch = self._take()
        self._space.set()
        try:
            try:
                # The connection's busy timeout is 0: a lock held by another process
                # fails this at once, and the item goes to the writer thread.
                done = self._commit(conn, batch, here=True)
            except Exception:  # the writer thread retries, and reports what it finds
                done = False
            if not done:
                pending.extendleft(reversed(batch))
            return done
        finally:
            self._inflight = False

    def wait(
        self, ticket: Ticket, timeout: float | None, *, what: str, withdraw: bool = True
    ) -> Any:
        """Wait for ``ticket``; raise its error, or StoreError on timeout or when the
        writer thread is gone. On timeout an item not yet claimed is withdrawn, unless
        ``withdraw`` is False: then `CommitTimeout` is raised and the item stays."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 0.25 if deadline is None else min(0.25, max(0.0, deadline - time.monotonic()))
            if ticket.wait(step):
                break
            thread = self._thread
            if self._fatal is not None or thread is None or not thread.is_alive():
                if ticket.done:
                    break
                raise StoreError(self._unavailable())
            if deadline is not None and time.monotonic() >= deadline:
                if not withdraw:
                    raise CommitTimeout(
                        f"{what} was not committed to {self._path} within {timeout:g} s; "
                        "it stays queued"
                    )
                if ticket.cancel():
                    raise StoreError(f"{what} was not committed to {self._path} within {timeout:g} s")
                # Claimed by a transaction in progress: it holds the write lock, so
                # its outcome is milliseconds away. Wait for it rather than lie.
                deadline = time.monotonic() + 0.05
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

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
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout + 0.5)
        left = len(self._pending) + (1 if self._inflight else 0)
        if thread is None and self._conn is not None:
            self._conn.close()
            self._conn = None
        return left

    def abandon_after_fork(self) -> None:
        """In a forked child: this writer's thread does not exist here and its
        connection belongs to the parent. Forget both without touching the file."""
        self._fatal = StoreError("writer inherited across fork")
        self._pending.clear()
        # Never closed here: they are the parent's.
        _FORK_LEFTOVERS.extend((self._conn, self._checkpoint_conn))
        self._conn = None
        self._checkpoint_conn = None

    def _unavailable(self) -> str:
        if self._fatal is not None:
            return f"the SQLite writer for {self._path} stopped: {self._fatal}"
        return f"the SQLite store for {self._path} is closed"

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            if self._conn is None:
                self._conn = self._connect()
            # No busy handler: the writer thread retries a locked file itself (with
            # back-off), and a closing thread's commit must not wait at all. No
            # automatic checkpoints either (see CHECKPOINT_EVERY).
            self._conn.execute("PRAGMA busy_timeout = 0")
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")
            thread = threading.Thread(target=self._loop, name="agentaudit-sqlite-writer", daemon=True)
            thread.start()
            self._thread = thread
            if self._on_start is not None:
                self._on_start()

    # -- writer thread -------------------------------------------------------------

    def _loop(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            idle_since: float | None = None
            while True:
                if not self._pending:
                    if self._stopping:
                        break
                    now = time.monotonic()
                    if idle_since is None:
                        idle_since = now
                    if self._uncheckpointed and now - self._last_checkpoint >= CHECKPOINT_INTERVAL:
                        self._checkpoint(now)
                    if now - idle_since < _STAY_AWAKE:
                        # Busy lately (runs closing here commit themselves): look
                        # again in a moment rather than be woken by every new run.
                        self._wake.wait(self.commit_delay)
                        self._wake.clear()
                        continue
                    # Reset before the queue is checked again: an item queued after
                    # this line finds the flag down and wakes the writer itself.
                    self._signalled = False
                    if not self._pending:
                        self._wake.wait(0.5)
                        self._wake.clear()
                    continue
                idle_since = None
                self._signalled = True  # what is queued now is seen: no wake needed
                if not self._linger():
                    continue  # a closing thread committed the queue meanwhile
                if self._expired():
                    break
                with self._commit_lock:
                    self._inflight = True
                    self._urgent = False  # before the take: a later waiter wakes us again
                    batch = self._take()
                    self._space.set()
                    try:
                        if batch:  # a closing thread may have committed it meanwhile
                            self._commit(conn, batch)
                    finally:
                        self._inflight = False
        except BaseException as exc:  # a bug or a dead file: fail loudly, not silently
            self._fatal = exc
            logger.error("agentaudit: the SQLite writer for %s stopped: %r", self._path, exc)
        finally:
            with self._commit_lock:  # not while a closing thread is writing
                self._space.set()
                self._fail_pending()
                for each in (self._checkpoint_conn, conn):
                    try:
                        if each is not None:
                            each.close()
                    except sqlite3.Error:
                        pass
                self._checkpoint_conn = None
                self._conn = None

    def _checkpoint(self, now: float) -> None:
        """Copy the WAL's committed pages into the database file (see
        CHECKPOINT_INTERVAL)."""
        self._uncheckpointed = 0
        self._last_checkpoint = now
        try:
            conn = self._checkpoint_conn
            if conn is None:
                # Its busy timeout only applies to the RESTART: long enough to get
                # between two commits, short enough not to stall them for long.
                conn = self._checkpoint_conn = self._connect()
                conn.execute(f"PRAGMA busy_timeout = {_RESTART_WAIT_MS}")
            _busy, log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if log >= RESTART_FRAMES and copied == log:
                # Still busy after the wait is fine: the next interval tries again.
                conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as exc:  # a reader in the way, or a full disk: try again later
            if "checkpoint" not in self._logged:
                self._logged.add("checkpoint")
                logger.warning("agentaudit: checkpoint of %s failed: %s (retried later)", self._path, exc)

    def _linger(self) -> bool:
        """Wait until the oldest queued item is ``commit_delay`` old, unless one is
        waited for. False when the queue was emptied meanwhile."""
        while not self._urgent and not self._stopping:
            if not self._pending:
                return False
            remaining = self._first_queued + self.commit_delay - time.monotonic()
            if remaining <= 0:
                return True
            self._wake.wait(remaining)
            self._wake.clear()  # the flags, set before every wake, are what count
        return True

    def _expired(self) -> bool:
        return self._stopping and self._deadline is not None and time.monotonic() > self._deadline

    def _take(self) -> list[Item]:
        """Up to ``max_batch`` items off the queue, unsealed events sealed: once taken
        they are rows, so a batch put back (a busy file) is not sealed twice."""
        pending = self._pending
        count = min(len(pending), self.max_batch)
        batch: list[Item] = []
        for _ in range(count):
            item = pending.popleft()
            if item[0] != OP_SEAL:
                batch.append(item)
                continue
            seal, events, created_at = item[1]
            try:
                batch.extend((OP_ROW, row, None) for row in seal(events, created_at))
            except Exception as exc:  # a bug in the sealer: costs its events only
                self._refused(item, exc)
        return batch

    def _fail_pending(self) -> None:
        left = 0
        while self._pending:
            _op, _data, ticket = self._pending.popleft()
            left += 1
            if ticket is not None:
                ticket.settle(error=StoreError(self._unavailable()))
        if left:
            logger.error("agentaudit: %d items were not written to %s", left, self._path)

    def _commit(self, conn: sqlite3.Connection, batch: list[Item], *, here: bool = False) -> bool:
        """Write ``batch`` in one transaction and settle its tickets. ``here`` (a
        closing thread's commit): return False at once, nothing written, when the
        file is busy; the writer thread instead retries until it can."""
        delay = 0.002
        isolate = False
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                if here:
                    return False
                # Another process held the lock past the busy timeout: keep the
                # items and try again; nobody is told "database is locked".
                if self._expired():
                    self._give_up(batch, exc)
                    return True
                time.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY_DELAY)
                continue
            live = [item for item in batch if item[2] is None or item[2].claim()]
            try:
                outcomes = self._apply_isolated(conn, live) if isolate else self._apply(conn, live)
                conn.execute("COMMIT")
            except Exception as exc:
                self._rollback(conn)
                self._unclaim(live)
                if here and (isolate or is_busy(exc)):
                    return False
                if is_busy(exc):
                    time.sleep(delay)
                    delay = min(delay * 2, _MAX_RETRY_DELAY)
                    continue
                if isolate:
                    raise
                # Some item was refused: write each alone so it costs only itself.
                isolate = True
                continue
            self.committed_batches += 1
            self._uncheckpointed += 1
            for ticket, result, error in outcomes:
                ticket.settle(result, error)
            return True

    def _apply(self, conn: sqlite3.Connection, items: list[Item]) -> list[tuple[Ticket, Any, Any]]:
        outcomes: list[tuple[Ticket, Any, Any]] = []
        whole = _whole_runs(items)
        # A whole run's events are all in this batch: its seal needs no query.
        tails = _event_tails(items) if whole else {}
        for op, group in itertools.groupby(items, key=lambda item: item[0]):
            chunk = list(group)
            if op in (OP_EVENT, OP_ROW):
                if op == OP_ROW:
                    rows = [data[0] for _op, data, _t in chunk]
                    payloads = [data[1] for _op, data, _t in chunk]
                else:
                    rows = [event_row(data) for _op, data, _t in chunk]
                    payloads = [data.payload for _op, data, _t in chunk]
                conn.executemany(INSERT_EVENT, rows)
                live, known = self._live, self._tails
                for row in rows:
                    if row[0] in live and row[1] > known.get(row[0], (0, ""))[0]:
                        known[row[0]] = (row[1], row[6])
                models = [
                    (payload.get("model", ""), row[0])
                    for row, payload in zip(rows, payloads, strict=True)
                    if row[2] == "resolved_model"
                    and isinstance(payload.get("model"), str)
                    and row[0] not in whole
                ]
                if models:
                    conn.executemany(_SET_MODEL, models)
                outcomes.extend((t, None, None) for _op, _d, t in chunk if t is not None)
            elif op == OP_START:
                if whole:
                    runs = [data for _op, data, _t in chunk]
                    started = [run for run in runs if run.run_id not in whole]
                    if started:
                        conn.executemany(INSERT_RUN, [run_row(run) for run in started])
                        self._remember(started)
                    finished = [_sealed(finished_run_row(run, *whole[run.run_id]), tails)
                                for run in runs if run.run_id in whole]
                    if finished:
                        conn.executemany(INSERT_FINISHED_RUN, finished)
                else:
                    started = [data for _op, data, _t in chunk]
                    conn.executemany(INSERT_RUN, [run_row(run) for run in started])
                    self._remember(started)
                outcomes.extend((t, None, None) for _op, _d, t in chunk if t is not None)
            elif op == OP_FINISH and whole:
                for item in chunk:
                    if item[1][0] in whole:  # written with its start
                        if item[2] is not None:
                            outcomes.append((item[2], None, None))
                        continue
                    outcome = self._apply_single(conn, item)
                    if outcome is not None:
                        outcomes.append(outcome)
            else:
                for item in chunk:
                    outcome = self._apply_single(conn, item)
                    if outcome is not None:
                        outcomes.append(outcome)
        return outcomes

    def _apply_single(self, conn: sqlite3.Connection, item: Item) -> tuple[Ticket, Any, Any] | None:
        op, data, ticket = item
        result: Any = None
        error: BaseException | None = None
        if op == OP_FINISH:
            run_id, stats, finished_at = data
            run = self._live.pop(run_id, None)
            tail = self._tails.pop(run_id, (0, ""))
            row = finish_row(run_id, stats, finished_at)
            if run is not None:  # the finished row is known: sealed in the same UPDATE
                final = finished_run_row(run, stats, finished_at, "")
                seal = run_seal(final[:_SEALED], *tail)
                cursor = conn.execute(UPDATE_FINISH_SEALED, (*row[:-1], seal, run_id))
            else:
                cursor = conn.execute(UPDATE_FINISH, row)
            if cursor.rowcount == 0:
                error = RunNotFoundError(f"no run {run_id!r} to finish in {self._path}")
            elif run is None:
                reseal(conn, run_id)
        elif op == OP_CALL:
            result = data(conn)
        elif op in (OP_EVENT, OP_ROW, OP_START):
            self._apply(conn, [item])
        return None if ticket is None else (ticket, result, error)

    def _remember(self, runs: list[Run]) -> None:
        live = self._live
        for run in runs:
            if len(live) >= _MAX_LIVE:
                return
            live[run.run_id] = run

    def _apply_isolated(
        self, conn: sqlite3.Connection, items: list[Item]
    ) -> list[tuple[Ticket, Any, Any]]:
        """Each item under its own savepoint: a refused item is counted and logged,
        its waiter told why, and the rest of the batch is written."""
        outcomes: list[tuple[Ticket, Any, Any]] = []
        for item in items:
            conn.execute("SAVEPOINT one")
            try:
                outcome = self._apply_single(conn, item)
            except Exception as exc:
                if is_busy(exc):
                    raise
                conn.execute("ROLLBACK TO one")
                conn.execute("RELEASE one")
                self._refused(item, exc)
                if item[2] is not None:
                    error = exc if isinstance(exc, AgentAuditError) else StoreError(self._describe(item, exc))
                    outcomes.append((item[2], None, error))
                continue
            conn.execute("RELEASE one")
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def _describe(self, item: Item, exc: BaseException) -> str:
        op, data, _ticket = item
        what = _OP_NAMES.get(op, "item")
        if op == OP_EVENT:
            what = f"event {data.run_id}#{data.sequence}"
        elif op == OP_ROW:
            what = f"event {data[0][0]}#{data[0][1]}"
        elif op == OP_SEAL:
            what = f"events {[event_type for event_type, _payload in data[1]]}"
        elif op == OP_START:
            what = f"run start {data.run_id}"
        return f"{self._path} refused the {what}: {exc}"

    def _refused(self, item: Item, exc: BaseException) -> None:
        self.failed = next(self._failed) + 1
        kind = f"{item[0]}:{type(exc).__name__}"
        if kind not in self._logged:
            self._logged.add(kind)
            logger.warning("agentaudit: %s (further ones counted, not logged)", self._describe(item, exc))

    def _give_up(self, batch: list[Item], exc: BaseException) -> None:
        logger.error("agentaudit: %d items not written to %s at close: %s", len(batch), self._path, exc)
        for _op, _data, ticket in batch:
            if ticket is not None:
                ticket.settle(error=StoreError(f"{self._path} stayed locked: {exc}"))

    @staticmethod
    def _unclaim(items: list[Item]) -> None:
        for _op, _data, ticket in items:
            if ticket is not None:
                ticket.unclaim()

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass


def _whole_runs(items: list[Item]) -> dict[str, tuple[RunStats, datetime, str]]:
    """Runs whose start and finish are both in ``items``: run id -> (stats, finished
    at, model), so that each is written as one final row (an insert, not an insert
    and two updates: a short run's whole life usually lands in one batch). None when
    the batch holds a maintenance call, which could touch the run in between."""
    starts: set[str] = set()
    whole: dict[str, tuple[RunStats, datetime, str]] = {}
    models: dict[str, str] = {}
    for op, data, _ticket in items:
        if op == OP_START:
            starts.add(data.run_id)
        elif op == OP_FINISH:
            if data[0] in starts:
                whole[data[0]] = (data[1], data[2], "")
        elif op in (OP_ROW, OP_EVENT):
            if op == OP_ROW:
                (run_id, _seq, event_type, *_rest), payload = data
            else:
                run_id, event_type, payload = data.run_id, data.event_type, data.payload
            if event_type == "resolved_model" and run_id not in models:
                model = payload.get("model")
                if isinstance(model, str):
                    models[run_id] = model
        elif op == OP_CALL:
            return {}
    for run_id, model in models.items():
        found = whole.get(run_id)
        if found is not None:
            whole[run_id] = (found[0], found[1], model)
    return whole


def _event_tails(items: list[Item]) -> dict[str, tuple[int, str]]:
    """run id -> (sequence, hash) of its last event among ``items``."""
    tails: dict[str, tuple[int, str]] = {}
    for op, data, _ticket in items:
        if op == OP_ROW:
            run_id, sequence, _type, _payload, _created, _prev, hash_ = data[0]
        elif op == OP_EVENT:
            run_id, sequence, hash_ = data.run_id, data.sequence, data.hash
        else:
            continue
        if sequence > tails.get(run_id, (0, ""))[0]:
            tails[run_id] = (sequence, hash_)
    return tails


def _sealed(row: tuple[Any, ...], tails: dict[str, tuple[int, str]]) -> tuple[Any, ...]:
    """A finished run's row (`INSERT_FINISHED_RUN` without its seal) and its seal."""
    return (*row, run_seal(row[:_SEALED], *tails.get(row[0], (0, ""))))


# The sealed columns lead a finished row (RUN_COLUMNS, then model).
_SEALED = 19
# Runs in flight whose rows a writer keeps for their seal (a few KiB each at most).
_MAX_LIVE = 10_000


# Connections inherited by a forked child: kept referenced so they are never closed
# (closing would touch locks and the -shm mapping that belong to the parent).
_FORK_LEFTOVERS: list[sqlite3.Connection | None] = []
