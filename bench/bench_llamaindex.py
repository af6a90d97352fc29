"""LlamaIndex agent overhead: a ``FunctionAgent`` (3 steps, 2 tool calls, mock
function-calling LLM) with no instrumentation, with agentaudit, and with
OpenInference's LlamaIndex instrumentor; interleaved blocks, separate processes.

Run: .venv/bin/python bench/bench_llamaindex.py [--quick] [--out bench/results/llamaindex.json]
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import harness

HERE = Path(__file__).resolve().parent
CONFIGS = ["none", "agentaudit-sqlite", "agentaudit-memory", "openinference"]
FULL = {"rounds": 10, "block": 8, "memory_block": 10}
QUICK = {"rounds": 5, "block": 4, "memory_block": 5}
N_STEPS = 3


def worker(settings: dict[str, Any], seed: int) -> dict[str, Any]:
    warnings.filterwarnings("ignore")
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
    from li_agent import QUESTION, build_agent, make_configs

    files = tempfile.mkdtemp(prefix="agentaudit-bench-li-")
    configs = make_configs(CONFIGS, files)
    agent = build_agent(N_STEPS)

    async def timed_runs(config: Any, k: int) -> tuple[list[float], list[float]]:
        walls, threads = [], []
        for _ in range(k):
            config.run_ids.append((uuid.uuid4(), N_STEPS))
            t0, c0 = time.perf_counter(), time.thread_time()
            result = await agent.run(user_msg=QUESTION)
            c1, t1 = time.thread_time(), time.perf_counter()
            walls.append(t1 - t0)
            threads.append(c1 - c0)
            if "sunny" not in str(result):
                raise RuntimeError(f"unexpected answer: {result}")
        return walls, threads

    def run_block(config: Any, k: int) -> tuple[list[float], list[float]]:
        return asyncio.run(timed_runs(config, k))

    try:
        blocks = harness.interleaved(configs, run_block, rounds=settings["rounds"],
                                     block=settings["block"], rng=random.Random(seed),
                                     label="llamaindex")
        figures = harness.summarize(blocks)
        peaks = harness.peak_memory(configs, run_block, block=settings["memory_block"])
        for name, peak in peaks.items():
            figures[name]["peak_kib"] = peak
            figures[name]["added_peak_kib"] = peak - peaks["none"]
        return {"figures": figures, "missing": {c.name: c.missing() for c in configs},
                "runs_per_config": {c.name: len(c.run_ids) for c in configs}}
    finally:
        for config in configs:
            config.close()
        shutil.rmtree(files, ignore_errors=True)


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:

    missing: dict[str, str] = {}
    for result in results:
        for name, why in result["missing"].items():
            if why:
                missing.setdefault(name, why)
    figures = harness.combine([r["figures"] for r in results])
    reported = {n: f for n, f in figures.items() if n not in missing}
    peer = reported.get("openinference")
    for name, fig in reported.items():
        if peer and name != "none":
            fig["ratio_to_openinference"] = fig["added_wall_ms"] / peer["added_wall_ms"]
    return {"figures": reported, "missing": missing,
            "runs_per_config_per_process": results[0]["runs_per_config"]}


def print_table(result: dict[str, Any]) -> None:
    figures = result["figures"]
    print(f"\nLlamaIndex FunctionAgent run, {N_STEPS} steps / {N_STEPS - 1} tool calls; "
          f"baseline {figures['none']['wall_ms']:.2f} ms/run")
    print(f"{'configuration':<22}{'added ms':>10}{'x OpenInf':>11}{'thread ms':>11}"
          f"{'proc ms':>9}{'peak KiB':>10}")
    for name, f in figures.items():
        if name != "none":
            print(f"{name:<22}{f['added_wall_ms']:>10.3f}"
                  f"{f.get('ratio_to_openinference', float('nan')):>11.3f}"
                  f"{f['added_thread_ms']:>11.3f}{f['added_process_ms']:>9.3f}"
                  f"{f['added_peak_kib']:>10.0f}")
    for name, why in result["missing"].items():
        print(f"{name:<22}not reported: {why}")


def main() -> None:
    harness.main_in_processes(
        label="llamaindex", script=__file__, default_out=str(HERE / "results" / "llamaindex.json"),
        worker=worker, combine_results=combine, settings=(QUICK, FULL), print_table=print_table,
        extra={"n_steps": N_STEPS},
    )


if __name__ == "__main__":
    main()
