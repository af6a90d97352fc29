"""MemoryStore: a zero-dependency, queryable, thread-safe store in process memory.

Run history with no setup, for tests, notebooks and short-lived tools. Nothing
survives the process.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import Any

from .._chain import ERASED, RUN_CONTENT, erase_fields, erased_event, erased_run_fields
from .._errors import RunNotFoundError, StoreError
from .._keys import Keyring, keyring_from
from .._model import TERMINAL_STATUSES, Event, Run, RunFilter, RunStats, RunStatus, VerifyResult
from .._serialize import canonical_json
from .._verify import event_record, record_of_run, verify_run
from ._run_ids import ambiguous, prefix_forms, short_id

__all__ = ["MemoryStore"]


class MemoryStore:
    """Runs and events in memory.

    Args:
        max_runs: keep at most this many runs; the oldest finished runs are evicted
            first (a long-lived process must not grow without bound). None: no limit.
    """

    def __init__(self, *, max_runs: int | None = None, key: Any = None) -> None:
        if max_runs is not None and (isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1):
            raise ValueError(f"max_runs must be a positive int or None, got {max_runs!r}")
        self.max_runs = max_runs
        # The chain's keys (see `_keys`); the first signs the runs recorded here.
        self.keyring: Keyring | None = keyring_from(key)
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
            runs = [r for r in self._runs.values() if filter.matches(r, self._events.get(r.run_id, ()))]
        runs.sort(key=filter.sort_key, reverse=not filter.ascending)
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

    def resolve_run_id(self, prefix: str) -> str:
        """The one run id ``prefix`` names, as `SQLiteStore.resolve_run_id` finds it."""
        if not isinstance(prefix, str) or not prefix.strip():
            raise RunNotFoundError("an empty run id matches nothing")
        forms = prefix_forms(prefix)
        with self._lock:
            runs = dict(self._runs)
        if forms[0] in runs:
            return forms[0]
        for group in (forms[:1], forms[1:]):
            found = {rid: run.name for rid, run in runs.items() if any(rid.startswith(f) for f in group)}
            if len(found) == 1:
                return next(iter(found))
            if found:
                raise RunNotFoundError(ambiguous(prefix.strip(), sorted(found.items()), False))
        raise RunNotFoundError(f"no run {prefix.strip()!r}")

    def short_run_ids(self, run_ids: Iterable[str]) -> dict[str, str]:
        """Each id shortened as `SQLiteStore.short_run_ids` does."""
        with self._lock:
            ordered = sorted(self._runs)
        shown = {}
        for run_id in run_ids:
            at = bisect.bisect_left(ordered, run_id)
            before = ordered[at - 1] if at > 0 else None
            after_at = at + 1 if at < len(ordered) and ordered[at] == run_id else at
            after = ordered[after_at] if after_at < len(ordered) else None
            shown[run_id] = short_id(run_id, (before, after))
        return shown

    def erase(self, run_id: str, fields: Iterable[str] | None = None) -> int:
        """Remove a finished run's content, keeping the proof (see
        `SQLiteStore.erase`, which this mirrors). Returns how many values were erased."""
        chosen = erase_fields(fields)
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise RunNotFoundError(f"no run {run_id!r}")
            if not run.status.is_terminal:
                raise StoreError(f"run {run_id} is still running: erase it once it has finished")
            if not run.salt:
                raise StoreError(f"run {run_id} was written before erasable chains (chain v1): it cannot be erased")
            salt, names = erased_run_fields(run.salt, {n: getattr(run, n) for n in RUN_CONTENT}, chosen)
            erased_fields: dict[str, Any] = dict.fromkeys(names, ERASED)
            self._runs[run_id] = dataclasses.replace(run, salt=salt, **erased_fields)
            count = len(names)
            events = self._events.get(run_id, [])
            for i, event in enumerate(events):
                changed = erased_event(event.event_type, event.payload, event.salt, chosen)
                if changed is not None:
                    payload, event_salt, erased = changed
                    events[i] = dataclasses.replace(
                        event, payload=payload, payload_json=canonical_json(payload), salt=event_salt
                    )
                    count += erased
        return count

    def verify(self, run_id: str, *, key: Any = None, require_key: bool | None = None) -> VerifyResult:
        """Check the run's header and chain (`_verify.verify_run`; this store keeps
        no seals: its rows live in this process only). `RunNotFoundError` for a run
        it does not hold."""
        with self._lock:
            run = self._runs.get(run_id)
            events = sorted(self._events.get(run_id, ()), key=lambda e: e.sequence)
        if run is None and not events:
            raise RunNotFoundError(f"no run {run_id!r}")
        keyring = self.keyring if key is None else keyring_from(key)
        return verify_run(
            record_of_run(run) if run is not None else None,
            [event_record(e) for e in events],
            keyring,
            run_id=run_id,
            require_key=require_key,
        )

    def __repr__(self) -> str:
        return f"MemoryStore(runs={len(self._runs)})"
