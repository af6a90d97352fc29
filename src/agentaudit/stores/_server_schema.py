"""The server schema's version and its migrations, applied once under a database lock.

Why a lock: twenty workers restarting at once against an empty database must create
the tables once, not race (a known failure of other tracing servers). Each process
reads the version without the lock first (the usual case: nothing to do); when
behind, it takes the database's own lock (PostgreSQL: a transaction advisory lock,
released by commit or by the server when the process dies; MariaDB: ``GET_LOCK``,
released when the session ends), reads the version again, and applies what is still
missing. On PostgreSQL the migration is one transaction; MariaDB commits DDL as it
goes, so its steps are written to be re-runnable (``IF NOT EXISTS``).

The version is the highest row of ``schema_version``; a database newer than this
code is refused with `SchemaVersionError`. Append only: a released step is never
edited.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from .._errors import SchemaVersionError, StoreError
from ._server_dialect import Dialect, month_start

__all__ = ["database_version", "migrate", "schema_version"]


def schema_version(dialect: Dialect) -> int:
    """The version this code writes."""
    return len(dialect.migrations())


def database_version(conn: Any, dialect: Dialect) -> int | None:
    """The database's schema version; None when it holds no agentaudit schema."""
    cur = conn.cursor()
    cur.execute(dialect.table_exists_sql(), ("schema_version",))
    (exists,) = cur.fetchone()
    if not exists:
        return None
    cur.execute("SELECT max(version) FROM schema_version")
    (found,) = cur.fetchone()
    return int(found or 0)


def migrate(conn: Any, dialect: Dialect, *, to: int | None = None) -> int:
    """Bring the database to this code's version (or to version ``to``: tests make
    old databases this way); return the version it had (0: empty).

    ``conn`` is in autocommit mode. Raises `SchemaVersionError` for a newer schema."""
    target = schema_version(dialect) if to is None else to
    found = database_version(conn, dialect)
    if found == target:
        _ensure_partitions(conn, dialect)
        return found
    _check_not_newer(found or 0, target, dialect)
    if dialect.name == "postgresql":
        with conn.transaction():
            cur = conn.cursor()
            dialect.lock_migrations(cur)
            found = _apply(cur, conn, dialect, target)
    else:
        cur = conn.cursor()
        dialect.lock_migrations(cur)
        try:
            found = _apply(cur, conn, dialect, target)
        finally:
            dialect.unlock_migrations(cur)
    _ensure_partitions(conn, dialect)
    return found


def _apply(cur: Any, conn: Any, dialect: Dialect, target: int) -> int:
    cur.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER NOT NULL PRIMARY KEY,"
        " applied_at VARCHAR(40) NOT NULL)"
    )
    found = database_version(conn, dialect) or 0  # another process may have done it
    _check_not_newer(found, target, dialect)
    steps = dialect.migrations()
    for version in range(found, target):
        for statement in steps[version]:
            cur.execute(statement)
        cur.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)",
            (version + 1, datetime.now(timezone.utc).isoformat(timespec="seconds")),
        )
    return found


def _ensure_partitions(conn: Any, dialect: Dialect) -> None:
    if dialect.partitioned:
        now = datetime.now(timezone.utc)
        dialect.ensure_partitions(conn, sorted({month_start(now), month_start(now + timedelta(days=32))}))


def check_readable(conn: Any, dialect: Dialect) -> int:
    """For a read-only store: the database holds a schema this code can read."""
    found = database_version(conn, dialect)
    target = schema_version(dialect)
    if found is None:
        raise StoreError(f"{dialect.redacted_url()} holds no agentaudit database")
    _check_not_newer(found, target, dialect)
    if found < target:
        raise SchemaVersionError(
            f"{dialect.redacted_url()} has schema version {found}, older than this agentaudit "
            f"({target}); open it once for writing to upgrade it"
        )
    return found


def _check_not_newer(found: int, target: int, dialect: Dialect) -> None:
    if found > target:
        raise SchemaVersionError(
            f"{dialect.redacted_url()} has schema version {found}, newer than this agentaudit "
            f"understands ({target}); upgrade agentaudit to use it"
        )
