"""Faults: what went wrong inside agentaudit, kept away from the agent.

Every hook body runs inside one guard (as sentry-python's integrations do): an
exception from our code or a store is logged once per kind per run, counted, and
dropped. ``strict=True`` re-raises instead, for tests.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["Faults", "logger"]

logger = logging.getLogger("agentaudit")

F = TypeVar("F", bound=Callable[..., Any])

# Bounds the "already logged" memory: a process auditing millions of runs must not grow.
_MAX_REMEMBERED = 10_000


class Faults:
    """Counts faults by kind and logs each kind once per run.

    Args:
        strict: re-raise every fault instead of swallowing it (for tests).
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._logged: set[tuple[str, str | None]] = set()
        self._guards: dict[str, _Guard] = {}

    def report(self, kind: str, exc: BaseException | None = None, run_id: str | None = None) -> None:
        """Record one fault. Raises ``exc`` (or a RuntimeError) in strict mode. An
        exception already reported (strict mode re-raised it through an outer guard)
        is not counted again."""
        # Only strict mode re-raises a fault through the guards around it; otherwise the
        # same exception object met again (a store re-raising a saved error) is a new fault.
        if exc is None or not (self.strict and self._seen(exc)):
            self.count(kind, exc, run_id)
        if self.strict:
            if exc is not None:
                raise exc
            raise RuntimeError(f"agentaudit fault {kind} (run {run_id})")

    @staticmethod
    def _seen(exc: BaseException) -> bool:
        # Marked on the exception itself (exceptions take no weak references): strict
        # mode re-raises one through every guard around it, and each would otherwise
        # count it again.
        if getattr(exc, "_agentaudit_counted", False):
            return True
        try:
            exc._agentaudit_counted = True  # type: ignore[attr-defined]
        except Exception:  # an exception type without a __dict__: counted each time
            pass
        return False

    def count(self, kind: str, exc: BaseException | None = None, run_id: str | None = None) -> None:
        """Record one fault without raising, even in strict mode: for a fault found
        where no caller can take an exception (a callback on a store's thread)."""
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            key = (kind, run_id)
            first = key not in self._logged
            if first:
                if len(self._logged) >= _MAX_REMEMBERED:
                    self._logged.clear()
                self._logged.add(key)
        if first:
            logger.warning(
                "agentaudit fault %s (run %s): %s; the agent goes on, later faults of this kind "
                "in this run are counted, not logged",
                kind,
                run_id or "-",
                f"{type(exc).__name__}: {exc}" if exc is not None else "no detail",
                exc_info=exc if exc is not None and logger.isEnabledFor(logging.DEBUG) else None,
            )

    def guard(self, kind: str, run_id: str | None = None) -> _Guard:
        """Run the ``with`` body; an ``Exception`` in it becomes a fault of ``kind``.

        The guard holds no state of its own, so one may be kept and reused by a hook
        that runs thousands of times (a generator-based context manager costs a
        microsecond or more per ``with``)."""
        if run_id is None:
            found = self._guards.get(kind)
            if found is None:
                found = self._guards[kind] = _Guard(self, kind, None)
            return found
        return _Guard(self, kind, run_id)

    def guarded(self, kind: str) -> Callable[[F], F]:
        """Decorator form of [`guard`][agentaudit.Faults.guard] for hook functions; a fault returns None."""

        def decorate(fn: F) -> F:
            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    self.report(kind, exc)
                    return None

            return wrapper  # type: ignore[return-value]

        return decorate

    def forget(self, run_id: str) -> None:
        """Drop the run's "already logged" marks (called when the run closes)."""
        with self._lock:
            for key in [k for k in self._logged if k[1] == run_id]:
                self._logged.discard(key)

    def counts(self) -> dict[str, int]:
        """A snapshot of fault counts by kind."""
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def __repr__(self) -> str:
        return f"Faults(total={self.total}, strict={self.strict})"


class _Guard:
    """What `Faults.guard` returns: a reusable, reentrant context manager."""

    __slots__ = ("_faults", "_kind", "_run_id")

    def __init__(self, faults: Faults, kind: str, run_id: str | None) -> None:
        self._faults = faults
        self._kind = kind
        self._run_id = run_id

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False  # no fault; or cancellation, KeyboardInterrupt: not ours to stop
        try:
            self._faults.report(self._kind, exc, self._run_id)
        except BaseException as raised:
            if raised is exc:
                return False  # strict: the original exception goes on, untouched
            raise
        return True
