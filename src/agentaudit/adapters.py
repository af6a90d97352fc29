"""What every adapter needs, written once: an exception's text and the status it
means, and the result a cancelled tool gets.

Why here: the LangChain and LlamaIndex integrations, the decorators and
``Auditor.run`` all turn an exception into a run's ending. Each copy used to differ
in small ways (one would raise on an exception whose ``__str__`` raises), so they
share these (as sentry-python keeps its AI helpers in one module), and one reader
of token usage in every provider shape, the same one `agentaudit.record_step`
uses.
"""

from __future__ import annotations

import asyncio

from ._model import RunStatus, Usage
from ._responses import usage_from as _usage_with_problems
from ._serialize import clean_str
from .payloads import CANCELLED_TOOL_RESULT

__all__ = [
    "CANCELLED_TOOL_RESULT",
    "error_text",
    "is_cancellation",
    "status_for_exception",
    "usage_from",
]

_CANCELLATIONS = (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit)


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` stops work on purpose (task cancellation, Ctrl-C, a closed
    generator) rather than reporting a failure."""
    return isinstance(exc, _CANCELLATIONS)


def status_for_exception(exc: BaseException) -> RunStatus:
    """The terminal status an exception ending a run means: cancelled, timeout, or
    failed. Timeouts are matched by class name too (``WorkflowTimeoutError`` and the
    like), so no framework needs importing."""
    if is_cancellation(exc):
        return RunStatus.CANCELLED
    if isinstance(exc, TimeoutError) or any(
        cls.__name__.endswith("TimeoutError") for cls in type(exc).__mro__
    ):
        return RunStatus.TIMEOUT
    return RunStatus.FAILED


def error_text(exc: BaseException) -> str:
    """``"ValueError: boom"``; the bare class name when the message is empty. Never
    raises: an exception whose ``__str__`` raises (or returns a non-str) reads as
    ``"Name: <unprintable Name>"``, so the caller's exception is never replaced by ours."""
    name = type(exc).__name__
    try:
        message = str(exc)
    except Exception:
        return f"{name}: <unprintable {name}>"
    message = clean_str(message)
    return f"{name}: {message}" if message else name


def usage_from(usage: object) -> Usage:
    """Token counts from a provider's usage object or dict (OpenAI Chat Completions or
    Responses, Anthropic, LangChain's ``usage_metadata``); zeros for what is missing or
    unreadable. Never raises."""
    return _usage_with_problems(usage)[0]
