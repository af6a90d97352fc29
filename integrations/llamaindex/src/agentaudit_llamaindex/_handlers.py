"""The two handlers ``instrument`` attaches to LlamaIndex's root dispatcher.

Both are thin: they pick out what the recorder needs from each signal and hand it
over. LlamaIndex handlers are pydantic models, so the recorder is a private
attribute. The span handler overrides ``span_enter``/``span_exit``/``span_drop``
themselves and keeps no ``open_spans`` of its own: the recorder holds only the
spans inside agent runs, and only while their run is open.
"""

from __future__ import annotations

import inspect
from typing import Any

from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
)
from llama_index.core.instrumentation.span import BaseSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from pydantic import PrivateAttr

from ._recorder import Recorder

__all__ = ["AuditEventHandler", "AuditSpanHandler"]


class AuditEventHandler(BaseEventHandler):
    """Routes LLM chat events and cancellations to the recorder."""

    _recorder: Recorder = PrivateAttr()

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self._recorder = recorder

    @classmethod
    def class_name(cls) -> str:
        return "AgentAuditEventHandler"

    @property
    def recorder(self) -> Recorder:
        return self._recorder

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        recorder = self._recorder
        with recorder.guard("event"):
            kind = _KINDS.get(type(event))
            if kind is None:
                kind = _KINDS[type(event)] = _kind_of(event)
            if kind is _IGNORED:  # most events of a run (agent input, stream, tool events)
                return
            if kind is LLMChatInProgressEvent:
                recorder.llm_chat_progress(event.span_id, event.response)  # type: ignore[attr-defined]
            elif kind is LLMChatStartEvent:
                recorder.llm_chat_start(event.span_id, event.model_dict)  # type: ignore[attr-defined]
            elif kind is LLMChatEndEvent:
                recorder.llm_chat_end(event.span_id, event.response)  # type: ignore[attr-defined]
            elif kind is ExceptionEvent:
                recorder.llm_exception(event.span_id, event.exception)  # type: ignore[attr-defined]
            else:
                recorder.span_cancelled(event.span_id)


_IGNORED = object()
_CANCELLED = object()
# Event class -> what it is to the recorder, learnt once per class.
_KINDS: dict[type, Any] = {}


def _kind_of(event: BaseEvent) -> Any:
    for kind in (LLMChatInProgressEvent, LLMChatStartEvent, LLMChatEndEvent, ExceptionEvent):
        if isinstance(event, kind):
            return kind
    if event.class_name() == "SpanCancelledEvent":  # defined in workflows' runtime
        return _CANCELLED
    return _IGNORED


class AuditSpanHandler(BaseSpanHandler[BaseSpan]):
    """Routes span enter/exit/drop to the recorder."""

    _recorder: Recorder = PrivateAttr()

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self._recorder = recorder

    @classmethod
    def class_name(cls) -> str:
        return "AgentAuditSpanHandler"

    @property
    def recorder(self) -> Recorder:
        return self._recorder

    def span_enter(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        parent_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._recorder.span_enter(id_, bound_args, instance, parent_id)

    def span_exit(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        result: Any | None = None,
        **kwargs: Any,
    ) -> None:
        self._recorder.span_exit(id_, result)

    def span_drop(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> None:
        self._recorder.span_drop(id_, err)

    # The abstract hooks of BaseSpanHandler; unused, as the three above are overridden.
    def new_span(self, *args: Any, **kwargs: Any) -> BaseSpan | None:
        return None

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> BaseSpan | None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> BaseSpan | None:
        return None
