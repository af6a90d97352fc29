"""``instrument()``: attaching an auditor to LlamaIndex's root dispatcher, once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from llama_index.core.instrumentation import get_dispatcher

import agentaudit as aa

from ._handlers import AuditEventHandler, AuditSpanHandler
from ._recorder import Recorder

__all__ = ["Instrumentation", "instrument"]

# Serializes attach and detach: the root dispatcher's handler lists are shared.
_attach_lock = threading.Lock()


class Instrumentation:
    """The attachment of one auditor to LlamaIndex, as ``instrument()`` returns it.

    Call ``uninstrument()`` to detach, or use it as a context manager:

    ```python
    with instrument(auditor):
        await agent.run(user_msg="...")
    ```
    """

    def __init__(
        self, recorder: Recorder, events: AuditEventHandler, spans: AuditSpanHandler
    ) -> None:
        self._recorder = recorder
        self._events = events
        self._spans = spans

    @property
    def auditor(self) -> aa.Auditor:
        """The auditor the runs are recorded with."""
        return self._recorder.auditor

    @property
    def active(self) -> bool:
        """Whether the handlers are still attached to the root dispatcher."""
        root = get_dispatcher()
        return any(h is self._spans for h in root.span_handlers) and any(
            h is self._events for h in root.event_handlers
        )

    def uninstrument(self) -> None:
        """Detach both handlers from the root dispatcher. Runs still in flight are
        closed as ``abandoned`` (their end would no longer be seen). Idempotent."""
        with _attach_lock:
            root = get_dispatcher()
            # New lists rather than in-place removal: a dispatch iterating the old
            # list in another thread is not disturbed.
            root.event_handlers = [h for h in root.event_handlers if h is not self._events]
            root.span_handlers = [h for h in root.span_handlers if h is not self._spans]
        self._recorder.detach()

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstrument()

    def __repr__(self) -> str:
        state = "active" if self.active else "detached"
        return f"<agentaudit_llamaindex.Instrumentation {state} auditor={self.auditor!r}>"


def _check(
    auditor: Any, caller: Any, metadata: Any
) -> tuple[str | Callable[[], str | None] | None, dict[str, Any]]:
    if not isinstance(auditor, aa.Auditor):
        raise TypeError(
            f"instrument() needs an agentaudit.Auditor, got {type(auditor).__name__}; "
            "e.g. instrument(agentaudit.Auditor(agentaudit.MemoryStore()))"
        )
    if caller is not None and not isinstance(caller, str) and not callable(caller):
        raise TypeError(
            "caller must be a str, a zero-argument callable returning one, or None; "
            f"got {type(caller).__name__}"
        )
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping or None, got {type(metadata).__name__}")
    return caller, dict(metadata or {})


def _same_store(attached: aa.Auditor, auditor: aa.Auditor) -> bool:
    """Whether two auditors record into one place: the same store object (or, for
    ``Auditor(None)``, which has none, the same auditor)."""
    if attached is auditor:
        return True
    return attached.store is not None and attached.store is auditor.store


def _differences(
    recorder: Recorder, auditor: aa.Auditor, caller: Any, metadata: dict[str, Any]
) -> list[str]:
    """What a second ``instrument()`` for an attached store asks for differently."""
    attached = recorder.auditor
    differs = []
    if recorder.caller != caller:
        differs.append("caller")
    if recorder.metadata != metadata:
        differs.append("metadata")
    if attached is not auditor:
        settings = ("redaction", "pricing", "strict", "finish_timeout")
        differs.extend(
            f"auditor {name}"
            for name in settings
            if getattr(attached, name, None) != getattr(auditor, name, None)
        )
    return differs


def instrument(
    auditor: aa.Auditor,
    *,
    caller: str | Callable[[], str | None] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Instrumentation:
    """Record every LlamaIndex workflow agent run with ``auditor``.

    Attaches an event handler and a span handler to LlamaIndex's root
    instrumentation dispatcher. From then on each run of a ``FunctionAgent``,
    ``ReActAgent``, ``CodeActAgent`` or ``AgentWorkflow`` is one audit run: each
    model call is a ``step``, each tool execution a ``tool_call`` and its
    ``tool_result``, and the run ends ``succeeded`` with the final response,
    ``failed`` with the exception, ``cancelled`` or ``timeout``. An agent run
    started inside another run (from a tool) is recorded as its child.

    Args:
        auditor: where the runs go.
        caller: who the runs are for, stored on each run: a string, or a
            zero-argument callable called at the start of each run (for instance
            one reading the current request's user from a context variable).
        metadata: stored on each run, with ``"llamaindex.run_id"`` (the workflow's
            own run id) added.

    Returns:
        The attachment; its ``uninstrument()`` detaches. One process attaches
            once per store: calling ``instrument`` again for the same store (with
            the same auditor, or another ``Auditor`` over that store with the same
            settings) and the same options attaches nothing more and returns the
            existing attachment, which goes on recording with the first auditor.
            Attaching twice would record every run twice.

    Raises:
        TypeError: ``auditor`` is not an ``agentaudit.Auditor``, or
            ``caller``/``metadata`` have the wrong type.
        ValueError: the store is already instrumented with a different
            ``caller`` or ``metadata``, or through an auditor with other settings
            (redaction, pricing, strict, finish timeout); uninstrument first to
            change them.
    """
    caller, metadata_dict = _check(auditor, caller, metadata)
    with _attach_lock:
        root = get_dispatcher()
        for handler in root.span_handlers:
            if isinstance(handler, AuditSpanHandler) and _same_store(handler.recorder.auditor, auditor):
                existing = next(
                    (
                        h
                        for h in root.event_handlers
                        if isinstance(h, AuditEventHandler) and h.recorder is handler.recorder
                    ),
                    None,
                )
                if existing is not None and isinstance(handler.recorder.handle, Instrumentation):
                    recorder = handler.recorder
                    differs = _differences(recorder, auditor, caller, metadata_dict)
                    if differs:
                        raise ValueError(
                            f"{auditor.store!r} is already instrumented, with another "
                            f"{' and '.join(differs)}; one process attaches once per store "
                            "(twice would record every run twice). Call uninstrument() on the "
                            "handle the first instrument() returned, then instrument again"
                        )
                    return recorder.handle
        recorder = Recorder(auditor, caller=caller, metadata=metadata_dict)
        events = AuditEventHandler(recorder)
        spans = AuditSpanHandler(recorder)
        recorder.handle = Instrumentation(recorder, events, spans)
        root.add_event_handler(events)
        root.add_span_handler(spans)
        return recorder.handle
