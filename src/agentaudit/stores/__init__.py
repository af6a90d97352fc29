"""Stores keep runs queryable: in memory, in an embedded SQLite file (the default)."""

from __future__ import annotations

from typing import Any

from ._protocol import BatchingStore, Store
from .memory import MemoryStore

__all__ = ["BatchingStore", "MemoryStore", "Store", "open_store"]


def open_store(url: str, *, read_only: bool = False, **options: Any) -> Store:
    """A store from a URL: ``memory://``, ``sqlite:///relative.db``,
    ``sqlite:////absolute/path.db``, or a bare path to a SQLite file.

    ``read_only=True`` opens an existing database for reading only: it is never
    created, migrated or changed, and one that is not an agentaudit database is
    refused with `StoreError`.

    ``spool=PATH`` with a server URL returns a `SpooledStore`: writes go to a local
    SQLite spool at PATH and a forwarder thread ships them to the server (a fleet's
    worker; see docs/deployment.md)."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"open_store needs a URL such as 'sqlite:///agentaudit.db', got {url!r}")
    spool = options.pop("spool", None)
    if spool is not None:  # a fleet worker: writes to a local spool, forwarded to url
        if read_only:
            raise ValueError("spool= is for writing; open the server URL alone to read it")
        from .spool import SpooledStore

        return SpooledStore(spool, url, **options)
    if read_only:
        options["read_only"] = True
    if url == "memory://" or url == "memory:":
        if read_only:
            raise ValueError("a memory:// store starts empty: there is nothing to open read-only")
        return MemoryStore(**options)
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if path.startswith("/"):
            path = path[1:]  # sqlite:///x.db -> x.db ; sqlite:////abs -> /abs
        if not path:
            raise ValueError(f"sqlite URL has no path: {url!r}")
        from .sqlite import SQLiteStore

        return SQLiteStore(path, **options)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(url, **options)
    if scheme in ("mysql", "mariadb"):
        from .mysql import MySQLStore

        return MySQLStore(url, **options)
    if "://" in url:
        raise ValueError(
            f"unknown store scheme {scheme!r} in {url!r}; use memory://, sqlite:///path, "
            "postgresql://… or mysql://…"
        )
    from .sqlite import SQLiteStore

    return SQLiteStore(url, **options)
