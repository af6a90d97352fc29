"""LangChain agent overhead: agentaudit against Langfuse, LangSmith, OpenInference and
a hand-written floor, on a ``create_agent`` agent with a deterministic model.

Each measuring process runs shuffled, interleaved blocks of every configuration; the
parent repeats that in ``--processes`` fresh processes and takes the median of their
medians. Then the scaling phase: added time per step for runs of 3 to 50 steps.

Run: .venv/bin/python bench/bench_langchain.py [--quick] [--out bench/results/langchain.json]
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import harness

HERE = Path(__file__).resolve().parent
MAIN_CONFIGS = ["none", "null", "agentaudit-sqlite", "agentaudit-memory", "agentaudit-sqlite-sync",
                "floor", "langfuse", "langsmith", "openinference"]
SCALING_CONFIGS = ["none", "agentaudit-sqlite", "floor", "langfuse", "langsmith", "openinference"]
PEERS = ("langfuse", "langsmith", "openinference")

# rounds x runs per block; scaling sizes and their rounds x runs per block
FULL = {"rounds": 24, "block": 4, "memory_block": 10, "sizes": [3, 5, 10, 25, 50],
        "scaling_rounds": 5, "scaling_block": 2}
QUICK = {"rounds": 5, "block": 4, "memory_block": 5, "sizes": [3, 5, 10, 25, 50],
         "scaling_rounds": 2, "scaling_block": 1}


def _quiet() -> None:
    # The peers warn about the dummy keys and the project's missing server features.
    warnings.filterwarnings("ignore")
    for var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING",
                "OTEL_SDK_DISABLED"):
        os.environ.pop(var, None)
    import logging

    logging.getLogger("langsmith").setLevel(logging.CRITICAL)
    logging.getLogger("langfuse").setLevel(logging.CRITICAL)
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)


def worker(settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """One measuring process: the main rounds, peak memory, then the scaling rounds."""
    _quiet()
    from dummy_client import DummyServer
    from lc_agent import agent_input, build_agent
    from lc_configs import events_per_run, make_configs, workdir

    rng = random.Random(seed)
    server = DummyServer()
    files = workdir()
    configs = make_configs(MAIN_CONFIGS, server, files)
    by_name = {c.name: c for c in configs}
    agents: dict[int, Any] = {}
    payload = agent_input()

    def block_for(n_steps: int) -> harness.RunBlock:
        agent = agents.setdefault(n_steps, build_agent(n_steps))

        def run_block(config: Any, k: int) -> tuple[list[float], list[float]]:
            walls, threads = [], []
            callbacks = config.callbacks()
            for _ in range(k):
                run_id = uuid.uuid4()
                config.run_ids.append((run_id, n_steps))
                invocation = {"callbacks": callbacks, "run_id": run_id}
                t0, c0 = time.perf_counter(), time.thread_time()
                result = agent.invoke(payload, config=invocation)
                c1, t1 = time.thread_time(), time.perf_counter()
                walls.append(t1 - t0)
                threads.append(c1 - c0)
                if len(result["messages"]) != 2 * n_steps:
                    raise RuntimeError(f"unexpected conversation: {len(result['messages'])}")
            return walls, threads

        return run_block

    try:
        main_blocks = harness.interleaved(configs, block_for(3), rounds=settings["rounds"],
                                          block=settings["block"], rng=rng, label="langchain")
        figures = harness.summarize(main_blocks)
        peaks = harness.peak_memory(configs, block_for(3), block=settings["memory_block"])
        for name, peak in peaks.items():
            figures[name]["peak_kib"] = peak
            figures[name]["added_peak_kib"] = peak - peaks["none"]

        scaling: dict[str, dict[str, float]] = {name: {} for name in SCALING_CONFIGS}
        scaled = [by_name[name] for name in SCALING_CONFIGS]
        for n in settings["sizes"]:
            # Short runs are cheap and noisier: give them more runs per block.
            runs = max(settings["scaling_block"], settings["scaling_block"] * 15 // n)
            rounds = settings["scaling_rounds"] * (1 if n >= 25 else 2)
            blocks = harness.interleaved(scaled, block_for(n), rounds=rounds,
                                         block=runs, rng=rng, warmup=1,
                                         label=f"scaling n={n}")
            summary = harness.summarize(blocks)
            for name in SCALING_CONFIGS:
                scaling[name][str(n)] = summary[name]["added_wall_ms"] / n
            scaling.setdefault("_base_wall_ms", {})[str(n)] = summary["none"]["wall_ms"]

        missing = {c.name: c.missing() for c in configs}
        return {"figures": figures, "scaling": scaling, "missing": missing,
                "events_per_run": events_per_run(3),
                "runs_per_config": {c.name: len(c.run_ids) for c in configs}}
    finally:
        for config in configs:
            config.close()
        server.close()
        shutil.rmtree(files, ignore_errors=True)


def _median_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(d[k] for d in dicts) for k in dicts[0]}


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:

    missing: dict[str, str | None] = {}
    for result in results:
        for name, why in result["missing"].items():
            if why and not missing.get(name):
                missing[name] = why
            missing.setdefault(name, None)
    figures = harness.combine([r["figures"] for r in results])
    scaling = {name: _median_dicts([r["scaling"][name] for r in results])
               for name in results[0]["scaling"]}
    events = results[0]["events_per_run"]
    reported = {n: f for n, f in figures.items() if not missing.get(n)}
    for fig in reported.values():
        fig["added_ms_per_event"] = fig["added_wall_ms"] / events
    peers = [p for p in PEERS if p in reported]
    cheapest = min(peers, key=lambda p: reported[p]["added_wall_ms"]) if peers else None
    for name, fig in reported.items():
        if cheapest and name != "none":
            fig["ratio_to_cheapest_peer"] = fig["added_wall_ms"] / reported[cheapest]["added_wall_ms"]
        if "floor" in reported and name != "none":
            fig["ratio_to_floor"] = fig["added_wall_ms"] / reported["floor"]["added_wall_ms"]
    for name in scaling:
        if missing.get(name):
            scaling[name] = {}
    return {"figures": reported, "missing": {k: v for k, v in missing.items() if v},
            "cheapest_peer": cheapest, "events_per_run": events, "scaling": scaling,
            "runs_per_config_per_process": results[0]["runs_per_config"]}


def main() -> None:
    harness.main_in_processes(
        label="langchain", script=__file__, default_out=str(HERE / "results" / "langchain.json"),
        worker=worker, combine_results=combine, settings=(QUICK, FULL), print_table=print_table,
    )


def print_table(result: dict[str, Any]) -> None:
    figures = result["figures"]
    print(f"\nLangChain create_agent run, 3 steps / 2 tool calls ({result['events_per_run']} audit "
          f"events); baseline {figures['none']['wall_ms']:.2f} ms/run")
    print(f"{'configuration':<24}{'added ms':>10}{'ms/event':>10}{'x peer':>8}{'x floor':>9}"
          f"{'thread ms':>11}{'proc ms':>9}{'peak KiB':>10}")
    for name, f in figures.items():
        if name == "none":
            continue
        print(f"{name:<24}{f['added_wall_ms']:>10.3f}{f['added_ms_per_event']:>10.3f}"
              f"{f.get('ratio_to_cheapest_peer', float('nan')):>8.3f}"
              f"{f.get('ratio_to_floor', float('nan')):>9.2f}{f['added_thread_ms']:>11.3f}"
              f"{f['added_process_ms']:>9.3f}{f['added_peak_kib']:>10.0f}")
    for name, why in result["missing"].items():
        print(f"{name:<24}not reported: {why}")
    print("\nscaling: added ms per step")
    sizes = list(result["scaling"]["none"])
    print(f"{'configuration':<24}" + "".join(f"{'n=' + s:>9}" for s in sizes))
    for name, per in result["scaling"].items():
        if name in ("none", "_base_wall_ms") or not per:
            continue
        print(f"{name:<24}" + "".join(f"{per[s]:>9.3f}" for s in sizes))


if __name__ == "__main__":
    main()
