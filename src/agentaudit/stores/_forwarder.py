"""The forwarder: ships what a spool file has committed to a server store, in batches.

Why it reads the file rather than the SQLite writer's queue: only what the spool
committed is shipped, so everything acknowledged to the agent survives both a crash
of the process and an outage of the server of any length (as long as it fits on the
local disk). The file's ``spool_cursor`` table says how far each server has been
given (events by ``events.id``, runs by ``runs.rowid``; both only grow in commit
order), and ``spool_open_runs`` which runs the server holds as still running: their
final row is still to come. A restarted process, or ``agentaudit forward``, goes on
from there.

Shipping is idempotent on the server (``import_records``): a batch sent twice (the
process died after the server's commit and before the cursor's) changes nothing
there. A run is shipped with its final status only together with, or after, the last
of its events, so the server never holds a finished run whose seal its events do not
yet match.

Liveness: the thread holds a lease on the server (``acquire_lease`` /
``renew_lease``), renewed every third of its time to live. Every forwarder (and
``agentaudit reap``) marks ``abandoned`` the running runs of processes whose lease
expired (`reap_expired`), once: the server store's ``reap_expired_leases`` does it
in one transaction per lease.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._errors import StoreError
from .._model import Event, Run, RunStatus
from ._sqlite_rows import EVENT_COLUMNS, RUN_COLUMNS, event_from_row, parse_ts, run_from_row
from ._sqlite_schema import connect

__all__ = [
    "Backlog",
    "Batch",
    "Forwarder",
    "commit_batch",
    "read_backlog",
    "read_batch",
    "reap_expired",
    "target_key",
]

logger = logging.getLogger("agentaudit")

BATCH_EVENTS = 2000  # events per import_records call
BATCH_RUNS = 500  # new runs per call
_ID_CHUNK = 500  # run ids per IN (...) query


def target_key(url: str) -> str:
    """The name a server is recorded under in a spool's cursor table: its URL
    without the password (the spool file must not hold a secret)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{parts.username}@" if parts.username else "") + host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# -- the spool file's side -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    run_rowid: int = 0
    event_id: int = 0
    shipped_at: str = ""


@dataclass(slots=True)
class Batch:
    """One shipment: what to hand to ``import_records`` and, once it took it, how
    the cursor moves."""

    runs: list[Run] = field(default_factory=list)
    seals: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    run_rowid: int = 0
    event_id: int = 0
    opened: list[str] = field(default_factory=list)  # shipped while unfinished
    closed: list[str] = field(default_factory=list)  # final row shipped (or gone locally)
    more: bool = False  # the batch was cut at a limit: more is waiting

    @property
    def empty(self) -> bool:
        return not (self.runs or self.events or self.closed)


@dataclass(frozen=True, slots=True)
class Backlog:
    """What a spool holds that its server does not have yet.

    ``runs``: runs whose start or final row is not shipped; ``events``: events not
    shipped; ``oldest_at``: when the oldest of them was written (None when nothing
    waits) and ``age_seconds`` how long ago that was; ``shipped_at``: when the server
    last took a batch; ``error``: why the last attempt failed ("" while shipping
    works)."""

    target: str
    runs: int
    events: int
    oldest_at: datetime | None
    age_seconds: float
    shipped_at: datetime | None
    error: str = ""

    @property
    def empty(self) -> bool:
        return self.runs == 0 and self.events == 0


def _has_spool_tables(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'spool_cursor'"
    ).fetchone()
    return bool(row[0])


def load_cursor(conn: sqlite3.Connection, target: str) -> Cursor:
    if not _has_spool_tables(conn):
        return Cursor()
    row = conn.execute(
        "SELECT run_rowid, event_id, shipped_at FROM spool_cursor WHERE target = ?", (target,)
    ).fetchone()
    return Cursor(*row) if row else Cursor()


def spool_targets(conn: sqlite3.Connection) -> list[str]:
    """The servers this spool has shipped to."""
    if not _has_spool_tables(conn):
        return []
    return [row[0] for row in conn.execute("SELECT target FROM spool_cursor ORDER BY target")]


def _open_run_ids(conn: sqlite3.Connection, target: str) -> list[str]:
    if not _has_spool_tables(conn):
        return []
    return [row[0] for row in conn.execute("SELECT run_id FROM spool_open_runs WHERE target = ?", (target,))]


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _ID_CHUNK):
        yield items[start : start + _ID_CHUNK]


