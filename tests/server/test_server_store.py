"""The PostgreSQL and MariaDB stores against the real servers: every filter answers
as SQLite's does, the forwarder's ingest is idempotent, leases abandon a dead
process's runs once, verification catches an edit made on the server, read-only
opening never writes, and a dropped connection loses nothing."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import agentaudit as aa
from agentaudit.stores.sqlite import SQLiteStore

from .conftest import admin_sql


def _response(i: int, model: str = "openai/gpt-4o-mini") -> aa.Response:
    return aa.Response(
        text=f"thinking about walrus step {i}",
        model=model,
        finish_reason="tool_calls",
        usage=aa.Usage(input_tokens=10 * i, output_tokens=i),
        tool_calls=(aa.ToolCall("search", {"q": f"query {i}"}, f"call_{i}"),),
    )


def _record_mix(store: Any) -> list[str]:
    """Runs that differ in every way a filter can tell apart."""
    auditor = aa.Auditor(store, strict=True)
    ids = []
    for i in range(12):
        model = ("openai/gpt-4o-mini", "anthropic/claude-3-5-haiku", "")[i % 3]
        writer = auditor.start_run(
            f"agent-{i % 2}", caller=f"user:{i % 4}" if i % 5 else "", input=f"question {i} about penguins" if i % 2 else f"question {i}",
        )
        for step in range(1, 1 + i % 3):
            writer.on_step(step, _response(step, model or "openai/gpt-4o-mini") if model else aa.Response(text="plain"))
            writer.on_tool(aa.ToolCall("lookup", {"city": "Zürich" if i == 7 else "Oslo"}, f"c{step}"), f"result {i} narwhal" if i == 4 else "ok", duration_ms=1.0 + i)
        status = ("succeeded", "failed", "timeout", "succeeded")[i % 4]
        writer.close(aa.RunStats(status=status, output=f"answer {i}", error="boom" if status == "failed" else "",
                                 cost_usd=None if i % 3 == 2 else 0.001 * i))
        ids.append(writer.run_id)
    auditor.start_run("still-running", caller="user:9")
    store.flush()
    return ids


def _copy_sqlite_to(server: Any, path: Path) -> None:
    """What a spool's forwarder does: hand the SQLite file's runs, events and seals to
    the server's import_records."""
    source = SQLiteStore(path, read_only=True)
    conn = sqlite3.connect(path)
    try:
        seals = dict(conn.execute("SELECT run_id, seal FROM runs"))
        runs = list(source.iter_runs(aa.RunFilter(ascending=True)))
        events = [event for run in runs for event in source.get_logs(run.run_id)]
        server.import_records(runs, events, seals)
    finally:
        conn.close()
        source.close()


def _close(row: dict[str, Any]) -> dict[str, Any]:
    return {k: pytest.approx(v, abs=0.0011) if k.endswith("_ms") and v is not None else v for k, v in row.items()}


_SORT_KEYS = {
    "tokens": lambda r: r.input_tokens + r.output_tokens,
    "cost": lambda r: r.cost_usd,
    "duration": lambda r: r.duration_ms,
}

FILTERS = [
    aa.RunFilter(),
    aa.RunFilter(caller="user:1"),
    aa.RunFilter(caller=""),
    aa.RunFilter(name="agent-0"),
    aa.RunFilter(status="failed"),
    aa.RunFilter(status=["timeout", "running"]),
    aa.RunFilter(model="anthropic/claude-3-5-haiku"),
    aa.RunFilter(model=""),
    aa.RunFilter(has_error=True),
    aa.RunFilter(has_error=False),
    aa.RunFilter(min_cost_usd=0.005),
    aa.RunFilter(text="penguins"),
    aa.RunFilter(text="narwhal"),
    aa.RunFilter(text="penguins question"),
    aa.RunFilter(text="walrus", status="succeeded"),
    aa.RunFilter(text="zurich"),
    aa.RunFilter(order_by="tokens"),
    aa.RunFilter(order_by="cost", ascending=True),
    aa.RunFilter(order_by="duration"),
    aa.RunFilter(ascending=True, limit=4, offset=2),
    aa.RunFilter(limit=3, offset=1, status="succeeded"),
]


