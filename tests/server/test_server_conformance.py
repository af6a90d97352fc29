"""The storage conformance suite (`agentaudit.testing.StoreConformance`) against a
real PostgreSQL and a real MariaDB: the server stores keep the same promises as the
memory and SQLite stores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import agentaudit as aa
from agentaudit.testing import StoreConformance


class _ServerConformance(StoreConformance):
    url: str

    @pytest.fixture
    def store(self, url: str) -> Iterator[Any]:
        store = aa.open_store(url)
        yield store
        store.close()

    @pytest.fixture
    def reopen_store(self, url: str) -> Callable[[], Any]:
        return lambda: aa.open_store(url)


class TestPostgresConformance(_ServerConformance):
    @pytest.fixture
    def url(self, postgres_url: str) -> str:
        return postgres_url


class TestMySQLConformance(_ServerConformance):
    @pytest.fixture
    def url(self, mysql_url: str) -> str:
        return mysql_url