def _as_running(run: Run) -> Run:
    """The run as the server should hold it until its final row can ship."""
    return dataclasses.replace(
        run, status=RunStatus.RUNNING, finished_at=None, output="", error="", tool_calls=0,
        steps=0, input_tokens=0, output_tokens=0, thinking_tokens=0, cost_usd=None,
    )


def read_batch(
    conn: sqlite3.Connection,
    target: str,
    *,
    max_events: int = BATCH_EVENTS,
    max_runs: int = BATCH_RUNS,
) -> Batch:
    """The next shipment for ``target``, read in one snapshot of the spool."""
    conn.execute("BEGIN")
    try:
        cursor = load_cursor(conn, target)
        batch = Batch(run_rowid=cursor.run_rowid, event_id=cursor.event_id)
        # Events first, in commit order; then the runs they need. A run's row is
        # committed with or before its first event, so the runs up to the newest one
        # these events belong to are all there: a short run then ships whole, its
        # final row with its events, instead of as running and again when finished.
        event_rows = conn.execute(
            f"SELECT id, {EVENT_COLUMNS} FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (cursor.event_id, max_events),
        ).fetchall()
        if len(event_rows) >= max_events:
            batch.more = True
            needed = sorted({row[1] for row in event_rows})
            newest = cursor.run_rowid
            for chunk in _chunks(needed):
                (top,) = conn.execute(
                    f"SELECT max(rowid) FROM runs WHERE run_id IN ({', '.join('?' * len(chunk))})", list(chunk)
                ).fetchone()
                newest = max(newest, top or 0)
            new_rows = conn.execute(
                f"SELECT rowid, {RUN_COLUMNS}, seal FROM runs WHERE rowid > ? AND rowid <= ? ORDER BY rowid",
                (cursor.run_rowid, newest),
            ).fetchall()
        else:
            new_rows = conn.execute(
                f"SELECT rowid, {RUN_COLUMNS}, seal FROM runs WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (cursor.run_rowid, max_runs),
            ).fetchall()
            if len(new_rows) >= max_runs:
                # Many runs and few events: the runs alone now (an event shipped
                # before its run would be refused), the events with the next batch.
                batch.more = True
                event_rows = []
        batch.events = [event_from_row(row[1:]) for row in event_rows]
        if event_rows:
            batch.event_id = event_rows[-1][0]
        if new_rows:
            batch.run_rowid = new_rows[-1][0]
        finals: list[tuple[Any, ...]] = []  # finished rows that may ship final now
        for row in new_rows:
            if row[5] == RunStatus.RUNNING.value:
                batch.runs.append(run_from_row(row[1:-1]))
                batch.opened.append(row[1])
            else:
                finals.append(row[1:])
        open_ids = _open_run_ids(conn, target)
        seen: set[str] = set()
        for chunk in _chunks(open_ids):
            rows = conn.execute(
                f"SELECT {RUN_COLUMNS}, seal FROM runs WHERE run_id IN ({', '.join('?' * len(chunk))})",
                list(chunk),
            ).fetchall()
            for row in rows:
                seen.add(row[0])
                if row[4] != RunStatus.RUNNING.value:
                    finals.append(row)
        batch.closed.extend(run_id for run_id in open_ids if run_id not in seen)  # deleted locally
        open_set = set(open_ids)
        for row in finals:
            run = run_from_row(row[:-1])
            last = conn.execute(
                "SELECT id FROM events WHERE run_id = ? ORDER BY sequence DESC LIMIT 1", (run.run_id,)
            ).fetchone()
            if last is None or last[0] <= batch.event_id:
                batch.runs.append(run)
                batch.seals[run.run_id] = row[-1]
                if run.run_id in open_set:
                    batch.closed.append(run.run_id)
            elif run.run_id not in open_set:  # its events are not all in this batch yet
                batch.runs.append(_as_running(run))
                batch.opened.append(run.run_id)
    finally:
        conn.execute("COMMIT")
    return batch


