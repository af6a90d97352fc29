"""What the PostgreSQL and MariaDB/MySQL stores share: the whole store, over a dialect.

Writes go through a store-owned writer thread (`_server_writer`), so an agent's hook
never waits on the network. Reads, maintenance (purge, reap, delete) and the
forwarder's ingest (`ServerStore.import_records`, the lease methods) run on the
caller's thread over a second connection, after this store's own queued writes are
committed, so a read sees every earlier write of the same store.

Verification is the same as on SQLite: the events' hash chain, and the run row's seal
computed over the row in SQLite's text form (see `_server_rows`).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any, TypeVar

from .._errors import CommitTimeout, RunNotFoundError, StoreError
from .._keys import Keyring, keyring_from
from .._model import (
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
from .._verify import RunRecord, strict_json, verify_run
from ..payloads import (
    IN_TOKENS,
    MODEL,
    OUT_TOKENS,
    RESOLVED_MODEL,
    STEP,
    THINKING_TOKENS,
    TOOL_CALL,
    TOOL_RESULT,
)
from ._checkpoint_log import resolve_policy
from ._run_ids import MAX_CANDIDATES, ambiguous, prefix_forms, short_id, upper_bound
from ._server_checkpoints import ServerCheckpoints
from ._server_dialect import HAS_ERROR, Dialect, midnight, month_start
from ._server_rows import (
    EVENT_COLUMNS,
    RUN_COLUMNS,
    event_from_row,
    event_record_of_row,
    event_values,
    record_of_row,
    run_from_row,
    run_values,
)
from ._server_schema import check_readable, migrate
from ._server_summary import (
    GRAIN_DAY,
    GRAIN_DAY_ALL,
    GRAIN_MONTH,
    KINDS,
    apply_rollup,
    bucket_sql,
    forget_runs,
    keep_rollup,
    percentiles,
    rank_buckets_sql,
    rank_days_sql,
    read_runs,
)
from ._server_writer import (
    COMMIT_DELAY,
    AppendEvents,
    FinishRun,
    Flush,
    ServerWriter,
    StartRun,
    event_insert_sql,
    reseal,
)

__all__ = ["SUMMARY_GROUPS", "Lease", "ServerStore"]

logger = logging.getLogger("agentaudit")

T = TypeVar("T")

SUMMARY_GROUPS = ("model", "caller", "day", "name", "status")
FAILED_STATUSES = (RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.ABANDONED)
ORDERS = ("started_at", "duration", "tokens", "cost")
_SPREADS = ("duration", "step", "tool")  # what `summary` gives percentiles of
_PAGE = 500
_MAX_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Lease:
    """A writing process's claim to be alive: its runs are its own until ``expires_at``
    (the database's clock) passes without a renewal."""

    holder_id: str
    host: str
    pid: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime


class ServerStore(ServerCheckpoints):
    """Runs and events in a database server (see `PostgresStore`, `MySQLStore`).

    ``max_queue`` bounds what waits for the writer thread; an append that finds it
    full is refused at once with `StoreError` (the Writer counts the event dropped;
    a tool's result is never refused). ``close_timeout`` bounds the final flush of
    `close`. ``commit_delay``: how long an event nobody waits for may wait for
    company. ``key``: the chain's key or keyring (see `agentaudit.SQLiteStore`).
    ``read_only=True`` opens an existing agentaudit database for reading:
    no migration, no writer thread, a read-only session; a database that holds no
    agentaudit schema is refused with `StoreError`. ``checkpoints``: an
    `aa.CheckpointPolicy` (signed checkpoints every ``interval`` seconds and at
    close, chained with those of every other process; see `_server_checkpoints`),
    False for none, None (default) for the environment's (``AGENTAUDIT_SIGNING_KEY``).
    """

    dialect_class: type[Dialect]  # each database's store names its own

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        max_queue: int = 10_000,
        close_timeout: float = 5.0,
        commit_delay: float = COMMIT_DELAY,
        key: Any = None,
        checkpoints: Any = None,
    ) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ValueError(f"{type(self).__name__} needs a database URL, got {url!r}")
        # checked before anything is opened: a bad policy leaves no connection or thread
        policy = resolve_policy(checkpoints, read_only=bool(read_only))
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be an int >= 1, got {max_queue!r}")
        for name, value in (("close_timeout", close_timeout), ("commit_delay", commit_delay)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
            if not 0 <= value <= _MAX_SECONDS:
                raise ValueError(f"{name} must be between 0 and {_MAX_SECONDS:g} seconds, got {value!r}")
        # The chain's keys (see `_keys`): runs recorded through this store are sealed
        # with the key they name; all of them verify.
        self.keyring: Keyring | None = keyring_from(key)
        self.dialect = self.dialect_class(url)
        self.url = self.dialect.redacted_url()
        self.read_only = bool(read_only)
        self.max_queue = max_queue
        self.close_timeout = float(close_timeout)
        self.commit_delay = float(commit_delay)
        self._closed = False
        self._close_lock = threading.Lock()
        self._lock = threading.RLock()  # the second connection: reads and maintenance
        self._writer_lock = threading.Lock()
        self._conn: Any = self.dialect.connect(read_only=self.read_only)
        try:
            if self.read_only:
                check_readable(self._conn, self.dialect)
            else:
                migrate(self._conn, self.dialect)
        except BaseException:
            self._conn.close()
            raise
        self._writer: ServerWriter | None = None
        if not self.read_only:
            self._writer = self._new_writer()
            weakref.finalize(self, self._writer.request_stop, self.close_timeout)
        _OPEN_STORES.add(self)
        self._init_checkpoints(policy)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("read-only" if self.read_only else "open")
        return f"{type(self).__name__}({self.url!r}, {state})"

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------
    def _new_writer(self) -> ServerWriter:
        writer = ServerWriter(
            self.dialect, max_queue=self.max_queue, keyring=self.keyring, commit_delay=self.commit_delay
        )
        writer.start()
        return writer

    def _live_writer(self) -> ServerWriter:
        if self._closed:
            raise StoreError(f"the store for {self.url} is closed")
        if self.read_only:
            raise StoreError(f"the store for {self.url} was opened read-only")
        writer = self._writer
        if writer is None:  # after a fork: the child's first write makes its own
            with self._writer_lock:
                if self._writer is None:
                    self._writer = self._new_writer()
                writer = self._writer
        return writer

    def _wait(self, future: Future[Any], timeout: float | None, what: str) -> Any:
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise CommitTimeout(f"{what} was not committed to {self.url} within {timeout:g} s; it stays queued") from None

    def _caught_up(self) -> None:
        """Wait until this store's queued writes are committed (reads see them)."""
        if self._closed:
            raise StoreError(f"the store for {self.url} is closed")
        writer = self._writer
        if writer is not None and writer.has_unwritten():
            self.flush()

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.dialect.connect(read_only=self.read_only)
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _run(self, fn: Callable[[Any], T], *, write: bool = False, retry: bool = True) -> T:
        """``fn(cursor)`` on the second connection, in one transaction; a dropped
        connection is opened again and ``fn`` retried once (every ``fn`` here is
        idempotent); other failures raise `StoreError`."""
        if write and self.read_only:
            raise StoreError(f"the store for {self.url} was opened read-only")
        self._caught_up()
        for attempt in (1, 2):
            with self._lock:
                try:
                    cur = self._connection().cursor()
                    cur.execute("BEGIN")
                    try:
                        result = fn(cur)
                        cur.execute("COMMIT")
                    except BaseException:
                        try:
                            cur.execute("ROLLBACK")
                        except Exception:
                            pass
                        raise
                    return result
                except StoreError:
                    raise
                except Exception as exc:
                    if self.dialect.is_disconnect(exc):
                        self._drop_connection()
                        if retry and attempt == 1:
                            continue
                    if isinstance(exc, (ValueError, TypeError, KeyError)) and not _is_driver_error(exc):
                        raise
                    raise StoreError(f"{self.url}: {_first_line(exc)}") from exc
        raise AssertionError("unreachable")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        def query(cur: Any) -> list[tuple[Any, ...]]:
            cur.execute(sql, tuple(params))
            return list(cur.fetchall())

        return self._run(query)

    # -- write side ------------------------------------------------------------------
    def start_run(self, run: Run) -> None:
        if not isinstance(run, Run):
            raise TypeError(f"start_run takes an aa.Run, got {type(run).__name__}")
        if run.key_id and (self.keyring is None or run.key_id not in self.keyring):
            # Its finish could not be sealed: refused here, not found broken later.
            raise StoreError(f"run {run.run_id} is keyed with key id {run.key_id}, which this store was not given")
        self._live_writer().submit(StartRun(run))

    def append_log(self, event: Event) -> None:
        self.append_events((event,))

    def append_events(self, events: Sequence[Event]) -> None:
        """Queue sealed events of one run (see `agentaudit.stores.BatchingStore`)."""
        events = tuple(events)
        for event in events:
            if not isinstance(event, Event):
                raise TypeError(f"append_events takes aa.Event values, got {type(event).__name__}")
        if not events:
            return
        bounded = not all(event.event_type == TOOL_RESULT for event in events)
        self._live_writer().submit(AppendEvents(events), bounded=bounded)

    def submit_finish(self, run_id: str, stats: RunStats, finished_at: datetime) -> Future[None]:
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
        """Wait until everything written so far is committed (`CommitTimeout` after
        ``timeout`` seconds: it stays queued)."""
        if self._closed:
            raise StoreError(f"the store for {self.url} is closed")
        writer = self._writer
        if writer is None or not writer.has_unwritten():
            return
        future: Future[Any] = Future()
        writer.submit(Flush(future), bounded=False)
        self._wait(future, timeout, "flush")

    def close(self) -> None:
        """Flush (for up to ``close_timeout`` seconds), stop the writer, disconnect."""
        self._close(self.close_timeout)

    def _close(self, timeout: float) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._stop_checkpointer(timeout)  # its last checkpoint, while the store is open
            self._closed = True
        _OPEN_STORES.discard(self)
        writer, self._writer = self._writer, None
        if writer is not None:
            left = writer.stop(timeout)
            if left:
                logger.error("agentaudit: %d items were not written to %s before close gave up", left, self.url)
        with self._lock:
            self._drop_connection()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dropped(self) -> int:
        writer = self._writer
        return writer.dropped if writer is not None else 0

    @property
    def failed(self) -> int:
        writer = self._writer
        return writer.failed if writer is not None else 0

    def backlog(self) -> int:
        """Items queued for the server and not yet committed."""
        writer = self._writer
        return writer.backlog() if writer is not None else 0

    # -- read side -------------------------------------------------------------------
    def _runs(self, rows: Iterable[Sequence[Any]]) -> list[Run]:
        return [run_from_row(row, self.dialect.from_ts) for row in rows]

    def get_run(self, run_id: str) -> Run | None:
        rows = self._query(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s", (run_id,))
        return self._runs(rows)[0] if rows else None

    def get_logs(
        self,
        run_id: str,
        *,
        event_types: Iterable[str] | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[Event]:
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE {self.dialect.events_key_sql()} AND sequence > %s"
        params: list[Any] = [*self.dialect.events_key_params(run_id), after]
        if event_types is not None:
            types = [event_types] if isinstance(event_types, str) else list(event_types)
            if not types:
                return []
            sql += f" AND event_type IN ({_marks(types)})"
            params.extend(types)
        sql += " ORDER BY sequence"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        return [event_from_row(row) for row in self._query(sql, params)]

    def list_runs(self, filter: RunFilter | None = None) -> list[Run]:
        return list(self.iter_runs(filter))

    def count_runs(self, filter: RunFilter | None = None) -> int:
        where, params = self._where(filter or RunFilter())
        return int(self._query(f"SELECT count(*) FROM runs{where}", params)[0][0])

    def children(self, run_id: str) -> list[Run]:
        rows = self._query(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE parent_run_id = %s ORDER BY started_at, run_id",
            (run_id,),
        )
        return self._runs(rows)

    def iter_runs(self, filter: RunFilter | None = None) -> Iterator[Run]:
        """Matching runs in the filter's order (newest first by default), a page at a
        time (constant memory; by start time, keyset paging)."""
        flt = filter or RunFilter()
        where, params = self._where(flt)
        order_by = flt.order_by
        ascending = flt.ascending
        if order_by not in ORDERS:
            raise ValueError(f"order_by must be one of {', '.join(ORDERS)}; got {order_by!r}")
        remaining = flt.limit
        offset = flt.offset
        way = "ASC" if ascending else "DESC"
        cursor: tuple[Any, str] | None = None
        while remaining is None or remaining > 0:
            page = _PAGE if remaining is None else min(_PAGE, remaining)
            sql = f"SELECT {RUN_COLUMNS} FROM runs{where}"
            page_params = list(params)
            if order_by == "started_at":
                if cursor is not None:
                    op = ">" if ascending else "<"
                    sql += (" AND " if where else " WHERE ") + (
                        f"(started_at {op} %s OR (started_at = %s AND run_id {op} %s))"
                    )
                    page_params += [cursor[0], cursor[0], cursor[1]]
                sql += f" ORDER BY started_at {way}, run_id {way} LIMIT %s OFFSET %s"
                page_params += [page, offset]
            else:
                expr = self._order_expr(order_by)
                sql += f" ORDER BY ({expr}) IS NULL, {expr} {way}, started_at {way}, run_id {way} LIMIT %s OFFSET %s"
                page_params += [page, offset]
            rows = self._query(sql, page_params)
            if order_by == "started_at":
                offset = 0
            else:
                offset += len(rows)
            yield from self._runs(rows)
            if len(rows) < page:
                return
            cursor = (rows[-1][5], rows[-1][0])
            if remaining is not None:
                remaining -= len(rows)

    def _order_expr(self, order_by: str) -> str:
        if order_by == "duration":
            return self.dialect.duration_sql()
        if order_by == "tokens":
            return "(input_tokens + output_tokens)"
        return "cost_usd"

    def _where(self, flt: RunFilter) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        ts = self.dialect.ts
        if flt.caller is not None:
            # the caller index leaves out runs without one: say so, so it is used
            clauses.append("caller = %s AND caller <> ''" if flt.caller else "caller = %s")
            params.append(flt.caller)
        if flt.name is not None:
            clauses.append("name = %s")
            params.append(flt.name)
        if flt.statuses is not None:
            if not flt.statuses:
                clauses.append("1 = 0")
            else:
                clauses.append(f"status IN ({_marks(flt.statuses)})")
                params.extend(s.value for s in flt.statuses)
        if flt.since is not None:
            clauses.append("started_at >= %s")
            params.append(ts(flt.since))
        if flt.until is not None:
            clauses.append("started_at < %s")
            params.append(ts(flt.until))
        if flt.parent_run_id is not None:
            clauses.append("parent_run_id = %s")
            params.append(flt.parent_run_id)
        model = flt.model
        if model is not None:
            clauses.append("model = %s AND model <> ''" if model else "model = %s")
            params.append(model)
        has_error = flt.has_error
        if has_error is not None:
            # as the partial index states it (PostgreSQL uses it only then)
            clauses.append(HAS_ERROR if has_error else f"NOT {HAS_ERROR}")
        min_cost = flt.min_cost_usd
        if min_cost is not None:
            clauses.append("cost_usd >= %s")
            params.append(float(min_cost))
        text = flt.text
        if text is not None:
            words = search_terms(text)
            if words:
                clause, extra = self.dialect.text_match_sql(words)
                clauses.append(clause)
                params.extend(extra)
        return ((" WHERE " + " AND ".join(clauses)) if clauses else ""), params

    def purge(self, before: datetime, statuses: Iterable[RunStatus | str] | None = None) -> int:
        """Delete runs started before ``before`` (and their events) whose status is one
        of ``statuses`` (default: every terminal status, never ``running``). Runs
        under legal hold stay; a cutoff inside the retention floor raises
        `RetentionError` and deletes nothing; what is deleted is recorded as
        ``purged`` in a checkpoint (under the checkpoint lock). On PostgreSQL a
        month of events whose runs all go is dropped whole (its partition), never
        rewritten row by row."""
        if not isinstance(before, datetime) or before.tzinfo is None:
            raise ValueError("purge(before=...) needs a timezone-aware datetime")
        chosen = (
            TERMINAL_STATUSES
            if statuses is None
            else tuple(RunStatus.parse(s, what="purge status") for s in _as_list(statuses))
        )
        if not chosen:
            return 0
        values = [s.value for s in chosen]
        cut = self.dialect.ts(before)

        def purge(cur: Any) -> int:
            # Held runs stay, the floor refuses; what goes is read (and locked) to be recorded.
            recorded = self._purge_entries(cur, before, values)
            deleted = 0
            kept = f"status NOT IN ({_marks(values)}) OR run_id IN (SELECT run_id FROM holds)"
            for name, first, end in self.dialect.whole_partitions(cur, before):
                lo, hi = self.dialect.ts(midnight(first)), self.dialect.ts(midnight(end))
                cur.execute(
                    f"SELECT count(*) FROM runs WHERE started_at >= %s AND started_at < %s AND ({kept})",
                    (lo, hi, *values),
                )
                if cur.fetchone()[0]:
                    continue  # a run of that month stays: its month's events go row by row
                with forget_runs(cur, self.dialect, "r.started_at >= %s AND r.started_at < %s", (lo, hi)):
                    cur.execute(f"DROP TABLE {name}")
                    cur.execute("DELETE FROM runs WHERE started_at >= %s AND started_at < %s", (lo, hi))
                    deleted += cur.rowcount
            cond = (
                f"started_at < %s AND status IN ({_marks(values)}) "
                "AND run_id NOT IN (SELECT run_id FROM holds)"
            )
            gone = (
                f"r.started_at < %s AND r.status IN ({_marks(values)}) "
                "AND r.run_id NOT IN (SELECT run_id FROM holds)"
            )
            with forget_runs(cur, self.dialect, gone, (cut, *values)):
                if self.dialect.partitioned:
                    cur.execute(
                        f"DELETE FROM events WHERE run_started_at < %s AND run_id IN "
                        f"(SELECT run_id FROM runs WHERE {cond})",
                        (cut, cut, *values),
                    )
                else:
                    cur.execute(
                        f"DELETE FROM events WHERE run_id IN (SELECT run_id FROM runs WHERE {cond})",
                        (cut, *values),
                    )
                cur.execute(f"DELETE FROM runs WHERE {cond}", (cut, *values))
                deleted += int(cur.rowcount)
            if deleted != len(recorded):  # a run became purgeable meanwhile: not on the record
                raise StoreError(f"runs of {self.url} changed while the purge ran: nothing was purged; run it again")
            self._record_removal(cur, recorded)
            return deleted

        deleted = self._exclusive(purge)
        self._after_removal()
        return deleted

    def delete_run(self, run_id: str) -> bool:
        """Delete one run and its events; False when there is none. A run under
        legal hold or younger than the retention floor raises `RetentionError`;
        the deletion is recorded as ``purged`` in a checkpoint."""

        def delete(cur: Any) -> bool:
            recorded = self._removal_entries(cur, [run_id], what=f"delete of run {run_id}")
            with forget_runs(cur, self.dialect, "r.run_id = %s", (run_id,)):
                cur.execute(f"DELETE FROM events WHERE {self.dialect.events_key_sql()}", self.dialect.events_key_params(run_id))
                cur.execute("DELETE FROM runs WHERE run_id = %s", (run_id,))
                deleted = bool(cur.rowcount > 0)
            self._record_removal(cur, recorded)
            return deleted

        deleted = self._exclusive(delete)
        self._after_removal()
        return deleted

    def verify(self, run_id: str, *, key: Any = None, require_key: bool = False) -> VerifyResult:
        """Check the run's header, chain and seal with the one verification every
        store uses (`_verify.verify_run`), with ``key`` (default: this store's).
        Never raises on malformed data; `RunNotFoundError` when the database holds
        neither the run nor any of its events."""
        keyring = self.keyring if key is None else keyring_from(key)

        def read(cur: Any) -> tuple[Any, list[tuple[Any, ...]]]:
            cur.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s", (run_id,))
            row = cur.fetchone()
            # by run id alone: events whose run row is gone must still be found
            cur.execute(
                f"SELECT id, {EVENT_COLUMNS} FROM events WHERE run_id = %s ORDER BY sequence, id", (run_id,)
            )
            return row, list(cur.fetchall())

        row, event_rows = self._run(read)
        if row is None and not event_rows:
            raise RunNotFoundError(f"no run {run_id!r} in {self.url}")
        try:
            record = record_of_row(row, self.dialect.from_ts) if row is not None else None
        except (TypeError, ValueError, AttributeError):
            record = None  # unreadable times: verify_run reports the row as such
            if row is not None:
                record = _raw_record(row)
        events = [event_record_of_row(found[1:], int(found[0])) for found in event_rows]
        return verify_run(record, events, keyring, run_id=run_id, require_key=require_key)

    def orphaned_run_ids(self) -> list[str]:
        """Run ids that events name but ``runs`` does not hold (a deleted row)."""
        rows = self._query(
            "SELECT DISTINCT run_id FROM events WHERE run_id NOT IN (SELECT run_id FROM runs) ORDER BY run_id"
        )
        return [str(row[0]) for row in rows]

    # -- beyond the protocol: what the CLI and operators need ------------------------
    def resolve_run_id(self, prefix: str) -> str:
        """The one run id ``prefix`` names (as SQLite's: see `agentaudit.stores._run_ids`)."""
        if not isinstance(prefix, str) or not prefix.strip():
            raise RunNotFoundError("an empty run id matches nothing")
        forms = prefix_forms(prefix)
        if self._query("SELECT 1 FROM runs WHERE run_id = %s", (forms[0],)):
            return forms[0]
        for group in (forms[:1], forms[1:]):
            found: dict[str, str] = {}
            for form in group:
                rows = self._query(
                    "SELECT run_id, name FROM runs WHERE run_id >= %s AND run_id < %s ORDER BY run_id LIMIT %s",
                    (form, upper_bound(form), MAX_CANDIDATES + 1),
                )
                found.update((str(r), str(n)) for r, n in rows if str(r).startswith(form))
            if len(found) == 1:
                return next(iter(found))
            if found:
                raise RunNotFoundError(
                    ambiguous(prefix.strip(), sorted(found.items()), len(found) > MAX_CANDIDATES)
                )
        raise RunNotFoundError(f"no run {prefix.strip()!r} in {self.url}")

    def short_run_ids(self, run_ids: Iterable[str]) -> dict[str, str]:
        """Each id shortened to the shortest prefix no other stored id shares."""
        shown: dict[str, str] = {}
        for run_id in run_ids:
            if run_id in shown:
                continue
            before = self._query("SELECT max(run_id) FROM runs WHERE run_id < %s", (run_id,))[0][0]
            after = self._query("SELECT min(run_id) FROM runs WHERE run_id > %s", (run_id,))[0][0]
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
        """Events written after position ``cursor``, oldest first, with positions.
        (Positions come from a sequence: a transaction that commits late can land
        behind a position already passed, and a cursor alone misses it; ``agentaudit
        tail -f`` follows with `event_positions` and `events_at` instead: see
        `agentaudit.stores._follow`.)"""
        where, params = _event_where(run_id, event_types)
        rows = self._query(
            f"SELECT id, {EVENT_COLUMNS} FROM events WHERE id > %s{where} ORDER BY id LIMIT %s",
            (cursor, *params, limit),
        )
        return [(int(row[0]), event_from_row(row[1:])) for row in rows]

    def event_positions(
        self, after: int, *, within: Sequence[tuple[int, int]] = (), limit: int = 1000
    ) -> list[int]:
        """The positions held above ``after`` (the first ``limit``) and inside the
        inclusive ranges ``within`` (the first ``limit`` there), ascending, of every
        run and type: how a follower tells a late commit from a position filtered
        out (`agentaudit.stores._follow`)."""
        found = {int(p) for (p,) in self._query(
            "SELECT id FROM events WHERE id > %s ORDER BY id LIMIT %s", (int(after), int(limit))
        )}
        if within:
            ranges = " OR ".join(["id BETWEEN %s AND %s"] * len(within))
            bounds = [int(bound) for pair in within for bound in pair]
            rows = self._query(f"SELECT id FROM events WHERE {ranges} ORDER BY id LIMIT %s", (*bounds, int(limit)))
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
                f"SELECT id, {EVENT_COLUMNS} FROM events WHERE id IN ({_marks(chunk)}){where} ORDER BY id",
                (*chunk, *params),
            )
            found.extend((int(row[0]), event_from_row(row[1:])) for row in rows)
        return found

    def recent_events(
        self,
        limit: int,
        *,
        run_id: str | None = None,
        event_types: Iterable[str] | None = None,
    ) -> list[tuple[int, Event]]:
        where, params = _event_where(run_id, event_types)
        rows = self._query(
            f"SELECT id, {EVENT_COLUMNS} FROM events WHERE id > 0{where} ORDER BY id DESC LIMIT %s",
            (*params, limit),
        )
        return [(int(row[0]), event_from_row(row[1:])) for row in reversed(rows)]

    def last_event_position(self) -> int:
        return int(self._query("SELECT coalesce(max(id), 0) FROM events")[0][0])

    def run_models(self, run_ids: Iterable[str]) -> dict[str, str]:
        ids = list(run_ids)
        found: dict[str, str] = {}
        for start in range(0, len(ids), _PAGE):
            chunk = ids[start : start + _PAGE]
            rows = self._query(f"SELECT run_id, model FROM runs WHERE run_id IN ({_marks(chunk)})", chunk)
            found.update((str(r), str(m)) for r, m in rows)
        return found

    # Below this many matching runs, `summary` computes exactly (cheap there).
    summary_exact_below = 5000

    def summary(self, by: str = "day", filter: RunFilter | None = None) -> list[dict[str, Any]]:
        """Runs, failures, tokens, cost and time percentiles of the matching runs,
        grouped ``by`` model, caller, day (UTC), name or status; largest group first
        (day: newest first). As SQLite's; the percentiles (p50, p95, interpolated, in
        ms: finished runs' durations, steps' ``step_ms``, tool results'
        ``duration_ms``) are computed by the database.

        Grouped by day, model or status (or `summary_total`), filtered by nothing
        but ``since``/``until``/``model``/``status``, and matching at least
        `summary_exact_below` runs, the summary is read from the rollup that the
        writers keep (see `agentaudit.stores._server_summary`): counts, tokens and
        cost stay exact (cost up to float rounding), and each percentile is within
        ALPHA (0.99 %) relative error of the exact one. Any other grouping or filter,
        or fewer runs, is computed exactly from the runs and events."""
        if by not in SUMMARY_GROUPS:
            raise ValueError(f"summary groups by one of {', '.join(SUMMARY_GROUPS)}; got {by!r}")
        key = self.dialect.day_sql("started_at") if by == "day" else by
        return self._summarize(by, key, filter or RunFilter(), "1 DESC" if by == "day" else "2 DESC, 1")

    def summary_total(self, filter: RunFilter | None = None) -> dict[str, Any]:
        """`summary` of all the matching runs as one group (its key is ``"total"``)."""
        return self._summarize("total", "'total'", filter or RunFilter(), "1")[0]

    def _summarize(self, by: str, key: str, flt: RunFilter, order: str) -> list[dict[str, Any]]:
        if _rollup_serves(by, flt):
            rolled = self._rolled_up(by, key, flt)
            if rolled is not None:
                return _summary_entries(by, *rolled)
        where, params = self._where(flt)
        failed = ", ".join(f"'{s.value}'" for s in FAILED_STATUSES)
        totals = (
            f"""SELECT {key}, count(*),
                       sum(CASE WHEN status IN ({failed}) THEN 1 ELSE 0 END),
                       sum(CASE WHEN status <> 'running' THEN 1 ELSE 0 END),
                       sum(input_tokens), sum(output_tokens), sum(thinking_tokens),
                       sum(cost_usd), count(cost_usd), sum(tool_calls), sum(steps)
                FROM runs{where} GROUP BY 1 ORDER BY {order}""",
            params,
        )
        queries = [totals, *self._spreads(key, where, params, flt)]

        def summarize(cur: Any) -> list[list[tuple[Any, ...]]]:
            for statement in self.dialect.summary_setup():
                cur.execute(statement)
            found = []
            for sql, values in queries:
                cur.execute(sql, values)
                found.append(list(cur.fetchall()))
            return found

        rows, *spread_rows = self._run(summarize)
        spreads = {
            what: {group: (p50, p95) for group, p50, p95 in found}
            for what, found in zip(_SPREADS, spread_rows, strict=True)
        }
        return _summary_entries(by, rows, spreads)

    def _rolled_up(
        self, by: str, key: str, flt: RunFilter
    ) -> tuple[list[tuple[Any, ...]], dict[str, dict[Any, tuple[Any, Any]]]] | None:
        """The summary from the rollup's whole days, plus the partial days at the
        window's edges and the running runs read raw (bucketed alike); None when no
        whole day is covered or fewer than `summary_exact_below` runs match."""
        first = _next_midnight(flt.since) if flt.since is not None else None
        end = midnight(flt.until.astimezone(timezone.utc).date()) if flt.until is not None else None
        if first is not None and end is not None and first >= end:
            return None  # within a day: the exact path reads no more than this would
        statuses = [s.value for s in flt.statuses] if flt.statuses is not None else None
        lo, hi = (first.date() if first else None), (end.date() if end else None)
        segments: list[tuple[int, date | None, date | None]] = []  # (grain, from day, to day)
        if by == "day" and flt.model is None and statuses is None:
            segments.append((GRAIN_DAY_ALL, lo, hi))
        elif by == "day":
            segments.append((GRAIN_DAY, lo, hi))
        else:  # whole months from their cells, the days around them from theirs
            m0 = _month_ceil(lo) if lo is not None else None
            m1 = hi.replace(day=1) if hi is not None else None
            if m0 is not None and m1 is not None and m0 >= m1:
                segments.append((GRAIN_DAY, lo, hi))
            else:
                segments.append((GRAIN_MONTH, m0, m1))
                if lo is not None and m0 is not None and lo < m0:
                    segments.append((GRAIN_DAY, lo, m0))
                if m1 is not None and hi is not None and m1 < hi:
                    segments.append((GRAIN_DAY, m1, hi))
        spans: list[str] = []
        cparams: list[Any] = []
        for grain, since_day, until_day in segments:
            span = ["grain = %s"]
            cparams.append(grain)
            if since_day is not None:
                span.append("day >= %s")
                cparams.append(since_day)
            if until_day is not None:
                span.append("day < %s")
                cparams.append(until_day)
            spans.append("(" + " AND ".join(span) + ")")
        cond = ["(" + " OR ".join(spans) + ")"]
        if flt.model is not None:
            cond.append("model = %s")
            cparams.append(flt.model)
        if statuses is not None:
            cond.append(f"status IN ({_marks(statuses)})" if statuses else "1 = 0")
            cparams.extend(statuses)
        cell_key = {"day": "day", "total": "'total'"}.get(by, by)
        # raw parts group by day as a date too, so that they merge with the cells
        raw_key = self.dialect.rollup_day_sql("started_at") if by == "day" else key
        failed = ", ".join(f"'{s.value}'" for s in FAILED_STATUSES)
        queries: list[tuple[str, list[Any]]] = [
            (
                f"SELECT {cell_key}, sum(runs), sum(failed), "
                "sum(runs), sum(input_tokens), sum(output_tokens), sum(thinking_tokens), sum(cost_usd), "
                f"sum(priced), sum(tool_calls), sum(steps) FROM run_rollup WHERE {' AND '.join(cond)} "
                "GROUP BY 1",
                cparams,
            ),
        ]
        # what the cells do not hold: the partial days at the edges, and running runs
        raw: list[RunFilter] = []
        if flt.since is not None and first is not None and flt.since < first:
            raw.append(replace(flt, until=first))
        if flt.until is not None and end is not None and end < flt.until:
            raw.append(replace(flt, since=end))
        if statuses is None or RunStatus.RUNNING.value in statuses:
            raw.append(replace(flt, since=first, until=end, status=RunStatus.RUNNING))
        parts = [(f"SELECT {cell_key} AS k, kind, bucket, n FROM run_rollup_ms WHERE {' AND '.join(cond)}", cparams)]
        for part in raw:
            where, params = self._where(part)
            queries.append((
                f"SELECT {raw_key}, count(*), sum(CASE WHEN status IN ({failed}) THEN 1 ELSE 0 END), "
                "sum(CASE WHEN status <> 'running' THEN 1 ELSE 0 END), sum(input_tokens), "
                "sum(output_tokens), sum(thinking_tokens), sum(cost_usd), count(cost_usd), "
                f"sum(tool_calls), sum(steps) FROM runs{where} GROUP BY 1",
                params,
            ))
            parts.append(self._raw_buckets(raw_key, where, params, part))
        float_type = self.dialect.float_type

        def read(cur: Any) -> list[list[tuple[Any, ...]]]:
            found = []
            for sql, values in queries:
                cur.execute(sql, values)
                found.append(list(cur.fetchall()))
            # Every part's buckets merged (the raw parts that hold runs), and of each
            # group's merged buckets only those that hold the ranks p50 and p95
            # interpolate between: a few rows per group.
            used = [parts[0], *(part for part, rows in zip(parts[1:], found[1:], strict=True) if rows)]
            if len(used) == 1 and segments[0][0] == GRAIN_DAY_ALL:
                cur.execute(rank_days_sql(" AND ".join(cond), float_type), cparams)
            else:
                cur.execute(
                    rank_buckets_sql(" UNION ALL ".join(sql for sql, _ in used), float_type),
                    [value for _, values in used for value in values],
                )
            found.append(list(cur.fetchall()))
            return found

        *totals_found, ranked = self._run(read)

        def group_of(value: Any) -> Any:
            return value.isoformat() if by == "day" and not isinstance(value, str) else value

        totals: dict[Any, list[Any]] = {}
        for row in (row for found in totals_found for row in found):
            group = group_of(row[0])
            # cost (the 7th) is a float sum, the others counts (Decimal from some drivers)
            values = [float(v or 0) if at == 6 else int(v or 0) for at, v in enumerate(row[1:])]
            held = totals.get(group)
            if held is None:
                totals[group] = values
            else:
                totals[group] = [a + b for a, b in zip(held, values, strict=True)]
        if sum(int(v[0]) for v in totals.values()) < self.summary_exact_below:
            return None
        found_ranks: dict[str, dict[Any, list[tuple[int, int, int, int]]]] = {what: {} for what in KINDS}
        names = {kind: what for what, kind in KINDS.items()}
        for group, kind, bucket, n, upto, total in ranked:
            found_ranks[names[int(kind)]].setdefault(group_of(group), []).append(
                (int(bucket), int(n), int(upto), int(total))
            )
        spreads = {
            what: {group: percentiles(rows) for group, rows in by_group.items()}
            for what, by_group in found_ranks.items()
        }
        rows = [(group, *values) for group, values in totals.items() if int(values[0]) > 0]
        if by == "day":
            rows.sort(key=lambda row: row[0], reverse=True)
        else:
            rows.sort(key=lambda row: (-int(row[1]), row[0]))
        return rows, spreads

    def _raw_buckets(self, key: str, where: str, params: list[Any], flt: RunFilter) -> tuple[str, list[Any]]:
        """(group, kind, bucket, n) of the matching runs' durations and events' ms,
        bucketed as the rollup's are."""
        dialect = self.dialect
        and_ = " AND " if where else " WHERE "
        joined = "e.run_id = r.run_id"
        window, bounds = "", []
        if dialect.partitioned:
            joined += " AND e.run_started_at = r.started_at"
            if flt.since is not None:
                window += " AND e.run_started_at >= %s"
                bounds.append(dialect.ts(flt.since))
            if flt.until is not None:
                window += " AND e.run_started_at < %s"
                bounds.append(dialect.ts(flt.until))
        duration = dialect.rollup_duration_sql("runs")
        sql = (
            "SELECT k, kind, bucket, count(*) AS n FROM ("
            f"SELECT {key} AS k, {KINDS['duration']} AS kind, {bucket_sql(duration, dialect.int_type)} AS bucket "
            f"FROM runs{where}{and_}finished_at IS NOT NULL "
            "UNION ALL "
            f"SELECT r.k, CASE WHEN e.event_type = 'step' THEN {KINDS['step']} ELSE {KINDS['tool']} END, "
            f"{bucket_sql('e.ms', dialect.int_type)} "
            f"FROM (SELECT run_id, started_at, {key} AS k FROM runs{where}) r JOIN events e ON {joined} "
            f"WHERE e.event_type IN ('step', 'tool_result') AND e.ms IS NOT NULL{window}"
            ") s GROUP BY k, kind, bucket"
        )
        return sql, [*params, *params, *bounds]


    def _spreads(
        self, key: str, where: str, params: list[Any], flt: RunFilter
    ) -> list[tuple[str, list[Any]]]:
        """The queries of each group's p50 and p95 of run durations, step times and
        tool times (ms), in `_SPREADS` order."""
        dialect = self.dialect
        and_ = " AND " if where else " WHERE "
        joined = "e.run_id = r.run_id"
        window, bounds = "", []
        if dialect.partitioned:
            # the filter's start window, said of the events too: only its partitions
            # and its stretch of events_timing are read
            joined += " AND e.run_started_at = r.started_at"
            if flt.since is not None:
                window += " AND e.run_started_at >= %s"
                bounds.append(dialect.ts(flt.since))
            if flt.until is not None:
                window += " AND e.run_started_at < %s"
                bounds.append(dialect.ts(flt.until))
        runs = f"(SELECT run_id, started_at, {key} AS k FROM runs{where}) r"
        inner = {
            "duration": (
                f"SELECT {key} AS k, {dialect.duration_ms_sql()} AS v FROM runs{where}{and_}finished_at IS NOT NULL",
                params,
            ),
        }
        for what, event_type in (("step", STEP), ("tool", TOOL_RESULT)):
            inner[what] = (
                f"SELECT r.k AS k, e.ms AS v FROM {runs} JOIN events e ON {joined} "
                f"WHERE e.event_type = %s AND e.ms IS NOT NULL{window}",
                [*params, event_type, *bounds],
            )
        return [(dialect.percentiles_sql(inner[what][0]), inner[what][1]) for what in _SPREADS]

    def reap(self, stale_after: timedelta, *, now: datetime | None = None) -> list[str]:
        """Mark ``abandoned`` every run still ``running``, on any host, whose last event
        (or start, when it has none) is older than ``stale_after``; each in a
        transaction of its own that re-reads it locked, so two reapers mark it once."""
        if not isinstance(stale_after, timedelta) or stale_after <= timedelta(0):
            raise ValueError(f"stale_after must be a positive timedelta, got {stale_after!r}")
        moment = now or datetime.now(timezone.utc)
        if moment.tzinfo is None:
            raise ValueError("reap(now=...) needs a timezone-aware datetime")
        cutoff = moment - stale_after
        if self.read_only:
            raise StoreError(f"the store for {self.url} was opened read-only")
        marked: list[str] = []
        for (run_id,) in self._query("SELECT run_id FROM runs WHERE status = 'running' ORDER BY run_id"):

            def reap_one(cur: Any, run_id: str = str(run_id)) -> bool:
                cur.execute(
                    "SELECT started_at FROM runs WHERE run_id = %s AND status = 'running' FOR UPDATE", (run_id,)
                )
                row = cur.fetchone()
                if row is None:
                    return False
                try:
                    last = _last_event_time(cur, self.dialect, run_id) or self.dialect.from_ts(row[0])
                except (TypeError, ValueError):  # a malformed time: verify reports it
                    return False
                if last >= cutoff:
                    return False
                with keep_rollup(cur, self.dialect, (run_id,)):
                    return _abandon(
                        cur, self.dialect, run_id,
                        f"abandoned: no event since {last.astimezone(timezone.utc).isoformat(timespec='microseconds')} (reaped)",
                        self.keyring,
                    )

            if self._run(reap_one, write=True):
                marked.append(str(run_id))
        return marked

    # -- the forwarder's ingest (store-and-forward from each worker's spool) ----------
    def import_records(self, runs: Sequence[Run], events: Sequence[Event], seals: Mapping[str, str]) -> None:
        """Take runs and events forwarded from a spool, in one transaction, idempotently:

        - an event already held (same run and sequence) is skipped: re-sending never
          duplicates; hashes and salts are stored as given, never recomputed;
        - a run not held is inserted as given (a terminal one with its seal from
          ``seals``, stored verbatim); a held run takes a terminal row only while it
          is ``running``, so its status never goes back from terminal to running and
          a second finish never replaces the first;
        - a run this server marked ``abandoned`` (its process's lease expired, or it
          was reaped) takes its host's real final row and seal when they arrive: the
          host was cut off, not dead, and its own record is the true one. Events of
          such a run that arrive while it is still abandoned are kept, and the
          abandoned row's totals and seal are brought up to date so it verifies.

        Events must belong to runs held or given in the same call. Raises
        `StoreError` when the database cannot be reached (nothing is half-written)."""
        runs = list(runs)
        events = list(events)
        for run in runs:
            if not isinstance(run, Run):
                raise TypeError(f"import_records takes aa.Run values, got {type(run).__name__}")
        for event in events:
            if not isinstance(event, Event):
                raise TypeError(f"import_records takes aa.Event values, got {type(event).__name__}")
        if not isinstance(seals, Mapping):
            raise TypeError(f"import_records takes seals as a mapping, got {type(seals).__name__}")
        for run_id, seal in seals.items():
            if not isinstance(seal, str):
                raise TypeError(f"the seal of run {run_id!r} must be a str, got {type(seal).__name__}")
        if not runs and not events:
            return
        dialect = self.dialect
        if dialect.partitioned and runs:
            months = sorted({month_start(run.started_at) for run in runs})
            self._run_outside(lambda conn: dialect.ensure_partitions(conn, months))

        def ingest(cur: Any) -> None:
            given = {run.run_id: run for run in runs}
            held: dict[str, tuple[str, datetime]] = {}
            wanted = sorted(set(given) | {event.run_id for event in events})
            for start in range(0, len(wanted), _PAGE):  # locked in one order: no deadlock
                chunk = wanted[start : start + _PAGE]
                cur.execute(
                    f"SELECT run_id, status, started_at FROM runs WHERE run_id IN ({_marks(chunk)}) "
                    "ORDER BY run_id FOR UPDATE",
                    chunk,
                )
                for run_id, status, started in cur.fetchall():
                    held[str(run_id)] = (str(status), dialect.from_ts(started))
            before = read_runs(cur, dialect, wanted)  # the rollup takes the difference
            # A batch's work in a constant number of round trips: the new runs in one
            # multi-row insert, the runs that take their final row in one batch of
            # updates, the events of the whole batch in one, the resolved models in one
            # (only the late events of a run this server abandoned go one run at a time).
            replaced: set[str] = set()
            inserts: list[tuple[Any, ...]] = []
            updates: list[tuple[Any, ...]] = []
            names = [n for n in RUN_COLUMNS.split(", ") if n not in ("run_id", "model")]
            for run in runs:
                seal = seals.get(run.run_id, "") if run.status.is_terminal else ""
                values = run_values(run, dialect.ts, model="", seal=seal)
                found = held.get(run.run_id)
                if found is None:
                    inserts.append(values)
                    held[run.run_id] = (run.status.value, run.started_at)
                    continue
                status = found[0]
                takes_final = run.status.is_terminal and (
                    status == RunStatus.RUNNING.value
                    or (status == RunStatus.ABANDONED.value and run.status is not RunStatus.ABANDONED)
                )
                if takes_final:
                    # every column but run_id and model (derived from the events)
                    by_name = dict(zip(RUN_COLUMNS.split(", "), values, strict=True))
                    updates.append((*(by_name[n] for n in names), run.run_id))
                    held[run.run_id] = (run.status.value, found[1])
                    replaced.add(run.run_id)
            if inserts:
                cur.executemany(
                    dialect.insert_unless_present.format(
                        table="runs", columns=RUN_COLUMNS, marks=_marks(inserts[0]), first="run_id"
                    ),
                    inserts,
                )
            if updates:  # after the inserts: a run given twice is inserted, then finished
                cur.executemany(
                    f"UPDATE runs SET {', '.join(f'{n} = %s' for n in names)} WHERE run_id = %s", updates
                )
            grouped: dict[str, list[Event]] = {}
            for event in events:
                grouped.setdefault(event.run_id, []).append(event)
            sql = event_insert_sql(dialect, True)
            rows: list[tuple[Any, ...]] = []  # written together, in the order given
            models: list[tuple[str, str]] = []  # (run_id, its first resolved model here)

            def write_rows() -> None:
                if rows:
                    cur.executemany(sql, rows)
                    rows.clear()
                if models:
                    cur.execute(
                        f"UPDATE runs SET model = CASE run_id {' '.join(['WHEN %s THEN %s'] * len(models))} END "
                        f"WHERE model = '' AND run_id IN ({_marks(models)})",
                        [*(value for pair in models for value in pair), *(run_id for run_id, _ in models)],
                    )
                    models.clear()

            for run_id, run_events in grouped.items():
                found = held.get(run_id)
                if found is None:
                    raise StoreError(f"events of run {run_id!r} arrived, but the run itself never did")
                model = _resolved_model(run_events)
                if found[0] != RunStatus.ABANDONED.value or run_id in replaced:
                    rows.extend(_event_rows(dialect, run_events, found[1]))
                    if model is not None:
                        models.append((run_id, model))
                    continue
                # Rare: late events of a run this server abandoned. Written on their own,
                # to learn whether any was new (then its totals and seal are redone).
                write_rows()
                cur.executemany(sql, _event_rows(dialect, run_events, found[1]))
                added = cur.rowcount
                if model is not None:
                    cur.execute("UPDATE runs SET model = %s WHERE run_id = %s AND model = ''", (model, run_id))
                if added:
                    _abandon(cur, dialect, run_id, None, self.keyring)
            write_rows()
            apply_rollup(cur, dialect, read_runs(cur, dialect, wanted).minus(before))

        self._run(ingest, write=True)

    def _run_outside(self, fn: Callable[[Any], Any]) -> None:
        """``fn(connection)`` on the second connection, outside a transaction."""
        with self._lock:
            try:
                fn(self._connection())
            except Exception as exc:
                if self.dialect.is_disconnect(exc):
                    self._drop_connection()
                raise StoreError(f"{self.url}: {_first_line(exc)}") from exc

    # -- leases: which writing processes are alive ----------------------------------
    def acquire_lease(self, holder_id: str, host: str, pid: int, ttl: float | timedelta) -> Lease:
        """Take (or take again) the lease of ``holder_id`` for ``ttl`` seconds of the
        database's clock."""
        seconds = _seconds(ttl)
        _check_holder(holder_id)
        now, expires = self.dialect.now_sql(), self.dialect.expires_sql()

        def acquire(cur: Any) -> Lease:
            cur.execute(
                f"UPDATE leases SET host = %s, pid = %s, renewed_at = {now}, expires_at = {expires} "
                "WHERE holder_id = %s",
                (host, pid, seconds, holder_id),
            )
            if cur.rowcount == 0:
                sql = self.dialect.insert_unless_present.format(
                    table="leases",
                    columns="holder_id, host, pid, acquired_at, renewed_at, expires_at",
                    marks=f"%s, %s, %s, {now}, {now}, {expires}",
                    first="holder_id",
                )
                cur.execute(sql, (holder_id, host, pid, seconds))
            return self._lease(cur, holder_id)  # type: ignore[return-value]

        return self._run(acquire, write=True)

    def renew_lease(self, holder_id: str, ttl: float | timedelta) -> bool:
        """Extend the lease; False when it is gone (expired and reaped: the holder's
        running runs were marked abandoned, and it must acquire a new one)."""
        seconds = _seconds(ttl)

        def renew(cur: Any) -> bool:
            cur.execute(
                f"UPDATE leases SET renewed_at = {self.dialect.now_sql()}, "
                f"expires_at = {self.dialect.expires_sql()} WHERE holder_id = %s",
                (seconds, holder_id),
            )
            return bool(cur.rowcount > 0)

        return self._run(renew, write=True)

    def release_lease(self, holder_id: str) -> None:
        """Give the lease up (a process closing cleanly: its runs are finished)."""

        def release(cur: Any) -> None:
            cur.execute("DELETE FROM leases WHERE holder_id = %s", (holder_id,))

        self._run(release, write=True)

    def expired_leases(self) -> list[Lease]:
        """Leases whose time ran out (by the database's clock), oldest first."""

        def expired(cur: Any) -> list[Lease]:
            cur.execute(
                "SELECT holder_id, host, pid, acquired_at, renewed_at, expires_at FROM leases "
                f"WHERE expires_at < {self.dialect.now_sql()} ORDER BY expires_at",
            )
            return [self._lease_from(row) for row in cur.fetchall()]

        return self._run(expired)

    def reap_expired_leases(self) -> list[str]:
        """Mark ``abandoned`` the running runs of every process whose lease expired,
        and drop the lease, in one transaction per lease: whoever does it first
        does it, once. Returns the ids of the runs marked."""
        marked: list[str] = []
        for lease in self.expired_leases():

            def reap(cur: Any, lease: Lease = lease) -> list[str]:
                cur.execute(
                    "SELECT holder_id FROM leases WHERE holder_id = %s "
                    f"AND expires_at < {self.dialect.now_sql()} FOR UPDATE",
                    (lease.holder_id,),
                )
                if cur.fetchone() is None:
                    return []  # renewed, or reaped by another process meanwhile
                cur.execute(
                    "SELECT run_id FROM runs WHERE host = %s AND pid = %s AND status = 'running' "
                    "ORDER BY run_id FOR UPDATE",
                    (lease.host, lease.pid),
                )
                run_ids = [row[0] for row in cur.fetchall()]
                reason = (
                    f"abandoned: process {lease.pid} on {lease.host} stopped renewing its lease "
                    f"(expired {lease.expires_at.isoformat(timespec='seconds')})"
                )
                with keep_rollup(cur, self.dialect, run_ids):
                    done = [run_id for run_id in run_ids if _abandon(cur, self.dialect, run_id, reason, self.keyring)]
                cur.execute("DELETE FROM leases WHERE holder_id = %s", (lease.holder_id,))
                return done

            marked.extend(self._run(reap, write=True))
        return marked

    def _lease(self, cur: Any, holder_id: str) -> Lease | None:
        cur.execute(
            "SELECT holder_id, host, pid, acquired_at, renewed_at, expires_at FROM leases WHERE holder_id = %s",
            (holder_id,),
        )
        row = cur.fetchone()
        return self._lease_from(row) if row else None

    def _lease_from(self, row: Sequence[Any]) -> Lease:
        holder_id, host, pid, acquired, renewed, expires = row
        f = self.dialect.from_ts
        return Lease(str(holder_id), str(host), int(pid), f(acquired), f(renewed), f(expires))

    # -- fork --------------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here and its sockets are not ours to use
        # or close; what was queued belongs to the parent. The first write makes a
        # new writer, the first read a new connection.
        if self._writer is not None:
            _INHERITED.append(self._writer.abandon_after_fork())
            self._writer = None
        _INHERITED.append(self._conn)
        self._conn = None
        self._lock = threading.RLock()
        self._writer_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._forget_checkpointer_after_fork()


# -- helpers ----------------------------------------------------------------------------


def _marks(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values))


# What the rollup's cells can answer: its groupings, and filters on its dimensions.
_ROLLUP_GROUPS = ("day", "model", "status", "total")
_ROLLUP_FILTERS = frozenset({"since", "until", "model", "status", "limit", "offset", "order_by", "ascending"})


def _rollup_serves(by: str, flt: RunFilter) -> bool:
    if by not in _ROLLUP_GROUPS:
        return False
    return all(
        getattr(flt, f.name) == f.default for f in fields(flt) if f.name not in _ROLLUP_FILTERS
    )


def _month_ceil(day: date) -> date:
    """The first day of a month at or after ``day``."""
    return day if day.day == 1 else date(day.year + (day.month == 12), day.month % 12 + 1, 1)


def _next_midnight(moment: datetime) -> datetime:
    """The first UTC midnight at or after ``moment``."""
    utc = moment.astimezone(timezone.utc)
    start = midnight(utc.date())
    return start if start == utc else start + timedelta(days=1)


def _summary_entries(
    by: str, rows: Sequence[Sequence[Any]], spreads: Mapping[str, Mapping[Any, tuple[Any, Any]]]
) -> list[dict[str, Any]]:
    """`summary`'s groups from (group, runs, failed, finished, tokens in/out/thinking,
    cost, priced, tool calls, steps) rows and each spread's (p50, p95) by group."""
    if not rows and by == "total":
        rows = [("total", 0, 0, 0, 0, 0, 0, None, 0, 0, 0)]
    out = []
    for group, runs, failed_n, finished, tin, tout, tthink, cost, priced, calls, steps in rows:
        failed_i, finished_i = int(failed_n or 0), int(finished or 0)
        entry: dict[str, Any] = {
            by: group,
            "runs": int(runs),
            "failed": failed_i,
            "finished": finished_i,
            "failure_rate": (failed_i / finished_i) if finished_i else None,
            "input_tokens": int(tin or 0),
            "output_tokens": int(tout or 0),
            "thinking_tokens": int(tthink or 0),
            "cost_usd": round(float(cost), 9) if priced else None,
            "tool_calls": int(calls or 0),
            "steps": int(steps or 0),
        }
        for what in _SPREADS:
            p50, p95 = spreads[what].get(group, (None, None))
            entry[f"{what}_p50_ms"] = None if p50 is None else round(float(p50), 3)
            entry[f"{what}_p95_ms"] = None if p95 is None else round(float(p95), 3)
        out.append(entry)
    return out


def _event_rows(dialect: Dialect, run_events: Sequence[Event], started_at: datetime) -> list[tuple[Any, ...]]:
    """One run's events as written, in sequence order (with its start on a partitioned store)."""
    started = dialect.ts(started_at)
    return [
        (*event_values(e), started) if dialect.partitioned else event_values(e)
        for e in sorted(run_events, key=lambda e: e.sequence)
    ]


def _resolved_model(run_events: Sequence[Event]) -> str | None:
    """The model of the first of these events that resolved one, as given."""
    for event in run_events:
        model = event.payload.get(MODEL) if event.event_type == RESOLVED_MODEL else None
        if isinstance(model, str):
            return model
    return None


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, (str, RunStatus)) else list(value)