def test_every_filter_answers_as_sqlite(server_url: str, tmp_path: Path) -> None:
    path = tmp_path / "local.db"
    local = SQLiteStore(path)
    _record_mix(local)
    local.close()
    server = aa.open_store(server_url)
    try:
        _copy_sqlite_to(server, path)
        local = SQLiteStore(path, read_only=True)
        for flt in FILTERS:
            if flt.text == "zurich" and server_url.startswith("postgresql"):
                continue  # 'simple' text search folds case, not diacritics (docs/storage.md)
            expected = [r.run_id for r in local.list_runs(flt)]
            if flt.order_by in ("tokens", "cost", "duration"):
                # runs with equal keys may come in either order: compare the keys, in order
                key = _SORT_KEYS[flt.order_by]
                keys = [key(r) for r in server.list_runs(flt)]
                known = [k for k in keys if k is not None]  # runs without one come last
                assert keys == known + [None] * (len(keys) - len(known)), flt
                assert known == sorted(known, reverse=not flt.ascending), flt
                if flt.order_by != "duration":  # SQLite's julianday() keeps milliseconds only
                    assert keys == [key(r) for r in local.list_runs(flt)], flt
                assert {r.run_id for r in server.list_runs(flt)} == set(expected), flt
                continue
            assert [r.run_id for r in server.list_runs(flt)] == expected, flt
            assert server.count_runs(flt) == local.count_runs(flt), flt
        assert [r.run_id for r in server.list_runs(aa.RunFilter(text="narwhal"))], "search found nothing"
        # the percentiles are the database's (float arithmetic): equal to the microsecond
        for by in ("day", "model", "caller", "name", "status"):
            assert server.summary(by) == [_close(row) for row in local.summary(by)], by
        total = aa.RunFilter(caller="user:1")
        assert server.summary_total(total) == _close(local.summary_total(total))
        for run in local.list_runs():
            assert server.get_run(run.run_id) == run
            assert server.get_logs(run.run_id) == local.get_logs(run.run_id)
            assert server.verify(run.run_id).ok, server.verify(run.run_id)
            assert server.resolve_run_id(run.run_id[:10]) == run.run_id
        local.close()
    finally:
        server.close()


