"""The active run, carried by contextvars: it follows asyncio tasks automatically and
reaches executor threads through ``contextvars.copy_context().run``."""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._writer import Writer

__all__ = ["activate", "current_run", "deactivate"]

_current: ContextVar[Writer | None] = ContextVar("agentaudit_current_run", default=None)


def current_run() -> Writer:
    """The Writer of the innermost active run, or a no-op Writer outside any run."""
    writer = _current.get()
    if writer is not None:
        return writer
    from ._writer import NOOP_WRITER

    return NOOP_WRITER


def active_writer() -> Writer | None:
    return _current.get()


def activate(writer: Writer) -> Token[Writer | None]:
    return _current.set(writer)


def deactivate(token: Token[Writer | None]) -> None:
    try:
        _current.reset(token)
    except ValueError:  # reset from another context (a generator resumed elsewhere)
        _current.set(None)
