"""The SQLite file's layout, its version, and the forward migrations between versions.

The version lives in ``PRAGMA user_version``. Opening an older file runs every
migration after its version, in one ``BEGIN IMMEDIATE`` transaction, so several
processes opening the same old file at once upgrade it exactly once. A file written
by a newer agentaudit is refused: this code cannot know what the newer columns mean.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence

from .._errors import SchemaVersionError, StoreError
from ._sqlite_seal import reseal

__all__ = [
    "BUSY_TIMEOUT_MS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "connect",
    "create_private_file",
    "migrate",
]

# How long one statement waits for another process's write lock before SQLite
# reports "database is locked". The writer thread retries beyond this; readers wait.
BUSY_TIMEOUT_MS = 10_000

# Each migration takes the file from version i to i + 1. Append only: never edit a
# released step, or files already upgraded by it would differ from new ones.
Migration = Callable[[sqlite3.Connection], None]


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, and a migration must be one transaction.
    code = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    for statement in code.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v1_initial(conn: sqlite3.Connection) -> None:
    _run_script(
        conn,
        """
        CREATE TABLE runs (
            run_id          TEXT PRIMARY KEY,
            name            TEXT NOT NULL,
            caller          TEXT NOT NULL DEFAULT '',
            parent_run_id   TEXT,
            status          TEXT NOT NULL,
            -- timestamps: UTC ISO 8601 with microseconds and +00:00, so text order
            -- is time order and a value read back is the datetime written
            started_at      TEXT NOT NULL,
            finished_at     TEXT,
            input           TEXT NOT NULL DEFAULT '',
            output          TEXT NOT NULL DEFAULT '',
            error           TEXT NOT NULL DEFAULT '',
            tool_calls      INTEGER NOT NULL DEFAULT 0,
            steps           INTEGER NOT NULL DEFAULT 0,
            input_tokens    INTEGER NOT NULL DEFAULT 0,
            output_tokens   INTEGER NOT NULL DEFAULT 0,
            thinking_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd        REAL,
            metadata        TEXT NOT NULL DEFAULT '{}',
            host            TEXT NOT NULL DEFAULT '',
            pid             INTEGER NOT NULL DEFAULT 0,
            -- the model that first served the run (its resolved_model event), kept
            -- on the row so listing and grouping by model need no event scan
            model           TEXT NOT NULL DEFAULT ''
        );
        -- newest-first listing, alone and under each filter the CLI offers
        CREATE INDEX runs_started ON runs (started_at);
        CREATE INDEX runs_caller ON runs (caller, started_at);
        CREATE INDEX runs_name ON runs (name, started_at);
        CREATE INDEX runs_status ON runs (status, started_at);
        CREATE INDEX runs_parent ON runs (parent_run_id, started_at);

        -- id gives one order across all runs (what `agentaudit tail` follows);
        -- (run_id, sequence) is the per-run order and refuses a repeated sequence.
        CREATE TABLE events (
            id          INTEGER PRIMARY KEY,
            run_id      TEXT NOT NULL,
            sequence    INTEGER NOT NULL,
            event_type  TEXT NOT NULL,
            payload     TEXT NOT NULL,
            created_at  TEXT NOT NULL,
            prev_hash   TEXT NOT NULL,
            hash        TEXT NOT NULL
        );
        CREATE UNIQUE INDEX events_run_sequence ON events (run_id, sequence);
        """
    )


def _v2_partial_indexes(conn: sqlite3.Connection) -> None:
    # Most runs have no caller, no parent and succeed: those rows now skip three of
    # the runs table's indexes, three fewer b-tree pages written by every run's
    # commit. Queries name the index's condition (see sqlite._where) to use them.
    _run_script(
        conn,
        """
        DROP INDEX runs_caller;
        DROP INDEX runs_status;
        DROP INDEX runs_parent;
        CREATE INDEX runs_caller ON runs (caller, started_at) WHERE caller != '';
        CREATE INDEX runs_status ON runs (status, started_at) WHERE status != 'succeeded';
        CREATE INDEX runs_parent ON runs (parent_run_id, started_at)
            WHERE parent_run_id IS NOT NULL;
        """,
    )


def _v3_run_seals(conn: sqlite3.Connection) -> None:
    # Finished runs written before this version are sealed as they stand at the
    # upgrade: from then on an edit of their rows shows (see _sqlite_seal).
    conn.execute("ALTER TABLE runs ADD COLUMN seal TEXT NOT NULL DEFAULT ''")
    for (run_id,) in conn.execute("SELECT run_id FROM runs WHERE status != 'running'").fetchall():
        reseal(conn, run_id)


def _v4_integrity(conn: sqlite3.Connection) -> None:
    # Filled in by the integrity work (keyed chain, checkpoints, erasure, holds).
    pass


def _v5_search(conn: sqlite3.Connection) -> None:
    # Filled in by the search work (FTS5 over run and event text).
    pass


def _v6_checkpoints(conn: sqlite3.Connection) -> None:
    # Filled in by the checkpoint work (checkpoints, holds, purge records).
    pass


def _v7_spool(conn: sqlite3.Connection) -> None:
    # Filled in by the fleet work (what the forwarder has shipped, the process lease).
    pass


MIGRATIONS: Sequence[Migration] = (
    _v1_initial,
    _v2_partial_indexes,
    _v3_run_seals,
    _v4_integrity,
    _v5_search,
    _v6_checkpoints,
    _v7_spool,
)
SCHEMA_VERSION = len(MIGRATIONS)


def create_private_file(path: str) -> None:
    """Create ``path`` readable by its owner only, unless it exists already.

    Why: an audit log holds prompts, tool arguments and results. SQLite creates its
    -wal and -shm files with the database file's mode, so they follow."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create the audit database {path!r}: {exc.strerror}") from None
    os.close(fd)


def connect(path: str, *, synchronous: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), with WAL, the
    busy timeout and the given ``synchronous`` level."""
    try:
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the audit database {path!r}: {exc}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _retry_busy(lambda: _enable_wal(conn, path))
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = OFF")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path!r} is not a usable SQLite database: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection, path: str) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"cannot switch {path!r} to WAL mode (journal_mode is {mode!r})")


def _retry_busy(action: Callable[[], object], *, attempts: int = 50) -> object:
    """Run ``action``, retrying while another connection holds a lock the busy
    handler does not wait for (switching to WAL, upgrading a read transaction)."""
    for attempt in range(attempts):
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or attempt == attempts - 1:
                raise
            time.sleep(min(0.005 * (attempt + 1), 0.1))
    raise AssertionError("unreachable")


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite saying another connection holds the lock."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(exc)
    return "locked" in text or "busy" in text


def file_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Bring the file to `SCHEMA_VERSION`; return the version it had.

    Raises `SchemaVersionError` for a file newer than this code."""
    found = file_version(conn)
    if found == SCHEMA_VERSION:
        return found
    _check_not_newer(found, path)
    _retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
    try:
        found = file_version(conn)  # another process may have upgraded it meanwhile
        _check_not_newer(found, path)
        for version in range(found, SCHEMA_VERSION):
            MIGRATIONS[version](conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def _check_not_newer(found: int, path: str) -> None:
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path} has schema version {found}, newer than this agentaudit understands "
            f"({SCHEMA_VERSION}); upgrade agentaudit to read it"
        )
