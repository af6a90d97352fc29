"""The viewer's runs page at scale: p50/p95 over HTTP on a SQLite file of 1,000,000 runs.

Loading goes through the store's own schema: the file is created by SQLiteStore (every
migration, its indexes and its search triggers), then rows are inserted with the
store's column lists by ``executemany`` in large transactions (the agent-side write path
is bench_sqlite_ingest's subject, not this one). One run in ``--events-every`` gets a
step, a tool call and its result, so full-text search has events to find too.

Then the real command serves it (``agentaudit ui --port 0``, read-only, a subprocess)
and each page is fetched ``--requests`` times, one after another, over one keep-alive
connection: the first page, filtered pages, sorted pages and deep pages, and the count
the page fetches once shown. Target: p95 under 300 ms per page.

    .venv/bin/python bench/bench_ui.py [--runs 1000000] [--db PATH] [--requests 40]

The loaded file is kept (``--db``, default agentaudit-ui-bench.db in the temporary
directory) and reused when it already holds ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, urlsplit

from agentaudit.stores._sqlite_rows import INSERT_EVENT, RUN_COLUMNS, utc_ts
from agentaudit.stores.sqlite import SQLiteStore

TARGET_P95_MS = 300.0
NAMES = [f"agent-{i}" for i in range(20)]
CALLERS = [f"user-{i}" for i in range(200)]
MODELS = ["openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-sonnet", "local/weather-sim-1",
          "google/gemini-flash", "mistral/small"]
TOPICS = ["weather", "invoice", "refund", "shipping", "password", "calendar", "translation",
          "summary", "contract", "pricing", "outage", "onboarding"]
STATUSES = (["succeeded"] * 90 + ["failed"] * 5 + ["interrupted"] + ["cancelled"] + ["timeout"]
            + ["abandoned"] + ["running"])
DAYS = 90
BATCH = 50_000


def load(path: Path, runs: int, events_every: int) -> float:
    """Fill a new file at ``path``; returns the seconds it took."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    SQLiteStore(path).close()  # the schema, as the store makes it
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    columns = RUN_COLUMNS + ", model"
    insert_run = f"INSERT INTO runs ({columns}) VALUES ({', '.join('?' * (columns.count(',') + 1))})"
    rng = random.Random(7)
    end = datetime.now(timezone.utc)
    begin = end - timedelta(days=DAYS)
    step = (end - begin) / runs
    batch: list[tuple[object, ...]] = []
    events: list[tuple[object, ...]] = []
    previous = None
    for i in range(runs):
        started_at = begin + step * i
        status = rng.choice(STATUSES)
        duration = timedelta(milliseconds=rng.lognormvariate(7.5, 0.8))
        topic = rng.choice(TOPICS)
        run_id = f"{i:012x}-bench"
        parent = previous if previous and rng.random() < 0.05 else None
        tin, tout = rng.randint(200, 6000), rng.randint(20, 900)
        model = rng.choice(MODELS)
        batch.append((
            run_id, rng.choice(NAMES), rng.choice(CALLERS), parent, status, utc_ts(started_at),
            None if status == "running" else utc_ts(started_at + duration),
            f"question {i} about {topic}", "" if status != "succeeded" else f"answer about {topic} #{i}",
            f"ToolError: {topic} backend failed" if status == "failed" else "",
            rng.randint(0, 6), rng.randint(1, 8), tin, tout, 0,
            round(tin * 2.5e-6 + tout * 1e-5, 6) if rng.random() < 0.8 else None,
            "{}", "bench-host", 1000 + i % 50, "", "", model,
        ))
        if i % events_every == 0:
            at = started_at + duration / 2
            events += [
                (run_id, 1, "step", json.dumps({"iter": 1, "step_ms": 120.0, "text_len": 24,
                                                "model": model, "text": f"thinking about {topic} zebra{i % 97}"}),
                 utc_ts(at), "", "h1", ""),
                (run_id, 2, "tool_call", json.dumps({"name": "lookup", "args": json.dumps({"q": topic}), "id": "c1"}),
                 utc_ts(at), "h1", "h2", ""),
                (run_id, 3, "tool_result", json.dumps({"name": "lookup", "id": "c1", "result": f"{topic} found",
                                                       "truncated": False, "duration_ms": 40.0}),
                 utc_ts(at + timedelta(milliseconds=40)), "h2", "h3", ""),
            ]
        previous = run_id if parent is None else previous
        if len(batch) >= BATCH:
            _flush(conn, insert_run, batch, events)
            print(f"  loaded {i + 1:,} runs", file=sys.stderr, end="\r")
    _flush(conn, insert_run, batch, events)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("ANALYZE")
    conn.close()
    return time.perf_counter() - started


