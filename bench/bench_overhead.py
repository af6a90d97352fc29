"""Added time per LangChain agent run: agentaudit against a hand-written floor.

The agent: ``create_agent`` with two tools and a deterministic tool-calling chat
model (3 model steps, 2 tool calls), no network. Configurations, each timed in
shuffled, interleaved rounds in one process:

- ``none``: no callbacks (the baseline every other figure is relative to);
- ``null``: a ``BaseCallbackHandler`` that does nothing: LangChain's own cost of
  calling any handler, which no handler can avoid;
- ``floor``: ``bench/floor_handler.py``'s ``FloorHandler``, a minimal hand-written
  ``BaseCallbackHandler`` that collects a row per step (text, model, tokens) and two
  per tool execution (arguments, result) and does one sqlite3 ``executemany`` +
  commit at the root chain's end, on the agent's thread (no run row, no hashes, no
  redaction, no caps);
- ``aa-sqlite``: agentaudit's ``AuditCallbackHandler`` over ``SQLiteStore`` (default
  settings, a temporary file); records text, arguments, results and hashes;
- ``aa-sqlite-key``: the same with a chain key (HMAC-SHA256 hashes and seals);
- ``aa-memory``: the same over ``MemoryStore``;
- with ``--postgres URL`` (an empty schema is made in that database and dropped after):
  ``aa-pg``, the same over the PostgreSQL store (its own writer thread ships to the
  server), and ``aa-pg-spool``, the fleet setup ``open_store(URL, spool=FILE)`` (the
  agent writes into a local SQLite spool; a forwarder ships it).

Reported: median added ms per run over the rounds (configuration minus ``none`` in
the same round) and the ratio to the floor. Every configuration is checked to have
recorded every run it was given.

Run: .venv/bin/python bench/bench_overhead.py [--rounds 40] [--runs 20]
         [--postgres postgresql://postgres@127.0.0.1:5432/test]
     .venv/bin/python bench/bench_overhead.py --profile aa-sqlite   (cProfile, top entries)
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from floor_handler import FloorHandler  # the bench helper's floor, shared by every bench
from langchain_core.callbacks import BaseCallbackHandler
from lc_agent import agent_input, build_agent

import agentaudit as aa
from agentaudit_langchain import AuditCallbackHandler

# -- the agent: the same scripted 3-step agent as bench_langchain.py ------------------

ROWS_PER_FLOOR_RUN = 3 + 2 * 2  # a row per step, two per tool call
QUESTION = agent_input()

# -- configurations ---------------------------------------------------------------------


class Config:
    def __init__(self, name: str, handler: Any, count: Callable[[], int]) -> None:
        self.name = name
        self.callbacks = [handler] if handler is not None else []
        self.count = count
        self.given = 0


def make_configs(workdir: str, postgres: str | None = None) -> dict[str, Config]:
    floor = FloorHandler(os.path.join(workdir, "floor.db"))
    sqlite_store = aa.SQLiteStore(os.path.join(workdir, "aa.db"), key=False)
    # The keyed chain (HMAC-SHA256 event hashes and seals): the A/B of a key's cost.
    keyed_store = aa.SQLiteStore(os.path.join(workdir, "aa-key.db"), key="bench secret, 16+ bytes")
    memory_store = aa.MemoryStore()
    configs = [
        Config("none", None, lambda: -1),
        # LangChain's own cost of having any handler attached: the part no handler avoids.
        Config("null", BaseCallbackHandler(), lambda: -1),
        Config("floor", floor, lambda: floor.count_rows() // ROWS_PER_FLOOR_RUN),
        Config("aa-sqlite", AuditCallbackHandler(aa.Auditor(sqlite_store)),
               lambda: sqlite_store.count_runs(aa.RunFilter(status="succeeded"))),
        Config("aa-sqlite-key", AuditCallbackHandler(aa.Auditor(keyed_store)),
               lambda: keyed_store.count_runs(aa.RunFilter(status="succeeded"))),
        Config("aa-memory", AuditCallbackHandler(aa.Auditor(memory_store)),
               lambda: memory_store.count_runs(aa.RunFilter(status="succeeded"))),
    ]
    if postgres is not None:
        pg_store = aa.open_store(_schema_url(postgres, "direct"), key=False)
        spooled = aa.open_store(
            _schema_url(postgres, "spooled"), spool=os.path.join(workdir, "spool.db"), key=False
        )
        configs += [
            Config("aa-pg", AuditCallbackHandler(aa.Auditor(pg_store)),
                   lambda: _count_after_flush(pg_store)),
            Config("aa-pg-spool", AuditCallbackHandler(aa.Auditor(spooled)),
                   lambda: _count_after_flush(spooled)),
        ]
    return {c.name: c for c in configs}


_SCHEMAS: list[str] = []


def _schema_url(url: str, label: str) -> str:
    """``url`` with a fresh, empty schema of its own as the search path."""
    import psycopg  # the postgres extra

    schema = f"aa_bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    _SCHEMAS.append(schema)
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


def _drop_schemas(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for schema in _SCHEMAS:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    _SCHEMAS.clear()


def _count_after_flush(store: Any) -> int:
    store.flush(timeout=60)
    return int(store.count_runs(aa.RunFilter(status="succeeded")))


def timed_block(agent: Any, config: Config, runs: int) -> float:
    """Mean seconds per run over ``runs`` invocations."""
    cfg = {"callbacks": config.callbacks}
    start = time.perf_counter()
    for _ in range(runs):
        agent.invoke(QUESTION, config=cfg)
    elapsed = time.perf_counter() - start
    config.given += runs
    return elapsed / runs


def measure(rounds: int, runs: int, only: list[str] | None, postgres: str | None = None) -> None:
    agent = build_agent()
    with tempfile.TemporaryDirectory() as workdir:
        try:
            _measure(agent, workdir, rounds, runs, only, postgres)
        finally:
            if postgres is not None and _SCHEMAS:
                _drop_schemas(postgres)


def _measure(
    agent: Any, workdir: str, rounds: int, runs: int, only: list[str] | None, postgres: str | None
) -> None:
    configs = make_configs(workdir, postgres)
    chosen = [c for c in configs.values() if only is None or c.name in only or c.name == "none"]
    for config in chosen:  # warm up: imports, caches, the writer thread
        timed_block(agent, config, 5)
    samples: dict[str, list[float]] = {c.name: [] for c in chosen}
    rng = random.Random(7)
    gc.collect()
    for _ in range(rounds):
        order = list(chosen)
        rng.shuffle(order)
        for config in order:
            samples[config.name].append(timed_block(agent, config, runs))
    for config in chosen:
        if config.name not in ("none", "null"):
            recorded = config.count()
            if recorded != config.given:
                print(f"!! {config.name} recorded {recorded} of {config.given} runs", file=sys.stderr)
    base = statistics.median(samples["none"]) * 1000
    print(f"rounds={rounds} runs/round={runs}  baseline (none): {base:.3f} ms/run")
    added: dict[str, float] = {}
    for config in chosen:
        if config.name == "none":
            continue
        diffs = [(s - n) * 1000 for s, n in zip(samples[config.name], samples["none"], strict=True)]
        added[config.name] = statistics.median(diffs)
    floor = added.get("floor")
    print(f"{'config':<12}{'added ms/run':>14}{'x floor':>10}")
    for name, value in added.items():
        ratio = f"{value / floor:.2f}" if floor else "-"
        print(f"{name:<12}{value:>14.3f}{ratio:>10}")


def profile(name: str, runs: int, top: int) -> None:
    agent = build_agent()
    with tempfile.TemporaryDirectory() as workdir:
        config = make_configs(workdir)[name]
        timed_block(agent, config, 20)
        profiler = cProfile.Profile()
        profiler.enable()
        timed_block(agent, config, runs)
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--runs", type=int, default=20, help="runs per configuration per round")
    parser.add_argument("--only", nargs="*", help="configurations to time (plus none)")
    parser.add_argument("--profile", help="profile one configuration with cProfile instead")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--postgres", help="also time the PostgreSQL store and the spooled fleet setup")
    args = parser.parse_args()
    if args.profile:
        profile(args.profile, args.runs * 10, args.top)
    else:
        measure(args.rounds, args.runs, args.only, args.postgres)


if __name__ == "__main__":
    uuid.uuid4()  # warm the uuid module's entropy source before timing
    main()
