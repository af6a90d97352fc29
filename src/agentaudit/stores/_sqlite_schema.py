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
    "DURATION_US",
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
    # Chain v2 (see _chain): the id of the key a run is sealed with ('' unkeyed) and
    # the salts its content digests use ('' for runs written before: they stay v1).
    _run_script(
        conn,
        """
        ALTER TABLE runs ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
        ALTER TABLE runs ADD COLUMN salt TEXT NOT NULL DEFAULT '';
        ALTER TABLE events ADD COLUMN salt TEXT NOT NULL DEFAULT '';
        """,
    )


# The text an event is found by: every string value in its payload (a step's text and
# model, a tool's name, arguments and result, an error's message, a custom event's
# strings), whatever its keys are called. A payload that is not JSON (a hand edit) is
# taken as it stands rather than failing the statement that touches it.
def _event_text(row: str) -> str:
    return (
        f"coalesce(CASE WHEN json_valid({row}.payload) THEN (SELECT group_concat(value, ' ') "
        f"FROM json_tree({row}.payload) WHERE type = 'text') ELSE {row}.payload END, '')"
    )


def _run_text(row: str) -> str:
    return f"({row}.input || ' ' || {row}.output || ' ' || {row}.error)"


def _v5_search(conn: sqlite3.Connection) -> None:
    # Full-text search (RunFilter(text=...), `agentaudit search`) over each run's input,
    # output and error and over its events' text, with SQLite's FTS5. The index is
    # contentless (the file does not hold the text twice) and keeps no positions
    # (detail=none: a search is words and word prefixes, never phrases), which keeps
    # the writer's cost per event small. Triggers keep it in step
    # with every insert, update and delete, whoever makes it: the writer thread, reap,
    # purge, delete, erase, a hand edit. An event is keyed by events.id; a run by a key
    # of its own in run_search_keys (runs' implicit rowids may change on VACUUM),
    # negated so that both share one index. Rows written before this version are
    # indexed here. Also: indexes for the filters `runs --model`, `--errors` and
    # `--min-cost`, partial like v2's, so that runs without a model, without an error
    # or without a cost are not written to them. Also: one index per sort order
    # (`--sort cost|duration|tokens`), on the value then the start, which serves
    # either direction; queries state each expression and condition exactly as here
    # (see _SORT_KEYS in sqlite.py), and list runs without a value after, by the start.
    failing = "status IN ('failed', 'timeout', 'abandoned')"
    new_key = "(SELECT key FROM run_search_keys WHERE run_id = new.run_id)"
    old_key = "(SELECT key FROM run_search_keys WHERE run_id = old.run_id)"
    statements = [
        """CREATE VIRTUAL TABLE run_search USING fts5 (
               body, content = '', detail = none, columnsize = 0,
               tokenize = 'unicode61 remove_diacritics 2')""",
        "CREATE TABLE run_search_keys (key INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE)",
        "INSERT INTO run_search_keys (run_id) SELECT run_id FROM runs ORDER BY rowid",
        f"""INSERT INTO run_search (rowid, body)
               SELECT -k.key, {_run_text("r")} FROM runs AS r JOIN run_search_keys AS k USING (run_id)""",
        f"INSERT INTO run_search (rowid, body) SELECT e.id, {_event_text('e')} FROM events AS e",
        f"""CREATE TRIGGER run_search_run_insert AFTER INSERT ON runs BEGIN
               INSERT OR IGNORE INTO run_search_keys (run_id) VALUES (new.run_id);
               INSERT INTO run_search (rowid, body) VALUES (-{new_key}, {_run_text("new")});
           END""",
        f"""CREATE TRIGGER run_search_run_update AFTER UPDATE OF input, output, error ON runs
           WHEN old.input IS NOT new.input OR old.output IS NOT new.output OR old.error IS NOT new.error
           BEGIN
               INSERT INTO run_search (run_search, rowid, body)
                   VALUES ('delete', -{old_key}, {_run_text("old")});
               INSERT INTO run_search (rowid, body) VALUES (-{new_key}, {_run_text("new")});
           END""",
        """CREATE TRIGGER run_search_run_rename AFTER UPDATE OF run_id ON runs BEGIN
               UPDATE run_search_keys SET run_id = new.run_id WHERE run_id = old.run_id;
           END""",
        f"""CREATE TRIGGER run_search_run_delete AFTER DELETE ON runs BEGIN
               INSERT INTO run_search (run_search, rowid, body)
                   VALUES ('delete', -{old_key}, {_run_text("old")});
               DELETE FROM run_search_keys WHERE run_id = old.run_id;
           END""",
        f"""CREATE TRIGGER run_search_event_insert AFTER INSERT ON events BEGIN
               INSERT INTO run_search (rowid, body) VALUES (new.id, {_event_text("new")});
           END""",
        f"""CREATE TRIGGER run_search_event_update AFTER UPDATE OF payload ON events
           WHEN old.payload IS NOT new.payload
           BEGIN
               INSERT INTO run_search (run_search, rowid, body)
                   VALUES ('delete', old.id, {_event_text("old")});
               INSERT INTO run_search (rowid, body) VALUES (new.id, {_event_text("new")});
           END""",
        f"""CREATE TRIGGER run_search_event_delete AFTER DELETE ON events BEGIN
               INSERT INTO run_search (run_search, rowid, body)
                   VALUES ('delete', old.id, {_event_text("old")});
           END""",
        "CREATE INDEX runs_model ON runs (model, started_at) WHERE model != ''",
        f"CREATE INDEX runs_errors ON runs (started_at) WHERE (error != '' OR {failing})",
        "CREATE INDEX runs_cost ON runs (cost_usd, started_at) WHERE cost_usd IS NOT NULL",
        # in whole microseconds (a difference of julianday()s, a float, orders equal
        # durations by rounding error); the timestamps' text ends .ffffff+00:00
        f"""CREATE INDEX runs_duration ON runs ({DURATION_US}, started_at)
               WHERE finished_at IS NOT NULL""",
        "CREATE INDEX runs_tokens ON runs (input_tokens + output_tokens, started_at)",
    ]
    for statement in statements:  # one by one: a trigger's body holds semicolons
        conn.execute(statement)