def _flush(conn: sqlite3.Connection, insert_run: str, runs: list[tuple[object, ...]],
           events: list[tuple[object, ...]]) -> None:
    conn.execute("BEGIN")
    conn.executemany(insert_run, runs)
    conn.executemany(INSERT_EVENT, events)
    conn.execute("COMMIT")
    runs.clear()
    events.clear()


def count(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
    except sqlite3.Error:
        return 0


def serve(path: Path) -> tuple[subprocess.Popen[str], str]:
    exe = Path(sys.executable).with_name("agentaudit")
    proc = subprocess.Popen([str(exe), "ui", "--db", str(path), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if " at " not in line:
        proc.kill()
        raise SystemExit(f"agentaudit ui did not start: {line!r}")
    return proc, line.rsplit(" at ", 1)[1].strip()


def measure(base: str, path: str, requests: int) -> tuple[float, float, int]:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    conn.connect()
    # As browsers do: without it, delayed ACKs add ~40 ms to every keep-alive request.
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    size = 0
    for i in range(requests + 2):
        t0 = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - t0) * 1000
        if response.status != 200:
            raise SystemExit(f"GET {path}: {response.status} {body[:300]!r}")
        size = len(body)
        if i >= 2:  # two warm-up requests: the first touches cold pages of the file
            times.append(elapsed)
    conn.close()
    times.sort()
    return statistics.median(times), times[max(0, round(0.95 * (len(times) - 1)))], size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=Path(tempfile.gettempdir()) / "agentaudit-ui-bench.db")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--events-every", type=int, default=100)
    args = parser.parse_args()

    if count(args.db) != args.runs:
        print(f"loading {args.runs:,} runs into {args.db} ...", file=sys.stderr)
        seconds = load(args.db, args.runs, args.events_every)
        print(f"loaded {args.runs:,} runs in {seconds:.0f} s "
              f"({os.path.getsize(args.db) / 1e6:,.0f} MB)", file=sys.stderr)
    with sqlite3.connect(f"file:{args.db}?mode=ro", uri=True) as conn:
        (middle,) = conn.execute("SELECT started_at FROM runs ORDER BY started_at LIMIT 1 OFFSET ?",
                                 (args.runs // 2,)).fetchone()
        (caller,) = conn.execute("SELECT caller FROM runs ORDER BY rowid DESC LIMIT 1").fetchone()
    pages = [
        ("first page", "/"),
        ("status=failed", "/?status=failed"),
        ("caller", f"/?caller={caller}"),
        ("model", "/?model=openai/gpt-4o"),
        ("name + since 7d", "/?name=agent-3&since=7d"),
        ("errors only", "/?has_error=yes"),
        ("min cost $0.01", "/?min_cost=0.01"),
        ("min cost $0.05 (matches none)", "/?min_cost=0.05"),
        ("search 'refund'", "/?q=refund"),
        ("search rare 'zebra42'", "/?q=zebra42"),
        ("deep page (keyset, middle)", f"/?at={quote(middle)}&skip=1"),
        ("deep page (until=middle)", f"/?until={quote(middle)}"),
        ("sorted by cost", "/?sort=cost"),
        ("sorted by duration", "/?sort=duration"),
        ("sorted by tokens asc", "/?sort=tokens&dir=asc"),
        ("deep page (offset 10,000, by tokens)", "/?sort=tokens&offset=10000"),
        # The page asks for its total once shown (never holding up the list): timed apart.
        ("count: every run", "/api/runs/count"),
        ("count: status=failed", "/api/runs/count?status=failed"),
        ("count: search 'refund'", "/api/runs/count?q=refund"),
    ]
    proc, base = serve(args.db)
    results = []
    try:
        for label, path in pages:
            p50, p95, size = measure(base, path, args.requests)
            results.append((label, p50, p95, size))
            flag = "ok" if p95 < TARGET_P95_MS else "OVER"
            print(f"{label:40s} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   {size / 1024:6.0f} KiB  {flag}")
    finally:
        proc.terminate()
        proc.wait(10)
    over = [label for label, _p50, p95, _s in results if p95 >= TARGET_P95_MS]
    print(f"\n{args.runs:,} runs; target p95 < {TARGET_P95_MS:.0f} ms: "
          + ("every page meets it" if not over else f"over on: {', '.join(over)}"))


if __name__ == "__main__":
    main()
