"""A server store for a fleet, behind a local spool: agents never wait on the network.

Why: a hook must not wait on a database across the network, and an event the agent
was told is recorded must survive the database being down for an hour. So every
write goes to a local SQLite file first (the spool: the same store and the same
durability as the default), and a forwarder thread ships what the spool committed
to the server in batches, idempotently, backing off while the server is away. What
has been shipped is recorded in the spool file itself (see ``_forwarder``), so a
restarted process, or ``agentaudit forward --spool F --db URL``, goes on from there.

One line gives a worker its fleet setup::

    store = aa.open_store("postgresql://audit@db/audit", spool="/var/lib/app/agentaudit-spool.db")

Writes go to the spool (``close`` of a run returns once the spool has it); reads go
to the server, after the forwarder has shipped everything written earlier through
this store (so a read sees this store's own writes, as every store's reads do).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import Any

from .._errors import CommitTimeout, StoreError
from .._model import Event, Run, RunFilter, RunStats, RunStatus, VerifyResult
from ._forwarder import (
    Backlog,
    Forwarder,
    positive_seconds,
    reap_expired,
    require_server_api,
    target_key,
)
from .sqlite import SQLiteStore

__all__ = ["Backlog", "SpooledStore"]

logger = logging.getLogger("agentaudit")

DEFAULT_LEASE_TTL = 30.0
DEFAULT_DRAIN_TIMEOUT = 5.0


class SpooledStore:
    """Writes to a local SQLite spool; a forwarder thread ships them to ``target``.

    Args:
        spool: the spool, a path or an `aa.SQLiteStore` (its options apply: its
            durability, its queue). One spool file per process is the plain setup;
            processes may share one (their forwarders ship it in turns, harmlessly).
        target: the server: a URL (``postgresql://…``, ``mysql://…``), opened on the
            forwarder's thread so a server that is down never holds up the agent, or
            a server store (it must have ``import_records`` and the lease methods).
        drain_timeout: how long ``close`` (and the exit hook) keeps shipping what the
            spool holds; what is left stays in the spool for the next process or
            ``agentaudit forward``.
        read_timeout: how long a read waits for the forwarder to ship this store's
            earlier writes before it reads the server anyway.
        lease_ttl: the process's lease on the server (renewed every third of it);
            when it expires, any live process marks this process's running runs
            ``abandoned``.
        reap: whether this process marks runs of expired leases abandoned.
        interval: how often an idle forwarder looks for new work.
        max_backoff: the longest pause between attempts while the server is away.
        batch_events: events per shipment.
        **spool_options: passed to `aa.SQLiteStore` when ``spool`` is a path.
    """

    def __init__(
        self,
        spool: SQLiteStore | str | os.PathLike[str],
        target: str | Any,
        *,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        read_timeout: float = 10.0,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        reap: bool = True,
        interval: float = 0.2,
        max_backoff: float = 5.0,
        batch_events: int = 2000,
        **spool_options: Any,
    ) -> None:
        self.drain_timeout = positive_seconds("drain_timeout", drain_timeout)
        self.read_timeout = positive_seconds("read_timeout", read_timeout)
        ttl = positive_seconds("lease_ttl", lease_ttl)
        interval_s = positive_seconds("interval", interval)
        backoff = positive_seconds("max_backoff", max_backoff)
        if isinstance(batch_events, bool) or not isinstance(batch_events, int) or batch_events < 1:
            raise ValueError(f"batch_events must be an int >= 1, got {batch_events!r}")
        if isinstance(target, str):
            if "://" not in target or target.startswith(("sqlite:", "memory:")):
                raise ValueError(
                    f"a spool forwards to a server store (postgresql://… or mysql://…), got {target!r}"
                )
            self.target_url: str | None = target
            self._target_store: Any = None
            key = target_key(target)
        else:
            require_server_api(target)
            self.target_url = None
            self._target_store = target
            key = str(getattr(target, "target_key", None) or type(target).__name__)
        if isinstance(spool, SQLiteStore):
            if spool_options:
                raise TypeError("spool options go to SQLiteStore(...) when you pass one")
            self.spool = spool
        else:
            self.spool = SQLiteStore(spool, **spool_options)
        self._reader: Any = self._target_store  # the store reads use (opened on demand)
        self._reader_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._closed = False
        self._forwarder_options = {
            "target": key,
            "batch_events": batch_events,
            "interval": interval_s,
            "max_backoff": backoff,
            "lease_ttl": ttl,
            "reap_interval": ttl if reap else None,
        }
        self.forwarder = self._new_forwarder()
        self.forwarder.start()
        _OPEN_STORES.add(self)
        self._drain_at_process_exit()

    def _open_target(self) -> Any:
        if self._target_store is not None:
            return _Borrowed(self._target_store)
        from . import open_store

        assert self.target_url is not None
        return open_store(self.target_url)

    def _new_forwarder(self) -> Forwarder:
        return Forwarder(self.spool.path, self._open_target, **self._forwarder_options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"SpooledStore(spool={self.spool.path!r}, target={self.forwarder.target!r}, {state})"

    def __enter__(self) -> SpooledStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- write side: the spool ------------------------------------------------------------
    def _writing(self) -> SQLiteStore:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        if not self.forwarder.alive and self.forwarder.pid != os.getpid():
            self._restart_after_fork()
        return self.spool

    def start_run(self, run: Run) -> None:
        self._writing().start_run(run)

    def append_log(self, event: Event) -> None:
        self._writing().append_events((event,))

    def append_events(self, events: Sequence[Event]) -> None:
        self._writing().append_events(events)

    def submit_finish(self, run_id: str, stats: RunStats, finished_at: datetime) -> Future[None]:
        return self._writing().submit_finish(run_id, stats, finished_at)

    def finish_run(self, run_id: str, stats: RunStats, finished_at: datetime) -> None:
        self._writing().finish_run(run_id, stats, finished_at)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything written so far is in the spool (durable locally)."""
        self._writing().flush(timeout)

    # -- shipping -------------------------------------------------------------------------
    def sync(self, timeout: float | None = None) -> bool:
        """Wait (up to ``timeout`` seconds) until everything written so far through
        this store is on the server. True when it is; False when the server is away
        (it stays in the spool and is shipped when the server is back)."""
        self.spool.flush(timeout)
        return self.forwarder.sync(timeout)

    def backlog(self) -> Backlog:
        """Runs and events in the spool the server does not have yet, and the age of
        the oldest of them (also: ``agentaudit status --spool FILE``)."""
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        try:
            self.spool.flush(self.read_timeout)
        except CommitTimeout:
            pass  # the disk is slow: report what the file holds now
        return self.forwarder.backlog()

    def reap_expired_leases(self) -> list[str]:
        """Mark ``abandoned`` the running runs of processes whose lease on the server
        expired (the forwarder does it every ``lease_ttl``); returns their ids."""
        return reap_expired(self._server())

    def close(self) -> None:
        """Flush the spool, ship what it holds for up to ``drain_timeout`` seconds,
        and close. What could not be shipped stays in the spool. Idempotent."""
        self._close(self.drain_timeout)

    def _close(self, timeout: float) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        _OPEN_STORES.discard(self)
        deadline = time.monotonic() + timeout  # one bound for the flush and the shipping
        try:
            self.spool.flush(timeout)
        except StoreError as exc:
            logger.error("agentaudit: the spool %s did not flush at close: %s", self.spool.path, exc)
        if not self.forwarder.stop(max(0.0, deadline - time.monotonic())):
            left = self._backlog_quietly()
            if left:
                logger.warning(
                    "agentaudit: closing with %s not shipped to %s; it stays in %s for the next "
                    "process or `agentaudit forward --spool %s`",
                    left, self.forwarder.target, self.spool.path, self.spool.path,
                )
        self.spool.close()
        with self._reader_lock:
            reader, self._reader = self._reader, None
        if reader is not None and reader is not self._target_store:
            try:
                reader.close()
            except Exception:
                pass

    def _backlog_quietly(self) -> str:
        """What is left to ship, in words ("" when nothing is)."""
        try:
            backlog = self.forwarder.backlog()
        except Exception:
            return "part of the spool"
        return "" if backlog.empty else f"{backlog.runs} runs and {backlog.events} events"

    @property
    def closed(self) -> bool:
        return self._closed

    # -- read side: the server, after this store's writes are shipped ---------------------
    def _server(self) -> Any:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        with self._reader_lock:
            if self._reader is None:
                self._reader = self._open_target()
            return self._reader

    def _read(self) -> Any:
        if not self.sync(self.read_timeout):
            logger.info(
                "agentaudit: reading %s before the spool caught up (%s)",
                self.forwarder.target, self.forwarder.error or "still shipping",
            )
        return self._server()

    def get_run(self, run_id: str) -> Run | None:
        return self._read().get_run(run_id)  # type: ignore[no-any-return]

    def get_logs(
        self,
        run_id: str,
        *,
        event_types: Iterable[str] | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[Event]:
        return self._read().get_logs(run_id, event_types=event_types, after=after, limit=limit)  # type: ignore[no-any-return]

    def list_runs(self, filter: RunFilter | None = None) -> list[Run]:
        return self._read().list_runs(filter)  # type: ignore[no-any-return]

    def count_runs(self, filter: RunFilter | None = None) -> int:
        return self._read().count_runs(filter)  # type: ignore[no-any-return]

    def children(self, run_id: str) -> list[Run]:
        return self._read().children(run_id)  # type: ignore[no-any-return]

    def iter_runs(self, filter: RunFilter | None = None) -> Iterator[Run]:
        return self._read().iter_runs(filter)  # type: ignore[no-any-return]

    def purge(self, before: datetime, statuses: Iterable[RunStatus | str] | None = None) -> int:
        """Purge on the server (the spool keeps its local copy)."""
        return self._read().purge(before, statuses)  # type: ignore[no-any-return]

    def delete_run(self, run_id: str) -> bool:
        """Delete on the server (the spool keeps its local copy)."""
        return self._read().delete_run(run_id)  # type: ignore[no-any-return]

    def verify(self, run_id: str) -> VerifyResult:
        return self._read().verify(run_id)  # type: ignore[no-any-return]

    # -- fork ----------------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        self.forwarder.abandon_after_fork()
        self._reader = self._target_store
        self._reader_lock = threading.Lock()
        self._close_lock = threading.Lock()

    def _restart_after_fork(self) -> None:
        with self._close_lock:
            if self.forwarder.pid != os.getpid():
                self.forwarder = self._new_forwarder()
                self.forwarder.start()
                self._drain_at_process_exit()

    def _drain_at_process_exit(self) -> None:
        # multiprocessing's fork children leave with os._exit, which skips atexit; they
        # run its finalizers first (before the spool's own, priority 10: this ships
        # what the spool committed, then the spool closes).
        util = sys.modules.get("multiprocessing.util")
        if util is not None:
            util.Finalize(self, _drain_at_exit, args=(weakref.ref(self),), exitpriority=11)


class _Borrowed:
    """A server store the user handed in: the forwarder uses it but never closes it
    (it replaces a store it opened itself after a failure; this one it keeps)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


# -- process-wide hooks: drain at exit, restart after fork --------------------------------

_OPEN_STORES: weakref.WeakSet[SpooledStore] = weakref.WeakSet()


def _drain_all_at_exit() -> None:
    """At interpreter exit, ship what each open spool holds, within its drain_timeout
    (registered after the SQLite store's exit hook, so it runs before it: atexit
    runs the last registered first)."""
    for store in list(_OPEN_STORES):
        try:
            store._close(store.drain_timeout)
        except Exception as exc:  # never turn an exit into a traceback
            logger.error("agentaudit: draining %r at exit failed: %s", store, exc)


def _drain_at_exit(ref: weakref.ref[SpooledStore]) -> None:
    store = ref()
    if store is not None:
        try:
            store._close(store.drain_timeout)
        except Exception as exc:
            logger.error("agentaudit: draining %r at exit failed: %s", store, exc)


def _reset_in_child() -> None:
    for store in list(_OPEN_STORES):
        store._after_fork_in_child()


atexit.register(_drain_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)
