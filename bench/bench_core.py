"""Caller-thread cost of Writer.on_step + Writer.on_tool into MemoryStore, per event,
side by side with appending a dict to a list (the cheapest possible recorder).

Run: .venv/bin/python bench/bench_core.py
"""

from __future__ import annotations

import statistics
import time

import agentaudit as aa

ROUNDS = 15
RUNS_PER_ROUND = 200
STEPS = 3

RESPONSE = aa.Response(
    text="Let me look up the weather in Paris before answering.",
    model="openai/gpt-4o-mini",
    finish_reason="tool_calls",
    usage=aa.Usage(input_tokens=120, output_tokens=24, cache_read_tokens=64),
    tool_calls=(aa.ToolCall("get_weather", {"city": "Paris"}, "call_1"),),
)
CALL = RESPONSE.tool_calls[0]
RESULT = "18°C, sunny"


def agentaudit_round() -> tuple[float, int]:
    store = aa.MemoryStore()
    auditor = aa.Auditor(store)
    writers = [auditor.start_run("bench") for _ in range(RUNS_PER_ROUND)]
    start = time.perf_counter()
    for w in writers:
        for i in range(1, STEPS + 1):
            w.on_step(i, RESPONSE)
            w.on_tool(CALL, RESULT, duration_ms=1.0)
    elapsed = time.perf_counter() - start
    events = sum(len(store.get_logs(w.run_id)) for w in writers)
    return elapsed, events


def list_round() -> tuple[float, int]:
    sink: list[dict] = []
    start = time.perf_counter()
    for _ in range(RUNS_PER_ROUND):
        for i in range(1, STEPS + 1):
            sink.append({"iter": i, "text": RESPONSE.text, "model": RESPONSE.model})
            sink.append({"name": CALL.name, "args": CALL.arguments, "id": CALL.id})
            sink.append({"name": CALL.name, "id": CALL.id, "result": RESULT})
    elapsed = time.perf_counter() - start
    return elapsed, len(sink)


def main() -> None:
    ours, floor = [], []
    for _ in range(ROUNDS):
        t, n = agentaudit_round()
        ours.append(t / n * 1e6)
        t, n = list_round()
        floor.append(t / n * 1e6)
    med_ours, med_floor = statistics.median(ours), statistics.median(floor)
    print("caller-thread cost per event (median of interleaved rounds)")
    print(f"  agentaudit on_step+on_tool -> MemoryStore : {med_ours:7.2f} µs")
    print(f"  dict appended to a list                  : {med_floor:7.2f} µs")
    print(f"  ratio                                    : {med_ours / med_floor:7.1f}x")
    print(f"  target                                   : <= 10 µs per event -> {'met' if med_ours <= 10 else 'MISSED'}")


if __name__ == "__main__":
    main()
