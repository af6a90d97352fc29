"""The server stores, side by side with the raw driver and against their targets.

1. Ingest: events/s recorded through `PostgresStore` / `MySQLStore` (an Auditor per
   process, every run started, logged and closed) from 1, 4 and 16 processes, next
   to the driver's best bulk path writing the same rows into the same tables
   (PostgreSQL: COPY; MariaDB: PyMySQL's multi-row INSERT), each in one
   transaction per process. Reported as events/s and as the store's share of raw.
2. Reads at scale: ``--runs`` runs (default 1,000,000) with their events loaded
   through the raw bulk path, then p50/p95 of what the CLI asks: `runs` by caller,
   by status and by time range (a page of 50), `show` (run, events, children),
   and `stats` by model and by day (all runs, and the last 7 days).

Run: .venv/bin/python bench/bench_server.py [--runs N] [--only postgresql|mysql]
Needs the servers of tests/server (or AGENTAUDIT_TEST_POSTGRES / _MYSQL).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import sys
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import agentaudit as aa
from agentaudit._chain import seal_events
from agentaudit._verify import record_of_run, seal_of
from agentaudit.stores._server_dialect import month_start
from agentaudit.stores._server_rows import (
    RUN_COLUMNS,
    WRITTEN_EVENT_COLUMNS,
    event_values,
    run_values,
)
from agentaudit.stores._server_summary import rebuild_statements

POSTGRES = os.environ.get("AGENTAUDIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL = os.environ.get("AGENTAUDIT_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")
SCHEMA = os.environ.get("AGENTAUDIT_BENCH_SCHEMA", "aa_bench")  # another name: benchmarks side by side
RUNS_PER_PROCESS = 150
STEPS = 2  # each step: step, tool_call, tool_result; plus resolved_model: 7 events a run
MODELS = ["openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-3-5-haiku", "anthropic/claude-sonnet-4", "google/gemini-2.0-flash"]
RESPONSE_TEXT = "Let me look up the weather in Paris before answering the question the user asked."


# -- databases -----------------------------------------------------------------------------


def fresh_url(kind: str) -> str:
    """An empty schema (PostgreSQL) or database (MariaDB) named aa_bench."""
    if kind == "postgresql":
        import psycopg

        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            conn.execute(f"CREATE SCHEMA {SCHEMA}")
        return f"{POSTGRES}?options=-csearch_path%3D{SCHEMA}"
    conn = _mysql_admin()
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {SCHEMA}")
        cur.execute(f"CREATE DATABASE {SCHEMA}")
    conn.close()
    parts = urllib.parse.urlsplit(MYSQL)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{SCHEMA}"))


def reuse_url(kind: str) -> str:
    if kind == "postgresql":
        return f"{POSTGRES}?options=-csearch_path%3D{SCHEMA}"
    parts = urllib.parse.urlsplit(MYSQL)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{SCHEMA}"))


def _mysql_admin(database: str | None = None) -> Any:
    import pymysql

    parts = urllib.parse.urlsplit(MYSQL)
    return pymysql.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                           password=parts.password or "", database=database, autocommit=True,
                           max_allowed_packet=64 * 1024 * 1024)


# -- the rows both paths write ----------------------------------------------------------------


def _response(i: int, model: str) -> aa.Response:
    return aa.Response(
        text=RESPONSE_TEXT, model=model, finish_reason="tool_calls",
        usage=aa.Usage(input_tokens=120 + i, output_tokens=24),
        tool_calls=(aa.ToolCall("get_weather", {"city": "Paris"}, f"call_{i}"),),
    )


def sealed_run(rng: random.Random, started: datetime, *, events_per_run: int = 7) -> tuple[aa.Run, list[aa.Event], str]:
    """A finished run, its sealed events and its seal, as the store would write them."""
    run_id = f"{rng.getrandbits(128):032x}"
    model = rng.choice(MODELS)
    payloads: list[tuple[str, dict[str, Any]]] = [("resolved_model", {"model": model})]
    for step in range(1, (events_per_run - 1) // 3 + 1):
        payloads.append(("step", {"iter": step, "text": RESPONSE_TEXT, "model": model, "in_tokens": 120,
                                  "out_tokens": 24, "thinking_tokens": 0, "step_ms": 800.0 + step}))
        payloads.append(("tool_call", {"id": f"call_{step}", "name": "get_weather", "args": {"city": "Paris"}}))
        payloads.append(("tool_result", {"id": f"call_{step}", "result": "18°C, sunny", "duration_ms": 40.0}))
    events = seal_events(run_id, 0, "", payloads, started + timedelta(milliseconds=5))
    status = rng.choices(["succeeded", "failed", "timeout", "cancelled"], [90, 6, 2, 2])[0]
    run = aa.Run(
        run_id=run_id, name=rng.choice(["triage", "support", "research", "deploy", "summarize"]),
        caller=f"user:{rng.randrange(500)}", status=status, started_at=started,
        finished_at=started + timedelta(seconds=rng.uniform(0.5, 30)), input="What is the weather in Paris?",
        output="18°C and sunny.", error="tool failed" if status == "failed" else "",
        tool_calls=len(payloads) // 3, steps=len(payloads) // 3, input_tokens=240, output_tokens=48,
        cost_usd=round(rng.uniform(0.0001, 0.01), 6), host="bench", pid=1,
    )
    seal = seal_of(record_of_run(run), None, len(events), events[-1].hash)
    return run, events, seal


def raw_write(url: str, rows: list[tuple[aa.Run, list[aa.Event], str]]) -> None:
    """The driver's best bulk path, one transaction: COPY, or multi-row INSERT."""
    if url.startswith("postgresql"):
        import psycopg

        def ts(moment: datetime) -> datetime:
            return moment.astimezone(timezone.utc)

        with psycopg.connect(url) as conn, conn.cursor() as cur:
            with cur.copy(f"COPY runs ({RUN_COLUMNS}) FROM STDIN") as copy:
                for run, events, seal in rows:
                    model = events[0].payload["model"]
                    copy.write_row(run_values(run, ts, model=model, seal=seal))
            with cur.copy(f"COPY events ({WRITTEN_EVENT_COLUMNS}, run_started_at) FROM STDIN") as copy:
                for run, events, _seal in rows:
                    for event in events:
                        copy.write_row((*event_values(event), run.started_at))
        return
    conn = _mysql_admin(urllib.parse.urlsplit(url).path.lstrip("/"))

    def ts_my(moment: datetime) -> datetime:
        return moment.astimezone(timezone.utc).replace(tzinfo=None)

    try:
        conn.begin()
        with conn.cursor() as cur:
            run_rows = [run_values(run, ts_my, model=events[0].payload["model"], seal=seal) for run, events, seal in rows]
            for start in range(0, len(run_rows), 2000):
                cur.executemany(f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join(['%s'] * len(run_rows[0]))})",
                                run_rows[start : start + 2000])
            event_rows = [event_values(e) for _r, events, _s in rows for e in events]
            for start in range(0, len(event_rows), 5000):
                cur.executemany(f"INSERT INTO events ({WRITTEN_EVENT_COLUMNS}) VALUES ({', '.join(['%s'] * 9)})",
                                event_rows[start : start + 5000])
        conn.commit()
    finally:
        conn.close()


