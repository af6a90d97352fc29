"""What differs between PostgreSQL and MariaDB/MySQL, in one small class each.

Why no SQLAlchemy: both drivers (psycopg 3, PyMySQL) take DB-API ``%s`` parameters,
so nearly every query of the server stores is one text for both databases, in
`_server`. What differs is what SQLAlchemy Core would not abstract either: advisory
locks, partitions, full-text search, "insert unless present", time arithmetic, and
which driver exception means what. Those few things live here. One dependency
less, and the SQL that runs is the SQL a reader sees.
"""

from __future__ import annotations

import abc
import re
import urllib.parse
from collections.abc import Sequence
from datetime import date, datetime, timezone
from typing import Any

from .._errors import StoreError
from ._server_summary import backfill_statements

__all__ = ["Dialect", "MySQLDialect", "PostgresDialect", "month_start", "partition_name"]


def month_start(moment: datetime) -> date:
    utc = moment.astimezone(timezone.utc)
    return date(utc.year, utc.month, 1)


def next_month(first: date) -> date:
    return date(first.year + (first.month == 12), first.month % 12 + 1, 1)


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def partition_name(first: date) -> str:
    return f"events_{first.year:04d}{first.month:02d}"


# Failure, for `stats` and `--errors`: as SQLite's (an error text, or a failing status).
FAILING = "status IN ('failed', 'timeout', 'abandoned')"
HAS_ERROR = f"(error <> '' OR {FAILING})"


class Dialect(abc.ABC):
    """The database-specific parts of the server stores."""

    name = ""
    partitioned = False
    # "insert, unless a row with this key is already there" (other errors stay errors)
    insert_unless_present = ""

    def __init__(self, url: str) -> None:
        self.url = url

    # -- connections -------------------------------------------------------------------
    @abc.abstractmethod
    def connect(self, *, read_only: bool = False) -> Any:
        ...

    @abc.abstractmethod
    def is_refusal(self, exc: BaseException) -> bool:
        """The database refused one item (a duplicate key, a value that does not fit):
        retrying the same item cannot help."""
        ...

    @abc.abstractmethod
    def is_disconnect(self, exc: BaseException) -> bool:
        """The connection is unusable: open a new one before retrying."""
        ...

    def redacted_url(self) -> str:
        """The URL with its password masked (for messages and logs)."""
        parts = urllib.parse.urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    # -- values ------------------------------------------------------------------------
    def ts(self, moment: datetime) -> Any:
        """A timezone-aware datetime as the driver takes it."""
        return moment.astimezone(timezone.utc)

    def from_ts(self, value: Any) -> datetime:
        """A stored time read back, as an aware UTC datetime."""
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)  # type: ignore[no-any-return]
        return value.astimezone(timezone.utc)  # type: ignore[no-any-return]

    # -- SQL pieces --------------------------------------------------------------------
    @abc.abstractmethod
    def lock_migrations(self, cur: Any) -> None:
        ...

    def summary_setup(self) -> Sequence[str]:
        """Statements run in `summary`'s transaction before its queries."""
        return ()

    def writer_setup(self) -> Sequence[str]:
        """Statements run once on a writer thread's new connection."""
        return ()

    def unlock_migrations(self, cur: Any) -> None:
        return None  # a transaction-scoped lock (PostgreSQL) ends with the transaction

    @abc.abstractmethod
    def table_exists_sql(self) -> str:
        ...

    @abc.abstractmethod
    def day_sql(self, column: str) -> str:
        ...

    @abc.abstractmethod
    def duration_sql(self) -> str:
        ...

    @abc.abstractmethod
    def duration_ms_sql(self) -> str:
        ...

    @abc.abstractmethod
    def number_sql(self, column: str, key: str) -> str:
        """A top-level number of a JSON payload, NULL when absent or not a number
        (never an error: a hand-edited payload must not fail a summary)."""
        ...

    @abc.abstractmethod
    def percentiles_sql(self, inner: str) -> str:
        """(k, p50, p95) per group of ``inner``'s (k, v) rows with v not NULL,
        interpolated between the nearest values (numpy's default)."""
        ...

    # -- the summary rollup (`_server_summary`) ------------------------------------------
    int_type = "bigint"  # what CAST(... AS ?) makes an integer
    float_type = "double precision"  # and a double

    @abc.abstractmethod
    def rollup_day_sql(self, column: str) -> str:
        """The UTC date of a start time, as a DATE."""
        ...

    @abc.abstractmethod
    def rollup_month_sql(self, column: str) -> str:
        """The first day of a DATE's month, as a DATE."""
        ...

    @abc.abstractmethod
    def rollup_duration_sql(self, alias: str) -> str:
        """A run's duration in ms as a double (``alias``: the runs table's name)."""
        ...

    @abc.abstractmethod
    def add_on_conflict(self, table: str, keys: Sequence[str], added: Sequence[str]) -> str:
        """The tail of a multi-row INSERT that adds ``added`` to a row already there."""
        ...

    @abc.abstractmethod
    def text_match_sql(self, words: Sequence[str]) -> tuple[str, list[Any]]:
        """A condition on ``runs``: every word (as a prefix) is somewhere in the run's
        input, output or error or in its events' text (the database's full-text index)."""
        ...

    @abc.abstractmethod
    def expires_sql(self) -> str:
        """The database's clock plus ``%s`` seconds (leases use one clock for all hosts)."""
        ...

    @abc.abstractmethod
    def now_sql(self) -> str:
        ...

    def events_key_sql(self) -> str:
        """The condition that finds one run's events (``%s`` parameters: see
        `events_key_params`)."""
        return "run_id = %s"

    def events_key_params(self, run_id: str) -> list[Any]:
        return [run_id]

    def ensure_partitions(self, conn: Any, months: Sequence[date]) -> None:
        """Create the event partitions of these months if missing (PostgreSQL)."""
        return None  # a database without partitions has none to create

    def whole_partitions(self, cur: Any, before: datetime) -> list[tuple[str, date, date]]:
        """The event partitions wholly before ``before``: (name, first day, end)."""
        return []

    @abc.abstractmethod
    def migrations(self) -> Sequence[Sequence[str]]:
        ...


