"""The spool's figures for docs/deployment.md, side by side in one run.

1. Shipping rate: a spool filled with ``--events`` events (runs of 10 events, the
   payloads of an agent's steps), then drained by the forwarder into an empty
   PostgreSQL: events/s shipped, next to the rate the same events were written into
   the spool by the agent's side (``SQLiteStore``, append + flush). Their ratio says
   whether a forwarder keeps up with a busy worker.
2. Outage: an agent records at a steady pace through ``open_store(url, spool=...)``;
   the server is stopped for N seconds (``--outages``, default 10 and 30) and started
   again. Reported: the backlog when the server returned, and how long the forwarder
   took to drain it (from the restart to an empty backlog), while the agent goes on.

Every server here is a throwaway one (tests/server/spoolhelp.PgCluster, or
MariaCluster with ``--server mariadb``).
Run: .venv/bin/python bench/bench_spool.py [--server postgresql|mariadb] [--events N] [--pace EVENTS_PER_S] [--outages 10,30]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import agentaudit as aa
from agentaudit.stores._forwarder import Forwarder, target_key
from tests.server.conftest import admin_sql
from tests.server.spoolhelp import SERVERS, server_cluster

STEP_TEXT = "Let me look up the weather in Paris before answering the question the user asked."


def record(auditor: aa.Auditor, runs: int, events_per_run: int) -> None:
    for i in range(runs):
        writer = auditor.start_run("bench", caller=f"user:{i % 7}", input=f"task {i}")
        for k in range(events_per_run):
            writer.log_event("note", {"k": k, "text": STEP_TEXT})
        writer.close()


def shipping_rate(server: str, events: int) -> dict[str, float]:
    runs = events // 10
    with tempfile.TemporaryDirectory() as tmp, server_cluster(server) as pg:
        spool_path = os.path.join(tmp, "spool.db")
        spool = aa.SQLiteStore(spool_path)
        start = time.perf_counter()
        record(aa.Auditor(spool), runs, 10)
        spool.flush()
        written = time.perf_counter() - start
        spool.close()
        aa.open_store(pg.url).close()  # the schema, created outside the timing
        forwarder = Forwarder(spool_path, lambda: aa.open_store(pg.url), target=target_key(pg.url),
                              lease_ttl=None, reap_interval=None)
        start = time.perf_counter()
        assert forwarder.drain(600)
        shipped = time.perf_counter() - start
        forwarder.stop(1)
        assert forwarder.shipped_events == runs * 10
    return {
        "events": runs * 10,
        "spool_write_eps": runs * 10 / written,
        "ship_eps": runs * 10 / shipped,
        "batches": forwarder.batches,
    }


def last_event_id(spool: str) -> int:
    with sqlite3.connect(spool) as conn:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])


def shipped_event_id(spool: str) -> int:
    with sqlite3.connect(spool) as conn:
        row = conn.execute("SELECT max(event_id) FROM spool_cursor").fetchone()
    return int(row[0] or 0)


def outage(server: str, seconds: float, pace: float) -> dict[str, float]:
    """An agent at ``pace`` events/s (runs of 5 events); the server down ``seconds``."""
    with tempfile.TemporaryDirectory() as tmp, server_cluster(server) as pg:
        store = aa.open_store(pg.url, spool=os.path.join(tmp, "spool.db"), max_backoff=1.0)
        auditor = aa.Auditor(store)
        stop = threading.Event()
        recorded = [0]

        def agent() -> None:
            period = 5 / pace
            next_at = time.perf_counter()
            while not stop.is_set():
                record(auditor, 1, 5)
                recorded[0] += 5
                next_at += period
                time.sleep(max(0.0, next_at - time.perf_counter()))

        thread = threading.Thread(target=agent)
        thread.start()
        time.sleep(3)
        pg.stop("immediate")
        time.sleep(seconds)
        backlog = store.backlog()
        written = last_event_id(store.spool.path)  # everything recorded before the restart
        pg.start()
        back = time.perf_counter()
        while shipped_event_id(store.spool.path) < written:
            time.sleep(0.02)
        drained = time.perf_counter() - back
        time.sleep(2)
        lag = store.backlog()  # the steady state again: what waits for the next batch
        stop.set()
        thread.join()
        faults = auditor.faults.total
        store.close()
        [row] = admin_sql(pg.url, "SELECT count(*) FROM events")
        on_server = int(row[0])
    return {
        "outage_s": seconds,
        "backlog_events": backlog.events,
        "backlog_runs": backlog.runs,
        "drain_s": drained,
        "agent_faults": faults,
        "recorded": recorded[0],
        "lost": recorded[0] - on_server,
        "lag_events": lag.events,
        "lag_s": lag.age_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", choices=SERVERS, default="postgresql")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--pace", type=float, default=500.0, help="the agent's events/s during the outage runs")
    parser.add_argument("--outages", default="10,30")
    args = parser.parse_args()
    rate = shipping_rate(args.server, args.events)
    print(f"shipping {rate['events']:,} events: spool written at {rate['spool_write_eps']:,.0f} events/s, "
          f"shipped at {rate['ship_eps']:,.0f} events/s ({rate['batches']} batches); "
          f"ship/write = {rate['ship_eps'] / rate['spool_write_eps']:.2f}x")
    for seconds in (float(s) for s in args.outages.split(",")):
        result = outage(args.server, seconds, args.pace)
        print(f"outage {seconds:g} s at {args.pace:,.0f} events/s: backlog {result['backlog_events']:,} events "
              f"/ {result['backlog_runs']:,} runs, drained in {result['drain_s']:.2f} s after the restart "
              f"(agent faults: {result['agent_faults']}, events lost: {result['lost']}); then {result['lag_events']} events waiting, "
              f"the oldest {result['lag_s']:.2f} s")


if __name__ == "__main__":
    main()
