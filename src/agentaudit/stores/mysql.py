"""MySQLStore: runs and events in MariaDB (10.6+) or MySQL (8.0+).

Needs the ``mysql`` extra (PyMySQL, pure Python). Open it with
``aa.open_store("mysql://user:password@host/db")`` (``mariadb://`` too); see
`agentaudit.stores._server` for how it writes.
"""

from __future__ import annotations

from ._server import Lease, ServerStore
from ._server_dialect import MySQLDialect

__all__ = ["Lease", "MySQLStore"]


class MySQLStore(ServerStore):
    """A `ServerStore` on MariaDB or MySQL (PyMySQL)."""

    dialect_class = MySQLDialect