# -- PostgreSQL ----------------------------------------------------------------------------

# The searched text, as index expressions (a query spells them the same way to use the
# index). JSON keys are cut out of an event's payload: a search for "result" must not
# find every tool result. No cast to jsonb: it refuses a payload holding \u0000, and an
# index expression that raises would refuse the event itself.
RUN_TEXT = "to_tsvector('simple', input || ' ' || output || ' ' || error)"
EVENT_TEXT = (
    "to_tsvector('simple', regexp_replace(payload, "
    + r"""'"(?:[^"\\]|\\.)*"\s*:'"""
    + ", ' ', 'g'))"
)
# The rollup's day and duration (the v6 migration's backfill spells them so too).
_PG_DAY = "CAST({column} AT TIME ZONE 'UTC' AS date)"
_PG_MONTH = "CAST(date_trunc('month', {column}) AS date)"
_PG_DURATION = "CAST(extract(epoch FROM {r}.finished_at - {r}.started_at) * 1000 AS double precision)"
# A session that sits idle inside a transaction is ended by the server after this
# many seconds. The store never pauses inside one; a client that does was cut off
# mid-transaction (a pulled link sends no reset) or frozen, and until its session
# ends it holds its locks, including the rollup cells every writer updates.
IDLE_IN_TRANSACTION_TIMEOUT = 30
_MIGRATE_LOCK = 0x41414D  # "AAM"
_PARTITION_LOCK = 0x414150  # "AAP"
_PARTITION = re.compile(r"events_(\d{4})(\d{2})")


