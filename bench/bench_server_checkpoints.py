"""What a signed checkpoint costs on each store, side by side: SQLite, PostgreSQL, MariaDB.

For each: record N runs (one step and one tool call each), then time one checkpoint
over the N new runs, the next one over 10 new runs in a log of N, verification of
every run against the sink with the public key, and proofs of 100 runs. The server
databases are an empty schema (PostgreSQL) or database (MariaDB) named
``aa_bench_cp``, dropped first.

Run: .venv/bin/python bench/bench_server_checkpoints.py [--runs N]
Needs the servers of tests/server (or AGENTAUDIT_TEST_POSTGRES / _MYSQL).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import agentaudit as aa
from agentaudit._checkpoints import generate_signing_key

POSTGRES = os.environ.get("AGENTAUDIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL = os.environ.get("AGENTAUDIT_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")
SCHEMA = "aa_bench_cp"
RESPONSE = aa.Response(
    text="Let me look that up.", model="openai/gpt-4o-mini", usage=aa.Usage(120, 24),
    tool_calls=(aa.ToolCall("lookup", {"q": "x"}, "call_1"),),
)


def fresh_url(kind: str, tmp: Path) -> str:
    if kind == "sqlite":
        return str(tmp / "bench.db")
    if kind == "postgresql":
        import psycopg

        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            conn.execute(f"CREATE SCHEMA {SCHEMA}")
        return f"{POSTGRES}?options=-csearch_path%3D{SCHEMA}"
    import pymysql

    parts = urllib.parse.urlsplit(MYSQL)
    conn = pymysql.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                           password=parts.password or "", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {SCHEMA}")
        cur.execute(f"CREATE DATABASE {SCHEMA} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    conn.close()
    return urllib.parse.urlunsplit(parts._replace(path=f"/{SCHEMA}"))


def record(store: Any, runs: int) -> list[str]:
    auditor = aa.Auditor(store)
    ids = []
    for _ in range(runs):
        writer = auditor.start_run("bench", input="q")
        writer.on_step(1, RESPONSE)
        writer.on_tool(RESPONSE.tool_calls[0], "ok")
        writer.close(aa.RunStats(status="succeeded", output="done"))
        ids.append(writer.run_id)
    store.flush()
    return ids


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    public = generate_signing_key(tmp / "signing.pem").vkey
    print(f"{'store':<11} {'first (ms)':>11} {'next 10 (ms)':>13} {'verify (ms)':>12} {'100 proofs (ms)':>16}")
    for kind in ("sqlite", "postgresql", "mysql"):
        sink = tmp / f"{kind}.jsonl"
        policy = aa.CheckpointPolicy(interval=0, at_close=False, signing_key=tmp / "signing.pem", sink=sink)
        store = aa.open_store(fresh_url(kind, tmp), checkpoints=policy)
        try:
            ids = record(store, args.runs)
            first, _ = timed(store.checkpoint)
            record(store, 10)
            nxt, _ = timed(store.checkpoint)
            verify, report = timed(lambda store=store, sink=sink: store.verify_checkpoints(sink, public_key=public))
            proofs, _ = timed(lambda store=store, ids=ids: store.prove_many(ids[:100]))
            assert report.ok, report.problems
        finally:
            store.close()
        print(f"{kind:<11} {first * 1e3:>11.0f} {nxt * 1e3:>13.1f} {verify * 1e3:>12.0f} {proofs * 1e3:>16.0f}")
    print(f"({args.runs} runs of one step and one tool call; the next checkpoint in a log of {args.runs + 10})")


if __name__ == "__main__":
    main()