def count_events(url: str) -> int:
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url) as conn:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    conn = _mysql_admin(urllib.parse.urlsplit(url).path.lstrip("/"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM events")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


# -- 1. ingest ------------------------------------------------------------------------------


def _store_worker(url: str, runs: int, barrier: Any, out: Any) -> None:
    store = aa.open_store(url)
    auditor = aa.Auditor(store)
    barrier.wait()
    start = time.perf_counter()
    for i in range(runs):
        model = MODELS[i % len(MODELS)]
        writer = auditor.start_run("bench", caller=f"user:{i % 50}", input="What is the weather in Paris?")
        for step in range(1, STEPS + 1):
            writer.on_step(step, _response(step, model))
            writer.on_tool(aa.ToolCall("get_weather", {"city": "Paris"}, f"call_{step}"), "18°C, sunny", duration_ms=40.0)
        writer.close(aa.RunStats(output="18°C and sunny."))
    store.close()
    out.put((time.perf_counter() - start, store.dropped))


def _raw_worker(url: str, runs: int, barrier: Any, out: Any) -> None:
    rng = random.Random(os.getpid())
    now = datetime.now(timezone.utc)
    rows = [sealed_run(rng, now) for _ in range(runs)]
    barrier.wait()
    start = time.perf_counter()
    raw_write(url, rows)
    out.put((time.perf_counter() - start, 0))


def ingest(kind: str, processes: int, worker: Callable[..., None]) -> tuple[float, int]:
    url = fresh_url(kind)
    aa.open_store(url).close()  # the schema and this month's partition
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(processes + 1), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(url, RUNS_PER_PROCESS, barrier, out)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    barrier.wait()
    start = time.perf_counter()
    results = [out.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - start
    for proc in procs:
        proc.join()
    events = count_events(url)
    dropped = sum(d for _t, d in results)
    return events / wall, dropped


# -- 2. reads at scale ----------------------------------------------------------------------


def load(kind: str, total: int) -> tuple[str, float]:
    url = fresh_url(kind)
    store = aa.open_store(url)
    now = datetime.now(timezone.utc)
    first = now - timedelta(days=90)
    # the partitions of the months the runs start in (the writer makes them as runs arrive)
    months = sorted({month_start(first + timedelta(days=d)) for d in range(0, 92)})
    if store.dialect.partitioned:
        store.dialect.ensure_partitions(store._connection(), months)
    store.close()
    rng = random.Random(7)
    start = time.perf_counter()
    chunk = 20_000
    for offset in range(0, total, chunk):
        rows = [
            sealed_run(rng, first + timedelta(seconds=(offset + i) * 90 * 86400 / total))
            for i in range(min(chunk, total - offset))
        ]
        raw_write(url, rows)
        print(f"  loaded {offset + len(rows):,} runs ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    # The rows went around the writers: the summary rollup is filled as the migration
    # that added it fills it, from the runs held (what an upgraded database holds).
    rebuild = time.perf_counter()
    with aa.open_store(url) as opened:
        statements = rebuild_statements(opened.dialect)

        def fill(cur: Any) -> None:
            for statement in statements:
                cur.execute(statement)

        opened._run(fill, write=True)
    print(f"  rollup filled ({time.perf_counter() - rebuild:.0f} s)", file=sys.stderr)
    if kind == "postgresql":
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            # what autovacuum does after a bulk insert: statistics, and the visibility
            # map that lets the timing index answer on its own
            conn.execute("VACUUM ANALYZE runs")
            conn.execute("VACUUM ANALYZE events")
            conn.execute("VACUUM ANALYZE run_rollup")
            conn.execute("VACUUM ANALYZE run_rollup_ms")
    else:
        conn = _mysql_admin(SCHEMA)
        with conn.cursor() as cur:
            cur.execute("ANALYZE TABLE runs, events, run_rollup, run_rollup_ms")
        conn.close()
    return url, time.perf_counter() - start


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    fn()  # warm
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]


def reads(url: str, repeat: int, repeat_all: int) -> dict[str, tuple[float, float]]:
    store = aa.open_store(url, read_only=True)
    rng = random.Random(11)
    run_ids = [row[0] for row in store._query("SELECT run_id FROM runs ORDER BY run_id LIMIT 2000")]
    now = datetime.now(timezone.utc)
    week = aa.RunFilter(since=now - timedelta(days=7))

    def show() -> None:
        run_id = rng.choice(run_ids)
        store.get_run(run_id)
        store.get_logs(run_id)
        store.children(run_id)

    def time_range() -> None:
        since = now - timedelta(days=rng.uniform(1, 89))
        store.list_runs(aa.RunFilter(since=since, until=since + timedelta(hours=6), limit=50))

    queries: dict[str, Callable[[], Any]] = {
        "runs --caller": lambda: store.list_runs(aa.RunFilter(caller=f"user:{rng.randrange(500)}", limit=50)),
        "runs --status failed": lambda: store.list_runs(aa.RunFilter(status="failed", limit=50)),
        "runs --since/--until": time_range,
        "runs (newest 50)": lambda: store.list_runs(aa.RunFilter(limit=50)),
        "show": show,
        "stats --by model --since 7d": lambda: store.summary("model", week),
        "stats --by day --since 7d": lambda: store.summary("day", week),
        "stats --by model (all)": lambda: store.summary("model"),
        "stats --by day (all)": lambda: store.summary("day"),
        "stats --by status (all)": lambda: store.summary("status"),
        "stats (total, all)": lambda: store.summary_total(),
    }
    found = {}
    for name, fn in queries.items():
        if repeat_all == 0 and "(all)" in name:
            continue
        found[name] = timed(fn, repeat if "(all)" not in name else repeat_all)
    store.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs loaded for the read benchmark")
    parser.add_argument("--only", choices=["postgresql", "mysql"], help="one server only")
    parser.add_argument("--processes", default="1,4,16", help="writer processes for the ingest benchmark")
    parser.add_argument("--repeat", type=int, default=40, help="samples per read query")
    parser.add_argument("--repeat-all", type=int, default=3, help="samples of stats over all runs (slow; 0: skip them)")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-reads", action="store_true")
    parser.add_argument("--reuse", action="store_true",
                        help="read the runs the last run of this benchmark loaded (no new load)")
    args = parser.parse_args()
    kinds = [args.only] if args.only else ["postgresql", "mysql"]
    report: dict[str, Any] = {}
    if not args.skip_ingest:
        print(f"\n== ingest: {RUNS_PER_PROCESS} runs x 7 events per process ==")
        print(f"{'server':<11} {'procs':>5} {'store ev/s':>11} {'raw ev/s':>11} {'store/raw':>9}")
        for kind in kinds:
            for processes in (int(p) for p in args.processes.split(",")):
                store_rate, dropped = ingest(kind, processes, _store_worker)
                raw_rate, _ = ingest(kind, processes, _raw_worker)
                report[f"ingest {kind} {processes}"] = (store_rate, raw_rate, dropped)
                print(f"{kind:<11} {processes:>5} {store_rate:>11,.0f} {raw_rate:>11,.0f} {store_rate / raw_rate:>9.2f}"
                      + (f"  ({dropped} events refused: queue full)" if dropped else ""))
    if not args.skip_reads:
        for kind in kinds:
            print(f"\n== reads: {args.runs:,} runs, 7 events each, on {kind} ==")
            if args.reuse:
                url = reuse_url(kind)
            else:
                url, seconds = load(kind, args.runs)
                print(f"loaded in {seconds:.0f} s ({args.runs * 8 / seconds:,.0f} rows/s)")
            print(f"{'query':<30} {'p50 ms':>8} {'p95 ms':>8} {'< 100 ms':>9}")
            for name, (p50, p95) in reads(url, args.repeat, args.repeat_all).items():
                report[f"reads {kind} {name}"] = (p50, p95)
                print(f"{name:<30} {p50:>8.1f} {p95:>8.1f} {'yes' if p95 < 100 else 'NO':>9}")
    print("\n" + json.dumps({k: list(v) for k, v in report.items()}))


if __name__ == "__main__":
    main()