class PostgresDialect(Dialect):
    """psycopg 3. Times are ``timestamptz``; key columns use the "C" collation, so their
    order is code point order (as in SQLite) and a prefix is a range."""

    name = "postgresql"
    partitioned = True
    insert_unless_present = "INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        try:
            import psycopg
        except ImportError:
            raise StoreError(
                "a postgresql:// store needs psycopg 3: pip install 'agentaudit[postgres]'"
            ) from None
        self._psycopg = psycopg

    def connect(self, *, read_only: bool = False) -> Any:
        psycopg = self._psycopg
        try:
            # named, so an operator sees whose sessions these are (unless the URL names them)
            named = {} if "application_name" in self.url else {"application_name": "agentaudit"}
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10, **named)
            conn.execute("SET TIME ZONE 'UTC'")
            # The store's queries are short: compiling one (JIT, on by default past a
            # cost estimate) took longer than running it (bench/bench_server.py).
            conn.execute("SET jit = off")
            if "idle_in_transaction_session_timeout" not in self.url:
                conn.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}s'")
            if read_only:
                conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.redacted_url()}: {_first_line(exc)}") from None
        return conn

    def is_refusal(self, exc: BaseException) -> bool:
        psycopg = self._psycopg
        return isinstance(
            exc, (psycopg.IntegrityError, psycopg.DataError, psycopg.errors.ProgramLimitExceeded)
        )

    def is_disconnect(self, exc: BaseException) -> bool:
        psycopg = self._psycopg
        if isinstance(exc, (psycopg.InterfaceError, psycopg.errors.IdleInTransactionSessionTimeout)):
            return True  # the latter: the server ended the session (an InternalError by its class)
        if isinstance(exc, psycopg.OperationalError):
            errors = psycopg.errors
            return not isinstance(
                exc, (errors.SerializationFailure, errors.DeadlockDetected,
                      errors.LockNotAvailable, errors.QueryCanceled)
            )
        return False

    def lock_migrations(self, cur: Any) -> None:
        # Transaction-scoped: released by the commit (or by the server when a migrating
        # process dies), and per schema, so that each schema migrates on its own.
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (_MIGRATE_LOCK,))

    def table_exists_sql(self) -> str:
        return "SELECT to_regclass(%s) IS NOT NULL"

    def summary_setup(self) -> Sequence[str]:
        # percentiles sort every value of a group: in memory, not in temporary files
        return ("SET LOCAL work_mem = '64MB'",)

    def writer_setup(self) -> Sequence[str]:
        # The writer repeats a few statements (psycopg prepares them): planned once,
        # not per batch. Planning the summary rollup's read of a run's events across
        # the partitions took 1.2 ms of its 1.8 ms (bench/bench_server.py ingest).
        return ("SET plan_cache_mode = force_generic_plan",)

    def day_sql(self, column: str) -> str:
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"

    def duration_sql(self) -> str:
        return "(finished_at - started_at)"

    def duration_ms_sql(self) -> str:
        return "(extract(epoch FROM finished_at - started_at) * 1000)"

    def number_sql(self, column: str, key: str) -> str:
        # canonical JSON: a top-level key is written "key":value, with no space
        return (
            f"(substring({column} FROM '\"{key}\":(-?[0-9]+(?:\\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)[,}}]'))::float8"
        )

    def percentiles_sql(self, inner: str) -> str:
        return (
            "SELECT k, percentile_cont(0.5) WITHIN GROUP (ORDER BY v), "
            f"percentile_cont(0.95) WITHIN GROUP (ORDER BY v) FROM ({inner}) s WHERE v IS NOT NULL GROUP BY k"
        )

    def rollup_day_sql(self, column: str) -> str:
        return _PG_DAY.format(column=column)

    def rollup_month_sql(self, column: str) -> str:
        return _PG_MONTH.format(column=column)

    def rollup_duration_sql(self, alias: str) -> str:
        return _PG_DURATION.format(r=alias)

    def add_on_conflict(self, table: str, keys: Sequence[str], added: Sequence[str]) -> str:
        sums = ", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in added)
        return f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sums}"

    def text_match_sql(self, words: Sequence[str]) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for word in words:
            clauses.append(
                f"({RUN_TEXT} @@ to_tsquery('simple', %s) OR run_id IN "
                f"(SELECT e.run_id FROM events e WHERE {EVENT_TEXT} @@ to_tsquery('simple', %s)))"
            )
            params += [f"{word}:*", f"{word}:*"]  # words are letters and digits only
        return " AND ".join(clauses), params

    def expires_sql(self) -> str:
        return "(now() + %s * interval '1 second')"

    def now_sql(self) -> str:
        return "now()"

    def events_key_sql(self) -> str:
        # The run's start names the one partition that holds its events.
        return "run_id = %s AND run_started_at = (SELECT r.started_at FROM runs r WHERE r.run_id = %s)"

    def events_key_params(self, run_id: str) -> list[Any]:
        return [run_id, run_id]

    def ensure_partitions(self, conn: Any, months: Sequence[date]) -> None:
        # Looked up first, without a lock: almost always they exist, and a CREATE ...
        # IF NOT EXISTS locks the events table (and the lock below serialises every
        # writer's ingest) even when it creates nothing.
        names = sorted({partition_name(first) for first in months})
        found = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relname = ANY(%s)",
            (names,),
        ).fetchone()
        if found is not None and int(found[0]) == len(names):
            return
        # A transaction of its own (creating a partition locks the events table),
        # under a lock: twenty writers reaching a new month create it once.
        with conn.transaction():
            cur = conn.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (_PARTITION_LOCK,))
            for first in months:
                # DDL takes no parameters; both bounds are dates this code made.
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {partition_name(first)} PARTITION OF events "
                    f"FOR VALUES FROM ('{first.isoformat()} 00:00:00+00') "
                    f"TO ('{next_month(first).isoformat()} 00:00:00+00')"
                )

    def whole_partitions(self, cur: Any, before: datetime) -> list[tuple[str, date, date]]:
        cur.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
            "WHERE p.relname = 'events' AND n.nspname = current_schema()"
        )
        found = []
        for (relname,) in cur.fetchall():
            match = _PARTITION.fullmatch(relname)
            if not match:
                continue
            first = date(int(match.group(1)), int(match.group(2)), 1)
            end = next_month(first)
            if midnight(end) <= before:
                found.append((relname, first, end))
        return sorted(found, key=lambda item: item[1])

    def migrations(self) -> Sequence[Sequence[str]]:
        return _PG_MIGRATIONS


