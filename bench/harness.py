"""Interleaved, shuffled blocks of runs; per-round medians; figures relative to the
configuration named ``none``. Framework-neutral: a scenario passes ``run_block``,
which runs ``k`` invocations under a configuration and returns each one's wall time
and CPU time on the calling thread (seconds)."""

from __future__ import annotations

import gc
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any, Protocol

BASELINE = "none"


class Configured(Protocol):
    name: str

    def begin_block(self) -> None: ...
    def end_block(self) -> None: ...


RunBlock = Callable[[Any, int], tuple[list[float], list[float]]]


def interleaved(configs: Sequence[Configured], run_block: RunBlock, *, rounds: int, block: int,
                rng: random.Random, warmup: int = 2, label: str = "") -> dict[str, list[dict]]:
    """``rounds`` rounds; in each, every configuration runs one block of ``block`` runs,
    in a fresh random order. Per block: the median wall and thread-CPU time of a run,
    and the process CPU (every thread, including the block's untimed flush) per run."""
    for config in configs:  # warm imports, caches and connections; not measured
        config.begin_block()
        run_block(config, warmup)
        config.end_block()
    blocks: dict[str, list[dict]] = {c.name: [] for c in configs}
    for r in range(rounds):
        order = list(configs)
        rng.shuffle(order)
        for config in order:
            gc.collect()
            config.begin_block()
            cpu0 = time.process_time()
            walls, threads = run_block(config, block)
            config.end_block()
            cpu1 = time.process_time()
            blocks[config.name].append({
                "wall_ms": statistics.median(walls) * 1e3,
                "thread_ms": statistics.median(threads) * 1e3,
                "process_ms": (cpu1 - cpu0) / block * 1e3,
            })
        print(f"  {label} round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return blocks


def peak_memory(configs: Sequence[Configured], run_block: RunBlock, *, block: int) -> dict[str, float]:
    """Peak traced Python memory (KiB, every thread) while a block of runs executes
    and is flushed. Separate from the timed rounds: tracemalloc slows everything."""
    peaks = {}
    for config in configs:
        gc.collect()
        tracemalloc.start()
        config.begin_block()
        run_block(config, block)
        config.end_block()
        peaks[config.name] = tracemalloc.get_traced_memory()[1] / 1024
        tracemalloc.stop()
    return peaks


def summarize(blocks: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Per configuration: the median over rounds of each block figure, and of its
    difference from the baseline's block in the same round (``added_*``)."""
    base = blocks[BASELINE]
    out = {}
    for name, rows in blocks.items():
        figures: dict[str, float] = {}
        for key in ("wall_ms", "thread_ms", "process_ms"):
            figures[key] = statistics.median(row[key] for row in rows)
            figures["added_" + key] = statistics.median(
                row[key] - b[key] for row, b in zip(rows, base, strict=True))
        out[name] = figures
    return out


def combine(per_process: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Median across processes of each per-process median, keeping the spread."""
    out: dict[str, dict[str, Any]] = {}
    for name in per_process[0]:
        out[name] = {}
        for key in per_process[0][name]:
            values = [p[name][key] for p in per_process if name in p]
            out[name][key] = statistics.median(values)
            out[name][key + "_per_process"] = values
    return out


def main_in_processes(
    *,
    label: str,
    script: str,
    default_out: str,
    worker: Callable[[dict[str, Any], int], dict[str, Any]],
    combine_results: Callable[[list[dict[str, Any]]], dict[str, Any]],
    settings: tuple[dict[str, Any], dict[str, Any]],
    print_table: Callable[[dict[str, Any]], None],
    extra: dict[str, Any] | None = None,
) -> None:
    """The command line every scenario shares: measure in separate processes (each a
    ``--worker``), combine their medians, write the JSON, print the table.
    ``settings`` is (quick, full)."""
    import argparse
    import json
    import subprocess
    from pathlib import Path

    import env_info

    parser = argparse.ArgumentParser(description=f"{label} overhead benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, one process")
    parser.add_argument("--processes", type=int, default=None,
                        help="measuring processes (default 3, 1 with --quick)")
    parser.add_argument("--out", default=default_out)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    chosen = settings[0] if args.quick else settings[1]
    processes = args.processes if args.processes is not None else (1 if args.quick else 3)
    if args.worker is not None:
        json.dump(worker(chosen, args.worker), sys.stdout)
        return
    started = time.time()
    results = []
    for i in range(processes):
        print(f"{label}: process {i + 1}/{processes}", file=sys.stderr, flush=True)
        cmd = [sys.executable, script, "--worker", str(i)] + (["--quick"] if args.quick else [])
        done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
        results.append(json.loads(done.stdout))
    combined = combine_results(results)
    combined.update({"settings": chosen, "processes": processes, "quick": args.quick,
                     **(extra or {}), "machine": env_info.machine(),
                     "versions": env_info.versions(),
                     "elapsed_s": round(time.time() - started, 1),
                     "date": time.strftime("%Y-%m-%d %H:%M:%S")})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(combined, indent=2) + "\n")
    print_table(combined)
    print(f"written {out} in {combined['elapsed_s']} s", file=sys.stderr)
