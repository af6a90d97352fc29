"""Turn bench/results/*.json into docs/performance.md and its charts (docs/img/).

Run: .venv/bin/python bench/report.py   (after bench_langchain.py and bench_llamaindex.py)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
IMG = ROOT / "docs" / "img"
PAGE = ROOT / "docs" / "performance.md"

LABELS = {
    "null": "do-nothing handler",
    "agentaudit-sqlite": "agentaudit + SQLiteStore",
    "agentaudit-memory": "agentaudit + MemoryStore",
    "agentaudit-sqlite-sync": "agentaudit + SQLiteStore(durability=\"sync\")",
    "floor": "floor: hand-written sqlite3 handler",
    "langfuse": "Langfuse CallbackHandler",
    "langsmith": "LangSmith LangChainTracer",
    "openinference": "OpenInference instrumentor",
}
COLORS = {"agentaudit-sqlite": "#1f77b4", "agentaudit-memory": "#6baed6",
          "agentaudit-sqlite-sync": "#08519c", "floor": "#2ca02c", "null": "#98df8a",
          "langfuse": "#d62728", "langsmith": "#ff7f0e", "openinference": "#9467bd"}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _spread(figures: dict[str, Any]) -> str:
    """The range of the per-process medians, when there were several processes."""
    values = figures.get("added_wall_ms_per_process") or []
    return f"<small>({min(values):.2f}–{max(values):.2f})</small>" if len(values) > 1 else ""


def bar_chart(lc: dict[str, Any], li: dict[str, Any] | None, path: Path) -> None:
    panels = [("LangChain create_agent", lc["figures"])]
    if li:
        panels.append(("LlamaIndex FunctionAgent", li["figures"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.8), squeeze=False)
    for ax, (title, figures) in zip(axes[0], panels, strict=True):
        names = sorted((n for n in figures if n != "none"),
                       key=lambda n: figures[n]["added_wall_ms"])
        values = [figures[n]["added_wall_ms"] for n in names]
        ax.barh([LABELS.get(n, n) for n in names], values,
                color=[COLORS.get(n, "grey") for n in names])
        for y, v in enumerate(values):
            ax.text(max(v, 0), y, f" {v:.2f}", va="center", fontsize=8)
        ax.set_xlabel(f"added ms per run (baseline {figures['none']['wall_ms']:.1f} ms)")
        ax.set_title(title)
        ax.set_xlim(min(0, *values) * 1.2, max(values) * 1.2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scaling_chart(lc: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, per_step in lc["scaling"].items():
        if name in ("none", "_base_wall_ms") or not per_step:
            continue
        sizes = [int(s) for s in per_step]
        ax.plot(sizes, list(per_step.values()), marker="o", label=LABELS.get(name, name),
                color=COLORS.get(name, "grey"))
    ax.set_xlabel("model steps per run")
    ax.set_ylabel("added ms per step")
    ax.set_title("Added time per step as a LangChain run grows")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lc_table(lc: dict[str, Any]) -> str:
    f = lc["figures"]
    rows = ["| configuration | added ms/run | added ms/event | × cheapest peer | × floor "
            "| agent-thread CPU ms | process CPU ms | peak memory KiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, x in sorted(f.items(), key=lambda kv: kv[1]["added_wall_ms"]):
        if name == "none":
            continue
        rows.append(
            f"| {LABELS.get(name, name)} | {x['added_wall_ms']:.2f} {_spread(x)} "
            f"| {x['added_ms_per_event']:.3f} "
            f"| {_fmt(x.get('ratio_to_cheapest_peer'), 3)} | {_fmt(x.get('ratio_to_floor'))} "
            f"| +{x['added_thread_ms']:.2f} | +{x['added_process_ms']:.2f} "
            f"| +{x['added_peak_kib']:.0f} |")
    return "\n".join(rows)


def scaling_table(lc: dict[str, Any]) -> str:
    scaling = {n: s for n, s in lc["scaling"].items() if n not in ("none", "_base_wall_ms") and s}
    sizes = list(lc["scaling"]["none"])
    base = lc["scaling"]["_base_wall_ms"]
    rows = ["| configuration | " + " | ".join(f"{s} steps" for s in sizes) + " |",
            "|---|" + "---:|" * len(sizes),
            "| *baseline run, ms* | " + " | ".join(f"*{base[s]:.1f}*" for s in sizes) + " |"]
    for name, per in scaling.items():
        rows.append(f"| {LABELS.get(name, name)} | " + " | ".join(f"{per[s]:.3f}" for s in sizes)
                    + " |")
    return "\n".join(rows)


def li_table(li: dict[str, Any]) -> str:
    f = li["figures"]
    rows = ["| configuration | added ms/run | × OpenInference | agent-thread CPU ms "
            "| process CPU ms | peak memory KiB |", "|---|---:|---:|---:|---:|---:|"]
    for name, x in sorted(f.items(), key=lambda kv: kv[1]["added_wall_ms"]):
        if name == "none":
            continue
        rows.append(f"| {LABELS.get(name, name)} | {x['added_wall_ms']:.2f} {_spread(x)} "
                    f"| {_fmt(x.get('ratio_to_openinference'), 3)} | +{x['added_thread_ms']:.2f} "
                    f"| +{x['added_process_ms']:.2f} | +{x['added_peak_kib']:.0f} |")
    return "\n".join(rows)


def missing_note(result: dict[str, Any]) -> str:
    if not result["missing"]:
        return "Every configuration recorded every run it was given."
    return "Not reported (did not record every run): " + "; ".join(
        f"{LABELS.get(n, n)}: {why}" for n, why in result["missing"].items()) + "."


def cpu_ratios(figures: dict[str, Any]) -> str:
    """The same comparison on CPU time, which other jobs on a shared machine disturb less
    than wall time."""
    ours, floor = figures.get("agentaudit-sqlite"), figures.get("floor")
    if not ours or not floor or floor["added_thread_ms"] <= 0 or floor["added_process_ms"] <= 0:
        return ""
    return (f"On CPU time, which other jobs on the machine disturb less: "
            f"{ours['added_thread_ms'] / floor['added_thread_ms']:.2f}× the floor's on the agent's "
            f"thread, {ours['added_process_ms'] / floor['added_process_ms']:.2f}× in the whole "
            f"process.")


def page(lc: dict[str, Any], li: dict[str, Any] | None) -> str:
    m, v, f = lc["machine"], lc["versions"], lc["figures"]
    cheapest = lc["cheapest_peer"]
    ours = f.get("agentaudit-sqlite", {})
    sizes = list(lc["scaling"]["none"])
    mode = "quick (`--quick`)" if lc["quick"] else "full"
    version_rows = "\n".join(f"| {d} | {ver} |" for d, ver in v.items())
    li_part = "" if not li else f"""