def test_import_is_idempotent_and_never_reopens_a_run(server_url: str, tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    local = SQLiteStore(path)
    auditor = aa.Auditor(local, strict=True)
    writer = auditor.start_run("agent")
    writer.log_event("custom", {"n": 1})
    local.flush()
    started = local.get_run(writer.run_id)
    early_events = local.get_logs(writer.run_id)
    writer.log_event("custom", {"n": 2})
    writer.close(aa.RunStats(output="done"))
    server = aa.open_store(server_url)
    try:
        _copy_sqlite_to(server, path)
        _copy_sqlite_to(server, path)  # a batch sent twice
        assert len(server.get_logs(writer.run_id)) == 2
        # an old batch arriving late: the running row and its first event
        server.import_records([started], early_events, {})
        run = server.get_run(writer.run_id)
        assert run.status is aa.RunStatus.SUCCEEDED and run.output == "done"
        assert [e.sequence for e in server.get_logs(writer.run_id)] == [1, 2]
        assert server.verify(writer.run_id).ok
        with pytest.raises(aa.StoreError, match="never did"):
            server.import_records([], [e for e in early_events if False] or [
                aa.Event("no-such-run", 1, "custom", {}, datetime.now(timezone.utc))
            ], {})
    finally:
        local.close()
        server.close()


def test_a_lease_that_expires_abandons_its_runs_once(server_url: str, tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    local = SQLiteStore(path)
    auditor = aa.Auditor(local, strict=True)
    writer = auditor.start_run("agent")
    writer.on_step(1, _response(1))
    local.flush()
    run = local.get_run(writer.run_id)
    server = aa.open_store(server_url)
    others = [aa.open_store(server_url) for _ in range(3)]
    try:
        server.import_records([run], local.get_logs(writer.run_id), {})
        lease = server.acquire_lease("holder-1", run.host, run.pid, 0.2)
        assert lease.holder_id == "holder-1" and lease.expires_at > lease.acquired_at
        assert server.renew_lease("holder-1", 0.2)
        import time

        time.sleep(0.5)  # let the lease run out (the database's clock decides)
        assert [lease.holder_id for lease in server.expired_leases()] == ["holder-1"]
        marked: list[list[str]] = []
        barrier = threading.Barrier(3)

        def reap(store: Any) -> None:
            barrier.wait()
            marked.append(store.reap_expired_leases())

        threads = [threading.Thread(target=reap, args=(store,)) for store in others]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(run_id for found in marked for run_id in found) == [writer.run_id], marked  # once
        abandoned = server.get_run(writer.run_id)
        assert abandoned.status is aa.RunStatus.ABANDONED and "lease" in abandoned.error
        assert (abandoned.steps, abandoned.input_tokens) == (1, 10)
        assert server.verify(writer.run_id).ok
        assert not server.renew_lease("holder-1", 10)  # gone: the holder must acquire again
        # The cut-off host comes back: a late event, then the real finish.
        writer.log_event("custom", {"late": True})
        local.flush()
        server.import_records([], local.get_logs(writer.run_id, after=1), {})
        late = server.get_run(writer.run_id)
        assert late.status is aa.RunStatus.ABANDONED and server.verify(writer.run_id).ok
        writer.close(aa.RunStats(output="finished after all"))
        _copy_sqlite_to(server, path)
        final = server.get_run(writer.run_id)
        assert final.status is aa.RunStatus.SUCCEEDED and final.output == "finished after all"
        assert server.verify(writer.run_id).ok
    finally:
        local.close()
        server.close()
        for store in others:
            store.close()


@pytest.mark.parametrize("edit", ["payload", "output", "delete_last"])
def test_verify_catches_an_edit_made_on_the_server(server_url: str, edit: str) -> None:
    store = aa.open_store(server_url)
    try:
        auditor = aa.Auditor(store, strict=True)
        writer = auditor.start_run("agent")
        for i in range(1, 4):
            writer.on_step(i, _response(i))
        writer.close(aa.RunStats(output="the answer"))
        assert store.verify(writer.run_id).ok
        if edit == "payload":
            admin_sql(server_url, "UPDATE events SET payload = replace(payload, 'walrus', 'walnut') "
                      "WHERE run_id = %s AND sequence = 3", (writer.run_id,))
        elif edit == "output":
            admin_sql(server_url, "UPDATE runs SET output = 'another answer' WHERE run_id = %s", (writer.run_id,))
        else:
            last = admin_sql(server_url, "SELECT max(sequence) FROM events WHERE run_id = %s", (writer.run_id,))[0][0]
            admin_sql(server_url, "DELETE FROM events WHERE run_id = %s AND sequence = %s", (writer.run_id, last))
        result = store.verify(writer.run_id)
        assert not result.ok and result.state == "broken"
        if edit == "payload":
            assert result.broken_sequence == 3
    finally:
        store.close()


def test_read_only_never_writes(server_url: str) -> None:
    with pytest.raises(aa.StoreError, match="no agentaudit database"):
        aa.open_store(server_url, read_only=True)
    store = aa.open_store(server_url)
    run_id = aa.Auditor(store, strict=True).start_run("agent").run_id
    store.close()
    reader = aa.open_store(server_url, read_only=True)
    try:
        assert reader.get_run(run_id).status is aa.RunStatus.RUNNING
        with pytest.raises(aa.StoreError, match="read-only"):
            reader.start_run(aa.Run(run_id="other", name="x"))
        with pytest.raises(aa.StoreError, match="read-only"):
            reader.purge(datetime.now(timezone.utc) + timedelta(days=1))
        with pytest.raises(aa.StoreError, match="read-only"):
            reader.reap(timedelta(seconds=0.001))
    finally:
        reader.close()
    assert aa.open_store(server_url, read_only=True).get_run(run_id).status is aa.RunStatus.RUNNING


def test_a_dropped_connection_loses_nothing(server_url: str) -> None:
    """The writer's connection is killed mid-stream (a server restart, a failover):
    the writer reconnects and writes the batch again, once."""
    tagged = server_url + (f"&application_name={_TAG}" if server_url.startswith("postgresql") else "")
    store = aa.open_store(tagged)  # its sessions are the ones killed
    try:
        auditor = aa.Auditor(store, strict=True)
        writers = [auditor.start_run(f"agent-{i}") for i in range(5)]
        for round_ in range(40):
            for writer in writers:
                writer.log_event("tick", {"round": round_})
            if round_ in (10, 25):
                store.flush()
                _kill_other_sessions(server_url)
        for writer in writers:
            writer.close()
        for writer in writers:
            assert [e.sequence for e in store.get_logs(writer.run_id)] == list(range(1, 41))
            assert store.verify(writer.run_id).ok
            assert store.get_run(writer.run_id).status is aa.RunStatus.SUCCEEDED
    finally:
        store.close()


_TAG = f"aa_kill_{uuid.uuid4().hex[:8]}"


def _kill_other_sessions(url: str) -> None:
    """End every session of the store under test (and no one else's)."""
    if url.startswith("postgresql"):
        killed = admin_sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = %s", (_TAG,))
        assert killed, "no session to kill"
        return
    database = url.rsplit("/", 1)[1]
    for (session,) in admin_sql(url, "SELECT id FROM information_schema.processlist WHERE db = %s "
                                "AND id <> CONNECTION_ID()", (database,)):
        admin_sql(url, f"KILL {int(session)}")


def test_purge_drops_whole_months_on_postgres(postgres_url: str) -> None:
    store = aa.open_store(postgres_url)
    try:
        old = datetime(2024, 3, 15, tzinfo=timezone.utc)
        kept = datetime(2024, 4, 2, tzinfo=timezone.utc)
        for run_id, started, status in (("old-1", old, "succeeded"), ("old-2", old, "failed"),
                                        ("april", kept, "succeeded")):
            run = aa.Run(run_id=run_id, name="agent", started_at=started, status=status,
                         finished_at=started + timedelta(seconds=1))
            events = [aa.Event(run_id, 1, "custom", {"n": 1}, started)]
            store.import_records([run], events, {})
        assert admin_sql(postgres_url, "SELECT to_regclass('events_202403') IS NOT NULL")[0][0]
        assert store.purge(datetime(2024, 4, 10, tzinfo=timezone.utc), statuses=["succeeded"]) == 2
        # a failed run of March stays, so March's partition is emptied row by row
        assert admin_sql(postgres_url, "SELECT to_regclass('events_202403') IS NOT NULL")[0][0]
        assert store.get_run("april") is None and store.get_run("old-2") is not None
        assert store.purge(datetime(2024, 4, 1, tzinfo=timezone.utc)) == 1
        assert not admin_sql(postgres_url, "SELECT to_regclass('events_202403') IS NOT NULL")[0][0]
        assert store.count_runs() == 0
    finally:
        store.close()


def test_bad_input_is_refused_at_the_boundary(server_url: str) -> None:
    with pytest.raises(ValueError):
        aa.open_store(server_url, max_queue=0)
    store = aa.open_store(server_url)
    try:
        with pytest.raises(TypeError):
            store.import_records(["not a run"], [], {})  # type: ignore[list-item]
        with pytest.raises(ValueError):
            store.acquire_lease("", "host", 1, 10)
        with pytest.raises(ValueError):
            store.acquire_lease("h", "host", 1, -1)
        with pytest.raises(ValueError, match="order_by"):
            store.list_runs(aa.RunFilter(order_by="nonsense"))
    finally:
        store.close()


def test_a_refused_item_costs_that_item_only(server_url: str) -> None:
    """A run id the database already holds, and events of a run it never heard of:
    refused and counted, the run's finish says why, and the rest of the batch lands."""
    first = aa.open_store(server_url)
    second = aa.open_store(server_url)
    try:
        taken = aa.Auditor(first, strict=True).start_run("original").run_id
        first.flush()
        now = datetime.now(timezone.utc)
        second.start_run(aa.Run(run_id=taken, name="impostor", started_at=now))
        second.append_events([aa.Event(taken, 1, "custom", {"n": 1}, now)])
        second.append_events([aa.Event("never-started", 1, "custom", {"n": 1}, now)])
        fine = aa.Auditor(second, strict=True)
        with fine.run("fine") as writer:
            writer.log_event("custom", {"n": 2})
        outcome = second.submit_finish(taken, aa.RunStats(), now)
        with pytest.raises(aa.StoreError, match="refused the start"):
            outcome.result(timeout=30)
        second.flush()
        assert second.failed >= 2
        assert second.get_run(taken).name == "original" and second.get_logs(taken) == []
        assert second.get_logs("never-started") == []
        assert second.verify(writer.run_id).ok
    finally:
        first.close()
        second.close()
