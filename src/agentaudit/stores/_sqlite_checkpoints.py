"""Checkpoints, legal holds and the retention floor of the SQLite store.

Why a part of its own: the store's writing stays on its one writer thread, and a
checkpoint must never hold that thread up for long. So a checkpoint is made in two
halves: the new entries (finished runs not yet in the log, running runs that grew)
and their content digests are read on the checkpointer's own thread, from a read
snapshot; then one short maintenance item on the writer thread re-checks them,
appends them to the log, signs the note and stores it. The sink is written after
the commit, on the checkpointer's thread, so a slow or failing sink never touches a
commit; a checkpoint the sink did not take stays marked and is written next time.

A purge or delete through the store records what it removes as ``purged`` entries
of a checkpoint made in the same transaction: a purge is on the record, a deletion
by other means is not. Held runs and runs younger than the retention floor are
refused with `RetentionError`, before anything is deleted.

What is not SQLite's own (the queries of the log, verification, proofs, bundles)
is shared with the server stores in `_checkpoint_log`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from .._checkpoints import PROOF_FORMAT, Checkpoint, CheckpointPolicy, Entry, Finding
from .._errors import RunNotFoundError, StoreError
from .._model import RunFilter
from ._checkpoint_log import (
    FLOOR_SETTING,
    CheckpointLog,
    CheckpointReport,
    Hold,
    RunContent,
    check_entries,
    check_floor,
    check_removal,
    collect_entries,
    export_pending,
    floor_of,
    load_checkpoints,
    removal_entry,
    resolve_policy,
)
from ._checkpoint_log import commit_checkpoint as _commit

if TYPE_CHECKING:
    from ._sqlite_writer import SQLiteWriter

__all__ = [
    "PROOF_FORMAT",
    "CheckpointReport",
    "Hold",
    "SQLiteCheckpoints",
    "check_entries",
    "resolve_policy",
    "run_content",
]

logger = logging.getLogger("agentaudit")


# -- SQLite's side of the shared queries ------------------------------------------------


class _Conn:
    """A SQLite connection as the shared queries' `SQL` (SQLite takes ``?`` as is)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, tuple(params)).fetchall())

    def many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, params)


def _rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def run_content(conn: sqlite3.Connection, run_id: str) -> RunContent:
    """The run's row and its events, every column as stored (None: no row)."""
    runs = _rows(conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)))
    events = _rows(conn.execute("SELECT * FROM events WHERE run_id = ? ORDER BY sequence, id", (run_id,)))
    return (runs[0] if runs else None), events


def _collect(conn: sqlite3.Connection) -> list[Entry]:
    """The entries the next checkpoint adds (see `_checkpoint_log.collect_entries`)."""
    return collect_entries(_Conn(conn), lambda ids: {run_id: run_content(conn, run_id) for run_id in ids})


def commit_checkpoint(
    conn: sqlite3.Connection, entries: Sequence[Entry], policy: CheckpointPolicy, now: datetime | None = None
) -> Checkpoint | None:
    """Append ``entries`` to the log and store the signed checkpoint over it, in the
    open transaction (on the writer thread: the one writer)."""
    return _commit(_Conn(conn), entries, policy, now)


# -- the store's part ---------------------------------------------------------------------