# A run's duration in microseconds, as the v5 index runs_duration states it (sqlite.py's
# sorted listing states it identically, so that the index serves it).
DURATION_US = (
    "(strftime('%s', finished_at) - strftime('%s', started_at)) * 1000000"
    " + substr(finished_at, 21, 6) - substr(started_at, 21, 6)"
)


def _v6_checkpoints(conn: sqlite3.Connection) -> None:
    # Signed checkpoints over an append-only log of entries (see agentaudit._checkpoints),
    # legal holds, and settings such as the retention floor.
    _run_script(
        conn,
        """
        CREATE TABLE checkpoints (
            seq         INTEGER PRIMARY KEY,       -- 1, 2, ...: the note's number
            created_at  TEXT NOT NULL,
            first_entry INTEGER NOT NULL,          -- log index of its first entry
            size        INTEGER NOT NULL,          -- entries in the log after it
            note        TEXT NOT NULL,             -- the signed note, as written to the sink
            frontier    TEXT NOT NULL,             -- JSON: the log's compact range after it
            exported    INTEGER NOT NULL DEFAULT 0 -- 1 once the sink took it
        );
        -- the log: one row per leaf, in leaf order
        CREATE TABLE checkpoint_entries (
            idx      INTEGER PRIMARY KEY,   -- 0-based leaf index
            seq      INTEGER NOT NULL,      -- the checkpoint that added it
            kind     TEXT NOT NULL,         -- sealed, head or purged
            run_id   TEXT NOT NULL,
            events   INTEGER NOT NULL,
            seal     TEXT NOT NULL,
            digest   TEXT NOT NULL
        );
        CREATE INDEX checkpoint_entries_run ON checkpoint_entries (run_id, kind);
        CREATE TABLE holds (
            run_id   TEXT PRIMARY KEY,
            reason   TEXT NOT NULL DEFAULT '',
            held_at  TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE settings (
            name   TEXT PRIMARY KEY,
            value  TEXT NOT NULL
        ) WITHOUT ROWID;
        """,
    )


def _v7_spool(conn: sqlite3.Connection) -> None:
    # A file used as a spool (stores/spool.py) records here what its forwarder has
    # shipped to each server, so a restarted process or `agentaudit forward` goes on
    # where the last one stopped. Empty, and never read, in a file that is not a spool.
    _run_script(
        conn,
        """
        CREATE TABLE spool_cursor (
            target      TEXT PRIMARY KEY,            -- the server's URL, without password
            run_rowid   INTEGER NOT NULL DEFAULT 0,  -- runs.rowid up to which runs are shipped
            event_id    INTEGER NOT NULL DEFAULT 0,  -- events.id up to which events are shipped
            shipped_at  TEXT NOT NULL DEFAULT ''     -- when the server last took a batch
        );
        -- runs shipped while still running (or before all their events were):
        -- their final row is still to ship
        CREATE TABLE spool_open_runs (
            target  TEXT NOT NULL,
            run_id  TEXT NOT NULL,
            PRIMARY KEY (target, run_id)
        ) WITHOUT ROWID;
        """,
    )


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


# SQLite's primary result codes (sqlite3 names them only from Python 3.11).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_CANTOPEN = 14


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite saying another connection holds the lock."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    text = str(exc)
    return "locked" in text or "busy" in text


def needs_reopen(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection itself went bad (the file turned read-only
    or vanished under it), so the writer must open a new one before it retries."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_READONLY, _SQLITE_CANTOPEN)
    text = str(exc)  # Python 3.10 has no error codes on the exception
    return "readonly" in text or "unable to open" in text


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
