"""The storage protocol every store implements: a write side the Writer drives and
a read side the CLI, the docs and users query."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Protocol, runtime_checkable

from .._model import Event, Run, RunFilter, RunStats, RunStatus, VerifyResult

__all__ = ["Store"]


@runtime_checkable
class Store(Protocol):
    """What a store must do. ``agentaudit.testing.StoreConformance`` checks it.

    Write side, called by :class:`agentaudit.Writer`:

    - ``start_run`` records a new run (status ``running``).
    - ``append_log`` takes one sealed event (sequence and hashes already assigned).
      It must not wait on disk or network for long: it is called on the agent's
      thread. It may raise when it cannot take the event; the writer then counts a
      fault and does not advance the run's sequence, so no gap is left.
    - ``finish_run`` records the terminal status and totals, and returns only when
      the run and every event appended before it are durable.
    - ``flush`` waits until everything appended so far is durable; ``close`` flushes
      and releases the store.

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