def commit_batch(conn: sqlite3.Connection, target: str, batch: Batch, shipped_at: datetime) -> None:
    """Record in the spool that the server took ``batch`` (the cursor only moves on)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            """INSERT INTO spool_cursor (target, run_rowid, event_id, shipped_at) VALUES (?, ?, ?, ?)
               ON CONFLICT (target) DO UPDATE SET
                   run_rowid = max(run_rowid, excluded.run_rowid),
                   event_id = max(event_id, excluded.event_id),
                   shipped_at = excluded.shipped_at""",
            (target, batch.run_rowid, batch.event_id, shipped_at.isoformat(timespec="microseconds")),
        )
        conn.executemany(
            "INSERT OR IGNORE INTO spool_open_runs (target, run_id) VALUES (?, ?)",
            [(target, run_id) for run_id in batch.opened],
        )
        conn.executemany(
            "DELETE FROM spool_open_runs WHERE target = ? AND run_id = ?",
            [(target, run_id) for run_id in batch.closed],
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def read_backlog(
    conn: sqlite3.Connection, target: str, *, now: datetime | None = None, error: str = ""
) -> Backlog:
    """What the spool behind ``conn`` has not shipped to ``target`` yet."""
    conn.execute("BEGIN")
    try:
        cursor = load_cursor(conn, target)
        new_runs, first_started = conn.execute(
            "SELECT count(*), min(started_at) FROM runs WHERE rowid > ?", (cursor.run_rowid,)
        ).fetchone()
        events, = conn.execute("SELECT count(*) FROM events WHERE id > ?", (cursor.event_id,)).fetchone()
        first_event = conn.execute(
            "SELECT created_at FROM events WHERE id > ? ORDER BY id LIMIT 1", (cursor.event_id,)
        ).fetchone()
        finished_open = 0
        first_finished: str | None = None
        open_ids = _open_run_ids(conn, target)
        for chunk in _chunks(open_ids):
            count, first = conn.execute(
                f"""SELECT count(*), min(finished_at) FROM runs
                    WHERE status != 'running' AND run_id IN ({', '.join('?' * len(chunk))})""",
                list(chunk),
            ).fetchone()
            finished_open += count
            if first is not None and (first_finished is None or first < first_finished):
                first_finished = first
    finally:
        conn.execute("COMMIT")
    moments = [parse_ts(text) for text in (first_started, first_finished) if text]
    if first_event is not None:
        moments.append(parse_ts(first_event[0]))
    oldest = min(moments, key=lambda m: m.astimezone(timezone.utc)) if moments else None
    moment = now or datetime.now(timezone.utc)
    age = max(0.0, (moment - oldest).total_seconds()) if oldest is not None else 0.0
    return Backlog(
        target=target,
        runs=int(new_runs) + finished_open,
        events=int(events),
        oldest_at=oldest,
        age_seconds=age,
        shipped_at=parse_ts(cursor.shipped_at) if cursor.shipped_at else None,
        error=error,
    )


# -- the server's side: leases and reaping ------------------------------------------------


def reap_expired(target: Any) -> list[str]:
    """Mark ``abandoned`` the running runs of every process whose lease on
    ``target`` expired; return their ids. Safe to call from any number of
    processes at once: each run is marked once."""
    return list(target.reap_expired_leases())


# -- the thread ---------------------------------------------------------------------------


class Forwarder:
    """Ships one spool file to one server store, on a thread of its own.

    ``open_target`` makes a server store (called on the forwarder's thread, again
    after any failure: a connection broken by a server restart is replaced, never
    reused). ``interval``: how often an idle forwarder looks for new work;
    ``max_backoff``: the longest pause between attempts while the server is away;
    ``lease_ttl``: the lease's time to live (renewed every third of it), None for
    no lease (``agentaudit forward`` ships for processes that are gone);
    ``reap_interval``: how often it marks runs of expired leases abandoned (None:
    never)."""

    def __init__(
        self,
        spool_path: str,
        open_target: Callable[[], Any],
        *,
        target: str,
        batch_events: int = BATCH_EVENTS,
        interval: float = 0.2,
        max_backoff: float = 5.0,
        lease_ttl: float | None = 30.0,
        reap_interval: float | None = 30.0,
    ) -> None:
        self.spool_path = spool_path
        self.target = target
        self._open_target = open_target
        self.batch_events = batch_events
        self.interval = interval
        self.max_backoff = max_backoff
        self.lease_ttl = lease_ttl
        self.reap_interval = reap_interval
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.holder = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:12]}"
        self.shipped_runs = 0
        self.shipped_events = 0
        self.batches = 0
        self.failures = 0
        self.reaped: list[str] = []
        self.error = ""  # why the last attempt failed; "" while shipping works
        self.duty_errors: dict[str, str] = {}  # the lease's or reaping's last failure
        self.shipped_at: datetime | None = None
        self._server: Any = None
        self._conn: sqlite3.Connection | None = None
        self._status_conn: sqlite3.Connection | None = None
        self._status_lock = threading.Lock()
        self._ship_lock = threading.Lock()
        self._wake = threading.Event()
        self._state = threading.Condition()
        self._requested = 0  # sync() generations asked for
        self._synced = 0  # the last generation shipped in full
        self._stopping = False
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._lease_due = 0.0  # monotonic time of the next renewal (0: acquire)
        self._reap_due = 0.0
        self._drained_at_stop = False

    # -- caller side ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="agentaudit-forwarder", daemon=True)
            self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        self._wake.set()

    def sync(self, timeout: float | None) -> bool:
        """Wait until everything the spool held when called is on the server (at
        most ``timeout`` seconds). True when it is."""
        with self._state:
            self._requested += 1
            wanted = self._requested
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._state:
            while self._synced < wanted:
                if not self.alive:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._state.wait(remaining if remaining is not None else 1.0)
        return True

    def stop(self, timeout: float) -> bool:
        """Ship what the spool holds (for up to ``timeout`` seconds), release the
        lease when nothing is left, and end the thread. True when all was shipped."""
        self._deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout + 0.5)
        if thread is None:
            self._close_server()
            self._close_conn()
        return self._drained_at_stop

    def abandon_after_fork(self) -> None:
        """In a forked child: the thread is the parent's; forget its connections
        without closing them (they are the parent's to close)."""
        self._thread = None
        self._conn = None
        self._status_conn = None
        self._status_lock = threading.Lock()
        self._server = None
        self._stopping = True

    # -- shipping (the thread, or a caller draining synchronously) ------------------------
    def _spool(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.spool_path, synchronous="NORMAL")
        return self._conn

    def _target(self) -> Any:
        if self._server is None:
            self._server = self._open_target()
        return self._server

    def ship_once(self) -> Batch:
        """Ship the next batch; returns it (``empty`` when there was nothing). Raises
        whatever the server or the file raised; nothing moved then."""
        with self._ship_lock:
            conn = self._spool()
            server = self._target()
            batch = read_batch(conn, self.target, max_events=self.batch_events)
            if batch.empty:
                return batch
            if batch.runs or batch.events:
                server.import_records(batch.runs, batch.events, batch.seals)
            now = datetime.now(timezone.utc)
            commit_batch(conn, self.target, batch, now)
            self.shipped_at = now
            self.batches += 1
            self.shipped_runs += sum(1 for run in batch.runs if run.status is not RunStatus.RUNNING)
            self.shipped_events += len(batch.events)
            return batch

    def drain(self, timeout: float | None = None) -> bool:
        """Ship until the spool is caught up (True) or ``timeout`` passed (False).
        On the caller's thread; server errors are retried with backoff."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                batch = self.ship_once()
                self._healthy()
                if not batch.more:  # all the spool held when this batch was read
                    return True
                delay = 0.05
                continue
            except Exception as exc:
                self._failed(exc)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            time.sleep(delay if remaining is None else min(delay, remaining))
            delay = min(delay * 2, self.max_backoff)

    def backlog(self) -> Backlog:
        """Read on a connection of its own: never waits behind a shipment that hangs
        on the network."""
        with self._status_lock:
            if self._status_conn is None:
                self._status_conn = connect(self.spool_path, synchronous="NORMAL")
            return read_backlog(self._status_conn, self.target, error=self.error)

    # -- the lease ------------------------------------------------------------------------
    def _keep_lease(self, server: Any) -> None:
        if self.lease_ttl is None or time.monotonic() < self._lease_due:
            return
        if self._lease_due == 0.0 or not server.renew_lease(self.holder, self.lease_ttl):
            # Never held, or it expired meanwhile (and our runs may have been marked
            # abandoned): take a new one. What we ship now arrives late for those runs.
            server.acquire_lease(self.holder, self.host, self.pid, self.lease_ttl)
        self._lease_due = time.monotonic() + self.lease_ttl / 3

    def _release_lease(self) -> None:
        if self.lease_ttl is None or self._lease_due == 0.0 or self._server is None:
            return
        try:
            self._server.release_lease(self.holder)
        except Exception as exc:  # it expires on its own
            logger.info("agentaudit: could not release lease %s: %s", self.holder, exc)

    def _maybe_reap(self, server: Any) -> None:
        if self.reap_interval is None or time.monotonic() < self._reap_due:
            return
        self._reap_due = time.monotonic() + self.reap_interval
        marked = reap_expired(server)
        if marked:
            self.reaped.extend(marked)
            logger.info("agentaudit: marked %d runs of expired leases abandoned", len(marked))

    def _side_duty(self, what: str, duty: Callable[[Any], None], server: Any) -> None:
        """The lease and the reaping never hold up shipping: a failure of theirs is
        logged (once until they work again) and retried on the next pass; what
        matters most is that the records reach the server."""
        try:
            duty(server)
        except Exception as exc:
            if what not in self.duty_errors:
                logger.warning("agentaudit: %s on %s failed: %s (retried)", what, self.target, exc)
            self.duty_errors[what] = f"{type(exc).__name__}: {exc}"
        else:
            self.duty_errors.pop(what, None)

    # -- the loop ---------------------------------------------------------------------------
    def _healthy(self) -> None:
        if self.error:
            logger.warning("agentaudit: %s is reachable again; forwarding resumed", self.target)
            self.error = ""

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        if not self.error:
            logger.error(
                "agentaudit: cannot forward to %s: %s; the spool %s keeps everything and "
                "the forwarder retries", self.target, exc, self.spool_path,
            )
        self.error = f"{type(exc).__name__}: {exc}".strip()
        self._close_server()  # a broken connection is replaced, not reused

    def _close_server(self) -> None:
        server, self._server = self._server, None
        self._lease_due = min(self._lease_due, 1.0) if self._lease_due else 0.0
        if server is not None:
            try:
                server.close()
            except Exception:
                pass

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        with self._status_lock:
            status, self._status_conn = self._status_conn, None
        for each in (conn, status):
            if each is not None:
                try:
                    each.close()
                except sqlite3.Error:
                    pass

    def _loop(self) -> None:
        delay = self.interval
        try:
            while True:
                with self._state:
                    generation = self._requested
                try:
                    server = self._target()
                    self._side_duty("lease", self._keep_lease, server)
                    batch = self.ship_once()
                    self._side_duty("reap", self._maybe_reap, server)
                    self._healthy()
                    delay = self.interval
                    if not batch.more:  # everything the spool held at this pass's start is shipped
                        with self._state:
                            self._synced = max(self._synced, generation)
                            self._state.notify_all()
                    if batch.more or not batch.empty:
                        continue  # more may be waiting: look again at once
                    if self._stopping:
                        self._drained_at_stop = True
                        self._release_lease()
                        return
                    wait = self.interval
                except Exception as exc:
                    self._failed(exc)
                    wait = delay
                    delay = min(delay * 2, self.max_backoff)
                if self._stopping:
                    assert self._deadline is not None
                    remaining = self._deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    wait = min(wait, remaining)
                self._wake.wait(wait)
                self._wake.clear()
        except BaseException as exc:  # a bug: say so, never die silently
            self.error = f"forwarder stopped: {exc!r}"
            logger.exception("agentaudit: the forwarder for %s stopped", self.spool_path)
        finally:
            with self._state:
                self._state.notify_all()
            self._close_server()
            self._close_conn()


def positive_seconds(name: str, value: Any) -> float:
    """``value`` checked as a number of seconds above 0 and at most a day."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not 0 < value <= 86_400:
        raise ValueError(f"{name} must be above 0 and at most a day, got {value!r}")
    return float(value)


def require_server_api(target: Any) -> None:
    """Refuse, at the API boundary, a target that cannot take shipments."""
    missing = [name for name in ("import_records", "acquire_lease", "renew_lease") if not hasattr(target, name)]
    if missing:
        raise StoreError(
            f"{type(target).__name__} cannot be a spool's target: it has no {', '.join(missing)} "
            "(use a server store: open_store('postgresql://...') or open_store('mysql://...'))"
        )
