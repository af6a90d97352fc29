"""What signed checkpoints cost, side by side with no checkpoints.

1. The agent's thread: time to record runs into a SQLite store with checkpoints off,
   and with an Ed25519-signed checkpoint to a file sink every 0.2 s (far more often
   than the default 60 s), interleaved rounds, median per run, and the ratio.
2. The checkpointer's own work: one checkpoint over N new runs, and the next one
   over a few new runs in a log of N (the compact range keeps it O(new + log n)).
3. Verification against the sink, and proofs of 100 runs.

Run: .venv/bin/python bench/bench_checkpoints.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import agentaudit as aa
from agentaudit._checkpoints import generate_signing_key

ROUNDS = 7
RUNS_PER_ROUND = 300
LOG_SIZE = 2000

RESPONSE = aa.Response(
    text="Let me look that up.", model="openai/gpt-4o-mini", usage=aa.Usage(120, 24),
    tool_calls=(aa.ToolCall("lookup", {"q": "x"}, "call_1"),),
)


def record(store: aa.SQLiteStore, runs: int) -> float:
    auditor = aa.Auditor(store)
    start = time.perf_counter()
    for _ in range(runs):
        writer = auditor.start_run("bench", input="q", parent_run_id=None)
        writer.on_step(1, RESPONSE)
        writer.on_tool(RESPONSE.tool_calls[0], "ok")
        writer.close(aa.RunStats(status="succeeded", output="done"))
    return time.perf_counter() - start


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    key = tmp / "signing.pem"
    public = generate_signing_key(key).vkey
    sink = tmp / "checkpoints.jsonl"
    off: list[float] = []
    on: list[float] = []
    for round_ in range(ROUNDS):  # interleaved: drift on a shared machine hits both
        for label, times in (("off", off), ("on", on)):
            policy = (
                aa.CheckpointPolicy(interval=0.2, signing_key=key, sink=sink) if label == "on" else False
            )
            with aa.SQLiteStore(tmp / f"{label}-{round_}.db", checkpoints=policy) as store:
                times.append(record(store, RUNS_PER_ROUND) / RUNS_PER_ROUND)
    a, b = statistics.median(off), statistics.median(on)
    print(f"agent's thread, per run: off {a * 1e6:.1f} us, on {b * 1e6:.1f} us, ratio {b / a:.2f}")

    policy = aa.CheckpointPolicy(interval=0, at_close=False, signing_key=key, sink=tmp / "big.jsonl")
    with aa.SQLiteStore(tmp / "big.db", checkpoints=policy) as store:
        record(store, LOG_SIZE)
        store.flush()
        start = time.perf_counter()
        store.checkpoint()
        first = time.perf_counter() - start
        record(store, 10)
        store.flush()
        start = time.perf_counter()
        store.checkpoint()
        nxt = time.perf_counter() - start
        start = time.perf_counter()
        report = store.verify_checkpoints(tmp / "big.jsonl", public_key=public)
        verify = time.perf_counter() - start
        ids = [run.run_id for run in store.list_runs(aa.RunFilter(limit=100))]
        start = time.perf_counter()
        store.prove_many(ids)
        proofs = time.perf_counter() - start
    print(f"checkpoint over {LOG_SIZE} new runs: {first * 1e3:.0f} ms; next over 10 new runs: {nxt * 1e3:.1f} ms")
    print(f"verify {LOG_SIZE + 10} runs against the sink with the public key: {verify * 1e3:.0f} ms (ok={report.ok})")
    print(f"proofs of 100 runs in a log of {LOG_SIZE + 10}: {proofs * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
