"""The embedded default store: one SQLite file, written from a background thread.

Hooks hand events to a bounded queue and return; one writer thread per store commits
them in batches (see ``_sqlite_writer``). Several processes may share one file: WAL
lets readers run beside the writer, and each writer takes the file's write lock per
batch (``BEGIN IMMEDIATE``), retrying while another process holds it.

On open for writing, runs left ``running`` by a process of this host that no longer
exists are marked ``abandoned``; `SQLiteStore.reap` does the same for runs on any
host that have been silent for too long. Opened ``read_only``, a store never
writes: the command line reads that way, so looking at a file never changes it.
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
import urllib.parse
import weakref
from collections.abc import Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, NamedTuple

from .._chain import ERASED, erase_fields, erased_event, erased_run_fields
from .._checkpoints import CheckpointPolicy
from .._errors import AgentAuditError, CommitTimeout, RunNotFoundError, StoreError
from .._keys import Keyring, keyring_from
from .._model import (
    FAILED_STATUSES,
    MAX_COUNT,
    TERMINAL_STATUSES,
    Event,
    Run,
    RunFilter,
    RunStats,
    RunStatus,
    VerifyResult,
    search_terms,
)
from .._serialize import canonical_json
from .._verify import EventRecord, RunRecord, strict_json, verify_run
from ..payloads import (
    DURATION_MS,
    IN_TOKENS,
    MODEL,
    OUT_TOKENS,
    RESOLVED_MODEL,
    STEP,
    STEP_MS,
    THINKING_TOKENS,
    TOOL_CALL,
    TOOL_RESULT,
)
from ._checkpoint_log import check_removal
from ._run_ids import MAX_CANDIDATES, ambiguous, prefix_forms, short_id, upper_bound
from ._sqlite_checkpoints import SQLiteCheckpoints, resolve_policy
from ._sqlite_rows import (
    EVENT_COLUMNS,
    RUN_COLUMNS,
    event_from_row,
    parse_ts,
    run_from_row,
    utc_ts,
)
from ._sqlite_schema import (
    BUSY_TIMEOUT_MS,
    DURATION_US,
    SCHEMA_VERSION,
    _check_not_newer,
    connect,
    create_private_file,
    file_version,
    migrate,
)
from ._sqlite_seal import run_record, seal_run
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
SUMMARY_GROUPS = ("model", "caller", "day", "name", "status")

# Timeouts and delays beyond an hour are mistakes (an infinite commit delay would
# never commit): refused where they are given.
_MAX_SECONDS = 3600.0
_PAGE = 500  # rows per query when walking runs: constant memory, short read transactions
EXIT_FLUSH_TIMEOUT = 5.0  # the exit hook's total budget across every open store


class SQLiteStore(SQLiteCheckpoints):
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
    instead of creating it (the CLI's write commands open with it).

    ``read_only=True`` opens an existing file for reading only (SQLite's ``mode=ro``):
    no writer thread, no migration, no marking of dead runs; every write raises
    `StoreError`. A file that is missing, empty, not SQLite, or a SQLite file that is
    not an agentaudit database is refused with `StoreError`; a file of an older
    schema version is read as it stands (search needs version 5). The CLI's read
    commands and the viewer open this way.

    ``checkpoints`` (an `aa.CheckpointPolicy`): signed checkpoints every
    ``interval`` seconds (60 by default) and at close, made on a thread of their
    own and written to an external sink (see docs/threat-model.md). None takes the
    policy from ``AGENTAUDIT_SIGNING_KEY`` / ``AGENTAUDIT_CHECKPOINT_SINK`` when set;
    False turns them off.
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
        read_only: bool = False,
        key: Any = None,
        checkpoints: CheckpointPolicy | bool | None = None,
    ) -> None:
        path = os.fspath(path)
        # The chain's keys (see `_keys`): the first signs the runs recorded through
        # this store and seals them; all of them verify.
        self.keyring: Keyring | None = keyring_from(key)
        policy = resolve_policy(checkpoints, read_only=bool(read_only))
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
        self.read_only = bool(read_only)
        self._inherited: list[sqlite3.Connection | None] = []
        self._fork_held = False

        if (read_only or not create) and not os.path.exists(path):
            raise StoreError(f"no agentaudit database at {path}")
        if read_only:
            # A reader changes nothing: no WAL switch, no migration, no recovery, no
            # writer thread (the file's bytes and mtime stay as they were).
            self.recovered: list[str] = []
            self._writer: SQLiteWriter | None = None
            self._read_conn = _connect_read_only(path)
            self.schema_version = file_version(self._read_conn)
            self._init_checkpoints(None)  # a reader makes no checkpoints
            _OPEN_STORES.add(self)
            return
        if os.path.exists(path):
            _refuse_foreign_file(path, create=create)
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise StoreError(f"cannot create {path}: directory {parent} does not exist")
        create_private_file(path)
        conn = self._connect()
        try:
            migrate(conn, path)
            self.schema_version = SCHEMA_VERSION
            self.recovered = self._recover_dead_local_runs(conn)
        except BaseException:
            conn.close()
            raise
        self._writer = self._new_writer(conn)
        # Started here, not on the first hook: that may run on an event loop's thread,
        # which must not wait for a thread to start or a connection to open.
        self._writer.start()
        # A store dropped without close still writes what it was given, then its
        # thread ends (the thread holds no reference to the store).
        weakref.finalize(self, self._writer.request_stop, self.close_timeout)
        self._init_checkpoints(policy)
        _OPEN_STORES.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "read-only" if self.read_only else self.durability
        return f"SQLiteStore({self.path!r}, {state})"

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            return _connect_read_only(self.path)
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
            keyring=self.keyring,
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
        if self.read_only:
            raise StoreError(f"the SQLite store for {self.path} was opened read-only")
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
        if run.key_id and (self.keyring is None or run.key_id not in self.keyring):
            # Its finish could not be sealed: refused here, not found broken later.
            raise StoreError(f"run {run.run_id} is keyed with key id {run.key_id}, which this store was not given")
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
        if self.read_only and not self._closed:
            return  # nothing is ever written through a reader
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
            self._stop_checkpointer(timeout)  # its last checkpoint, while the writer runs
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
        where, params = self._where(filter or RunFilter())
        return int(self._query(f"SELECT count(*) FROM runs{where}", params)[0][0])

    def children(self, run_id: str) -> list[Run]:
        rows = self._query(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE parent_run_id = ? ORDER BY started_at, rowid",
            (run_id,),
        )
        return [run_from_row(row) for row in rows]

    def iter_runs(self, filter: RunFilter | None = None) -> Iterator[Run]:
        """Matching runs in the filter's order (newest first by default), fetched a
        page at a time (constant memory)."""
        flt = filter or RunFilter()
        where, params = self._where(flt, listing=True)
        if flt.order_by != "started_at":
            yield from self._iter_sorted(flt, where, params)
            return
        before, direction = (">", "ASC") if flt.ascending else ("<", "DESC")
        remaining = flt.limit
        offset = flt.offset
        cursor: tuple[str, int] | None = None
        source = " INDEXED BY runs_cost" if self._few_reach(flt.min_cost_usd) else ""
        while remaining is None or remaining > 0:
            page = _PAGE if remaining is None else min(_PAGE, remaining)
            sql = f"SELECT {RUN_COLUMNS}, rowid FROM runs{source}{where}"
            page_params = list(params)
            if cursor is not None:  # keyset paging: no re-scan of skipped rows
                sql += (" AND " if where else " WHERE ") + (
                    f"(started_at {before} ? OR (started_at = ? AND rowid {before} ?))"
                )
                page_params += [cursor[0], cursor[0], cursor[1]]
            sql += f" ORDER BY started_at {direction}, rowid {direction} LIMIT ? OFFSET ?"
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

    def _few_reach(self, min_cost_usd: float | None) -> bool:
        """Whether fewer than _FEW_COSTS runs cost at least ``min_cost_usd``. Then the
        newest-first listing reads them from the cost index and sorts them, rather than
        walking the start index, which for a cost no run reaches means every run (the
        planner cannot know how far a bound parameter reaches)."""
        if min_cost_usd is None or self.schema_version < _SEARCH_VERSION:
            return False
        sql = "SELECT count(*) FROM (SELECT 1 FROM runs WHERE cost_usd >= ? LIMIT ?)"
        return int(self._query(sql, (float(min_cost_usd), _FEW_COSTS))[0][0]) < _FEW_COSTS

    def _iter_sorted(self, flt: RunFilter, where: str, params: list[Any]) -> Iterator[Run]:
        # Runs with a value first, from the order's index (value, start), walked in
        # either direction; then runs without one (NULLs last both ways, as in
        # RunFilter.sort_key), by the start index. Paged by offset.
        key = _SORT_KEYS[flt.order_by]
        direction = "ASC" if flt.ascending else "DESC"
        then = f"started_at {direction}, rowid {direction}"
        parts = [(key.present, f"{key.value} {direction}, {then}")]
        if key.missing is not None:
            parts.append((key.missing, then))
        remaining = flt.limit
        offset = flt.offset
        for condition, order in parts:
            part_where = where
            if condition is not None:
                part_where += (" AND " if where else " WHERE ") + condition
            first = True
            while remaining is None or remaining > 0:
                page = _PAGE if remaining is None else min(_PAGE, remaining)
                rows = self._query(
                    f"SELECT {RUN_COLUMNS} FROM runs{part_where} ORDER BY {order} LIMIT ? OFFSET ?",
                    [*params, page, offset],
                )
                for row in rows:
                    yield run_from_row(row)
                if remaining is not None:
                    remaining -= len(rows)
                if len(rows) < page:
                    if first and not rows and offset:  # the offset reaches past this part
                        counted = self._query(f"SELECT count(*) FROM runs{part_where}", params)[0][0]
                        offset = max(0, offset - int(counted))
                    else:
                        offset = 0
                    break
                first = False
                offset += len(rows)

    def _where(self, flt: RunFilter, *, listing: bool = False) -> tuple[str, list[Any]]:
        """The filter's WHERE clause. ``listing``: for a page of runs in an indexed
        order, where a search word that many runs hold is better probed run by run
        along that order than gathered whole (see _WORD_PROBE)."""
        if flt.text is not None and self.schema_version < _SEARCH_VERSION:
            raise StoreError(
                f"{self.path} has schema version {self.schema_version}, from before full-text search "
                f"(version {_SEARCH_VERSION}); open it once for writing (agentaudit reap, or the "
                "library) to upgrade it, then search"
            )
        broad: list[str] = []
        if listing and flt.text is not None:
            sql = "SELECT count(*) FROM (SELECT 1 FROM run_search WHERE run_search MATCH ? LIMIT ?)"
            for word in search_terms(flt.text):
                if int(self._query(sql, (_match(word), _FEW_HITS))[0][0]) >= _FEW_HITS:
                    broad.append(word)
        # Two common words may share few runs: a walk probing both could pass over most
        # runs to fill a page (seconds at 1,000,000), where gathering them stays bounded.
        return _where(flt, broad if len(broad) == 1 else ())

    def purge(self, before: datetime, statuses: Iterable[RunStatus | str] | None = None) -> int:
        """Delete runs started before ``before`` (and their events) whose status is
        one of ``statuses`` (default: every terminal status, never ``running``).
        Runs under legal hold stay; a cutoff inside the retention floor raises
        `RetentionError` and deletes nothing; what is deleted is recorded as
        ``purged`` in a checkpoint. Returns the number of runs deleted."""
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
            # Held runs stay; a cutoff inside the retention floor refuses the purge.
            self._check_floor(conn, before)
            ids = [row[0] for row in conn.execute(
                f"SELECT run_id FROM runs WHERE {cond} AND run_id NOT IN (SELECT run_id FROM holds)",
                params,
            )]
            return self._remove_recorded(conn, ids, what="purge")

        deleted = int(self._call(purge, "purge"))
        self._after_removal()
        return deleted

    def delete_run(self, run_id: str) -> bool:
        """Delete one run and its events; False when there is none. A run under
        legal hold or younger than the retention floor raises `RetentionError`;
        the deletion is recorded as ``purged`` in a checkpoint."""

        def delete(conn: sqlite3.Connection) -> bool:
            # Refused under a hold or the retention floor; recorded as a purge.
            return self._remove_recorded(conn, [run_id], what=f"delete of run {run_id}") > 0

        deleted = bool(self._call(delete, f"delete of run {run_id}"))
        self._after_removal()
        return deleted

    def verify(self, run_id: str, *, key: Any = None, require_key: bool | None = None) -> VerifyResult:
        """Check the run's header, chain and seal (`_verify.verify_run`), with ``key``
        (a secret or keyring; default: this store's). ``require_key`` refuses an
        unkeyed run; by default it does so whenever a key is given (an unkeyed run
        could be a keyed one stripped of its key and rewritten). Never raises on malformed data; `RunNotFoundError` when the file
        holds neither the run nor any of its events."""
        keyring = self.keyring if key is None else keyring_from(key)
        with self._read_lock:
            run, events = _records(self._read(), run_id)
        if run is None and not events:
            raise RunNotFoundError(f"no run {run_id!r} in {self.path}")
        return verify_run(run, events, keyring, run_id=run_id, require_key=require_key)

    def erase(self, run_id: str, fields: Iterable[str] | None = None) -> int:
        """Remove the content of a finished run for a privacy request: its ``input``,
        ``output`` and ``error``, and its events' ``text`` (step narration), ``args``
        (tool arguments), ``result`` (tool results), ``message`` (error events) and
        ``custom`` (custom events' payloads); ``fields`` picks some (default: all).
        Each is replaced by ``[erased]`` and its salt by its digest, so every hash
        and the seal still verify (`verify` says ``erased``) and the text cannot be
        guessed back from the digest. The old bytes are overwritten in the file
        (secure delete, the search index merged, VACUUM) and the write-ahead log is
        truncated. Returns how many values were erased. Raises `RunNotFoundError`,
        `RetentionError` for a run under legal hold, or `StoreError` for a run still
        running or written before erasable chains (chain v1)."""
        chosen = erase_fields(fields)

        def erase(conn: sqlite3.Connection) -> int | AgentAuditError:
            conn.execute("PRAGMA secure_delete = ON")
            try:
                count = _erase(conn, run_id, chosen)
            except AgentAuditError as exc:  # the caller's to raise: the writer would retry it
                return exc
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'run_search'").fetchone():
                # Deleted terms stay in the index's segments until they are merged.
                conn.execute("INSERT INTO run_search (run_search) VALUES ('optimize')")
            return count

        outcome = self._call(erase, f"erase of run {run_id}")
        if isinstance(outcome, AgentAuditError):
            raise outcome
        count = int(outcome)
        with self._read_lock:
            conn = self._read()
            conn.execute("PRAGMA secure_delete = ON")
            conn.execute("VACUUM")  # no free page keeps an old copy
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # nor the log
        return count

    def verify_all(self, *, key: Any = None, require_key: bool | None = None) -> Iterator[VerifyResult]:
        """`verify` every run, oldest first, then every run whose row is gone but
        whose events remain. Never raises on malformed data (the ids are read as
        stored, not parsed into runs)."""
        keyring = self.keyring if key is None else keyring_from(key)
        after: tuple[Any, int] | None = None  # keyset paging (any value type sorts)
        while True:
            rows = self._query(
                "SELECT run_id, started_at, rowid FROM runs"
                + (" WHERE (started_at, rowid) > (?, ?)" if after is not None else "")
                + " ORDER BY started_at, rowid LIMIT ?",
                (*(after or ()), _PAGE),
            )
            for run_id, _started, _rowid in rows:
                with self._read_lock:
                    run, events = _records(self._read(), run_id)
                yield verify_run(run, events, keyring, run_id=run_id, require_key=require_key)
            if len(rows) < _PAGE:
                break
            after = (rows[-1][1], rows[-1][2])
        for run_id in self.orphaned_run_ids():
            with self._read_lock:
                run, events = _records(self._read(), run_id)
            yield verify_run(run, events, keyring, run_id=run_id, require_key=require_key)

    def orphaned_run_ids(self) -> list[str]:
        """Run ids that events name but ``runs`` does not hold: runs whose row was
        deleted and whose events were not (`verify` reports each as broken)."""
        rows = self._query(
            "SELECT DISTINCT run_id FROM events WHERE run_id NOT IN (SELECT run_id FROM runs) ORDER BY run_id"
        )
        return [row[0] for row in rows]

    # -- beyond the protocol: what the CLI and operators need ------------------------

    def resolve_run_id(self, prefix: str) -> str:
        """The one run id ``prefix`` names: the id itself, or a prefix of exactly one
        id, typed as stored or (for UUIDs) with or without dashes, in any case (see
        `agentaudit.stores._run_ids`). Raises RunNotFoundError when no run or several
        runs match; the message names the candidates."""
        if not isinstance(prefix, str) or not prefix.strip():
            raise RunNotFoundError("an empty run id matches nothing")
        forms = prefix_forms(prefix)
        if self._query("SELECT 1 FROM runs WHERE run_id = ?", (forms[0],)):
            return forms[0]
        for group in (forms[:1], forms[1:]):
            found: dict[str, str] = {}
            for form in group:
                rows = self._query(
                    "SELECT run_id, name FROM runs WHERE run_id >= ? AND run_id < ? ORDER BY run_id LIMIT ?",
                    (form, upper_bound(form), MAX_CANDIDATES + 1),
                )
                found.update((run_id, name) for run_id, name in rows if run_id.startswith(form))
            if len(found) == 1:
                return next(iter(found))
            if found:
                raise RunNotFoundError(
                    ambiguous(prefix.strip(), sorted(found.items()), len(found) > MAX_CANDIDATES)
                )
        raise RunNotFoundError(f"no run {prefix.strip()!r} in {self.path}")

    def short_run_ids(self, run_ids: Iterable[str]) -> dict[str, str]:
        """Each id shortened to the shortest prefix no other stored id shares (at
        least 8 characters): what the command line shows, and `resolve_run_id`
        takes back."""
        shown: dict[str, str] = {}
        for run_id in run_ids:
            if run_id in shown:
                continue
            before = self._query("SELECT max(run_id) FROM runs WHERE run_id < ?", (run_id,))[0][0]
            after = self._query("SELECT min(run_id) FROM runs WHERE run_id > ?", (run_id,))[0][0]
            shown[run_id] = short_id(run_id, (before, after))
        return shown

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
        (One writer commits at a time, so positions become visible in order here;
        ``agentaudit tail -f`` follows every store the same way, with
        `event_positions` and `events_at`: see `agentaudit.stores._follow`.)"""
        where, params = _event_where(run_id, event_types)
        rows = self._query(
            f"SELECT id, {EVENT_COLUMNS} FROM events WHERE id > ?{where} ORDER BY id LIMIT ?",
            (cursor, *params, limit),
        )
        return [(row[0], event_from_row(row[1:])) for row in rows]

    def event_positions(
        self, after: int, *, within: Sequence[tuple[int, int]] = (), limit: int = 1000
    ) -> list[int]:
        """The positions held above ``after`` (the first ``limit``) and inside the
        inclusive ranges ``within`` (the first ``limit`` there), ascending, of every
        run and type (as the server stores'; see `agentaudit.stores._follow`)."""
        found = {int(p) for (p,) in self._query(
            "SELECT id FROM events WHERE id > ? ORDER BY id LIMIT ?", (int(after), int(limit))
        )}
        if within:
            ranges = " OR ".join(["id BETWEEN ? AND ?"] * len(within))
            bounds = [int(bound) for pair in within for bound in pair]
            rows = self._query(f"SELECT id FROM events WHERE {ranges} ORDER BY id LIMIT ?", (*bounds, int(limit)))
            found.update(int(p) for (p,) in rows)
        return sorted(found)

    def events_at(
        self,
        positions: Iterable[int],
        *,
        run_id: str | None = None,
        event_types: Iterable[str] | None = None,
    ) -> list[tuple[int, Event]]:
        """The events at these positions (of ``run_id``, of ``event_types``), by position."""
        wanted = sorted({int(p) for p in positions})
        where, params = _event_where(run_id, event_types)
        found: list[tuple[int, Event]] = []
        for start in range(0, len(wanted), _PAGE):
            chunk = wanted[start : start + _PAGE]
            rows = self._query(
                f"SELECT id, {EVENT_COLUMNS} FROM events WHERE id IN ({', '.join('?' * len(chunk))}){where} "
                "ORDER BY id",
                (*chunk, *params),
            )
            found.extend((row[0], event_from_row(row[1:])) for row in rows)
        return found

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
        """Runs, failures, tokens, cost and time percentiles of the matching runs,
        grouped ``by`` model (the one that first served each run), caller, day (UTC),
        name or status; largest group first (``day``: newest first).

        Percentiles (p50, p95, interpolated between the nearest values, in ms) are of
        finished runs' durations, of steps' ``step_ms`` and of tool results'
        ``duration_ms``; None where there is no value."""
        if by not in SUMMARY_GROUPS:
            raise ValueError(f"summary groups by one of {', '.join(SUMMARY_GROUPS)}; got {by!r}")
        key = {"day": "substr(started_at, 1, 10)"}.get(by, by)
        return self._summarize(by, key, filter or RunFilter(), "key DESC" if by == "day" else "runs DESC, key")

    def summary_total(self, filter: RunFilter | None = None) -> dict[str, Any]:
        """`summary` of all the matching runs as one group (its key is ``"total"``)."""
        return self._summarize("total", "'total'", filter or RunFilter(), "key")[0]

    def _summarize(self, by: str, key: str, flt: RunFilter, order: str) -> list[dict[str, Any]]:
        where, params = self._where(flt)
        failed = ", ".join(f"'{s.value}'" for s in FAILED_STATUSES)
        rows = self._query(
            f"""SELECT {key} AS key, count(*) AS runs,
                       coalesce(sum(status IN ({failed})), 0) AS failed,
                       coalesce(sum(status != 'running'), 0) AS finished,
                       sum(input_tokens), sum(output_tokens), sum(thinking_tokens),
                       sum(cost_usd), count(cost_usd), sum(tool_calls), sum(steps)
                FROM (SELECT * FROM runs{where}) GROUP BY key ORDER BY {order}""",
            params,
        )
        if not rows and by == "total":
            rows = [("total", 0, 0, 0, 0, 0, 0, None, 0, 0, 0)]
        spreads = self._spreads(key, where, params)
        return [
            {
                by: group,
                "runs": runs,
                "failed": failed_n,
                "finished": finished,
                "failure_rate": (failed_n / finished) if finished else None,
                "input_tokens": tin or 0,
                "output_tokens": tout or 0,
                "thinking_tokens": tthink or 0,
                "cost_usd": round(cost, 9) if priced else None,
                "tool_calls": calls or 0,
                "steps": steps or 0,
                **{
                    f"{what}_{name}_ms": _percentile(spreads[what].get(group, []), share)
                    for what in _SPREADS
                    for name, share in (("p50", 0.5), ("p95", 0.95))
                },
            }
            for group, runs, failed_n, finished, tin, tout, tthink, cost, priced, calls, steps in rows
        ]

    def _spreads(self, key: str, where: str, params: list[Any]) -> dict[str, dict[Any, list[float]]]:
        """Each group's sorted run durations, step times and tool times (ms)."""
        found: dict[str, dict[Any, list[float]]] = {}
        and_ = " AND " if where else " WHERE "
        queries = {
            "duration": (
                f"SELECT {key}, started_at, finished_at FROM runs{where}{and_}finished_at IS NOT NULL", None
            ),
            "step": (STEP, STEP_MS),
            "tool": (TOOL_RESULT, DURATION_MS),
        }
        for what, (first, second) in queries.items():
            groups: dict[Any, list[float]] = {}
            if second is None:
                for group, started, finished in self._query(first, params):
                    ms = (parse_ts(finished) - parse_ts(started)).total_seconds() * 1000.0
                    groups.setdefault(group, []).append(ms)
            else:
                sql = (
                    f"SELECT r.key, json_extract(e.payload, '$.{second}') AS v FROM events AS e "
                    f"JOIN (SELECT run_id, {key} AS key FROM runs{where}) AS r ON e.run_id = r.run_id "
                    "WHERE e.event_type = ? AND json_valid(e.payload) AND v IS NOT NULL"
                )
                for group, value in self._query(sql, [*params, first]):
                    if isinstance(value, (int, float)):
                        groups.setdefault(group, []).append(float(value))
            for values in groups.values():
                values.sort()
            found[what] = groups
        return found

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
                try:
                    last = _last_event_time(conn, run_id) or parse_ts(started_at)
                except (TypeError, ValueError):  # a malformed time: verify reports it
                    continue
                if last < cutoff and _abandon(
                    conn, run_id, f"abandoned: no event since {utc_ts(last)} (reaped)", self.keyring
                ):
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
            dead = [
                (run_id, pid) for run_id, pid in rows
                if isinstance(pid, int) and not _pid_alive(pid)
            ]
            if not dead:
                return []
            conn.execute("BEGIN IMMEDIATE")
            try:
                dead = [
                    (run_id, pid) for run_id, pid in dead
                    if _abandon(
                        conn, run_id, f"abandoned: process {pid} on {host} ended without closing the run",
                        self.keyring,
                    )
                ]
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
        self._inherited.append(self._cp_conn)
        self._forget_checkpointer_after_fork()


# -- read-only opening: what a file must hold to be read as an audit database ----------

# The columns the read queries use (v1's tables); later versions add to them.
_NEEDED_COLUMNS = {
    "runs": frozenset(RUN_COLUMNS.replace(" ", "").split(",")) | {"model"},
    "events": frozenset(EVENT_COLUMNS.replace(" ", "").split(",")) | {"id"},
}


def _connect_read_only(path: str) -> sqlite3.Connection:
    """A connection that cannot write (SQLite ``mode=ro`` and ``query_only``) to a
    file checked to be an agentaudit database this code can read. Raises StoreError
    (SchemaVersionError for a newer file)."""
    if os.path.isdir(path):
        raise StoreError(f"{path} is a directory, not an agentaudit database")
    if os.path.getsize(path) == 0:
        raise StoreError(f"{path} is an empty file, not an agentaudit database")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the audit database {path!r}: {exc}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only = ON")
        _check_agentaudit_file(conn, path)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path!r} is not a usable SQLite database: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _check_agentaudit_file(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a file that is not an agentaudit database, or one newer than this code.
    An older version is read as it is when it has the columns the reads use."""
    version = file_version(conn)
    _check_not_newer(version, path)
    if version == 0:
        raise StoreError(f"{path} is not an agentaudit database (a SQLite file without its tables)")
    for table, needed in _NEEDED_COLUMNS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        missing = sorted(needed - have)
        if missing and version < SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema version {version}, too old to read without upgrading it (to "
                f"{SCHEMA_VERSION}); open it once for writing (agentaudit reap, or the library) to upgrade it"
            )
        if missing:
            raise StoreError(
                f"{path} is not an agentaudit database: its {table} table lacks {', '.join(missing)}"
            )


def _refuse_foreign_file(path: str, *, create: bool) -> None:
    """Before a writer touches an existing file: never turn another program's SQLite
    database into an audit database (the WAL switch and migrations would change it).
    An empty file or an empty database is ours to create, unless ``create`` is off."""
    if os.path.isdir(path):
        raise StoreError(f"{path} is a directory, not an agentaudit database")
    if os.path.getsize(path) == 0:
        if create:
            return
        raise StoreError(f"{path} is an empty file, not an agentaudit database")
    # immutable: the main file only, no locks, no -wal/-shm created (they would change
    # how the writer's own connection opens a file it cannot write yet). A migration
    # still in another writer's WAL shows here as version 0 with no tables: no refusal.
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error:
        return  # the writer's own connect reports what is wrong
    try:
        if file_version(conn) != 0:
            return  # ours (a newer one is refused by migrate)
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError:
        return  # not SQLite at all: the writer's connect says so
    finally:
        conn.close()
    if tables or not create:
        raise StoreError(f"{path} is not an agentaudit database (a SQLite file without its tables)")


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, (str, RunStatus)) else list(value)


_SPREADS = ("duration", "step", "tool")  # what `summary` gives percentiles of


def _percentile(values: Sequence[float], share: float) -> float | None:
    """The ``share`` quantile of sorted ``values``, interpolated between the two
    nearest (numpy's default), rounded to the microsecond; None for no values."""
    if not values:
        return None
    at = share * (len(values) - 1)
    low = int(at)
    high = min(low + 1, len(values) - 1)
    return round(values[low] + (values[high] - values[low]) * (at - low), 3)




class _SortKey(NamedTuple):
    """What a `RunFilter.order_by` other than the start sorts on: ``value`` and
    ``present`` exactly as the v5 migration's index states them (a partial index
    serves a query only when it states the index's condition), ``missing`` the runs
    without a value (None when every run has one)."""

    value: str
    present: str | None
    missing: str | None


_SORT_KEYS = {
    "duration": _SortKey(
        DURATION_US, "finished_at IS NOT NULL", "finished_at IS NULL"
    ),
    "tokens": _SortKey("input_tokens + output_tokens", None, None),  # NOT NULL columns
    "cost": _SortKey("cost_usd", "cost_usd IS NOT NULL", "cost_usd IS NULL"),
}
# Up to this many runs reaching a minimum cost, the newest-first listing reads them
# from the cost index and sorts them; beyond, a page's worth is near the start index's
# head (one run in 1,000,000 / _FEW_COSTS matches, at worst).
_FEW_COSTS = 10_000
# The v5 migration's partial index `runs_errors` has this condition: a query uses the
# index only when it states the same one.
_HAS_ERROR = "(error != '' OR status IN ({}))".format(", ".join(f"'{s.value}'" for s in FAILED_STATUSES))
_SEARCH_VERSION = 5  # the schema version that brought full-text search
# The runs one search word finds: an event's hit is keyed by events.id, a run's own
# text (input, output, error) by its negated key in run_search_keys (see _v5_search).
_WORD_HITS = (
    "run_id IN (SELECT CASE WHEN rowid > 0 THEN (SELECT run_id FROM events WHERE id = run_search.rowid) "
    "ELSE (SELECT run_id FROM run_search_keys WHERE key = -run_search.rowid) END "
    "FROM run_search WHERE run_search MATCH ?)"
)
# The same, asked of one run at a time: whether its key, or one of its events' ids, is
# among the word's hits. Each set of hits is built once per query, as bare FTS row ids
# (no lookup per hit), so a listing that walks runs in its order's index stops after a
# page: for a word in 1 run in 12, about 1,200 runs. _WORD_HITS instead maps every hit
# to its run first, which for such a word is most of the cost; it stays for words
# with fewer than _FEW_HITS hits (a walk would pass over many runs between hits) and
# for counts (which see every run either way).
_WORD_PROBE = (
    "((SELECT key FROM run_search_keys WHERE run_id = runs.run_id) IN "
    "(SELECT -rowid FROM run_search WHERE run_search MATCH ? AND rowid < 0) "
    "OR EXISTS (SELECT 1 FROM events WHERE events.run_id = runs.run_id AND events.id IN "
    "(SELECT rowid FROM run_search WHERE run_search MATCH ? AND rowid > 0)))"
)
_FEW_HITS = 5_000


def _match(word: str) -> str:
    """The FTS5 query for a search word: the word as a prefix. A word is letters and
    digits only (search_terms), so there is no quote to escape."""
    return f'"{word}"*'


def _where(flt: RunFilter, broad: Collection[str] = ()) -> tuple[str, list[Any]]:
    """The filter's WHERE clause and parameters; ``broad``: the search words to probe
    run by run (_WORD_PROBE) rather than gather (_WORD_HITS)."""

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
    # Partial indexes of the v5 migration, stated as they are.
    if flt.model is not None:
        clauses.append("model = ? AND model != ''" if flt.model else "model = ?")
        params.append(flt.model)
    if flt.has_error is not None:
        clauses.append(_HAS_ERROR if flt.has_error else f"NOT {_HAS_ERROR}")
    if flt.min_cost_usd is not None:
        clauses.append("cost_usd >= ?")
        params.append(float(flt.min_cost_usd))
    if flt.text is not None:
        for word in search_terms(flt.text):  # every word, anywhere in the run
            if word in broad:
                clauses.append(_WORD_PROBE)
                params += [_match(word), _match(word)]
            else:
                clauses.append(_WORD_HITS)
                params.append(_match(word))
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


def _records(conn: sqlite3.Connection, run_id: str) -> tuple[RunRecord | None, list[EventRecord]]:
    """The run's row and its events as stored, named (columns a file of an older
    version lacks take their defaults: no seal before version 3, say)."""
    cursor = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,))
    names = [d[0] for d in cursor.description]
    row = cursor.fetchone()
    run = RunRecord.from_mapping(dict(zip(names, row, strict=True))) if row is not None else None
    cursor = conn.execute("SELECT * FROM events WHERE run_id = ? ORDER BY sequence, id", (run_id,))
    names = [d[0] for d in cursor.description]
    events = [EventRecord.from_mapping(dict(zip(names, found, strict=True))) for found in cursor.fetchall()]
    return run, events


def _erase(conn: sqlite3.Connection, run_id: str, chosen: frozenset[str]) -> int:
    run = run_record(conn, run_id)
    if run is None:
        raise RunNotFoundError(f"no run {run_id!r} to erase")
    if run.status == RunStatus.RUNNING.value:
        raise StoreError(f"run {run_id} is still running: erase it once it has finished")
    if not run.salt:
        raise StoreError(f"run {run_id} was written before erasable chains (chain v1): it cannot be erased")
    # A legal hold keeps a run as it is, content included (as on the server stores).
    held = conn.execute("SELECT 1 FROM holds WHERE run_id = ?", (run_id,)).fetchone() is not None
    check_removal(run_id, run._asdict(), held=held, floor=None, what=f"erase of run {run_id}")
    salt, names = erased_run_fields(run.salt, run._asdict(), chosen)
    if names:
        conn.execute(
            f"UPDATE runs SET salt = ?, {', '.join(f'{name} = ?' for name in names)} WHERE run_id = ?",
            (salt, *([ERASED] * len(names)), run_id),
        )
    erased = len(names)
    rows = conn.execute(
        "SELECT id, event_type, payload, salt FROM events WHERE run_id = ? ORDER BY sequence", (run_id,)
    ).fetchall()
    for event_id, event_type, payload_text, event_salt in rows:
        changed = erased_event(event_type, strict_json(payload_text), event_salt, chosen)
        if changed is not None:
            payload, new_salt, count = changed
            conn.execute(
                "UPDATE events SET payload = ?, salt = ? WHERE id = ?",
                (canonical_json(payload), new_salt, event_id),
            )
            erased += count
    return erased


def _abandon(conn: sqlite3.Connection, run_id: str, reason: str, keyring: Keyring | None) -> bool:
    """Close a dead run as ``abandoned`` and seal it, with only what its chain
    shows: the totals of its recorded events, no output, no cost, its first
    resolved model, and its last event's time as its end (the last moment it was
    known alive). Never the row's own finish fields, which anyone could have written
    into a run reset to running. False (left running) when the run is keyed with a
    key this store was not given: it could not be sealed."""
    run = run_record(conn, run_id)
    if run is None or run.status != RunStatus.RUNNING.value:
        return False
    if run.key_id and (keyring is None or run.key_id not in keyring):
        logger.warning(
            "agentaudit: run %s is keyed with key id %s, which was not given: left running", run_id, run.key_id
        )
        return False
    totals = dict.fromkeys(("steps", "tool_calls", IN_TOKENS, OUT_TOKENS, THINKING_TOKENS), 0)
    model: str | None = None
    last = None
    for event_type, payload_text, created_at in conn.execute(
        "SELECT event_type, payload, created_at FROM events WHERE run_id = ? ORDER BY sequence", (run_id,)
    ):
        last = created_at
        if event_type == TOOL_CALL:
            totals["tool_calls"] += 1
        if event_type not in (STEP, RESOLVED_MODEL):
            continue
        try:
            payload = strict_json(payload_text)
        except (ValueError, RecursionError):
            continue  # a malformed event: verify reports it
        if not isinstance(payload, dict):
            continue
        if event_type == RESOLVED_MODEL:
            if model is None:
                found = payload.get(MODEL)
                model = found if isinstance(found, str) else ""
            continue
        totals["steps"] += 1
        for name in (IN_TOKENS, OUT_TOKENS, THINKING_TOKENS):
            value = payload.get(name)
            if type(value) is int and value > 0:
                totals[name] = min(totals[name] + value, MAX_COUNT)
    try:
        finished = utc_ts(parse_ts(last if last is not None else run.started_at))
    except (TypeError, ValueError):
        finished = utc_ts(datetime.now(timezone.utc))
    conn.execute(
        """UPDATE runs SET status = 'abandoned', finished_at = ?, output = '', error = ?,
                  steps = ?, tool_calls = ?, input_tokens = ?, output_tokens = ?,
                  thinking_tokens = ?, cost_usd = NULL, model = ?
           WHERE run_id = ? AND status = 'running'""",
        (finished, reason, totals["steps"], totals["tool_calls"], totals[IN_TOKENS],
         totals[OUT_TOKENS], totals[THINKING_TOKENS], model or "", run_id),
    )
    return seal_run(conn, run_id, keyring)


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