class SQLiteCheckpoints(CheckpointLog):
    """Checkpoints, holds and retention for `SQLiteStore` (mixed in; the store
    provides the connection plumbing)."""

    path: str
    read_only: bool
    close_timeout: float
    _closed: bool

    if TYPE_CHECKING:
        def _live_writer(self) -> SQLiteWriter: ...
        def _call(self, fn: Any, what: str) -> Any: ...
        def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]: ...
        def _connect(self) -> sqlite3.Connection: ...
        def flush(self, timeout: float | None = None) -> None: ...
        def iter_runs(self, filter: RunFilter | None = None) -> Any: ...
        def verify(self, run_id: str) -> Any: ...

    def _log_name(self) -> str:
        return self.path

    def _init_checkpoints(self, policy: CheckpointPolicy | None) -> None:
        """Set up checkpointing with a policy `resolve_policy` already checked."""
        self.checkpoint_policy = policy
        self.checkpoint_failures = 0  # checkpoints or sink writes that failed (each logged)
        self._cp_lock = threading.Lock()
        self._cp_conn: sqlite3.Connection | None = None
        self._start_checkpointer(policy, self.read_only)

    def _snapshot_entries(self) -> list[Entry]:
        with self._cp_lock:
            conn = self._cp_conn
            if conn is None:
                conn = self._cp_conn = self._connect()
            conn.execute("BEGIN")
            try:
                return _collect(conn)
            finally:
                conn.execute("COMMIT")

    def checkpoint(self, *, timeout: float | None = None) -> Checkpoint | None:
        """Make a checkpoint now (None when nothing changed since the last), then
        hand every checkpoint the sink has not taken yet to the sink. The
        checkpointer thread calls this every ``interval`` seconds."""
        self.flush(timeout)
        entries = self._snapshot_entries()
        policy = self._policy()
        made: Checkpoint | None = None
        if entries:
            future: Future[Any] = Future()
            from ._sqlite_writer import Maintenance

            self._live_writer().submit(
                Maintenance(lambda conn: commit_checkpoint(conn, entries, policy), future), bounded=False
            )
            try:
                made = future.result(timeout)
            except FutureTimeout:
                raise StoreError(f"the checkpoint of {self.path} was not committed within {timeout:g} s") from None
        self._export(policy)
        return made

    def _export(self, policy: CheckpointPolicy) -> None:
        sink = policy.write_sink
        if sink is None:
            return
        rows = self._query("SELECT seq FROM checkpoints WHERE exported = 0 ORDER BY seq")
        if not rows:
            return
        pending, _ = self._load(after=rows[0][0] - 1)

        def failed() -> None:
            self.checkpoint_failures += 1

        done = export_pending(pending, sink, failed)
        if done:
            self._call(
                lambda conn: conn.executemany("UPDATE checkpoints SET exported = 1 WHERE seq = ?",
                                              [(s,) for s in done]),
                "checkpoint export mark",
            )

    def _load(self, after: int = 0) -> tuple[list[Checkpoint], list[Finding]]:
        with self._cp_lock:
            conn = self._cp_conn
            if conn is None:
                conn = self._cp_conn = self._connect()
            if not self._has_tables(conn):
                return [], []
            conn.execute("BEGIN")
            try:
                return load_checkpoints(_Conn(conn), after=after, errors=(sqlite3.Error,))
            finally:
                conn.execute("COMMIT")

    @staticmethod
    def _has_tables(conn: sqlite3.Connection) -> bool:
        return conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'checkpoints'"
        ).fetchone() is not None

    def _stop_checkpointer(self, timeout: float) -> None:
        """At close: stop the thread, then make the last checkpoint (bounded)."""
        self._stop_checkpoint_thread(timeout, read_only=self.read_only)
        with self._cp_lock:
            if self._cp_conn is not None:
                try:
                    self._cp_conn.close()
                except sqlite3.Error:
                    pass
                self._cp_conn = None

    def _forget_checkpointer_after_fork(self) -> None:
        # The thread and the connection are the parent's: the child makes only the
        # closing checkpoint (and those it is asked for).
        self._cp_thread = None
        self._cp_conn = None
        self._cp_lock = threading.Lock()

    def run_rows(self, run_id: str) -> RunContent:
        """The run's row and its events, every column as stored (None: no such run)."""
        with self._cp_lock:
            conn = self._cp_conn
            if conn is None:
                conn = self._cp_conn = self._connect()
            conn.execute("BEGIN")
            try:
                return run_content(conn, run_id)
            finally:
                conn.execute("COMMIT")

    # -- holds and retention --------------------------------------------------------------

    def _ids(self, run_ids: Iterable[str], filter: RunFilter | None) -> list[str]:
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        for run_id in ids:
            if not isinstance(run_id, str) or not self._query("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)):
                raise RunNotFoundError(f"no run {run_id!r} in {self.path}")
        if filter is not None:
            ids.extend(run.run_id for run in self.iter_runs(filter))
        return list(dict.fromkeys(ids))

    def hold(self, run_ids: Iterable[str] = (), *, filter: RunFilter | None = None, reason: str = "") -> list[str]:
        """Put runs (by id, and/or every run ``filter`` matches) under legal hold:
        purge and delete refuse them until released. Returns the ids held."""
        if not isinstance(reason, str):
            raise TypeError(f"reason is text, got {type(reason).__name__}")
        ids = self._ids(run_ids, filter)
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        self._call(
            lambda conn: conn.executemany(
                "INSERT INTO holds (run_id, reason, held_at) VALUES (?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET reason = excluded.reason",
                [(run_id, reason, now) for run_id in ids],
            ),
            "hold",
        )
        return ids

    def release(self, run_ids: Iterable[str] = (), *, filter: RunFilter | None = None) -> list[str]:
        """Lift the legal hold of runs; returns the ids that were held."""
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        if filter is not None:
            ids.extend(run.run_id for run in self.iter_runs(filter))
        ids = list(dict.fromkeys(ids))

        def release(conn: sqlite3.Connection) -> list[str]:
            released = []
            for run_id in ids:
                if conn.execute("DELETE FROM holds WHERE run_id = ?", (run_id,)).rowcount:
                    released.append(run_id)
            return released

        return list(self._call(release, "release"))

    def holds(self) -> list[Hold]:
        """Every run under legal hold."""
        return [Hold(*row) for row in self._query("SELECT run_id, reason, held_at FROM holds ORDER BY held_at, run_id")]

    @property
    def retention_floor(self) -> timedelta | None:
        """The youngest a run may be and still be purged or deleted (None: no floor)."""
        rows = self._query("SELECT value FROM settings WHERE name = ?", (FLOOR_SETTING,))
        return floor_of(rows[0][0]) if rows else None

    def set_retention_floor(self, floor: timedelta | None) -> None:
        """Set (or, with None, remove) the retention floor, kept in the database so
        every process and the command line honour it. EU AI Act Art. 19/26: at
        least six months for most deployers' logs."""
        if floor is not None and (not isinstance(floor, timedelta) or floor <= timedelta(0)):
            raise ValueError(f"the retention floor is a positive timedelta or None, got {floor!r}")
        if floor is None:
            self._call(lambda conn: conn.execute("DELETE FROM settings WHERE name = ?", (FLOOR_SETTING,)), "floor")
        else:
            seconds = str(floor.total_seconds())
            self._call(
                lambda conn: conn.execute(
                    "INSERT INTO settings (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (FLOOR_SETTING, seconds),
                ),
                "floor",
            )

    @staticmethod
    def _floor(conn: sqlite3.Connection) -> timedelta | None:
        row = conn.execute("SELECT value FROM settings WHERE name = ?", (FLOOR_SETTING,)).fetchone()
        return floor_of(row[0]) if row else None

    def _check_floor(self, conn: sqlite3.Connection, before: datetime) -> None:
        """Refuse a purge whose cutoff lies inside the retention floor."""
        check_floor(self._floor(conn), before)

    def _remove_recorded(self, conn: sqlite3.Connection, run_ids: Sequence[str], *, what: str) -> int:
        """Delete ``run_ids`` with their events, refusing held runs and runs younger
        than the floor (nothing is deleted then), and record each as a ``purged``
        entry of a checkpoint made in the same transaction. On the writer thread."""
        floor = self._floor(conn)
        entries = []
        for run_id in run_ids:
            held = conn.execute("SELECT 1 FROM holds WHERE run_id = ?", (run_id,)).fetchone() is not None
            row, events = run_content(conn, run_id)
            if row is None:
                if held:
                    check_removal(run_id, {}, held=True, floor=None, what=what)
                continue
            check_removal(run_id, row, held=held, floor=floor, what=what)
            entries.append(removal_entry(run_id, row, events))
        for entry in entries:
            conn.execute("DELETE FROM events WHERE run_id = ?", (entry.run_id,))
            conn.execute("DELETE FROM runs WHERE run_id = ?", (entry.run_id,))
        if entries:
            commit_checkpoint(conn, entries, self._policy())
        return len(entries)

    def _after_removal(self) -> None:
        """Hand the removal's checkpoint to the sink (the caller may wait on it)."""
        try:
            self._export(self._policy())
        except Exception as exc:
            self.checkpoint_failures += 1
            logger.error("agentaudit: writing the purge checkpoint of %s to its sink failed: %s", self.path, exc)
