"""The Auditor: the seed's Sink. It starts runs in a store and hands out Writers.

``Auditor(None)`` is equivalent to no audit: every call is a cheap no-op.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

from ._caps import EVENT_TYPE_MAX, RUN_IO_MAX
from ._chain import new_salt
from ._context import activate, active_writer, deactivate
from ._faults import Faults
from ._keys import Keyring
from ._model import Run, RunStats, RunStatus
from ._pricing import Pricing
from ._redaction import RedactionPolicy
from ._serialize import clean_str, safe_text
from ._verify import header_hash_of, record_of_run
from ._writer import DEFAULT_FINISH_TIMEOUT, NOOP_WRITER, Writer
from .adapters import error_text, status_for_exception

__all__ = ["Auditor", "RunContext"]

_UNSET: Any = object()
# What the Writer calls: the least a store must have for an Auditor to accept it.
_WRITE_METHODS = ("start_run", "append_log", "finish_run")
_HOST = socket.gethostname()


class Auditor:
    """Starts audited runs in ``store``.

    Args:
        store: any [`agentaudit.Store`][agentaudit.Store], or None for no audit at all.
        redaction: what is masked before persistence (default: [`RedactionPolicy`][agentaudit.RedactionPolicy]).
        pricing: model -> ``{"input": $/M, "output": $/M, "cache_read": $/M}``, or a
            callable ``(model, usage) -> float | None``; fills ``cost_usd``.
        strict: re-raise faults instead of swallowing them (for tests).
        finish_timeout: seconds ``close`` waits on the store at most.
    """

    def __init__(
        self,
        store: Any,
        *,
        redaction: RedactionPolicy | None = None,
        pricing: Pricing | None = None,
        strict: bool = False,
        finish_timeout: float = DEFAULT_FINISH_TIMEOUT,
    ) -> None:
        if redaction is not None and not isinstance(redaction, RedactionPolicy):
            raise ValueError(f"redaction must be a RedactionPolicy, got {type(redaction).__name__}")
        if pricing is not None and not (callable(pricing) or isinstance(pricing, Mapping)):
            raise ValueError(f"pricing must be a mapping or a callable, got {type(pricing).__name__}")
        if isinstance(finish_timeout, bool) or not isinstance(finish_timeout, (int, float)):
            raise TypeError(f"finish_timeout must be a number of seconds, got {type(finish_timeout).__name__}")
        if not 0 < finish_timeout < float("inf"):
            raise ValueError(f"finish_timeout must be > 0 seconds and finite, got {finish_timeout!r}")
        if store is not None:
            missing = [m for m in _WRITE_METHODS if not callable(getattr(store, m, None))]
            if missing:
                hint = (
                    f" (for a file, pass aa.SQLiteStore({store!r}) or aa.open_store({store!r}))"
                    if isinstance(store, (str, os.PathLike))
                    else ""
                )
                raise TypeError(
                    f"Auditor needs a store (aa.SQLiteStore, aa.MemoryStore, any aa.Store) or None, "
                    f"got {type(store).__name__} without {', '.join(missing)}{hint}"
                )
        self.store = store
        self.redaction = redaction or RedactionPolicy()
        self.pricing = pricing
        self.finish_timeout = float(finish_timeout)
        self.faults = Faults(strict=strict)

    @property
    def enabled(self) -> bool:
        """False for ``Auditor(None)``: every call is a no-op."""
        return self.store is not None

    @property
    def strict(self) -> bool:
        """True when faults are re-raised (tests), False when swallowed (production)."""
        return self.faults.strict

    def guard(self, kind: str, run_id: str | None = None) -> AbstractContextManager[None]:
        """The one guard every hook body runs in: a fault is logged once, counted, dropped."""
        return self.faults.guard(kind, run_id)

    def start_run(
        self,
        name: str,
        *,
        caller: str | None = None,
        input: Any = None,
        metadata: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = _UNSET,
    ) -> Writer:
        """Record a new run and return its Writer.

        ``parent_run_id`` defaults to the current run (see [`current_run`][agentaudit.current_run]); pass
        None for a root run. Raises ValueError on an empty name."""
        if self.store is None:
            return NOOP_WRITER
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"run name must be a non-empty str, got {name!r}")
        if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
            raise ValueError(f"run_id must be a non-empty str or None, got {run_id!r}")
        if caller is not None and not isinstance(caller, str):
            raise TypeError(f"caller must be a str or None, got {type(caller).__name__}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping or None, got {type(metadata).__name__}")
        if parent_run_id is _UNSET:
            parent = active_writer()
            parent_run_id = parent.run_id if parent is not None and parent.enabled else None
        elif parent_run_id is not None and (not isinstance(parent_run_id, str) or not parent_run_id.strip()):
            raise TypeError(f"parent_run_id must be a non-empty str or None, got {parent_run_id!r}")
        writer = Writer(
            self.store,
            clean_str(run_id) if run_id else uuid.uuid4().hex,
            redaction=self.redaction,
            pricing=self.pricing,
            faults=self.faults,
            finish_timeout=self.finish_timeout,
        )
        with self.faults.guard("start_run", writer.run_id):
            # The store's signing key, when it has one (see `_keys`): it seals the
            # run's finish with the same key.
            keyring = getattr(self.store, "keyring", None)
            key = keyring.signing if isinstance(keyring, Keyring) else None
            run = Run(
                run_id=writer.run_id,
                name=writer._text(name, "run.name", EVENT_TYPE_MAX),
                caller=writer._text(caller or "", "run.caller", EVENT_TYPE_MAX),
                parent_run_id=clean_str(parent_run_id) if parent_run_id else None,
                status=RunStatus.RUNNING,
                started_at=datetime.now(timezone.utc),
                input=writer._text(safe_text(input), "run.input", RUN_IO_MAX),
                metadata=writer._value(dict(metadata), "run.metadata") if metadata else {},
                host=_HOST,
                pid=os.getpid(),
                key_id=key.key_id if key is not None else "",
                salt=new_salt(),
            )
            writer._start_chain(header_hash_of(record_of_run(run), key), key)
            self.store.start_run(run)
            return writer
        # The run row did not land: its events would be orphans (and a fault each), so
        # the run records nothing. The one start_run fault above says why.
        return Writer(None, writer.run_id, faults=self.faults)

    def run(
        self,
        name: str,
        *,
        caller: str | None = None,
        input: Any = None,
        metadata: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = _UNSET,
    ) -> RunContext:
        """A run as a context manager (``with`` or ``async with``): succeeded on normal
        exit; failed with the error text on an exception (re-raised); cancelled on
        cancellation or KeyboardInterrupt (re-raised); timeout on TimeoutError. Inside,
        [`current_run`][agentaudit.current_run] returns its Writer."""
        return RunContext(
            self,
            name,
            dict(caller=caller, input=input, metadata=metadata, run_id=run_id, parent_run_id=parent_run_id),
        )

    def __repr__(self) -> str:
        return f"Auditor(store={type(self.store).__name__ if self.store is not None else None}, faults={self.faults.total})"


class RunContext:
    """What [`Auditor.run`][agentaudit.Auditor.run] returns; enter it with ``with`` or ``async with``."""

    def __init__(self, auditor: Auditor, name: str, options: dict[str, Any]) -> None:
        self._auditor = auditor
        self._name = name
        self._options = options
        self._writer: Writer = NOOP_WRITER
        self._tokens: list[Any] = []

    def __enter__(self) -> Writer:
        self._writer = self._auditor.start_run(self._name, **self._options)
        self._tokens.append(activate(self._writer))
        return self._writer

    def _stats(self, exc: BaseException | None) -> RunStats:
        if exc is None:
            return RunStats(status=RunStatus.SUCCEEDED)
        return RunStats(status=status_for_exception(exc), error=error_text(exc))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._tokens:
            deactivate(self._tokens.pop())
        self._writer.close(self._stats(exc))

    async def __aenter__(self) -> Writer:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._tokens:
            deactivate(self._tokens.pop())
        await self._writer.aclose(self._stats(exc))

    def __iter__(self) -> Iterator[Any]:  # pragma: no cover - guards a common slip
        raise TypeError("use `with auditor.run(...) as w:`, not iteration")