def _event_where(run_id: str | None, event_types: Iterable[str] | None) -> tuple[str, list[Any]]:
    where = ""
    params: list[Any] = []
    if run_id is not None:
        where += " AND run_id = %s"
        params.append(run_id)
    if event_types is not None:
        types = [event_types] if isinstance(event_types, str) else list(event_types)
        where += f" AND event_type IN ({_marks(types)})" if types else " AND 1 = 0"
        params.extend(types)
    return where, params


def _seconds(ttl: float | timedelta) -> float:
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 86400 * 7:
        raise ValueError(f"a lease's ttl must be more than 0 and at most 7 days in seconds, got {ttl!r}")
    return float(seconds)


def _check_holder(holder_id: str) -> None:
    if not isinstance(holder_id, str) or not holder_id.strip():
        raise ValueError(f"a lease needs a non-empty holder id, got {holder_id!r}")


def _raw_record(row: Sequence[Any]) -> RunRecord:
    """A row whose values cannot be read as they should (verify reports them)."""
    return RunRecord(*row)


def _last_event_time(cur: Any, dialect: Dialect, run_id: str) -> datetime | None:
    cur.execute(
        f"SELECT created_at FROM events WHERE {dialect.events_key_sql()} ORDER BY sequence DESC LIMIT 1",
        dialect.events_key_params(run_id),
    )
    row = cur.fetchone()
    return datetime.fromisoformat(row[0]) if row else None


