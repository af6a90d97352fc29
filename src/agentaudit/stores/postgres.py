"""PostgresStore: runs and events in PostgreSQL, for a fleet sharing one audit.

Needs the ``postgres`` extra (psycopg 3). Open it with
``aa.open_store("postgresql://user@host/db")``; see `agentaudit.stores._server` for
how it writes, and docs/storage.md for the schema (events partitioned by month).
"""

from __future__ import annotations

from ._server import Lease, ServerStore
from ._server_dialect import PostgresDialect

__all__ = ["Lease", "PostgresStore"]


class PostgresStore(ServerStore):
    """A `ServerStore` on PostgreSQL 12 or later (psycopg 3)."""

    dialect_class = PostgresDialect