# Each entry takes the schema from version i to i + 1. Append only. The steps mirror
# the SQLite file's: v1 its tables as of its version 3 (with model and seal), v2 its
# _v4_integrity, v3 its _v5_search, v4 its _v6_checkpoints; v5 the leases (server
# only). SQLite's _v7_spool is a spool's own bookkeeping: a server is never a spool.
_PG_MIGRATIONS: Sequence[Sequence[str]] = (
    (
        """CREATE TABLE runs (
            run_id          text COLLATE "C" PRIMARY KEY,
            name            text COLLATE "C" NOT NULL,
            caller          text COLLATE "C" NOT NULL DEFAULT '',
            parent_run_id   text COLLATE "C",
            status          text COLLATE "C" NOT NULL,
            started_at      timestamptz NOT NULL,
            finished_at     timestamptz,
            input           text NOT NULL DEFAULT '',
            output          text NOT NULL DEFAULT '',
            error           text NOT NULL DEFAULT '',
            tool_calls      bigint NOT NULL DEFAULT 0,
            steps           bigint NOT NULL DEFAULT 0,
            input_tokens    bigint NOT NULL DEFAULT 0,
            output_tokens   bigint NOT NULL DEFAULT 0,
            thinking_tokens bigint NOT NULL DEFAULT 0,
            cost_usd        double precision,
            metadata        text NOT NULL DEFAULT '{}',
            host            text COLLATE "C" NOT NULL DEFAULT '',
            pid             bigint NOT NULL DEFAULT 0,
            model           text COLLATE "C" NOT NULL DEFAULT '',
            seal            text NOT NULL DEFAULT ''
        )""",
        # newest-first listing, alone and under each filter the CLI offers
        "CREATE INDEX runs_started ON runs (started_at, run_id)",
        "CREATE INDEX runs_caller ON runs (caller, started_at) WHERE caller <> ''",
        "CREATE INDEX runs_name ON runs (name, started_at)",
        "CREATE INDEX runs_status ON runs (status, started_at)",
        "CREATE INDEX runs_parent ON runs (parent_run_id, started_at) WHERE parent_run_id IS NOT NULL",
        "CREATE INDEX runs_running ON runs (host, pid) WHERE status = 'running'",
        # Events are partitioned by their run's start month: a run's events share one
        # partition, so (run_id, sequence) stays unique (a key must hold the partition
        # column, and a run has one start), and purging old runs drops whole months.
        """CREATE TABLE events (
            id             bigserial,
            run_id         text COLLATE "C" NOT NULL,
            sequence       bigint NOT NULL,
            event_type     text COLLATE "C" NOT NULL,
            payload        text NOT NULL,
            created_at     text NOT NULL,
            prev_hash      text NOT NULL,
            hash           text NOT NULL,
            run_started_at timestamptz NOT NULL,
            -- a step's step_ms, a tool result's duration_ms: what `stats` takes
            -- percentiles of, read from the payload once, when the event is written
            ms             double precision,
            PRIMARY KEY (run_id, sequence, run_started_at)
        ) PARTITION BY RANGE (run_started_at)""",
        "CREATE INDEX events_position ON events (id)",
        # `stats` percentiles by start-time window: read from this index alone
        "CREATE INDEX events_timing ON events (run_started_at, event_type) INCLUDE (run_id, ms) "
        "WHERE ms IS NOT NULL",
    ),
    (
        "ALTER TABLE runs ADD COLUMN key_id text NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN salt text NOT NULL DEFAULT ''",
        "ALTER TABLE events ADD COLUMN salt text NOT NULL DEFAULT ''",
    ),
    (
        # Full-text search with the database's own GIN indexes, over expressions (the
        # text is not stored twice); and the indexes of `runs --model/--errors/--min-cost`.
        f"CREATE INDEX runs_text ON runs USING gin ({RUN_TEXT})",
        f"CREATE INDEX events_text ON events USING gin ({EVENT_TEXT})",
        "CREATE INDEX runs_model ON runs (model, started_at) WHERE model <> ''",
        f"CREATE INDEX runs_errors ON runs (started_at) WHERE {HAS_ERROR}",
        "CREATE INDEX runs_cost ON runs (cost_usd) WHERE cost_usd IS NOT NULL",
    ),
    (
        """CREATE TABLE checkpoints (
            seq         bigint PRIMARY KEY,
            created_at  text NOT NULL,
            first_entry bigint NOT NULL,
            size        bigint NOT NULL,
            note        text NOT NULL,
            frontier    text NOT NULL,
            exported    integer NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE checkpoint_entries (
            idx     bigint PRIMARY KEY,
            seq     bigint NOT NULL,
            kind    text COLLATE "C" NOT NULL,
            run_id  text COLLATE "C" NOT NULL,
            events  bigint NOT NULL,
            seal    text NOT NULL,
            digest  text NOT NULL
        )""",
        "CREATE INDEX checkpoint_entries_run ON checkpoint_entries (run_id, kind)",
        """CREATE TABLE holds (
            run_id   text COLLATE "C" PRIMARY KEY,
            reason   text NOT NULL DEFAULT '',
            held_at  text NOT NULL
        )""",
        """CREATE TABLE settings (
            name   text COLLATE "C" PRIMARY KEY,
            value  text NOT NULL
        )""",
    ),
    (
        """CREATE TABLE leases (
            holder_id   text COLLATE "C" PRIMARY KEY,
            host        text COLLATE "C" NOT NULL,
            pid         bigint NOT NULL,
            acquired_at timestamptz NOT NULL,
            renewed_at  timestamptz NOT NULL,
            expires_at  timestamptz NOT NULL
        )""",
        "CREATE INDEX leases_expiry ON leases (expires_at)",
    ),
    (
        # v6: the summary rollup (`_server_summary`), filled from the runs held.
        """CREATE TABLE run_rollup (
            grain           smallint NOT NULL,
            day             date NOT NULL,
            model           text COLLATE "C" NOT NULL,
            status          text COLLATE "C" NOT NULL,
            runs            bigint NOT NULL,
            failed          bigint NOT NULL,
            input_tokens    bigint NOT NULL,
            output_tokens   bigint NOT NULL,
            thinking_tokens bigint NOT NULL,
            cost_usd        double precision NOT NULL,
            priced          bigint NOT NULL,
            tool_calls      bigint NOT NULL,
            steps           bigint NOT NULL,
            PRIMARY KEY (grain, day, model, status)
        )""",
        """CREATE TABLE run_rollup_ms (
            grain   smallint NOT NULL,
            day     date NOT NULL,
            model   text COLLATE "C" NOT NULL,
            status  text COLLATE "C" NOT NULL,
            kind    smallint NOT NULL,
            bucket  integer NOT NULL,
            n       bigint NOT NULL,
            PRIMARY KEY (grain, day, model, status, kind, bucket)
        )""",
        *backfill_statements(
            _PG_DAY.format(column="r.started_at"), _PG_DURATION.format(r="r"),
            "e.run_id = r.run_id AND e.run_started_at = r.started_at", "bigint", _PG_MONTH,
        ),
    ),
)


