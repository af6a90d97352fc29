"""The storage protocol every store implements: a write side the Writer drives and
a read side the CLI, the docs and users query."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import Protocol, runtime_checkable

from .._model import Event, Run, RunFilter, RunStats, RunStatus, VerifyResult

__all__ = ["BatchingStore", "Store"]


@runtime_checkable
class Store(Protocol):
    """What a store must do. ``agentaudit.testing.StoreConformance`` checks it.

    Write side, called by [`agentaudit.Writer`][agentaudit.Writer] (events travel one way: the
    Writer hands the store sealed events and never hears back from the store's own
    threads):

    - ``start_run`` records a new run (status ``running``). It refuses (raises) a
      run id it already holds.
    - ``append_log`` takes one sealed event (sequence and hashes already assigned,
      every text already cleaned, so no content can be refused). It is called on the
      agent's thread and must not wait on disk or network for long. It raises when
      it cannot take the event; the writer then counts a fault and does not advance
      the run's chain, so no gap is left.
    - ``finish_run`` records the terminal status and totals, and returns only when
      the run and every event appended before it are durable. The Writer calls it
      from a finisher thread and waits at most ``finish_timeout``.
    - ``flush`` waits until everything appended so far is durable; ``close`` flushes
      and releases the store.

    Two optional methods let a store do better (see [`BatchingStore`][agentaudit.stores.BatchingStore]):
    ``append_events`` takes a hook's events in one call, all or none;
    ``submit_finish`` starts the finish and returns a future, so the Writer needs no
    thread of its own to bound its wait. The Writer uses one only when the class that
    defines it also defines the plain method it stands for (``append_log``,
    ``finish_run``): a subclass overriding just the plain method, or a wrapper
    forwarding attributes, is never bypassed.

    Read side: reads see every write made earlier through the same store object.
    """

    def start_run(self, run: Run) -> None: ...

    def append_log(self, event: Event) -> None: ...

    def finish_run(self, run_id: str, stats: RunStats, finished_at: datetime) -> None: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self) -> None: ...

    def get_run(self, run_id: str) -> Run | None: ...

    def get_logs(
        self,
        run_id: str,
        *,
        event_types: Iterable[str] | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[Event]: ...

    def list_runs(self, filter: RunFilter | None = None) -> list[Run]: ...

    def count_runs(self, filter: RunFilter | None = None) -> int: ...

    def children(self, run_id: str) -> list[Run]: ...

    def iter_runs(self, filter: RunFilter | None = None) -> Iterator[Run]: ...

    def purge(self, before: datetime, statuses: Iterable[RunStatus | str] | None = None) -> int: ...

    def delete_run(self, run_id: str) -> bool: ...

    def verify(self, run_id: str) -> VerifyResult: ...


@runtime_checkable
class BatchingStore(Protocol):
    """The optional write methods a store may add to [`Store`][agentaudit.Store].

    - ``append_events`` takes the sealed events of one hook (a ``tool_call`` and its
      ``tool_result``, say), of one run and in sequence order, all or none. The same
      rules as ``append_log``: on the agent's thread, never waiting long, raising
      when it did not take them (the chain then stays where it was). Raising
      [`agentaudit.CommitTimeout`][agentaudit.CommitTimeout] instead says "taken, not yet durable": the
      events stay queued and land later.
    - ``submit_finish`` queues the run's finish and returns at once with a future
      that settles when the run and all its events are durable, or with the reason
      they are not (a refused run start, say). ``close`` waits on it for at most
      ``finish_timeout``; ``aclose`` awaits it without blocking the event loop.
    """

    def append_events(self, events: Sequence[Event]) -> None: ...

    def submit_finish(self, run_id: str, stats: RunStats, finished_at: datetime) -> Future[None]: ...