def _abandon(cur: Any, dialect: Dialect, run_id: str, reason: str | None, keyring: Keyring | None) -> bool:
    """Close a dead run as ``abandoned`` and seal it, as SQLite's abandon does: with
    only what its chain shows (the totals of its recorded events, no output, no cost,
    its first resolved model, its last event's time as its end). With ``reason``
    None: bring an abandoned run's totals and seal up to date after late events,
    keeping its reason. False (left as it was) when the run is keyed with a key this
    store was not given: it could not be sealed."""
    cur.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s", (run_id,))
    row = cur.fetchone()
    if row is None:
        return False
    record = record_of_row(row, dialect.from_ts)
    expected = RunStatus.RUNNING.value if reason is not None else RunStatus.ABANDONED.value
    if record.status != expected:
        return False
    if record.key_id and (keyring is None or record.key_id not in keyring):
        logger.warning(
            "agentaudit: run %s is keyed with key id %s, which was not given: left as it is", run_id, record.key_id
        )
        return False
    totals = dict.fromkeys(("steps", "tool_calls", IN_TOKENS, OUT_TOKENS, THINKING_TOKENS), 0)
    model: str | None = None
    last: str | None = None
    cur.execute(
        f"SELECT event_type, payload, created_at FROM events WHERE {dialect.events_key_sql()} ORDER BY sequence",
        dialect.events_key_params(run_id),
    )
    for event_type, payload_text, created_at in cur.fetchall():
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
        finished = datetime.fromisoformat(last) if last is not None else datetime.fromisoformat(record.started_at)
    except (TypeError, ValueError):
        finished = datetime.now(timezone.utc)
    cur.execute(
        "UPDATE runs SET status = 'abandoned', finished_at = %s, output = '', error = %s, steps = %s, "
        "tool_calls = %s, input_tokens = %s, output_tokens = %s, thinking_tokens = %s, cost_usd = NULL, "
        "model = %s WHERE run_id = %s AND status = %s",
        (dialect.ts(finished), record.error if reason is None else reason, totals["steps"],
         totals["tool_calls"], totals[IN_TOKENS], totals[OUT_TOKENS], totals[THINKING_TOKENS],
         model or "", run_id, expected),
    )
    if cur.rowcount == 0:
        return False
    reseal(cur, dialect, run_id, keyring)
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_driver_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(("psycopg", "pymysql"))


# -- process-wide hooks: exit flush and fork -------------------------------------------

_OPEN_STORES: weakref.WeakSet[ServerStore] = weakref.WeakSet()
# Connections a forked child inherited: kept referenced, never closed (a driver that
# closes one says goodbye to the server on the parent's session).
_INHERITED: list[Any] = []
EXIT_FLUSH_TIMEOUT = 5.0


def _close_all_at_exit() -> None:
    import time

    deadline = time.monotonic() + EXIT_FLUSH_TIMEOUT
    for store in list(_OPEN_STORES):
        try:
            store._close(max(0.0, min(store.close_timeout, deadline - time.monotonic())))
        except Exception as exc:
            logger.error("agentaudit: flushing %s at exit failed: %s", store.url, exc)


def _reset_in_child() -> None:
    for store in list(_OPEN_STORES):
        store._after_fork_in_child()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)

