"""Stores keep runs queryable: in memory, in an embedded SQLite file (the default)."""

from __future__ import annotations

from typing import Any

from ._protocol import BatchingStore, Store
from .memory import MemoryStore

__all__ = ["BatchingStore", "MemoryStore", "Store", "open_store"]


def open_store(url: str, **options: Any) -> Any:
    """A store from a URL: ``memory://``, ``sqlite:///relative.db``,
    ``sqlite:////absolute/path.db``, or a bare path to a SQLite file."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"open_store needs a URL such as 'sqlite:///agentaudit.db', got {url!r}")
    if url == "memory://" or url == "memory:":
        return MemoryStore(**options)
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if path.startswith("/"):
            path = path[1:]  # sqlite:///x.db -> x.db ; sqlite:////abs -> /abs
        if not path:
            raise ValueError(f"sqlite URL has no path: {url!r}")
        from .sqlite import SQLiteStore

        return SQLiteStore(path, **options)
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise ValueError(f"unknown store scheme {scheme!r} in {url!r}; use memory:// or sqlite:///path")
    from .sqlite import SQLiteStore

    return SQLiteStore(url, **options)
