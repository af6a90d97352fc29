"""What full-text search costs the writer: the same agent runs written into a file
with the search index (the v5 migration's triggers) and into one without it.

Both sides are SQLiteStore files of the current schema; the "without" file has the
run_search triggers dropped, so every other index and the writer's work are the same.
Each side records --runs runs of --steps steps (a step with narration, a tool call
and its result, as an adapter writes them) through the real Auditor and waits until
all of it is committed. Reported, best of --repeat rounds (the sides alternate):
events/s of each side and their ratio (the share of throughput search leaves), and
the file sizes.

    .venv/bin/python bench/bench_search_ingest.py [--runs 300] [--steps 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import agentaudit as aa
from agentaudit.stores.sqlite import SQLiteStore

NARRATION = "Let me look up the weather in Paris before I answer the question. " * 4
RESULT = "sunny, 24 degrees, light wind from the west, no rain expected today. " * 5


def fresh_file(directory: Path, name: str, *, search: bool) -> str:
    path = str(directory / name)
    SQLiteStore(path).close()
    if not search:
        conn = sqlite3.connect(path)
        triggers = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'run_search%'"
        ).fetchall()
        for (trigger,) in triggers:
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.commit()
        conn.close()
    return path


def ingest(path: str, runs: int, steps: int) -> tuple[float, float, int]:
    """Events per second from the first hook to the last commit, the process's CPU
    time per event in µs (every thread: the caller's and the writer's; steadier than
    wall time on a busy machine), and the events written."""
    store = SQLiteStore(path)
    auditor = aa.Auditor(store)
    call = aa.ToolCall("get_weather", {"city": "Paris"}, "call_1")
    cpu = time.process_time()
    started = time.perf_counter()
    events = 0
    for _ in range(runs):
        writer = auditor.start_run("bench-agent", input="What is the weather in Paris today?")
        for step in range(1, steps + 1):
            writer.on_step(step, aa.Response(text=NARRATION, model="openai/gpt-4o-mini",
                                             usage=aa.Usage(120, 30), tool_calls=(call,)))
            writer.on_tool(call, RESULT, duration_ms=12.0)
        writer.close(aa.RunStats(output="It is sunny in Paris."))
    store.flush()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    events = int(sqlite3.connect(path).execute("SELECT count(*) FROM events").fetchone()[0])
    store.close()
    return events / elapsed, cpu / events * 1e6, events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with_rates: list[float] = []
    without_rates: list[float] = []
    cpu: dict[bool, list[float]] = {True: [], False: []}
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for round_ in range(args.repeat):
            for search, rates in ((True, with_rates), (False, without_rates)):
                name = f"{'with' if search else 'without'}-{round_}.db"
                path = fresh_file(directory, name, search=search)
                rate, cpu_us, events = ingest(path, args.runs, args.steps)
                rates.append(rate)
                cpu[search].append(cpu_us)
                sizes[search] = os.path.getsize(path) + os.path.getsize(path + "-wal") \
                    if os.path.exists(path + "-wal") else os.path.getsize(path)
    best_with, best_without = max(with_rates), max(without_rates)
    print(f"{events} events per round, best of {args.repeat}")
    cpu_with, cpu_without = min(cpu[True]), min(cpu[False])
    print(f"  with search index:    {best_with:10,.0f} events/s  {cpu_with:6.1f} µs CPU/event  "
          f"file {sizes[True] / 1e6:6.1f} MB")
    print(f"  without search index: {best_without:10,.0f} events/s  {cpu_without:6.1f} µs CPU/event  "
          f"file {sizes[False] / 1e6:6.1f} MB")
    print(f"  ratio with/without:   {best_with / best_without:10.2f} (throughput)  "
          f"{cpu_with / cpu_without:5.2f} (CPU per event)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
