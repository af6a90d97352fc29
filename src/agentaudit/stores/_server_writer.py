"""The server stores' background writer: a bounded queue and one thread that commits.

Why: an agent's hook must never wait on the network. Hooks append an item to a deque
and return; one thread per store takes what is queued and writes it in one
transaction over its own connection (many rows per statement), in the order it was
submitted. Items someone waits for (a run's finish, a flush) are committed at once;
others wait up to ``commit_delay`` for company.

What can go wrong, and what the thread does:
- the server is unreachable, restarts, or drops the connection: keep the batch,
  reconnect with back-off up to `MAX_FAULT_DELAY`, and write it again; since the last
  commit may have landed before the connection broke, the retry inserts "unless
  present", so nothing is written twice. Meanwhile the queue keeps what fits and a
  full queue refuses new items at once (counted in ``dropped``);
- a deadlock or a lock timeout: roll back and retry the batch;
- the database refuses one item (a run id it already holds, a value too long for its
  column): write the batch again with each item under a savepoint, so the refusal
  costs that item only; the run's later items are refused too and its finish's
  future says why.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from .._errors import RunNotFoundError, StoreError
from .._keys import ChainKey, Keyring
from .._model import Event, Run, RunStats, RunStatus
from .._serialize import safe_text
from .._verify import record_of_run, seal_of
from ..payloads import MODEL, RESOLVED_MODEL
from ._server_dialect import Dialect, month_start
from ._server_rows import (
    RUN_COLUMNS,
    START_COLUMNS,
    WRITTEN_EVENT_COLUMNS,
    event_values,
    record_of_row,
    run_values,
)
from ._server_summary import keep_rollup

__all__ = ["MAX_FAULT_DELAY", "ServerWriter", "reseal", "tail_of"]

logger = logging.getLogger("agentaudit")


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
class Flush:
    done: Future[Any]


Item = StartRun | AppendEvents | FinishRun | Flush

COMMIT_DELAY = 0.02
MAX_FAULT_DELAY = 2.0
_URGENT_LENGTH = 1000
_MAX_REMEMBERED = 10_000
_DONE, _RETRY, _REFUSED = range(3)


class _Refused(Exception):
    """An item the database refused, carried out of a savepoint."""


class ServerWriter:
    """One writer thread over one connection, fed by a bounded deque."""

    def __init__(
        self,
        dialect: Dialect,
        *,
        max_queue: int,
        keyring: Keyring | None = None,
        max_batch: int = 5000,
        commit_delay: float = COMMIT_DELAY,
    ) -> None:
        self._dialect = dialect
        self._keyring = keyring
        self._where = dialect.redacted_url()
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.commit_delay = commit_delay
        self._pending: collections.deque[Item] = collections.deque()
        self._wake = threading.Event()
        self._urgent = False
        self._first_queued = 0.0
        self._inflight = False
        self._stopping = False
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._fatal: BaseException | None = None
        self.failing: BaseException | None = None
        self._dropped = itertools.count(1)
        self._failed = itertools.count(1)
        self.dropped = 0
        self.failed = 0
        self.committed_batches = 0
        # the start time of runs this writer started and has not finished (events on
        # PostgreSQL carry it: it names their partition)
        self._starts: dict[str, datetime] = {}
        self._months: set[date] = set()
        self._rejected: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._lost: collections.OrderedDict[str, str] = collections.OrderedDict()

    # -- caller side ---------------------------------------------------------------------
    def start(self) -> None:
        thread = threading.Thread(target=self._loop, name="agentaudit-server-writer", daemon=True)
        self._thread = thread
        thread.start()

    def submit(self, item: Item, *, bounded: bool = True) -> None:
        if self._fatal is not None:
            raise StoreError(f"the writer for {self._where} stopped: {self._fatal}")
        if self._stopping:
            raise StoreError(f"the store for {self._where} is closed")
        pending = self._pending
        if bounded and len(pending) >= self.max_queue:
            self.dropped = next(self._dropped)
            why = f" while the server is unreachable ({self.failing})" if self.failing is not None else ""
            raise StoreError(
                f"the writer queue for {self._where} is full ({self.max_queue} items){why}; "
                f"not recorded ({self.dropped} refused so far)"
            )
        if not pending:
            self._first_queued = time.monotonic()
        pending.append(item)
        waited_for = not isinstance(item, (StartRun, AppendEvents)) or item.done is not None
        if waited_for or len(pending) >= _URGENT_LENGTH:
            self._urgent = True
            self._wake.set()
        elif len(pending) == 1:
            self._wake.set()

    def has_unwritten(self) -> bool:
        return bool(self._pending) or self._inflight

    def backlog(self) -> int:
        return len(self._pending) + (1 if self._inflight else 0)

    def stop(self, timeout: float) -> int:
        """Write what is queued (for up to ``timeout`` seconds), then end the thread.
        Returns how many items were left unwritten."""
        self._deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout + 1.0)
        return len(self._pending) + (1 if self._inflight else 0)

    def request_stop(self, timeout: float) -> None:
        self._deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()

    def abandon_after_fork(self) -> Any:
        """In a forked child: the thread does not exist here and the connection is the
        parent's. Forget them without touching the socket; returns the connection,
        to be kept referenced (closing it would end the parent's session)."""
        self._fatal = StoreError("writer inherited across fork")
        self._pending.clear()
        inherited, self._conn = self._conn, None
        return inherited

    # -- writer thread -------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    break
                self._write(batch)
        except BaseException as exc:  # a bug: fail every waiter loudly
            self._fatal = exc
            logger.error("agentaudit: the writer for %s stopped: %r", self._where, exc)
        finally:
            self._fail_pending()
            self._close_conn()

    def _next_batch(self) -> list[Item] | None:
        while not self._pending:
            if self._stopping:
                return None
            self._wake.wait(0.5)
            self._wake.clear()
        while not self._urgent and not self._stopping:
            remaining = self._first_queued + self.commit_delay - time.monotonic()
            if remaining <= 0:
                break
            self._wake.wait(remaining)
            self._wake.clear()
        self._inflight = True
        self._urgent = False
        pending = self._pending
        batch = [pending.popleft() for _ in range(min(len(pending), self.max_batch))]
        if pending:
            self._first_queued = time.monotonic()
        return batch

    def _write(self, batch: list[Item]) -> None:
        delay = 0.01
        isolate = False
        uncertain = False  # a commit may have landed before the connection broke
        try:
            while True:
                outcome = self._attempt(batch, isolate, uncertain)
                if outcome == _DONE:
                    return
                if outcome == _REFUSED:
                    isolate = True
                    continue
                uncertain = True
                if self._stopping and self._deadline is not None and time.monotonic() > self._deadline:
                    self._give_up(batch)
                    return
                self._wake.wait(delay)
                self._wake.clear()
                delay = min(delay * 2, MAX_FAULT_DELAY)
        finally:
            self._inflight = False

    def _connection(self) -> Any:
        if self._conn is None:
            conn = self._dialect.connect()
            cur = conn.cursor()
            for statement in self._dialect.writer_setup():
                try:
                    cur.execute(statement)
                except Exception as exc:  # a tuning the server lacks (an older one): go without
                    if self._dialect.is_disconnect(exc):
                        conn.close()
                        raise StoreError(f"cannot connect to {self._where}: {exc}") from None
                    logger.debug("agentaudit: %s refused %r: %s", self._where, statement, exc)
            self._conn = conn
        return self._conn

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _attempt(self, batch: list[Item], isolate: bool, uncertain: bool) -> int:
        settle: list[tuple[Future[Any] | None, Any, BaseException | None]] = []
        try:
            conn = self._connection()
        except StoreError as exc:  # could not connect: the server is away
            self._note_failing(exc)
            return _RETRY
        try:
            self._prepare_partitions(conn, batch)
            cur = conn.cursor()
            cur.execute("BEGIN")
            try:
                # the summary rollup takes what the batch changed, in its transaction
                with keep_rollup(cur, self._dialect, _touched(batch, self._starts)):
                    if isolate:
                        self._apply_isolated(cur, batch, settle, uncertain)
                    else:
                        self._apply(cur, batch, settle, uncertain)
                cur.execute("COMMIT")
            except BaseException:
                _rollback(cur)
                raise
        except Exception as exc:
            if self._dialect.is_disconnect(exc):
                self._close_conn()
                self._note_failing(exc)
                return _RETRY
            if not isolate and _refuses_item(self._dialect, exc):
                return _REFUSED
            self._note_failing(exc)  # the server refuses every write (full disk, read-only)
            return _RETRY
        if self.failing is not None:
            logger.warning("agentaudit: %s is reachable again; the writer resumed", self._where)
            self.failing = None
        self.committed_batches += 1
        for item in batch:
            if isinstance(item, FinishRun):
                self._starts.pop(item.run_id, None)
        for future, result, error in settle:
            if future is not None:
                _settle(future, result, error)
        return _DONE

    def _prepare_partitions(self, conn: Any, batch: Sequence[Item]) -> None:
        """Create the event partitions this batch needs, and next month's ahead, each
        in a short transaction of its own (creating one locks the events table)."""
        if not self._dialect.partitioned:
            return
        months = {month_start(item.run.started_at) for item in batch if isinstance(item, StartRun)}
        soon = datetime.now(timezone.utc)
        months.update((month_start(soon), month_start(soon + timedelta(days=7))))
        missing = sorted(months - self._months)
        if missing:
            self._dialect.ensure_partitions(conn, missing)
            self._months.update(missing)

    def _apply(self, cur: Any, batch: Sequence[Item], settle: list[Any], uncertain: bool) -> None:
        rows: list[tuple[Any, ...]] = []
        models: list[tuple[str, str]] = []
        whole = _whole_runs(batch)
        for item in batch:
            if isinstance(item, StartRun) and item.run.run_id in whole:
                self._starts[item.run.run_id] = item.run.started_at
                settle.append((item.done, None, None))
                continue
            if isinstance(item, FinishRun) and item.run_id in whole:
                if rows:
                    self._insert_events(cur, rows, models, uncertain)
                done = whole[item.run_id]
                final = done.final(item)
                seal = seal_of(record_of_run(final), key_of(self._keyring, final.key_id), done.events, done.last_hash)
                values = run_values(final, self._dialect.ts, model=done.model, seal=seal)
                self._insert_run(cur, values, uncertain)
                settle.append((item.done, None, None))
                continue
            if isinstance(item, AppendEvents):
                run_id = item.events[0].run_id if item.events else ""
                if run_id in self._rejected:
                    self._refuse(item, StoreError(self._rejected[run_id]), settle)
                    continue
                # a run this store never started must exist (no orphan events); its start
                # also names the events' partition on PostgreSQL
                started = self._start_of(cur, run_id) if item.events else None
                for event in item.events:
                    values = event_values(event)
                    if self._dialect.partitioned and started is not None:
                        values = (*values, self._dialect.ts(started))
                    rows.append(values)
                    if (
                        event.event_type == RESOLVED_MODEL
                        and isinstance(event.payload.get(MODEL), str)
                        and event.run_id not in whole
                    ):
                        models.append((event.payload[MODEL], event.run_id))
                settle.append((item.done, None, None))
                continue
            if rows:
                self._insert_events(cur, rows, models, uncertain)
            settle.append(self._apply_one(cur, item, uncertain))
        if rows:
            self._insert_events(cur, rows, models, uncertain)

    def _start_of(self, cur: Any, run_id: str) -> datetime:
        started = self._starts.get(run_id)
        if started is None:
            cur.execute("SELECT started_at FROM runs WHERE run_id = %s", (run_id,))
            row = cur.fetchone()
            if row is None:
                raise RunNotFoundError(f"no run {run_id!r} for its events in {self._where}")
            started = self._dialect.from_ts(row[0])
        return started

    def _insert_events(
        self, cur: Any, rows: list[tuple[Any, ...]], models: list[tuple[str, str]], uncertain: bool
    ) -> None:
        cur.executemany(event_insert_sql(self._dialect, uncertain), rows)
        if models:
            cur.executemany("UPDATE runs SET model = %s WHERE run_id = %s AND model = ''", models)
        rows.clear()
        models.clear()

    def _insert_run(self, cur: Any, row: tuple[Any, ...] | Run, uncertain: bool) -> None:
        """A run's start (a Run), or its final sealed row (values with model and seal)."""
        if isinstance(row, Run):
            values = run_values(row, self._dialect.ts)
            columns = START_COLUMNS
        else:
            values = row
            columns = RUN_COLUMNS
        marks = ", ".join(["%s"] * len(values))
        if uncertain:
            sql = self._dialect.insert_unless_present.format(
                table="runs", columns=columns, marks=marks, first="run_id"
            )
        else:
            sql = f"INSERT INTO runs ({columns}) VALUES ({marks})"
        cur.execute(sql, values)

    def _apply_one(self, cur: Any, item: Item, uncertain: bool) -> tuple[Future[Any] | None, Any, Any]:
        if isinstance(item, StartRun):
            self._starts[item.run.run_id] = item.run.started_at
            self._insert_run(cur, item.run, uncertain)
            return (item.done, None, None)
        if isinstance(item, FinishRun):
            rejected = self._rejected.get(item.run_id)
            if rejected is not None:
                return (item.done, None, StoreError(rejected))
            stats, when = item.stats, item.finished_at
            cur.execute(
                "UPDATE runs SET status = %s, finished_at = %s, output = %s, error = %s, "
                "tool_calls = coalesce(%s, tool_calls), steps = coalesce(%s, steps), "
                "input_tokens = %s, output_tokens = %s, thinking_tokens = %s, cost_usd = %s "
                "WHERE run_id = %s",
                finish_values(item.run_id, stats, when, self._dialect.ts),
            )
            if cur.rowcount == 0:
                return (item.done, None, RunNotFoundError(f"no run {item.run_id!r} to finish in {self._where}"))
            reseal(cur, self._dialect, item.run_id, self._keyring)
            lost = self._lost.pop(item.run_id, None)
            return (item.done, None, StoreError(f"the run finished, but {lost}") if lost else None)
        if isinstance(item, AppendEvents):
            settle: list[Any] = []
            self._apply(cur, [item], settle, uncertain)
            return settle[0]  # type: ignore[no-any-return]
        return (item.done, None, None)  # Flush

    def _apply_isolated(self, cur: Any, batch: Sequence[Item], settle: list[Any], uncertain: bool) -> None:
        for item in batch:
            cur.execute("SAVEPOINT one")
            try:
                outcome = self._apply_one(cur, item, uncertain)
            except Exception as exc:
                if not _refuses_item(self._dialect, exc) or self._dialect.is_disconnect(exc):
                    raise
                cur.execute("ROLLBACK TO SAVEPOINT one")
                self._refuse(item, exc, settle)
                continue
            cur.execute("RELEASE SAVEPOINT one")
            settle.append(outcome)

    def _refuse(self, item: Item, exc: BaseException, settle: list[Any]) -> None:
        self.failed = next(self._failed)
        why = f"{self._where} refused the {_describe(item)}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
        if isinstance(item, StartRun):
            self._starts.pop(item.run.run_id, None)
            _remember(self._rejected, item.run.run_id, f"{why}; the run's events and finish were not recorded")
        elif isinstance(item, AppendEvents) and item.events:
            _remember(self._lost, item.events[0].run_id, why)
        logger.debug("agentaudit: %s", why)
        error = exc if isinstance(exc, StoreError) else StoreError(why)
        settle.append((getattr(item, "done", None), None, error))

    def _note_failing(self, exc: BaseException) -> None:
        if self.failing is None:
            logger.error(
                "agentaudit: cannot write to %s: %s; holding what fits in the queue and retrying",
                self._where, exc,
            )
        self.failing = exc

    def _give_up(self, batch: list[Item]) -> None:
        error = StoreError(f"{self._where} could not be written before close gave up: {self.failing}")
        logger.error("agentaudit: %d items not written to %s at close: %s", len(batch), self._where, self.failing)
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
                _settle(done, None, StoreError(f"the store for {self._where} is closed"))
        if left:
            logger.error("agentaudit: %d items were not written to %s", left, self._where)


class _WholeRun:
    """A run started and finished within one batch: written as its final, sealed row."""

    __slots__ = ("events", "last_hash", "model", "run")

    def __init__(self, run: Run) -> None:
        self.run = run
        self.events = 0
        self.last_hash = ""
        self.model = ""

    def final(self, finish: FinishRun) -> Run:
        return self.run.finished(finish.stats, finish.finished_at)


def _whole_runs(batch: Sequence[Item]) -> dict[str, _WholeRun]:
    found: dict[str, _WholeRun] = {}
    finished: set[str] = set()
    for item in batch:
        if isinstance(item, StartRun):
            found[item.run.run_id] = _WholeRun(item.run)
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
    return {run_id: whole for run_id, whole in found.items() if run_id in finished}


def _touched(batch: Sequence[Item], running: Mapping[str, datetime]) -> set[str]:
    """The runs whose part of the summary rollup a batch can change: those it
    finishes, and those it adds events to unless they are runs this writer started
    and has not finished (``running``; or started in this batch): those are running,
    and the rollup holds finished runs only. (A run reaped meanwhile and then given
    events by its writer keeps its abandoned row's totals, as before; the rollup
    does too.)"""
    found: set[str] = set()
    started = {item.run.run_id for item in batch if isinstance(item, StartRun)}
    for item in batch:
        if isinstance(item, FinishRun):
            found.add(item.run_id)
        elif isinstance(item, AppendEvents):
            found.update(
                event.run_id for event in item.events if event.run_id not in running and event.run_id not in started
            )
    return found


def event_insert_sql(dialect: Dialect, unless_present: bool) -> str:
    columns = WRITTEN_EVENT_COLUMNS + (", run_started_at" if dialect.partitioned else "")
    marks = ", ".join(["%s"] * (10 if dialect.partitioned else 9))
    if unless_present:
        return dialect.insert_unless_present.format(
            table="events", columns=columns, marks=marks, first="run_id"
        )
    return f"INSERT INTO events ({columns}) VALUES ({marks})"


def finish_values(run_id: str, stats: RunStats, finished_at: datetime, ts: Callable[[datetime], Any]) -> tuple[Any, ...]:
    return (
        RunStatus.parse(stats.status).value,
        ts(finished_at),
        safe_text(stats.output),
        safe_text(stats.error),
        stats.tool_calls,
        stats.steps,
        stats.input_tokens or 0,
        stats.output_tokens or 0,
        stats.thinking_tokens or 0,
        stats.cost_usd,
        run_id,
    )


def tail_of(cur: Any, dialect: Dialect, run_id: str) -> tuple[int, str]:
    """(sequence, hash) of the run's last stored event; (0, "") when it has none."""
    cur.execute(
        f"SELECT sequence, hash FROM events WHERE {dialect.events_key_sql()} "
        "ORDER BY sequence DESC LIMIT 1",
        dialect.events_key_params(run_id),
    )
    row = cur.fetchone()
    return (int(row[0]), row[1]) if row else (0, "")


def key_of(keyring: Keyring | None, key_id: str) -> ChainKey | None:
    """The key a run names ("" for none); `StoreError` when it is not in ``keyring``
    (refused: its seal could not be made)."""
    if not key_id:
        return None
    key = keyring.get(key_id) if keyring is not None else None
    if key is None:
        raise StoreError(f"the run is keyed with key id {key_id}, which this store was not given")
    return key


def reseal(cur: Any, dialect: Dialect, run_id: str, keyring: Keyring | None) -> None:
    """Seal the finished run's row as it stands now (`_verify.seal_of`)."""
    cur.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s", (run_id,))
    row = cur.fetchone()
    if row is None:
        return
    record = record_of_row(row, dialect.from_ts)
    seal = seal_of(record, key_of(keyring, record.key_id), *tail_of(cur, dialect, run_id))
    cur.execute("UPDATE runs SET seal = %s WHERE run_id = %s", (seal, run_id))


def _refuses_item(dialect: Dialect, exc: BaseException) -> bool:
    """Whether ``exc`` refuses one item (the database's constraint, a value that does
    not fit, a run this store does not hold), as opposed to the server failing."""
    return dialect.is_refusal(exc) or isinstance(exc, (ValueError, TypeError, StoreError, RunNotFoundError))


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
    return "flush"


def _settle(future: Future[Any], result: Any, error: BaseException | None) -> None:
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(None if result is None else result)
    except InvalidStateError:
        pass


def _rollback(cur: Any) -> None:
    try:
        cur.execute("ROLLBACK")
    except Exception:
        pass
