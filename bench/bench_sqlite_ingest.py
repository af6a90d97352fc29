"""Sustained ingest into SQLiteStore (batched) against a bare sqlite3 executemany.

Both write the same sealed events into the same table and indexes, in the same kind
of file (WAL, synchronous=NORMAL), and both pay for the JSON encoding of payloads
and the formatting of timestamps. The bare side is the floor of what Python and
sqlite3 can do: build every row, one executemany, one commit. The store side is
what an agent pays: append_log per event from the caller's thread, then flush.

Reported, best of --repeat rounds (the two sides alternate within a round):
  - events/s of each side and their ratio (target: store >= 0.7x bare);
  - caller-thread CPU per append (time.thread_time; the writer thread's work is
    not the caller's), target <= 15 µs;
  - wall time per append at an agent's pace (bursts with pauses), p50 and p99.

    .venv/bin/python bench/bench_sqlite_ingest.py [--events 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import agentaudit as aa
from agentaudit.stores import _sqlite_schema
from agentaudit.stores._sqlite_rows import INSERT_EVENT
from agentaudit.stores.sqlite import SQLiteStore

TARGET_RATIO = 0.7
TARGET_CALLER_US = 15.0


def make_events(count: int, per_run: int = 1000) -> tuple[list[aa.Run], list[aa.Event]]:
    """A realistic mix: steps with narration, tool calls and results, per run."""
    t0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
    runs: list[aa.Run] = []
    events: list[aa.Event] = []
    narration = "Let me look that up in the index before answering the question. " * 3
    result = "Found 3 documents matching the query; the most relevant says: ... " * 4
    for n in range((count + per_run - 1) // per_run):
        run_id = f"run-{n:06d}-{os.urandom(8).hex()}"
        runs.append(aa.Run(run_id=run_id, name="bench-agent", caller="bench", started_at=t0))
        prev = ""
        for seq in range(1, min(per_run, count - len(events)) + 1):
            kind = ("step", "tool_call", "tool_result")[seq % 3]
            if kind == "step":
                payload = {"iter": seq, "step_ms": 812, "text_len": len(narration),
                           "model": "openai/gpt-4o-mini", "finish_reason": "tool_calls",
                           "in_tokens": 1200 + seq, "out_tokens": 40, "text": narration}
            elif kind == "tool_call":
                payload = {"name": "search", "args": '{"q":"sqlite wal mode"}', "id": f"call_{seq}"}
            else:
                payload = {"name": "search", "id": f"call_{seq}", "result": result,
                           "truncated": False, "duration_ms": 12.5}
            digest = hashlib.sha256(f"{prev}{run_id}{seq}".encode()).hexdigest()
            events.append(aa.Event(run_id, seq, kind, payload,
                                   t0 + timedelta(milliseconds=seq), prev, digest))
            prev = digest
    return runs, events


def fresh_file(directory: Path, name: str) -> str:
    path = directory / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return str(path)


def bare_ingest(path: str, events: list[aa.Event]) -> float:
    """Events/s of a hand-written executemany of the same rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    _sqlite_schema.migrate(conn, path)  # the same tables and indexes as the store
    start = time.perf_counter()
    rows = [
        (e.run_id, e.sequence, e.event_type,
         json.dumps(e.payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
         e.created_at.isoformat(timespec="microseconds"), e.prev_hash, e.hash, e.salt)
        for e in events
    ]
    conn.execute("BEGIN")
    conn.executemany(INSERT_EVENT, rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(events) / elapsed


def store_ingest(path: str, runs: list[aa.Run], events: list[aa.Event]) -> tuple[float, float]:
    """(events/s, caller-thread CPU µs per append) of SQLiteStore, batched."""
    store = SQLiteStore(path, max_queue=20_000)
    for run in runs:
        store.start_run(run)
    store.flush()
    append = store.append_log
    start = time.perf_counter()
    cpu = time.thread_time()
    for event in events:
        append(event)
    cpu = time.thread_time() - cpu
    store.flush()
    elapsed = time.perf_counter() - start
    store.close()
    return len(events) / elapsed, cpu / len(events) * 1e6


def paced_latency(path: str, runs: list[aa.Run], events: list[aa.Event]) -> tuple[float, float]:
    """p50 and p99 wall µs of one append when an agent appends in bursts of 5 with
    1 ms pauses (the writer thread commits in between, sharing the GIL)."""
    store = SQLiteStore(path)
    for run in runs:
        store.start_run(run)
    store.flush()
    samples = []
    clock = time.perf_counter
    for i, event in enumerate(events):
        t = clock()
        store.append_log(event)
        samples.append(clock() - t)
        if i % 5 == 4:
            time.sleep(0.001)
    store.close()
    samples.sort()
    return statistics.median(samples) * 1e6, samples[int(len(samples) * 0.99)] * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--paced-events", type=int, default=5_000)
    args = parser.parse_args()

    runs, events = make_events(args.events)
    paced_runs, paced_events = make_events(args.paced_events)
    bare_rates, store_rates, caller_us = [], [], []
    with tempfile.TemporaryDirectory(prefix="aa-bench-") as tmp:
        directory = Path(tmp)
        for round_no in range(args.repeat):
            order = ("bare", "store") if round_no % 2 == 0 else ("store", "bare")
            for side in order:
                path = fresh_file(directory, f"{side}.db")
                if side == "bare":
                    bare_rates.append(bare_ingest(path, events))
                else:
                    rate, us = store_ingest(path, runs, events)
                    store_rates.append(rate)
                    caller_us.append(us)
        p50, p99 = paced_latency(fresh_file(directory, "paced.db"), paced_runs, paced_events)

    bare, ours, cpu = max(bare_rates), max(store_rates), min(caller_us)
    ratio = ours / bare
    rows = [
        ("bare sqlite3 executemany (incl. JSON)", f"{bare:,.0f} events/s", ""),
        ("SQLiteStore batched, append + flush", f"{ours:,.0f} events/s", ""),
        ("ingest ratio store / bare", f"{ratio:.2f}x", f"target >= {TARGET_RATIO}x"),
        ("caller thread CPU per append", f"{cpu:.2f} µs", f"target <= {TARGET_CALLER_US:g} µs"),
        ("append wall time at agent pace, p50", f"{p50:.2f} µs", ""),
        ("append wall time at agent pace, p99", f"{p99:.2f} µs", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"SQLite ingest, {args.events:,} events, best of {args.repeat} "
          f"(Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version})")
    for label, value, target in rows:
        print(f"  {label:<{width}}  {value:>18}  {target}")
    ok = ratio >= TARGET_RATIO and cpu <= TARGET_CALLER_US
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
