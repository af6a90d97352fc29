"""Fixtures for the tests against real database servers.

Each test gets an empty database of its own: a fresh schema on PostgreSQL (the
store's URL sets ``search_path`` to it), a fresh database on MariaDB; both are
dropped after the test. The servers are the ones CI starts (PostgreSQL 15 at
127.0.0.1:5432, MariaDB 10.11 at 127.0.0.1:3306), or those named by
``AGENTAUDIT_TEST_POSTGRES`` / ``AGENTAUDIT_TEST_MYSQL``. A server that is not there
skips its tests with the reason, and fails them when ``CI=true``.
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES = os.environ.get("AGENTAUDIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL = os.environ.get("AGENTAUDIT_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")
SERVERS = ("postgresql", "mysql")


_NOT_RUN: set[str] = set()


def server_missing(reason: str) -> None:
    """A server or driver is not there: a failure with CI=true, a skip otherwise."""
    _NOT_RUN.add(reason)
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say plainly which server suites did not run, and why (not only "N skipped")."""
    for reason in sorted(_NOT_RUN):
        terminalreporter.write_line(f"tests/server: NOT RUN against this server: {reason}", yellow=True)


def _admin_postgres() -> Any:
    try:
        import psycopg
    except ImportError:
        server_missing("psycopg is not installed (pip install 'agentaudit[postgres]')")
    try:
        return psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        server_missing(f"no PostgreSQL at {POSTGRES}: {str(exc).strip().splitlines()[0]}")


def _admin_mysql() -> Any:
    try:
        import pymysql
    except ImportError:
        server_missing("PyMySQL is not installed (pip install 'agentaudit[mysql]')")
    parts = urllib.parse.urlsplit(MYSQL)
    try:
        return pymysql.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=urllib.parse.unquote(parts.username or "root"),
            password=urllib.parse.unquote(parts.password or ""),
            autocommit=True,
            connect_timeout=5,
        )
    except pymysql.Error as exc:
        server_missing(f"no MariaDB/MySQL at {MYSQL}: {exc}")


def fresh_postgres() -> Iterator[str]:
    admin = _admin_postgres()
    schema = f"aa_t_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def fresh_mysql() -> Iterator[str]:
    admin = _admin_mysql()
    database = f"aa_t_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    parts = urllib.parse.urlsplit(MYSQL)
    try:
        yield urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {database}")
        admin.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of an empty PostgreSQL schema, dropped after the test."""
    yield from fresh_postgres()


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """The URL of an empty MariaDB/MySQL database, dropped after the test."""
    yield from fresh_mysql()


@pytest.fixture(params=SERVERS)
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database on each server in turn."""
    if request.param == "postgresql":
        yield from fresh_postgres()
    else:
        yield from fresh_mysql()


def admin_sql(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run ``sql`` on the test database behind ``url`` outside any store (as an
    operator, or an attacker with database access, would)."""
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []
    import pymysql

    parts = urllib.parse.urlsplit(url)
    conn = pymysql.connect(
        host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
        password=parts.password or "", database=parts.path.lstrip("/"), autocommit=True,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params or None)
            return list(cur.fetchall())
    finally:
        conn.close()
