"""MemoryStore: a zero-dependency, queryable, thread-safe store in process memory.

Run history with no setup, for tests, notebooks and short-lived tools. Nothing
survives the process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from datetime import datetime

from .._chain import verify_events
from .._errors import RunNotFoundError, StoreError
from .._model import TERMINAL_STATUSES, Event, Run, RunFilter, RunStats, RunStatus, VerifyResult

__all__ = ["MemoryStore"]


class MemoryStore:
    """Runs and events in memory.

    Args:
        max_runs: keep at most this many runs; the oldest finished runs are evicted
            first (a long-lived process must not grow without bound). None: no limit.
    """

    def __init__(self, *, max_runs: int | None = None) -> None:
        if max_runs is not None and (isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1):
            raise ValueError(f"max_runs must be a positive int or None, got {max_runs!r}")
        self.max_runs = max_runs
        self._lock = threading.RLock()
        self._runs: dict[str, Run] = {}
        self._events: dict[str, list[Event]] = {}
        self._closed = False

    # -- write side -------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("MemoryStore is closed")

    def start_run(self, run: Run) -> None:
        with self._lock:
            self._check_open()
            if run.run_id in self._runs:
                raise StoreError(f"run {run.run_id} already exists")
            self._runs[run.run_id] = run
            self._events.setdefault(run.run_id, [])
            if self.max_runs is not None and len(self._runs) > self.max_runs:
                self._evict()

    def _evict(self) -> None:
        finished = sorted((r for r in self._runs.values() if r.status.is_terminal), key=lambda r: r.started_at)
        for run in finished[: len(self._runs) - (self.max_runs or 0)]:
            self._runs.pop(run.run_id, None)
            self._events.pop(run.run_id, None)

    def append_log(self, event: Event) -> None:
        self.append_events((event,))

    def append_events(self, events: Sequence[Event]) -> None:
        """Take sealed events, all or none: refused for a run this store does not hold."""
        with self._lock:
            self._check_open()
            for event in events:
                if event.run_id not in self._runs:
                    raise RunNotFoundError(f"no run {event.run_id!r} for event {event.sequence}")
            for event in events:
                self._events[event.run_id].append(event)

    def finish_run(self, run_id: str, stats: RunStats, finished_at: datetime) -> None:
        with self._lock:
            self._check_open()
            run = self._runs.get(run_id)
            if run is None:
                raise RunNotFoundError(f"no run {run_id!r}")
            self._runs[run_id] = run.finished(stats, finished_at)

    def submit_finish(self, run_id: str, stats: RunStats, finished_at: datetime) -> Future[None]:
        """``finish_run``, done at once (memory needs no waiting; see
        `agentaudit.stores.BatchingStore`): the future is already settled."""
        future: Future[None] = Future()
        try:
            self.finish_run(run_id, stats, finished_at)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Nothing to flush: every write is in memory as soon as it is made."""

    def close(self) -> None:
        self._closed = True

    # -- read side --------------------------------------------------------------------
    def get_run(self, run_id: str) -> Run | None:
        with self._lock:
            return self._runs.get(run_id)

    def get_logs(
        self,
        run_id: str,
        *,
        event_types: Iterable[str] | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[Event]:
        types = None if event_types is None else set(event_types)
        with self._lock:
            events = sorted(self._events.get(run_id, ()), key=lambda e: e.sequence)
        out = [e for e in events if e.sequence > after and (types is None or e.event_type in types)]
        return out if limit is None else out[:limit]

    def _matching(self, filter: RunFilter | None) -> list[Run]:
        filter = filter or RunFilter()
        with self._lock:
            runs = [r for r in self._runs.values() if filter.matches(r)]
        runs.sort(key=lambda r: (r.started_at, r.run_id), reverse=True)
        return runs

    def list_runs(self, filter: RunFilter | None = None) -> list[Run]:
        filter = filter or RunFilter()
        runs = self._matching(filter)[filter.offset :]
        return runs if filter.limit is None else runs[: filter.limit]

    def count_runs(self, filter: RunFilter | None = None) -> int:
        return len(self._matching(filter))

    def children(self, run_id: str) -> list[Run]:
        with self._lock:
            kids = [r for r in self._runs.values() if r.parent_run_id == run_id]
        return sorted(kids, key=lambda r: (r.started_at, r.run_id))

    def iter_runs(self, filter: RunFilter | None = None) -> Iterator[Run]:
        yield from self.list_runs(filter)

    def purge(self, before: datetime, statuses: Iterable[RunStatus | str] | None = None) -> int:
        if not isinstance(before, datetime) or before.tzinfo is None:
            raise ValueError("purge(before=...) needs a timezone-aware datetime")
        wanted = set(TERMINAL_STATUSES if statuses is None else (RunStatus.parse(s) for s in statuses))
        with self._lock:
            doomed = [r.run_id for r in self._runs.values() if r.started_at < before and r.status in wanted]
            for run_id in doomed:
                del self._runs[run_id]
                self._events.pop(run_id, None)
        return len(doomed)

    def delete_run(self, run_id: str) -> bool:
        with self._lock:
            self._events.pop(run_id, None)
            return self._runs.pop(run_id, None) is not None

    def verify(self, run_id: str) -> VerifyResult:
        return verify_events(run_id, self.get_logs(run_id))

    def __repr__(self) -> str:
        return f"MemoryStore(runs={len(self._runs)})"
