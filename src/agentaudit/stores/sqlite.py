"""The embedded default store: one SQLite file, written from a background thread.

Hooks hand events to a bounded queue and return; one writer thread per store commits
them in batches (see ``_sqlite_writer``). Several processes may share one file: WAL
lets readers run beside the writer, and each writer takes the file's write lock per
batch (``BEGIN IMMEDIATE``), retrying while another process holds it.

On open, runs left ``running`` by a process of this host that no longer exists are
marked ``abandoned``; `SQLiteStore.reap` does the same for runs on any host
that have been silent for too long.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from .._errors import CommitTimeout, RunNotFoundError, StoreError
from .._model import (
    TERMINAL_STATUSES,
    Event,
    Run,
    RunFilter,
    RunStats,
    RunStatus,
    VerifyResult,
)
from ..payloads import TOOL_RESULT
from ._sqlite_rows import (
    EVENT_COLUMNS,
    RUN_COLUMNS,
    event_from_row,
    parse_ts,
    run_from_row,
    utc_ts,
)
from ._sqlite_schema import connect, create_private_file, migrate
from ._sqlite_seal import reseal, seal_problem
from ._sqlite_writer import (
    COMMIT_DELAY,
    FORK_WAIT,
    AppendEvents,
    FinishRun,
    Flush,
    Maintenance,
    SQLiteWriter,
    StartRun,
)

__all__ = ["SQLiteStore"]

logger = logging.getLogger("agentaudit")

Durability = Literal["batched", "sync"]

# Failure, for `stats`: the run did not do its job. Cancelled and interrupted runs
# were stopped on purpose (a user, a human-in-the-loop pause), so they are not failures.
# Running runs, in words the partial status index answers (it leaves out succeeded
# runs, and SQLite uses it only for a query that says so too).
_IS_RUNNING = "status = 'running' AND status != 'succeeded'"
FAILED_STATUSES = (RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.ABANDONED)
SUMMARY_GROUPS = ("model", "caller", "day", "name", "status")

# Timeouts and delays beyond an hour are mistakes (an infinite commit delay would
# never commit): refused where they are given.
_MAX_SECONDS = 3600.0
_PAGE = 500  # rows per query when walking runs: constant memory, short read transactions
EXIT_FLUSH_TIMEOUT = 5.0  # the exit hook's total budget across every open store


class SQLiteStore:
    """Runs and events in one SQLite file (WAL, batched background writes).

    ``durability="batched"`` (the default) returns from a hook once the event is
    queued; the writer commits with ``synchronous=NORMAL``, an event at most about
    ``commit_delay`` seconds (default 0.02) after it was queued, and a run's finish at
    once, so a killed process loses only what was still queued. ``"sync"`` commits each write
    before the hook returns, with ``synchronous=FULL`` (survives power loss too).

    ``max_queue`` bounds the events waiting to be written; an append that finds it
    full is refused with `StoreError` at once (the Writer counts the event dropped;
    a tool's result, which completes a call already taken, is never refused). A
    ``queue_timeout`` above 0 lets an append wait that long for room while the disk
    is healthy (a hook then may wait on disk, which the default never does). ``close_timeout`` bounds the final flush of
    `close` and of the exit hook. ``commit_delay`` trades the crash window against
    the agent's thread: smaller commits events sooner, in more, smaller transactions
    (0 commits each at once). ``create=False`` refuses a missing file
    instead of creating it (the CLI reads with it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "agentaudit.db",
        *,
        durability: Durability = "batched",
        max_queue: int = 10_000,
        queue_timeout: float = 0.0,
        sync_timeout: float = 5.0,
        close_timeout: float = 5.0,
        commit_delay: float = COMMIT_DELAY,
        create: bool = True,
    ) -> None:
        path = os.fspath(path)
        if not isinstance(path, str) or not path or path == ":memory:" or path.startswith("file:"):
            raise ValueError(
                f"SQLiteStore needs a file path, got {path!r} (for an in-memory store use aa.MemoryStore())"
            )
        if durability not in ("batched", "sync"):
            raise ValueError(f"durability must be 'batched' or 'sync', got {durability!r}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be an int >= 1, got {max_queue!r}")
        for name, value in (
            ("queue_timeout", queue_timeout),
            ("sync_timeout", sync_timeout),
            ("close_timeout", close_timeout),
            ("commit_delay", commit_delay),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
            if not 0 <= value <= _MAX_SECONDS:  # also refuses NaN and infinity
                raise ValueError(f"{name} must be between 0 and {_MAX_SECONDS:g} seconds, got {value!r}")
        self.path = path
        self.durability: Durability = durability
        self.max_queue = max_queue
        self.queue_timeout = float(queue_timeout)
        self.sync_timeout = float(sync_timeout)
        self.close_timeout = float(close_timeout)
        self.commit_delay = float(commit_delay)
        self._synchronous = "FULL" if durability == "sync" else "NORMAL"
        self._closed = False
        self._close_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._read_conn: sqlite3.Connection | None = None
        self._writer_lock = threading.Lock()

        if not create and not os.path.exists(path):
            raise StoreError(f"no agentaudit database at {path}")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise StoreError(f"cannot create {path}: directory {parent} does not exist")
        create_private_file(path)
        conn = self._connect()
        try:
            migrate(conn, path)
            self.recovered = self._recover_dead_local_runs(conn)
        except BaseException:
            conn.close()
            raise
        self._writer: SQLiteWriter | None = self._new_writer(conn)
        # Started here, not on the first hook: that may run on an event loop's thread,
        # which must not wait for a thread to start or a connection to open.
        self._writer.start()
        self._inherited: list[sqlite3.Connection | None] = []
        self._fork_held = False
        # A store dropped without close still writes what it was given, then its
        # thread ends (the thread holds no reference to the store).
        weakref.finalize(self, self._writer.request_stop, self.close_timeout)
        _OPEN_STORES.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.durability
        return f"SQLiteStore({self.path!r}, {state})"

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, synchronous=self._synchronous)

    def _new_writer(self, conn: sqlite3.Connection | None = None) -> SQLiteWriter:
        return SQLiteWriter(
            self._connect,
            path=self.path,
            max_queue=self.max_queue,
            queue_timeout=self.queue_timeout,
            commit_delay=self.commit_delay,
            connection=conn,
            on_start=self._flush_at_process_exit,
        )

    def _flush_at_process_exit(self) -> None:
        # multiprocessing's fork and forkserver children leave with os._exit, which
        # skips atexit; they do run multiprocessing's own finalizers first.
        util = sys.modules.get("multiprocessing.util")
        if util is not None:
            util.Finalize(self, _close_at_exit, args=(weakref.ref(self),), exitpriority=10)

    def _live_writer(self) -> SQLiteWriter:
        if self._closed:
            raise StoreError(f"the SQLite store for {self.path} is closed")
        writer = self._writer
        if writer is None:  # after a fork, the child's first write makes its own
            with self._writer_lock:
                if self._writer is None:
                    self._writer = self._new_writer()
                writer = self._writer
        return writer

    def _wait(self, future: Future[Any], timeout: float | None, what: str) -> Any:
        """The outcome of a queued item; `CommitTimeout` after ``timeout`` seconds
        (the item stays queued and lands when the file allows)."""
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise CommitTimeout(
                f"{what} was not committed to {self.path} within {timeout:g} s; it stays queued"
            ) from None

    def _call(self, fn: Any, what: str) -> Any:
        """Run ``fn(connection)`` on the writer thread, in order after every earlier
        write, inside one transaction; return its result."""
        future: Future[Any] = Future()
        self._live_writer().submit(Maintenance(fn, future), bounded=False)
        return self._wait(future, None, what)

    def _read(self) -> sqlite3.Connection:
        """The read connection, after every earlier write of this store is committed."""
        if self._closed:
            raise StoreError(f"the SQLite store for {self.path} is closed")
        writer = self._writer
        if writer is not None and writer.has_unwritten():
            self.flush()
        conn = self._read_conn
        if conn is None:
            conn = self._read_conn = self._connect()
        return conn

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock:
            conn = self._read()
            return conn.execute(sql, tuple(params)).fetchall()

    # -- write side (driven by the Writer) -----------------------------------------

    def start_run(self, run: Run) -> None:
        if not isinstance(run, Run):
            raise TypeError(f"start_run takes an aa.Run, got {type(run).__name__}")
        if self.durability == "sync":
            future: Future[Any] = Future()
            self._live_writer().submit(StartRun(run, future))
            self._wait(future, self.sync_timeout, f"run start {run.run_id}")
        else:
            self._live_writer().submit(StartRun(run))

    def append_log(self, event: Event) -> None:
        self.append_events((event,))

    def append_events(self, events: Sequence[Event]) -> None:
        """Queue sealed events of one run (see `agentaudit.stores.BatchingStore`). In
        sync mode, wait until they are committed (`CommitTimeout` after
        ``sync_timeout``: they stay queued)."""
        events = tuple(events)
        for event in events:
            if not isinstance(event, Event):
                raise TypeError(f"append_events takes aa.Event values, got {type(event).__name__}")
        if not events:
            return
        # The queue's bound refuses new work, never the completion of work it took: a
        # tool's result (its call is already queued or written) is always taken.
        bounded = not all(event.event_type == TOOL_RESULT for event in events)
        if self.durability == "sync":
            future: Future[Any] = Future()
            self._live_writer().submit(AppendEvents(events, future), bounded=bounded)
            self._wait(future, self.sync_timeout, f"event {events[0].run_id}#{events[0].sequence}")
        else:
            self._live_writer().submit(AppendEvents(events), bounded=bounded)

    def submit_finish(self, run_id: str, stats: RunStats, finished_at: datetime) -> Future[None]:
        """Queue the run's finish; the future settles once it is committed with every
        event queued before it, or with the reason it was not."""
        if not isinstance(stats, RunStats):
            raise TypeError(f"finish_run takes an aa.RunStats, got {type(stats).__name__}")
        if not isinstance(finished_at, datetime) or finished_at.tzinfo is None:
            raise ValueError("finished_at must be a timezone-aware datetime")
        future: Future[None] = Future()
        self._live_writer().submit(FinishRun(run_id, stats, finished_at, future), bounded=False)
        return future

    def finish_run(self, run_id: str, stats: RunStats, finished_at: datetime) -> None:
        self.submit_finish(run_id, stats, finished_at).result()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything written so far is committed. Raises `CommitTimeout`
        (a StoreError) when that takes longer than ``timeout`` seconds."""
        writer = self._live_writer()
        if not writer.has_unwritten():
            return
        future: Future[Any] = Future()
        writer.submit(Flush(future), bounded=False)
        self._wait(future, timeout, "flush")

    def close(self) -> None:
        """Flush (for up to ``close_timeout`` seconds), stop the writer thread and
        close the file. Idempotent."""
        self._close(self.close_timeout)

    def _close(self, timeout: float) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        _OPEN_STORES.discard(self)
        writer, self._writer = self._writer, None
        if writer is not None:
            left = writer.stop(timeout)
            if left:
                logger.error(
                    "agentaudit: %d items were not written to %s before close gave up after %g s",
                    left, self.path, timeout,
                )
        with self._read_lock:
            if self._read_conn is not None:
                self._read_conn.close()
                self._read_conn = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dropped(self) -> int:
        """Events refused because the queue stayed full (each also raised to its
        caller, which counts it as a fault)."""
        writer = self._writer
        return writer.dropped if writer is not None else 0

    @property
    def failed(self) -> int:
        """Items the database refused (a repeated sequence, say); each is logged."""
        writer = self._writer
        return writer.failed if writer is not None else 0

    # -- read side -----------------------------------------------------------------

    def get_run(self, run_id: str) -> Run | None:
        rows = self._query(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        return run_from_row(rows[0]) if rows else None

    def get_logs(
        self,
        run_id: str,
        *,
        event_types: Iterable[str] | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[Event]:
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE run_id = ? AND sequence > ?"
        params: list[Any] = [run_id, after]
        if event_types is not None:
            types = [event_types] if isinstance(event_types, str) else list(event_types)
            if not types:
                return []
            sql += f" AND event_type IN ({', '.join('?' * len(types))})"
            params.extend(types)
        sql += " ORDER BY sequence"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [event_from_row(row) for row in self._query(sql, params)]

    def list_runs(self, filter: RunFilter | None = None) -> list[Run]:
        return list(self.iter_runs(filter))

    def count_runs(self, filter: RunFilter | None = None) -> int:
        where, params = _where(filter or RunFilter())
        return int(self._query(f"SELECT count(*) FROM runs{where}", params)[0][0])

    def children(self, run_id: str) -> list[Run]:
        rows = self._query(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE parent_run_id = ? ORDER BY started_at, rowid",
            (run_id,),
        )
        return [run_from_row(row) for row in rows]

    def iter_runs(self, filter: RunFilter | None = None) -> Iterator[Run]:
        """Matching runs, newest first, fetched a page at a time (constant memory)."""
        flt = filter or RunFilter()
        where, params = _where(flt)
        remaining = flt.limit
        offset = flt.offset
        cursor: tuple[str, int] | None = None
        while remaining is None or remaining > 0:
            page = _PAGE if remaining is None else min(_PAGE, remaining)
            sql = f"SELECT {RUN_COLUMNS}, rowid FROM runs{where}"
            page_params = list(params)
            if cursor is not None:  # keyset paging: no re-scan of skipped rows
                sql += (" AND " if where else " WHERE ") + (
                    "(started_at < ? OR (started_at = ? AND rowid < ?))"
                )
                page_params += [cursor[0], cursor[0], cursor[1]]
            sql += " ORDER BY started_at DESC, rowid DESC LIMIT ? OFFSET ?"
            page_params += [page, offset]
            rows = self._query(sql, page_params)
            offset = 0
            for row in rows:
                yield run_from_row(row[:-1])
            if len(rows) < page:
                return
            cursor = (rows[-1][5], rows[-1][-1])
            if remaining is not None:
                remaining -= len(rows)

    def purge(self, before: datetime, statuses: Iterable[RunStatus | str] | None = None) -> int:
        """Delete runs started before ``before`` (and their events) whose status is
        one of ``statuses`` (default: every terminal status, never ``running``).
        Returns the number of runs deleted."""
        if not isinstance(before, datetime) or before.tzinfo is None:
            raise ValueError("purge(before=...) needs a timezone-aware datetime")
        chosen = (
            TERMINAL_STATUSES
            if statuses is None
            else tuple(RunStatus.parse(s, what="purge status") for s in _as_list(statuses))
        )
        if not chosen:
            return 0
        marks = ", ".join("?" * len(chosen))
        cond = f"started_at < ? AND status IN ({marks})"
        params = [utc_ts(before), *(s.value for s in chosen)]

        def purge(conn: sqlite3.Connection) -> int:
            conn.execute(
                f"DELETE FROM events WHERE run_id IN (SELECT run_id FROM runs WHERE {cond})", params
            )
            return conn.execute(f"DELETE FROM runs WHERE {cond}", params).rowcount

        return int(self._call(purge, "purge"))

    def delete_run(self, run_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM events WHERE run_id = ?", (run_id,))
            return conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0

        return bool(self._call(delete, f"delete of run {run_id}"))

    def verify(self, run_id: str) -> VerifyResult:
        from .._chain import verify_events  # the core's one definition of the chain

        if self.get_run(run_id) is None:
            raise RunNotFoundError(f"no run {run_id!r} in {self.path}")
        result = verify_events(run_id, self.get_logs(run_id))
        if not result.ok:
            return result
        with self._read_lock:
            problem = seal_problem(self._read(), run_id)
        if problem:
            return VerifyResult(run_id, False, result.events, None, problem)
        return result

    # -- beyond the protocol: what the CLI and operators need ------------------------

    def resolve_run_id(self, prefix: str) -> str:
        """The one run id starting with ``prefix``. Raises RunNotFoundError when no
        run or several runs match."""
        prefix = prefix.strip()
        if not prefix:
            raise RunNotFoundError("an empty run id matches nothing")
        rows = self._query(
            "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? ORDER BY run_id LIMIT 6",
            (prefix, prefix + "\U0010ffff"),
        )
        ids = [row[0] for row in rows if row[0].startswith(prefix)]
        if prefix in ids:
            return prefix
        if not ids:
            raise RunNotFoundError(f"no run {prefix!r} in {self.path}")
        if len(ids) > 1:
            shown = ", ".join(ids[:5]) + (", …" if len(ids) > 5 else "")
            raise RunNotFoundError(f"run id prefix {prefix!r} is ambiguous: {shown}")
        return ids[0]

    def events_after(
        self,
        cursor: int = 0,
        *,
        run_id: str | None = None,
        event_types: Iterable[str] | None = None,
        limit: int = 1000,
    ) -> list[tuple[int, Event]]:
        """Events of every run (or of ``run_id``) written after position ``cursor``,
        oldest first, each with its position: pass the last one back to continue.
        ``agentaudit tail -f`` follows a file this way."""
        where, params = _event_where(run_id, event_types)
        rows = self._query(
            f"SELECT id, {EVENT_COLUMNS} FROM events WHERE id > ?{where} ORDER BY id LIMIT ?",
            (cursor, *params, limit),
        )
        return [(row[0], event_from_row(row[1:])) for row in rows]

    def recent_events(
        self,
        limit: int,
        *,
        run_id: str | None = None,
        event_types: Iterable[str] | None = None,
    ) -> list[tuple[int, Event]]:
        """The ``limit`` newest events (of ``run_id``, of ``event_types``), oldest
        first, with their positions."""
        where, params = _event_where(run_id, event_types)
        rows = self._query(
            f"SELECT id, {EVENT_COLUMNS} FROM events WHERE id > 0{where} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [(row[0], event_from_row(row[1:])) for row in reversed(rows)]

    def last_event_position(self) -> int:
        """The position of the newest event (0 when there is none)."""
        return int(self._query("SELECT coalesce(max(id), 0) FROM events")[0][0])

    def run_models(self, run_ids: Iterable[str]) -> dict[str, str]:
        """The model that first served each run ('' when none was reported)."""
        ids = list(run_ids)
        found: dict[str, str] = {}
        for start in range(0, len(ids), _PAGE):
            chunk = ids[start : start + _PAGE]
            rows = self._query(
                f"SELECT run_id, model FROM runs WHERE run_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            found.update(rows)
        return found

    def summary(self, by: str = "day", filter: RunFilter | None = None) -> list[dict[str, Any]]:
        """Runs, failures, tokens and cost of the matching runs, grouped ``by``
        model (the one that first served each run), caller, day (UTC), name or
        status; largest group first (``day``: newest first)."""
        if by not in SUMMARY_GROUPS:
            raise ValueError(f"summary groups by one of {', '.join(SUMMARY_GROUPS)}; got {by!r}")
        key = {"day": "substr(started_at, 1, 10)"}.get(by, by)
        flt = filter or RunFilter()
        where, params = _where(flt)
        failed = ", ".join(f"'{s.value}'" for s in FAILED_STATUSES)
        order = "key DESC" if by == "day" else "runs DESC, key"
        rows = self._query(
            f"""SELECT {key} AS key, count(*) AS runs,
                       sum(status IN ({failed})) AS failed,
                       sum(status != 'running') AS finished,
                       sum(input_tokens), sum(output_tokens), sum(thinking_tokens),
                       sum(cost_usd), count(cost_usd), sum(tool_calls), sum(steps)
                FROM (SELECT * FROM runs{where}) GROUP BY key ORDER BY {order}""",
            params,
        )
        return [
            {
                by: key,
                "runs": runs,
                "failed": failed_n,
                "finished": finished,
                "failure_rate": (failed_n / finished) if finished else None,
                "input_tokens": tin or 0,
                "output_tokens": tout or 0,
                "thinking_tokens": tthink or 0,
                "cost_usd": cost if priced else None,
                "tool_calls": calls or 0,
                "steps": steps or 0,
            }
            for key, runs, failed_n, finished, tin, tout, tthink, cost, priced, calls, steps in rows
        ]

    def reap(self, stale_after: timedelta, *, now: datetime | None = None) -> list[str]:
        """Mark ``abandoned`` every run still ``running``, on any host, whose last
        event (or start, when it has none) is older than ``stale_after``. Returns
        the ids of the runs marked."""
        if not isinstance(stale_after, timedelta) or stale_after <= timedelta(0):
            raise ValueError(f"stale_after must be a positive timedelta, got {stale_after!r}")
        moment = now or datetime.now(timezone.utc)
        if moment.tzinfo is None:
            raise ValueError("reap(now=...) needs a timezone-aware datetime")
        cutoff = moment - stale_after

        def reap(conn: sqlite3.Connection) -> list[str]:
            marked = []
            for run_id, started_at in conn.execute(
                f"SELECT run_id, started_at FROM runs WHERE {_IS_RUNNING}"
            ).fetchall():
                last = _last_event_time(conn, run_id) or parse_ts(started_at)
                if last < cutoff:
                    _abandon(conn, run_id, f"abandoned: no event since {utc_ts(last)} (reaped)")
                    marked.append(run_id)
            return marked

        return list(self._call(reap, "reap"))

    # -- crash recovery ----------------------------------------------------------

    def _recover_dead_local_runs(self, conn: sqlite3.Connection) -> list[str]:
        """Mark ``abandoned`` the runs left ``running`` by processes of this host
        that are gone (killed, crashed, exited without closing)."""
        host = socket.gethostname()
        try:
            rows = conn.execute(
                f"SELECT run_id, pid FROM runs WHERE {_IS_RUNNING} AND host = ?",
                (host,),
            ).fetchall()
            dead = [(run_id, pid) for run_id, pid in rows if not _pid_alive(pid)]
            if not dead:
                return []
            conn.execute("BEGIN IMMEDIATE")
            try:
                for run_id, pid in dead:
                    _abandon(
                        conn, run_id, f"abandoned: process {pid} on {host} ended without closing the run"
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:  # a read-only file, say: reading must still work
            logger.warning("agentaudit: could not mark dead runs abandoned in %s: %s", self.path, exc)
            return []
        logger.info("agentaudit: marked %d runs of dead processes abandoned in %s", len(dead), self.path)
        return [run_id for run_id, _pid in dead]

    # -- fork ----------------------------------------------------------------------

    def _before_fork(self) -> None:
        # Not while a read is inside SQLite: a child that inherits a connection mid-
        # statement inherits SQLite's in-process lock state with it and can never
        # write. (The writer threads are held by _sqlite_writer's own fork hooks.)
        self._fork_held = self._read_lock.acquire(timeout=FORK_WAIT)

    def _after_fork_in_parent(self) -> None:
        if self._fork_held:
            self._read_lock.release()
        self._fork_held = False

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here and its connections are not ours to
        # use (nor to close: that would touch the parent's locks); what was queued
        # belongs to the parent, which writes it. The first write makes a new writer.
        if self._writer is not None:
            self._inherited.extend(self._writer.abandon_after_fork())
            self._writer = None
        self._inherited.append(self._read_conn)
        self._read_conn = None
        self._read_lock = threading.Lock()
        self._writer_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._fork_held = False


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, (str, RunStatus)) else list(value)


def _where(flt: RunFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    # The caller and status indexes are partial (see the v2 migration): a query uses
    # one only when it states the index's condition itself.
    if flt.caller is not None:
        clauses.append("caller = ? AND caller != ''" if flt.caller else "caller = ?")
        params.append(flt.caller)
    if flt.name is not None:
        clauses.append("name = ?")
        params.append(flt.name)
    if flt.statuses is not None:
        if not flt.statuses:
            clauses.append("0")
        else:
            clauses.append(f"status IN ({', '.join('?' * len(flt.statuses))})")
            params.extend(s.value for s in flt.statuses)
            if RunStatus.SUCCEEDED not in flt.statuses:
                clauses.append("status != 'succeeded'")
    if flt.since is not None:
        clauses.append("started_at >= ?")
        params.append(utc_ts(flt.since))
    if flt.until is not None:
        clauses.append("started_at < ?")
        params.append(utc_ts(flt.until))
    if flt.parent_run_id is not None:
        clauses.append("parent_run_id = ?")
        params.append(flt.parent_run_id)
    return ((" WHERE " + " AND ".join(clauses)) if clauses else ""), params


def _event_where(run_id: str | None, event_types: Iterable[str] | None) -> tuple[str, list[Any]]:
    where = ""
    params: list[Any] = []
    if run_id is not None:
        where += " AND run_id = ?"
        params.append(run_id)
    if event_types is not None:
        types = [event_types] if isinstance(event_types, str) else list(event_types)
        where += f" AND event_type IN ({', '.join('?' * len(types))})" if types else " AND 0"
        params.extend(types)
    return where, params


def _last_event_time(conn: sqlite3.Connection, run_id: str) -> datetime | None:
    row = conn.execute(
        "SELECT created_at FROM events WHERE run_id = ? ORDER BY sequence DESC LIMIT 1", (run_id,)
    ).fetchone()
    return parse_ts(row[0]) if row else None


def _abandon(conn: sqlite3.Connection, run_id: str, reason: str) -> None:
    """Close a dead run as ``abandoned``, with the totals its recorded events show
    and its last event's time as its end (the last moment it was known alive)."""
    steps, calls, tin, tout, tthink = conn.execute(
        """SELECT sum(event_type = 'step'), sum(event_type = 'tool_call'),
                  sum(CASE WHEN event_type = 'step' THEN json_extract(payload, '$.in_tokens') END),
                  sum(CASE WHEN event_type = 'step' THEN json_extract(payload, '$.out_tokens') END),
                  sum(CASE WHEN event_type = 'step'
                           THEN json_extract(payload, '$.thinking_tokens') END)
           FROM events WHERE run_id = ?""",
        (run_id,),
    ).fetchone()
    last = _last_event_time(conn, run_id)
    (started_at,) = conn.execute("SELECT started_at FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    finished = utc_ts(last) if last is not None else started_at
    conn.execute(
        """UPDATE runs SET status = 'abandoned', finished_at = ?, error = ?, steps = ?,
                  tool_calls = ?, input_tokens = ?, output_tokens = ?, thinking_tokens = ?
           WHERE run_id = ? AND status = 'running'""",
        (finished, reason, steps or 0, calls or 0, tin or 0, tout or 0, tthink or 0, run_id),
    )
    reseal(conn, run_id)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs. Unknown counts as alive:
    a live run must never be marked abandoned."""
    if pid <= 0 or pid == os.getpid() or sys.platform == "win32":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is gone for our purpose
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


# -- process-wide hooks: exit flush and fork ------------------------------------------

_OPEN_STORES: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    """Flush every open store at interpreter exit, within EXIT_FLUSH_TIMEOUT in all."""
    deadline = time.monotonic() + EXIT_FLUSH_TIMEOUT
    for store in list(_OPEN_STORES):
        remaining = deadline - time.monotonic()
        try:
            store._close(max(0.0, min(store.close_timeout, remaining)))
        except Exception as exc:  # never turn an exit into a traceback
            logger.error("agentaudit: flushing %s at exit failed: %s", store.path, exc)


def _close_at_exit(ref: weakref.ref[SQLiteStore]) -> None:
    store = ref()
    if store is not None:
        try:
            store._close(min(store.close_timeout, EXIT_FLUSH_TIMEOUT))
        except Exception as exc:
            logger.error("agentaudit: flushing %s at exit failed: %s", store.path, exc)


def _quiesce_before_fork() -> None:
    for store in list(_OPEN_STORES):
        store._before_fork()


def _resume_in_parent() -> None:
    for store in list(_OPEN_STORES):
        store._after_fork_in_parent()


def _reset_in_child() -> None:
    for store in list(_OPEN_STORES):
        store._after_fork_in_child()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_quiesce_before_fork,
        after_in_parent=_resume_in_parent,
        after_in_child=_reset_in_child,
    )
