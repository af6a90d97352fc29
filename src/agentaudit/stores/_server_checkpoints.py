"""Checkpoints, legal holds, the retention floor and erasure of the server stores.

Why a part of its own: the log, its verification, the proofs and the bundles are
the SQLite file's (`_checkpoint_log`, shared); what a server needs besides is a
way to keep one chain when many processes write into one database. SQLite has one
writer thread per file; a fleet has a writer per process. So every change of the
log (a checkpoint, and a purge or delete, which records what it removes as
``purged`` entries in the same transaction) is made under one database lock: a
transaction advisory lock on PostgreSQL (``pg_advisory_xact_lock``, per schema,
released by the commit or by the server when the process dies), ``GET_LOCK`` on
MariaDB/MySQL (per database, taken before the transaction so its snapshot is
taken after the lock; released when the session ends). Under the lock the newest
stored checkpoint is read and the next one chains to it; two checkpointers never
fork the chain (and the tables' primary keys would refuse it if they tried).

What a run's digest covers on a server: its row in the text form its seal covers
(`_server_rows.record_of_row`: every run column, times as UTC text) and each event's
stored columns (run id, sequence, type, payload text, time, hashes, salt), not the
database's own bookkeeping (event ids, the copied start time of the partition key,
the timing read from the payload, MariaDB's generated ``has_error``). A run the
server marked ``abandoned`` is taken as a head (its header and events), not sealed:
its host's spool may still deliver its real final row, which replaces it by right.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from .._chain import ERASED, erase_fields, erased_event, erased_run_fields
from .._checkpoints import Checkpoint, CheckpointPolicy, Entry, Finding
from .._errors import RunNotFoundError, StoreError
from .._model import RunFilter, RunStatus
from .._serialize import canonical_json
from .._verify import RunRecord, strict_json
from ._checkpoint_log import (
    FLOOR_SETTING,
    CheckpointLog,
    Hold,
    RunContent,
    check_floor,
    check_removal,
    collect_entries,
    commit_checkpoint,
    export_pending,
    floor_of,
    load_checkpoints,
    removal_entry,
)
from ._server_rows import EVENT_COLUMNS, RUN_COLUMNS, record_of_row

if TYPE_CHECKING:
    from ._server_dialect import Dialect

__all__ = ["ServerCheckpoints"]

logger = logging.getLogger("agentaudit")

T = TypeVar("T")

_CHECKPOINT_LOCK = 0x414143  # "AAC"
_LOCK_WAIT = 120  # seconds MariaDB waits for another process's checkpoint
_PAGE = 200
_EVENT_NAMES = tuple(name.strip() for name in EVENT_COLUMNS.split(","))
# Statuses whose row may still change by right: taken as heads (see the docstring).
PROVISIONAL = (RunStatus.ABANDONED.value,)


class _Cursor:
    """A DB-API cursor as the shared queries' `SQL` (their ``?`` marks as ``%s``)."""

    def __init__(self, cur: Any) -> None:
        self.cur = cur

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.cur.execute(sql.replace("?", "%s"), tuple(params))
        return list(self.cur.fetchall()) if self.cur.description else []

    def many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        if params:
            self.cur.executemany(sql.replace("?", "%s"), [tuple(p) for p in params])


def _marks(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values))


def _run_dict(row: Sequence[Any], dialect: Dialect) -> dict[str, Any]:
    try:
        return record_of_row(row, dialect.from_ts)._asdict()
    except (TypeError, ValueError, AttributeError):
        # a value that cannot be read as it should: digested as the driver gave it
        return {name: (value if isinstance(value, (str, int, float, type(None))) else str(value))
                for name, value in zip(RunRecord._fields, row, strict=False)}


def contents(cur: Any, dialect: Dialect, run_ids: Sequence[str]) -> dict[str, RunContent]:
    """Each run's row (in its sealed text form) and its events (their stored
    columns), a page of runs in two queries."""
    found: dict[str, RunContent] = {}
    for start in range(0, len(run_ids), _PAGE):
        chunk = list(run_ids[start : start + _PAGE])
        cur.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id IN ({_marks(chunk)})", chunk)
        rows = {str(row[0]): _run_dict(row, dialect) for row in cur.fetchall()}
        # by run id alone, as `verify` reads them: not through the run's start
        cur.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE run_id IN ({_marks(chunk)}) ORDER BY run_id, sequence",
            chunk,
        )
        events: dict[str, list[dict[str, Any]]] = {}
        for event in cur.fetchall():
            record = dict(zip(_EVENT_NAMES, event, strict=True))
            record["sequence"] = int(record["sequence"])
            events.setdefault(str(record["run_id"]), []).append(record)
        for run_id in chunk:
            found[run_id] = (rows.get(run_id), events.get(run_id, []))
    return found


