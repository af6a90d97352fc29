"""The viewer over the server stores (PostgreSQL, MariaDB): the same pages, read-only,
over runs recorded into a real server. Each test gets an empty schema (PostgreSQL) or
database (MariaDB), dropped afterwards. A missing server skips, and fails with CI=true."""

from __future__ import annotations

import os
import re
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

import agentaudit as aa
from agentaudit.ui import create_app

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES = os.environ.get("AGENTAUDIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL = os.environ.get("AGENTAUDIT_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")


def missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def postgres() -> Iterator[str]:
    try:
        import psycopg

        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except Exception as exc:  # no driver, no server
        missing(f"no PostgreSQL at {POSTGRES}: {exc}")
    schema = f"aa_ui_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def mysql() -> Iterator[str]:
    parts = urllib.parse.urlsplit(MYSQL)
    try:
        import pymysql

        admin = pymysql.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                                user=parts.username or "root", password=parts.password or "",
                                autocommit=True, connect_timeout=5)
    except Exception as exc:
        missing(f"no MariaDB/MySQL at {MYSQL}: {exc}")
    database = f"aa_ui_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        yield urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {database}")
        admin.close()


@pytest.fixture(params=["postgresql", "mysql"])
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    yield from (postgres() if request.param == "postgresql" else mysql())


def record(url: str) -> dict[str, str]:
    store = aa.open_store(url)
    auditor = aa.Auditor(store, pricing={"m1": {"input": 1.0, "output": 2.0}})
    ids = {}
    with auditor.run("pipeline", caller="ops", input="weather in Paris") as parent:
        parent.on_step(1, aa.Response(text="<script>alert(1)</script> looking", model="m1",
                                      usage=aa.Usage(10, 5)))
        call = aa.ToolCall("get_weather", {"city": "Paris"}, id="t1")
        parent.tool_started(call)
        parent.tool_finished(call, '<img src=x onerror="alert(2)">')
        with auditor.run("helper", caller="ops") as child:
            child.on_step(1, aa.Response(text="helping", model="m1", usage=aa.Usage(3, 2)))
            ids["child"] = child.run_id
        parent.set_output("Paris: sunny")
        ids["parent"] = parent.run_id
    with pytest.raises(RuntimeError), auditor.run("broken", caller="cron") as failing:
        ids["failed"] = failing.run_id
        raise RuntimeError("backend down")
    store.close()
    return ids


def rows(html: str) -> list[str]:
    return re.findall(r'<tr data-run="([^"]+)"', html)


def test_every_page_over_a_server_store(server_url: str) -> None:
    ids = record(server_url)
    store: Any = aa.open_store(server_url, read_only=True)
    try:
        http = TestClient(create_app(store), base_url="http://127.0.0.1")
        listed = http.get("/")
        assert listed.status_code == 200
        assert set(rows(listed.text)) == set(ids.values())
        assert rows(http.get("/?status=failed").text) == [ids["failed"]]
        assert rows(http.get("/?caller=cron").text) == [ids["failed"]]
        assert rows(http.get("/?q=paris").text) == [ids["parent"]]
        assert rows(http.get(f"/?parent={ids['parent']}").text) == [ids["child"]]
        assert http.get("/?sort=cost").status_code == 200
        assert http.get("/api/runs/count").json()["total"] == 3

        page = http.get(f"/run?id={ids['parent']}").text
        assert 'class="verify v-intact"' in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
        assert "&lt;img src=x onerror=" in page and "<img" not in page
        assert page.count('class="wf-row k-child') == 1
        failed = http.get(f"/run?id={ids['failed']}").text
        assert "RuntimeError: backend down" in failed
        compare = http.get(f"/compare?run={ids['parent']}&run={ids['failed']}")
        assert compare.status_code == 200 and "Paris: sunny" in compare.text
        overview = http.get("/overview")
        assert overview.status_code == 200 and "ops" in overview.text
    finally:
        store.close()