# -- MariaDB / MySQL -------------------------------------------------------------------------


_MYSQL_TIMEOUTS = ("connect_timeout", "read_timeout", "write_timeout")


def _timeout_seconds(name: str, text: str) -> float:
    """A URL's timeout parameter: seconds, more than 0 and at most a day."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 86_400:
        raise ValueError(f"{name} in a mysql:// URL is seconds, more than 0 and at most 86400; got {text!r}")
    return value


class MySQLDialect(Dialect):
    """PyMySQL against MariaDB 10.6+ or MySQL 8. Times are ``DATETIME(6)`` in UTC (the
    session's time zone is +00:00); text is utf8mb4 with binary collation, so
    comparisons are exact and ordered by code point, as in SQLite."""

    name = "mysql"
    # Not INSERT IGNORE: that also turns a value too long for its column into a
    # warning and a cut value. This skips only a duplicate key.
    insert_unless_present = (
        "INSERT INTO {table} ({columns}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {first} = {first}"
    )

    def __init__(self, url: str) -> None:
        super().__init__(url)
        try:
            import pymysql
        except ImportError:
            raise StoreError("a mysql:// store needs PyMySQL: pip install 'agentaudit[mysql]'") from None
        self._pymysql = pymysql
        parts = urllib.parse.urlsplit(url)
        database = urllib.parse.unquote(parts.path.lstrip("/"))
        if not database:
            raise ValueError(f"a mysql:// URL names its database (mysql://user@host/dbname), got {url!r}")
        query = dict(urllib.parse.parse_qsl(parts.query))
        self._params: dict[str, Any] = {
            "host": parts.hostname or "localhost",
            "port": parts.port or 3306,
            "user": urllib.parse.unquote(parts.username or "root"),
            "password": urllib.parse.unquote(parts.password or ""),
            "database": database,
            "charset": "utf8mb4",
            "autocommit": True,
            "connect_timeout": 10,
        }
        unknown = sorted(set(query) - {"unix_socket", *_MYSQL_TIMEOUTS})
        if unknown:
            raise ValueError(
                f"a mysql:// URL takes the parameters unix_socket, {', '.join(_MYSQL_TIMEOUTS)}; "
                f"got {', '.join(unknown)}"
            )
        if "unix_socket" in query:
            self._params["unix_socket"] = query["unix_socket"]
        # A network cut that sends no reset leaves a read waiting for the kernel's
        # retransmissions (minutes): read_timeout/write_timeout bound it, as libpq's
        # keepalive parameters do for PostgreSQL.
        for name in _MYSQL_TIMEOUTS:
            if name in query:
                self._params[name] = _timeout_seconds(name, query[name])

    def connect(self, *, read_only: bool = False) -> Any:
        pymysql = self._pymysql
        try:
            conn = pymysql.connect(**self._params)
            with conn.cursor() as cur:
                cur.execute("SET time_zone = '+00:00'")
                # a value that does not fit is an error, never a cut value and a warning
                cur.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
                try:  # MariaDB 10.3+ (MySQL has no such variable)
                    cur.execute(f"SET SESSION idle_transaction_timeout = {IDLE_IN_TRANSACTION_TIMEOUT}")
                except pymysql.MySQLError:
                    pass
                if read_only:
                    cur.execute("SET SESSION TRANSACTION READ ONLY")
        except pymysql.Error as exc:
            raise StoreError(f"cannot connect to {self.redacted_url()}: {exc}") from None
        return conn

    def is_refusal(self, exc: BaseException) -> bool:
        pymysql = self._pymysql
        return isinstance(exc, (pymysql.IntegrityError, pymysql.DataError))

    def is_disconnect(self, exc: BaseException) -> bool:
        pymysql = self._pymysql
        if isinstance(exc, pymysql.InterfaceError):
            return True
        if isinstance(exc, pymysql.OperationalError):
            code = exc.args[0] if exc.args else 0
            # 1205 lock wait timeout, 1213 deadlock: retried on the same connection
            return code not in (1205, 1213)
        return False

    def ts(self, moment: datetime) -> Any:
        return moment.astimezone(timezone.utc).replace(tzinfo=None)

    def lock_migrations(self, cur: Any) -> None:
        # A session lock: MariaDB commits DDL implicitly, so no transaction could hold one.
        cur.execute("SELECT GET_LOCK(CONCAT('agentaudit-migrate:', DATABASE()), 600)")
        (got,) = cur.fetchone()
        if got != 1:
            raise StoreError(f"could not take the migration lock on {self.redacted_url()}")

    def unlock_migrations(self, cur: Any) -> None:
        cur.execute("SELECT RELEASE_LOCK(CONCAT('agentaudit-migrate:', DATABASE()))")
        cur.fetchall()

    def table_exists_sql(self) -> str:
        return (
            "SELECT count(*) > 0 FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = %s"
        )

    def day_sql(self, column: str) -> str:
        return f"CAST(DATE({column}) AS CHAR)"

    def duration_sql(self) -> str:
        return "TIMESTAMPDIFF(MICROSECOND, started_at, finished_at)"

    def duration_ms_sql(self) -> str:
        return "(TIMESTAMPDIFF(MICROSECOND, started_at, finished_at) / 1000.0)"

    def number_sql(self, column: str, key: str) -> str:
        found = f"JSON_EXTRACT({column}, '$.{key}')"
        return f"(CASE WHEN JSON_TYPE({found}) IN ('INTEGER', 'DOUBLE') THEN CAST({found} AS DOUBLE) END)"

    def percentiles_sql(self, inner: str) -> str:
        # MariaDB has percentile_cont as a window function only
        return (
            "SELECT DISTINCT k, PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY v) OVER (PARTITION BY k), "
            "PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY v) OVER (PARTITION BY k) "
            f"FROM ({inner}) s WHERE v IS NOT NULL"
        )

    int_type = "SIGNED"
    float_type = "DOUBLE"

    def rollup_day_sql(self, column: str) -> str:
        return _MY_DAY.format(column=column)

    def rollup_month_sql(self, column: str) -> str:
        return _MY_MONTH.format(column=column)

    def rollup_duration_sql(self, alias: str) -> str:
        return _MY_DURATION.format(r=alias)

    def add_on_conflict(self, table: str, keys: Sequence[str], added: Sequence[str]) -> str:
        return "ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = {c} + VALUES({c})" for c in added)

    def text_match_sql(self, words: Sequence[str]) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for word in words:
            clauses.append(
                "(MATCH (input, output, error) AGAINST (%s IN BOOLEAN MODE) OR run_id IN "
                "(SELECT e.run_id FROM events e WHERE MATCH (e.payload) AGAINST (%s IN BOOLEAN MODE)))"
            )
            params += [f"{word}*", f"{word}*"]  # words are letters and digits only
        return " AND ".join(clauses), params

    def expires_sql(self) -> str:
        return "TIMESTAMPADD(MICROSECOND, ROUND(%s * 1000000), UTC_TIMESTAMP(6))"

    def now_sql(self) -> str:
        return "UTC_TIMESTAMP(6)"

    def migrations(self) -> Sequence[Sequence[str]]:
        return _MY_MIGRATIONS


_MY_DAY = "DATE({column})"  # DATETIME in UTC
_MY_MONTH = "CAST(DATE_FORMAT({column}, '%Y-%m-01') AS DATE)"
_MY_DURATION = "CAST(TIMESTAMPDIFF(MICROSECOND, {r}.started_at, {r}.finished_at) / 1000.0 AS DOUBLE)"
_TABLE = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC"
# MariaDB commits each DDL statement: every step can run again after a crash midway.
_MY_MIGRATIONS: Sequence[Sequence[str]] = (
    (
        f"""CREATE TABLE IF NOT EXISTS runs (
            run_id          VARCHAR(255) NOT NULL PRIMARY KEY,
            name            VARCHAR(512) NOT NULL,
            caller          VARCHAR(512) NOT NULL DEFAULT '',
            parent_run_id   VARCHAR(255),
            status          VARCHAR(16) NOT NULL,
            started_at      DATETIME(6) NOT NULL,
            finished_at     DATETIME(6),
            input           LONGTEXT COLLATE utf8mb4_unicode_ci NOT NULL,
            output          LONGTEXT COLLATE utf8mb4_unicode_ci NOT NULL,
            error           LONGTEXT COLLATE utf8mb4_unicode_ci NOT NULL,
            tool_calls      BIGINT NOT NULL DEFAULT 0,
            steps           BIGINT NOT NULL DEFAULT 0,
            input_tokens    BIGINT NOT NULL DEFAULT 0,
            output_tokens   BIGINT NOT NULL DEFAULT 0,
            thinking_tokens BIGINT NOT NULL DEFAULT 0,
            cost_usd        DOUBLE,
            metadata        LONGTEXT NOT NULL,
            host            VARCHAR(255) NOT NULL DEFAULT '',
            pid             BIGINT NOT NULL DEFAULT 0,
            model           VARCHAR(255) NOT NULL DEFAULT '',
            seal            VARCHAR(255) NOT NULL DEFAULT '',
            KEY runs_started (started_at, run_id),
            KEY runs_caller (caller, started_at),
            KEY runs_name (name, started_at),
            KEY runs_status (status, started_at),
            KEY runs_parent (parent_run_id, started_at),
            KEY runs_running (host, pid, status)
        ) {_TABLE}""",
        f"""CREATE TABLE IF NOT EXISTS events (
            id          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            run_id      VARCHAR(255) NOT NULL,
            sequence    BIGINT NOT NULL,
            event_type  VARCHAR(255) NOT NULL,
            payload     LONGTEXT COLLATE utf8mb4_unicode_ci NOT NULL,
            created_at  VARCHAR(64) NOT NULL,
            prev_hash   VARCHAR(255) NOT NULL,
            hash        VARCHAR(255) NOT NULL,
            ms          DOUBLE,
            UNIQUE KEY events_run_sequence (run_id, sequence)
        ) {_TABLE}""",
    ),
    (
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS key_id VARCHAR(255) NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS salt VARCHAR(255) NOT NULL DEFAULT ''",
        "ALTER TABLE events ADD COLUMN IF NOT EXISTS salt VARCHAR(255) NOT NULL DEFAULT ''",
    ),
    (
        # InnoDB FULLTEXT: words of at least innodb_ft_min_token_size (3) characters,
        # less the server's stopwords.
        "CREATE FULLTEXT INDEX IF NOT EXISTS runs_text ON runs (input, output, error)",
        "CREATE FULLTEXT INDEX IF NOT EXISTS events_text ON events (payload)",
        "CREATE INDEX IF NOT EXISTS runs_model ON runs (model, started_at)",
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS has_error TINYINT AS "
        f"(IF({HAS_ERROR}, 1, 0)) PERSISTENT",
        "CREATE INDEX IF NOT EXISTS runs_errors ON runs (has_error, started_at)",
        "CREATE INDEX IF NOT EXISTS runs_cost ON runs (cost_usd)",
    ),
    (
        f"""CREATE TABLE IF NOT EXISTS checkpoints (
            seq         BIGINT NOT NULL PRIMARY KEY,
            created_at  VARCHAR(64) NOT NULL,
            first_entry BIGINT NOT NULL,
            size        BIGINT NOT NULL,
            note        LONGTEXT NOT NULL,
            frontier    LONGTEXT NOT NULL,
            exported    INTEGER NOT NULL DEFAULT 0
        ) {_TABLE}""",
        f"""CREATE TABLE IF NOT EXISTS checkpoint_entries (
            idx     BIGINT NOT NULL PRIMARY KEY,
            seq     BIGINT NOT NULL,
            kind    VARCHAR(32) NOT NULL,
            run_id  VARCHAR(255) NOT NULL,
            events  BIGINT NOT NULL,
            seal    VARCHAR(255) NOT NULL,
            digest  VARCHAR(255) NOT NULL,
            KEY checkpoint_entries_run (run_id, kind)
        ) {_TABLE}""",
        f"""CREATE TABLE IF NOT EXISTS holds (
            run_id   VARCHAR(255) NOT NULL PRIMARY KEY,
            reason   LONGTEXT NOT NULL,
            held_at  VARCHAR(64) NOT NULL
        ) {_TABLE}""",
        f"""CREATE TABLE IF NOT EXISTS settings (
            name   VARCHAR(255) NOT NULL PRIMARY KEY,
            value  LONGTEXT NOT NULL
        ) {_TABLE}""",
    ),
    (
        f"""CREATE TABLE IF NOT EXISTS leases (
            holder_id   VARCHAR(255) NOT NULL PRIMARY KEY,
            host        VARCHAR(255) NOT NULL,
            pid         BIGINT NOT NULL,
            acquired_at DATETIME(6) NOT NULL,
            renewed_at  DATETIME(6) NOT NULL,
            expires_at  DATETIME(6) NOT NULL,
            KEY leases_expiry (expires_at)
        ) {_TABLE}""",
    ),
    (
        # v6: the summary rollup (`_server_summary`), filled from the runs held (the
        # backfill empties the tables first: re-runnable after a crash midway).
        f"""CREATE TABLE IF NOT EXISTS run_rollup (
            grain           SMALLINT NOT NULL,
            day             DATE NOT NULL,
            model           VARCHAR(255) NOT NULL,
            status          VARCHAR(16) NOT NULL,
            runs            BIGINT NOT NULL,
            failed          BIGINT NOT NULL,
            input_tokens    BIGINT NOT NULL,
            output_tokens   BIGINT NOT NULL,
            thinking_tokens BIGINT NOT NULL,
            cost_usd        DOUBLE NOT NULL,
            priced          BIGINT NOT NULL,
            tool_calls      BIGINT NOT NULL,
            steps           BIGINT NOT NULL,
            PRIMARY KEY (grain, day, model, status)
        ) {_TABLE}""",
        f"""CREATE TABLE IF NOT EXISTS run_rollup_ms (
            grain   SMALLINT NOT NULL,
            day     DATE NOT NULL,
            model   VARCHAR(255) NOT NULL,
            status  VARCHAR(16) NOT NULL,
            kind    SMALLINT NOT NULL,
            bucket  INTEGER NOT NULL,
            n       BIGINT NOT NULL,
            PRIMARY KEY (grain, day, model, status, kind, bucket)
        ) {_TABLE}""",
        *backfill_statements(
            _MY_DAY.format(column="r.started_at"), _MY_DURATION.format(r="r"), "e.run_id = r.run_id", "SIGNED",
            _MY_MONTH,
        ),
    ),
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