## LlamaIndex

A `FunctionAgent` (`llama_index.core.agent.workflow`) with the same two tools and a
`MockFunctionCallingLLM` scripted the same way (3 steps, 2 tool calls); baseline
{li['figures']['none']['wall_ms']:.1f} ms per run. agentaudit is attached with
`agentaudit_llamaindex.instrument(auditor)` and OpenInference with
`LlamaIndexInstrumentor().instrument(tracer_provider=...)`; each is attached only during its
own blocks and detached after (`uninstrument()`), because both hook LlamaIndex's root
dispatcher.

{li_table(li)}

{missing_note(li)}
"""
    return f"""# Performance

What recording costs an agent, measured against the tools people use for the same job.
Every figure on this page is produced by the benchmark in `bench/` (the page itself is
written by `bench/report.py`); the numbers are from a {mode} run on {lc['date']}.

Headline (LangChain, 3-step run): agentaudit with the default `SQLiteStore` adds
**{_fmt(ours.get('added_wall_ms'))} ms** per run, against
**{_fmt(f.get(cheapest, {}).get('added_wall_ms')) if cheapest else '–'} ms** for the cheapest peer
({LABELS.get(cheapest or '', cheapest)}): **{_fmt(ours.get('ratio_to_cheapest_peer'), 3)}×**
its cost, and **{_fmt(ours.get('ratio_to_floor'))}×** the cost of a minimal hand-written sqlite3
handler that records much less.

{cpu_ratios(f)}

![Added time per run](img/bench_added_time.png)

## LangChain

The agent is `langchain.agents.create_agent` with two tools (`get_weather`, `add`) and a
deterministic tool-calling chat model (a `BaseChatModel` subclass with `bind_tools`) that asks
for one tool in each of its first two steps and answers in the third: 3 model steps, 2 tool
calls, no network. Baseline without callbacks: {f['none']['wall_ms']:.2f} ms per run. "Per
event" divides by the {lc['events_per_run']} events agentaudit records for such a run (3 steps, the
resolved model, 2 × tool call + tool result).

{lc_table(lc)}

{missing_note(lc)}

- **added ms/run**: median wall time of a run minus the baseline's in the same round, on the
  agent's thread (what the caller waits for); in brackets, the lowest and highest of the
  separate processes' medians. **× cheapest peer** and **× floor** divide it by
  the cheapest peer's and the floor's added time.
- **agent-thread CPU**: `time.thread_time()` around each run, minus the baseline's. LangGraph
  runs some nodes and callbacks on worker threads, so this misses part of every configuration's
  work; the process figure does not.
- **process CPU**: `time.process_time()` (every thread: background exporters, agentaudit's
  writer thread) over a block of runs *and* its flush, per run, minus the baseline's.
- **peak memory**: peak Python allocations (`tracemalloc`, every thread) during a separate block
  of {lc['settings']['memory_block']} runs and its flush, minus the baseline's. Memory SQLite
  allocates in C is not seen.

The configurations:

- **agentaudit + SQLiteStore**: `AuditCallbackHandler(aa.Auditor(aa.SQLiteStore(path)))`,
  default settings (batched: a background writer thread commits, WAL, `synchronous=NORMAL`).
  Records the run row, every step's text, model, tokens and finish reason, each tool's name,
  JSON arguments and result, a SHA-256 hash chain over the events and a seal over the finished run row.
- **agentaudit + MemoryStore** and **SQLiteStore(durability="sync")** (each event committed with
  `synchronous=FULL` before the hook returns) for scale.
- **floor**: a short `BaseCallbackHandler` (`bench/floor_handler.py`) that keeps one row per
  step and two per tool call in a list and at the root chain's end writes them with one
  `executemany` + `commit` (WAL, `synchronous=NORMAL`) on the agent's thread. No run row, no
  hashes, no redaction, no size caps, no fault isolation, one invocation at a time.
- **do-nothing handler**: a bare `BaseCallbackHandler`: LangChain's own cost of dispatching
  callbacks to any handler, which no handler can go below.
- **Langfuse**: `langfuse.langchain.CallbackHandler` with a `Langfuse(public_key, secret_key,
  base_url=<dummy server>)` client at its defaults; it exports OpenTelemetry spans in a background
  thread. Checked: the dummy server received one root span per run.
- **LangSmith**: `LangChainTracer(client=langsmith.Client(api_url=<dummy server>, api_key=...))`,
  the client's default background batching; the dummy server's `/info` advertises zstd
  compression as LangSmith's service does, so the client compresses runs as in production.
  Checked: the dummy server received every root run id.
- **OpenInference**: `LangChainInstrumentor().instrument(tracer_provider=...)` with an SDK
  `TracerProvider` and a `BatchSpanProcessor` (what a deployment uses; export happens in a
  background thread) into an `InMemorySpanExporter`. Checked: one root span exported per run.

The dummy server (`bench/dummy_server.py`) listens on 127.0.0.1 in its own process, answers
200 to everything, and parses what it received only when asked, after the timed runs.

## Scaling with run length

Added time **per step** as the scripted model makes N−1 tool calls and then answers
(N = {', '.join(sizes)}). A recorder that re-serializes the whole conversation at every node
grows per step with the run; one that records each event once stays flat.

![Added time per step](img/bench_scaling.png)

Added ms per step (added ms per run ÷ N; {lc['settings']['scaling_rounds']} rounds for long
runs and twice as many for runs under 25 steps, more runs per block for short runs):

{scaling_table(lc)}

{li_part}
## Method

- One process runs every configuration in shuffled, interleaved blocks
  ({lc['settings']['rounds']} rounds × {lc['settings']['block']} runs per block, after warm-up
  runs); a figure is the median over rounds of (configuration − baseline in the same round),
  from each block's median run. The parent repeats that in {lc['processes']} separate processes
  and reports the median of their medians (the per-process values are in
  `bench/results/*.json`).
- Flushing (Langfuse's `flush()`, LangSmith's `flush()`, the OTel provider's `force_flush()`,
  agentaudit's `store.flush()`) happens between blocks, outside the timed runs but inside the
  process-CPU figure.
- Every configuration is checked at the end to have recorded every run it was given (rows and
  events in SQLite, runs in the store, spans or run ids received); one that did not is listed
  as not reported, without figures.
- The machine is shared and small, so absolute numbers move between runs; the ratios measured
  side by side in the same rounds are the result.

## Machine and versions

{m['nproc']} CPUs (`nproc`), Python {m['python']}, {m['platform']}, shared with other jobs
while it ran. This run took {lc['elapsed_s']} s (LangChain) + {li['elapsed_s'] if li else 0} s
(LlamaIndex).

| package | version |
|---|---|
{version_rows}

## Reproduce

```sh
make bench                          # installs bench/requirements.txt into .venv, runs everything
make bench BENCH_ARGS=--quick       # one process, fewer rounds: about a minute, noisier
# or step by step:
.venv/bin/pip install -r bench/requirements.txt
.venv/bin/python bench/bench_langchain.py      # bench/results/langchain.json
.venv/bin/python bench/bench_llamaindex.py     # bench/results/llamaindex.json
.venv/bin/python bench/report.py               # this page and docs/img/bench_*.png
```

The benchmark's packages (Langfuse, LangSmith, OpenInference, OpenTelemetry SDK, matplotlib) are
pinned in `bench/requirements.txt` and are never dependencies of agentaudit.
"""


def main() -> None:
    lc = json.loads((RESULTS / "langchain.json").read_text())
    li_path = RESULTS / "llamaindex.json"
    li = json.loads(li_path.read_text()) if li_path.exists() else None
    IMG.mkdir(parents=True, exist_ok=True)
    bar_chart(lc, li, IMG / "bench_added_time.png")
    scaling_chart(lc, IMG / "bench_scaling.png")
    PAGE.write_text(page(lc, li))
    print(f"written {PAGE.relative_to(ROOT)} and docs/img/bench_*.png")


if __name__ == "__main__":
    main()