class ServerCheckpoints(CheckpointLog):
    """Checkpoints, holds, retention and erasure for `ServerStore` (mixed in; the
    store provides the connection plumbing)."""

    url: str
    read_only: bool
    dialect: Dialect
    _lock: Any  # the store's lock of its second connection

    if TYPE_CHECKING:
        def _run(self, fn: Callable[[Any], T], *, write: bool = False, retry: bool = True) -> T: ...
        def _run_outside(self, fn: Callable[[Any], Any]) -> None: ...
        def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
        def flush(self, timeout: float | None = None) -> None: ...
        def iter_runs(self, filter: RunFilter | None = None) -> Any: ...
        def verify(self, run_id: str, *, key: Any = None, require_key: bool = False) -> Any: ...

    def _log_name(self) -> str:
        return self.url

    def _init_checkpoints(self, policy: CheckpointPolicy | None) -> None:
        """Set up checkpointing with a policy `resolve_policy` already checked."""
        self.checkpoint_policy = policy
        self.checkpoint_failures = 0  # checkpoints or sink writes that failed (each logged)
        self._start_checkpointer(policy, self.read_only)

    def _stop_checkpointer(self, timeout: float) -> None:
        """At close, before the writer stops: the last checkpoint (bounded)."""
        self._stop_checkpoint_thread(timeout, read_only=self.read_only)

    def _forget_checkpointer_after_fork(self) -> None:
        # The thread is the parent's: the child makes its closing checkpoint (and those
        # it is asked for) only.
        self._cp_thread = None
        self._cp_stop = threading.Event()

    # -- the one writer of the log ----------------------------------------------------

    def _exclusive(self, fn: Callable[[Any], T]) -> T:
        """``fn(cursor)`` in one transaction, under the database's checkpoint lock."""
        if self.dialect.name == "postgresql":
            def locked(cur: Any) -> T:
                cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (_CHECKPOINT_LOCK,))
                cur.fetchall()
                return fn(cur)

            return self._run(locked, write=True)
        if self.read_only:
            raise StoreError(f"the store for {self.url} was opened read-only")
        got: list[Any] = []

        def lock(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.execute("SELECT GET_LOCK(CONCAT('agentaudit-checkpoint:', DATABASE()), %s)", (_LOCK_WAIT,))
                got.append(cur.fetchone()[0])

        def unlock(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.execute("SELECT RELEASE_LOCK(CONCAT('agentaudit-checkpoint:', DATABASE()))")
                cur.fetchall()

        with self._lock:  # the session that holds the lock runs the transaction
            self._run_outside(lock)
            if got != [1]:
                raise StoreError(f"another process held the checkpoint lock of {self.url} for {_LOCK_WAIT} s")
            try:
                # no retry on a new connection: it would not hold the lock
                return self._run(fn, write=True, retry=False)
            finally:
                try:
                    self._run_outside(unlock)
                except StoreError:
                    pass  # the session is gone, and its lock with it

    def checkpoint(self, *, timeout: float | None = None) -> Checkpoint | None:
        """Make a checkpoint now over every run finished or grown since the last
        (None when nothing changed), chained to the newest one any process made,
        then hand every checkpoint the sink has not taken yet to the sink. The
        checkpointer thread calls this every ``interval`` seconds."""
        if self.read_only:
            raise StoreError(f"the store for {self.url} was opened read-only")
        self.flush(timeout)
        policy = self._policy()
        dialect = self.dialect

        def make(cur: Any) -> Checkpoint | None:
            sql = _Cursor(cur)
            entries = collect_entries(sql, lambda ids: contents(cur, dialect, ids), provisional=PROVISIONAL)
            return commit_checkpoint(sql, entries, policy) if entries else None

        made = self._exclusive(make)
        self._export(policy)
        return made

    def _export(self, policy: CheckpointPolicy) -> None:
        sink = policy.write_sink
        if sink is None or self.read_only:
            return
        rows = self._query("SELECT seq FROM checkpoints WHERE exported = 0 ORDER BY seq")
        if not rows:
            return
        pending, _ = self._load(after=int(rows[0][0]) - 1)

        def failed() -> None:
            self.checkpoint_failures += 1

        done = export_pending(pending, sink, failed)
        if done:
            def mark(cur: Any) -> None:
                cur.executemany("UPDATE checkpoints SET exported = 1 WHERE seq = %s", [(s,) for s in done])

            self._run(mark, write=True)

    def _load(self, after: int = 0) -> tuple[list[Checkpoint], list[Finding]]:
        dialect = self.dialect

        def load(cur: Any) -> tuple[list[Checkpoint], list[Finding]]:
            cur.execute(dialect.table_exists_sql(), ("checkpoints",))
            if not cur.fetchone()[0]:
                return [], []  # a schema older than checkpoints, opened read-only
            return load_checkpoints(_Cursor(cur), after=after)

        return self._run(load)

    def run_rows(self, run_id: str) -> RunContent:
        """The run's row (in the text form its seal covers) and its events, as the
        checkpoints digest them (None: no such run)."""
        dialect = self.dialect
        return self._run(lambda cur: contents(cur, dialect, [run_id])[run_id])

    def _run_contents(self, run_ids: Sequence[str]) -> dict[str, RunContent]:
        dialect = self.dialect
        return self._run(lambda cur: contents(cur, dialect, run_ids))

    # -- holds and retention --------------------------------------------------------------

    def _ids(self, run_ids: Iterable[str], filter: RunFilter | None) -> list[str]:
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        for run_id in ids:
            if not isinstance(run_id, str) or not self._query("SELECT 1 FROM runs WHERE run_id = %s", (run_id,)):
                raise RunNotFoundError(f"no run {run_id!r} in {self.url}")
        if filter is not None:
            ids.extend(run.run_id for run in self.iter_runs(filter))
        return list(dict.fromkeys(ids))

    def _upsert(self, table: str, key: str, column: str) -> str:
        """Insert a row of ``table`` or, when its ``key`` is there, set ``column``."""
        if self.dialect.name == "postgresql":
            return f"ON CONFLICT ({key}) DO UPDATE SET {column} = excluded.{column}"
        return f"ON DUPLICATE KEY UPDATE {column} = VALUES({column})"

    def hold(self, run_ids: Iterable[str] = (), *, filter: RunFilter | None = None, reason: str = "") -> list[str]:
        """Put runs (by id, and/or every run ``filter`` matches) under legal hold:
        purge, delete and erase refuse them until released. Returns the ids held."""
        if not isinstance(reason, str):
            raise TypeError(f"reason is text, got {type(reason).__name__}")
        ids = self._ids(run_ids, filter)
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        sql = f"INSERT INTO holds (run_id, reason, held_at) VALUES (%s, %s, %s) {self._upsert('holds', 'run_id', 'reason')}"

        def hold(cur: Any) -> None:
            if ids:
                cur.executemany(sql, [(run_id, reason, now) for run_id in ids])

        self._run(hold, write=True)
        return ids

    def release(self, run_ids: Iterable[str] = (), *, filter: RunFilter | None = None) -> list[str]:
        """Lift the legal hold of runs; returns the ids that were held."""
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        if filter is not None:
            ids.extend(run.run_id for run in self.iter_runs(filter))
        ids = list(dict.fromkeys(ids))

        def release(cur: Any) -> list[str]:
            released = []
            for run_id in ids:
                cur.execute("DELETE FROM holds WHERE run_id = %s", (run_id,))
                if cur.rowcount:
                    released.append(run_id)
            return released

        return self._run(release, write=True)

    def holds(self) -> list[Hold]:
        """Every run under legal hold."""
        rows = self._query("SELECT run_id, reason, held_at FROM holds ORDER BY held_at, run_id")
        return [Hold(str(run_id), str(reason), str(held_at)) for run_id, reason, held_at in rows]

    @property
    def retention_floor(self) -> timedelta | None:
        """The youngest a run may be and still be purged or deleted (None: no floor)."""
        rows = self._query("SELECT value FROM settings WHERE name = %s", (FLOOR_SETTING,))
        return floor_of(rows[0][0]) if rows else None

    def set_retention_floor(self, floor: timedelta | None) -> None:
        """Set (or, with None, remove) the retention floor, kept in the database so
        every process of the fleet and the command line honour it."""
        if floor is not None and (not isinstance(floor, timedelta) or floor <= timedelta(0)):
            raise ValueError(f"the retention floor is a positive timedelta or None, got {floor!r}")
        upsert = self._upsert("settings", "name", "value")

        def store(cur: Any) -> None:
            if floor is None:
                cur.execute("DELETE FROM settings WHERE name = %s", (FLOOR_SETTING,))
            else:
                cur.execute(f"INSERT INTO settings (name, value) VALUES (%s, %s) {upsert}",
                            (FLOOR_SETTING, str(floor.total_seconds())))

        self._run(store, write=True)

    @staticmethod
    def _floor(cur: Any) -> timedelta | None:
        cur.execute("SELECT value FROM settings WHERE name = %s", (FLOOR_SETTING,))
        row = cur.fetchone()
        return floor_of(row[0]) if row else None

    # -- removal on the record ------------------------------------------------------------

    def _removal_entries(self, cur: Any, run_ids: Sequence[str], *, what: str) -> list[tuple[Entry, str]]:
        """The ``purged`` entries of ``run_ids`` (each with its start), refusing
        (`RetentionError`, nothing deleted) held runs and runs inside the floor."""
        floor = self._floor(cur)
        held: set[str] = set()
        for start in range(0, len(run_ids), _PAGE):
            chunk = list(run_ids[start : start + _PAGE])
            cur.execute(f"SELECT run_id FROM holds WHERE run_id IN ({_marks(chunk)})", chunk)
            held.update(str(row[0]) for row in cur.fetchall())
        found = contents(cur, self.dialect, list(run_ids))
        entries = []
        for run_id in run_ids:
            row, events = found[run_id]
            if row is None:
                if run_id in held:
                    check_removal(run_id, {}, held=True, floor=None, what=what)
                continue
            check_removal(run_id, row, held=run_id in held, floor=floor, what=what)
            entries.append((removal_entry(run_id, row, events), str(row.get("started_at"))))
        return entries

    def _purge_entries(self, cur: Any, before: datetime, statuses: Sequence[str]) -> list[tuple[Entry, str]]:
        """What a purge before ``before`` of runs in ``statuses`` removes (held runs
        stay), locked; `RetentionError` for a cutoff inside the retention floor."""
        check_floor(self._floor(cur), before)
        cur.execute(
            f"SELECT run_id FROM runs WHERE started_at < %s AND status IN ({_marks(statuses)}) "
            "AND run_id NOT IN (SELECT run_id FROM holds) ORDER BY run_id FOR UPDATE",
            (self.dialect.ts(before), *statuses),
        )
        return self._removal_entries(cur, [str(row[0]) for row in cur.fetchall()], what="purge")

    def _record_removal(self, cur: Any, entries: Sequence[tuple[Entry, str]]) -> None:
        """Record the removed runs in a checkpoint, in the removal's transaction."""
        if entries:
            commit_checkpoint(_Cursor(cur), [entry for entry, _ in entries], self._policy())

    def _after_removal(self) -> None:
        """Hand the removal's checkpoint to the sink."""
        try:
            self._export(self._policy())
        except Exception as exc:
            self.checkpoint_failures += 1
            logger.error("agentaudit: writing the purge checkpoint of %s to its sink failed: %s", self.url, exc)

    # -- erasure ----------------------------------------------------------------------------

    def erase(self, run_id: str, fields: Iterable[str] | None = None) -> int:
        """Remove the content of a finished run for a privacy request, as SQLite's
        `erase` does: each chosen value replaced by ``[erased]`` and its salt by its
        digest, so every hash and the seal still verify (`verify` says ``erased``;
        a checkpoint that took the run says so too). A run under legal hold is
        refused with `RetentionError`. The database's own old copies (PostgreSQL's
        dead row versions until VACUUM, the write-ahead log, binary logs, replicas,
        backups) are the operator's to expire: see docs/storage.md. Returns how
        many values were erased."""
        chosen = erase_fields(fields)
        dialect = self.dialect

        def erase(cur: Any) -> int:
            cur.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s FOR UPDATE", (run_id,))
            row = cur.fetchone()
            if row is None:
                raise RunNotFoundError(f"no run {run_id!r} to erase")
            run = record_of_row(row, dialect.from_ts)
            cur.execute("SELECT 1 FROM holds WHERE run_id = %s", (run_id,))
            if cur.fetchone() is not None:
                check_removal(run_id, {}, held=True, floor=None, what=f"erase of run {run_id}")
            if run.status == RunStatus.RUNNING.value:
                raise StoreError(f"run {run_id} is still running: erase it once it has finished")
            if not run.salt:
                raise StoreError(f"run {run_id} was written before erasable chains (chain v1): it cannot be erased")
            salt, names = erased_run_fields(run.salt, run._asdict(), chosen)
            if names:
                cur.execute(
                    f"UPDATE runs SET salt = %s, {', '.join(f'{name} = %s' for name in names)} WHERE run_id = %s",
                    (salt, *([ERASED] * len(names)), run_id),
                )
            erased = len(names)
            cur.execute(
                f"SELECT sequence, event_type, payload, salt FROM events WHERE {dialect.events_key_sql()} "
                "ORDER BY sequence FOR UPDATE",
                dialect.events_key_params(run_id),
            )
            for sequence, event_type, payload_text, event_salt in cur.fetchall():
                changed = erased_event(event_type, strict_json(payload_text), event_salt, chosen)
                if changed is None:
                    continue
                payload, new_salt, count = changed
                cur.execute(
                    f"UPDATE events SET payload = %s, salt = %s WHERE {dialect.events_key_sql()} AND sequence = %s",
                    (canonical_json(payload), new_salt, *dialect.events_key_params(run_id), sequence),
                )
                erased += count
            return erased

        return self._run(erase, write=True)
