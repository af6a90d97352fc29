"""The Writer: the seed's payload keys, caps, sequences, tallies, close semantics."""

import asyncio
import threading
import time

import pytest

import agentaudit as aa
from agentaudit.testing import BlockingStore, RaisingStore, assert_run_well_formed


@pytest.fixture
def store():
    return aa.MemoryStore()


@pytest.fixture
def auditor(store):
    return aa.Auditor(store, strict=True)


def payloads(store, run_id, event_type=None):
    return [e.payload for e in store.get_logs(run_id) if event_type in (None, e.event_type)]


def full_response(**over):
    fields = dict(
        text="  Let me search.  ",
        model="openai/gpt-4o-mini",
        finish_reason="tool_calls",
        usage=aa.Usage(input_tokens=100, output_tokens=20, reasoning_tokens=8, cache_read_tokens=64),
        tool_calls=[aa.ToolCall(id="call_1", name="search", arguments='{"q": "x"}')],
    )
    fields.update(over)
    return aa.Response(**fields)


def test_step_payload_has_exactly_the_seed_keys(store, auditor):
    w = auditor.start_run("agent")
    w.on_step(1, full_response())
    w.close()
    step, resolved = payloads(store, w.run_id)
    assert set(step) == {
        "iter", "step_ms", "text_len", "model", "finish_reason", "in_tokens", "out_tokens",
        "thinking_tokens", "cache_read_tokens", "text", "requested_tool_calls",
    }
    assert step["iter"] == 1 and step["text"] == "Let me search." and step["text_len"] == 18
    assert step["requested_tool_calls"] == [
        {"id": c.id, "name": c.name} for c in full_response().tool_calls
    ]
    assert (step["in_tokens"], step["out_tokens"], step["thinking_tokens"], step["cache_read_tokens"]) == (100, 20, 8, 64)
    assert step["step_ms"] >= 0
    assert resolved == {"model": "openai/gpt-4o-mini"}


def test_zero_breakdowns_and_unknown_fields_are_omitted(store, auditor):
    w = auditor.start_run("agent")
    w.on_step(1, aa.Response(text="", usage=aa.Usage(5, 6)))
    w.close()
    assert payloads(store, w.run_id) == [
        {"iter": 1, "step_ms": payloads(store, w.run_id)[0]["step_ms"], "text_len": 0, "in_tokens": 5, "out_tokens": 6}
    ]


def test_step_without_response(store, auditor):
    w = auditor.start_run("agent")
    w.on_step(1)
    w.close()
    (step,) = payloads(store, w.run_id)
    assert set(step) == {"iter", "step_ms", "text_len"} and step["text_len"] == 0


def test_resolved_model_is_one_shot_at_the_first_step_naming_a_model(store, auditor):
    w = auditor.start_run("agent")
    w.on_step(1, aa.Response(text="a"))
    w.on_step(2, aa.Response(text="b", model="anthropic/claude"))
    w.on_step(3, aa.Response(text="c", model="openai/other"))
    w.close()
    types = [e.event_type for e in store.get_logs(w.run_id)]
    assert types == ["step", "step", "resolved_model", "step"]
    assert payloads(store, w.run_id, "resolved_model") == [{"model": "anthropic/claude"}]


def test_step_ms_measures_the_gap_since_the_previous_step(store, auditor):
    w = auditor.start_run("agent")
    w.on_step(1)
    time.sleep(0.03)
    w.on_step(2)
    w.close()
    _first, second = payloads(store, w.run_id)
    assert second["step_ms"] >= 25


def test_tool_events_carry_the_seed_keys(store, auditor):
    w = auditor.start_run("agent")
    w.on_tool(aa.ToolCall("search", {"q": "x", "n": 2}, "call_1"), "result text", duration_ms=12.5)
    w.on_tool(aa.ToolCall("fetch", "{}", "call_2"), "boom", error=True)
    w.close()
    assert payloads(store, w.run_id) == [
        {"name": "search", "args": '{"n":2,"q":"x"}', "id": "call_1"},
        {"name": "search", "id": "call_1", "result": "result text", "truncated": False, "duration_ms": 12.5},
        {"name": "fetch", "args": "{}", "id": "call_2"},
        {"name": "fetch", "id": "call_2", "result": "boom", "truncated": False, "error": True},
    ]
    assert w.tool_calls_count() == 2


def test_non_text_tool_results_are_json(store, auditor):
    w = auditor.start_run("agent")
    w.on_tool(aa.ToolCall("add", {"a": 1}), {"sum": 3, "at": {1, 2}})
    w.close()
    assert payloads(store, w.run_id, "tool_result")[0]["result"] == '{"at":[1,2],"sum":3}'


def test_caps_count_utf8_bytes_without_splitting_characters(store, auditor):
    w = auditor.start_run("agent")
    w.on_step(1, aa.Response(text="é" * 1500))  # 3000 bytes
    w.on_tool(aa.ToolCall("t"), "🌍" * 1001)  # 4004 bytes
    w.close()
    text = payloads(store, w.run_id, "step")[0]["text"]
    assert text == "é" * 1000 + "…[+1000 bytes]"
    result = payloads(store, w.run_id, "tool_result")[0]
    assert result["result"] == "🌍" * 1000 + "…[+4 bytes]" and result["truncated"] is True


def test_log_event_and_log_error(store, auditor):
    w = auditor.start_run("agent")
    w.log_event("compaction_fired", {"kept": 12})
    w.log_error("boom")
    w.close()
    events = store.get_logs(w.run_id)
    assert [(e.event_type, e.payload) for e in events] == [
        ("compaction_fired", {"kept": 12}), ("error", {"message": "boom"})
    ]


def test_32_threads_by_1000_events_give_gapless_sequences_and_a_valid_chain(store):
    w = aa.Auditor(store).start_run("threads")
    barrier = threading.Barrier(32)

    def work(t):
        barrier.wait()
        for i in range(1000):
            w.log_event("tick", {"t": t, "i": i})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(32)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    w.close()
    events = store.get_logs(w.run_id)
    assert [e.sequence for e in events] == list(range(1, 32001))
    assert store.verify(w.run_id).ok


def test_close_fills_totals_and_is_idempotent(store, auditor):
    w = auditor.start_run("agent")
    w.on_step(1, full_response())
    w.on_tool(aa.ToolCall("search", {}, "call_1"), "r")
    w.on_step(2, aa.Response(text="done", model="openai/gpt-4o-mini", usage=aa.Usage(10, 5, 1)))
    assert w.token_stats() == (110, 25, 9)
    w.close(aa.RunStats(status="succeeded", output="answer"))
    w.close(aa.RunStats(status="failed", error="late"))
    run = assert_run_well_formed(store, w.run_id)
    assert (run.status, run.output, run.error) == (aa.RunStatus.SUCCEEDED, "answer", "")
    assert (run.tool_calls, run.steps, run.input_tokens, run.output_tokens, run.thinking_tokens) == (1, 2, 110, 25, 9)


def test_explicit_totals_in_stats_win(store, auditor):
    w = auditor.start_run("agent")
    w.on_step(1, full_response())
    w.close(aa.RunStats(input_tokens=1, output_tokens=2, thinking_tokens=3, cost_usd=0.5))
    run = store.get_run(w.run_id)
    assert (run.input_tokens, run.output_tokens, run.thinking_tokens, run.cost_usd) == (1, 2, 3, 0.5)


def test_pricing_mapping_prices_each_step_with_cache_reads(store):
    prices = {"gpt-4o-mini": {"input": 0.15, "output": 0.60, "cache_read": 0.075}}
    w = aa.Auditor(store, pricing=prices).start_run("agent")
    w.on_step(1, full_response(model="openai/gpt-4o-mini-2024-07-18"))
    w.on_step(2, aa.Response(model="unpriced/model", usage=aa.Usage(1000, 1000)))
    w.close()
    expected = (36 * 0.15 + 64 * 0.075 + 20 * 0.60) / 1e6
    assert store.get_run(w.run_id).cost_usd == pytest.approx(expected)


def test_pricing_callable_and_unknown_model(store):
    w = aa.Auditor(store, pricing=lambda model, usage: usage.input_tokens * 0.01).start_run("a")
    w.on_step(1, full_response())
    w.close()
    assert store.get_run(w.run_id).cost_usd == pytest.approx(1.0)
    w2 = aa.Auditor(store, pricing={}).start_run("b")
    w2.on_step(1, full_response())
    w2.close()
    assert store.get_run(w2.run_id).cost_usd is None


def test_noop_writer_and_auditor_do_nothing():
    w = aa.Writer(None, "r1")
    w.on_step(1, full_response())
    w.on_tool(aa.ToolCall("t"), "x")
    w.log_event("e", {})
    w.log_error("x")
    w.close()
    assert not w.enabled and w.token_stats() == (0, 0, 0)
    auditor = aa.Auditor(None)
    with auditor.run("x") as w2:
        w2.on_step(1)
    assert not auditor.enabled and auditor.faults.total == 0


def test_low_level_writer_on_a_started_run(store):
    store.start_run(aa.Run(run_id="r1", name="manual"))
    w = aa.Writer(store, "r1")
    w.on_step(1, full_response())
    w.close(aa.RunStats(status="failed", error="bad"))
    assert assert_run_well_formed(store, "r1").status is aa.RunStatus.FAILED


@pytest.mark.parametrize("exc", [OSError("disk full"), RuntimeError("locked")])
def test_a_store_that_raises_everywhere_never_reaches_the_agent(exc):
    auditor = aa.Auditor(RaisingStore(exc))
    with auditor.run("agent") as w:
        w.on_step(1, full_response())
        w.on_tool(aa.ToolCall("search"), "r")
        w.log_event("x", {"a": 1})
        w.log_error("e")
        value = 42
    assert value == 42
    # The run row never landed, so the run records nothing more: one fault, not a storm.
    assert auditor.faults.counts() == {"start_run": 1}
    assert not w.enabled


@pytest.mark.parametrize("exc", [OSError("disk full"), RuntimeError("locked")])
def test_a_store_whose_writes_raise_never_reaches_the_agent(exc):
    auditor = aa.Auditor(RaisingStore(exc, methods={"append_log", "finish_run"}))
    with auditor.run("agent") as w:
        w.on_step(1, full_response())
        w.on_tool(aa.ToolCall("search"), "r")
        w.log_event("x", {"a": 1})
        w.log_error("e")
        value = 42
    assert value == 42
    counts = auditor.faults.counts()
    # A hook's first refused event ends its hand-over: the step's resolved_model and
    # the tool's result are not offered once the event before them was refused.
    assert counts == {"append_log": 4, "finish_run": 1}


def test_a_run_whose_start_failed_leaves_no_orphan_events():
    store = RaisingStore(methods={"start_run"})
    auditor = aa.Auditor(store)
    with auditor.run("agent") as w:
        w.on_step(1, full_response())
        w.log_event("x", {})
    assert store.inner.get_logs(w.run_id) == [] and store.inner.get_run(w.run_id) is None
    assert auditor.faults.counts() == {"start_run": 1}


def test_strict_mode_reraises(store):
    auditor = aa.Auditor(RaisingStore(OSError("disk full")), strict=True)
    with pytest.raises(OSError, match="disk full"):
        auditor.start_run("agent")


def test_a_failed_append_leaves_no_gap(store):
    class Flaky:
        def __init__(self):
            self.inner, self.fail_next = aa.MemoryStore(), False

        def append_log(self, event):
            if self.fail_next:
                self.fail_next = False
                raise OSError("queue full")
            self.inner.append_log(event)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    flaky = Flaky()
    auditor = aa.Auditor(flaky)
    w = auditor.start_run("agent")
    w.log_event("a", {})
    flaky.fail_next = True
    w.log_event("lost", {})
    w.log_event("b", {})
    w.close()
    assert [(e.sequence, e.event_type) for e in flaky.get_logs(w.run_id)] == [(1, "a"), (2, "b")]
    assert flaky.verify(w.run_id).ok and auditor.faults.counts() == {"append_log": 1}


def test_close_returns_in_bounded_time_when_the_store_hangs_and_lands_later():
    inner = aa.MemoryStore()
    hung = BlockingStore(inner)
    auditor = aa.Auditor(hung, finish_timeout=0.2)
    w = auditor.start_run("agent")
    started = time.monotonic()
    w.close(aa.RunStats(status="succeeded", output="ok"))
    assert time.monotonic() - started < 5
    assert auditor.faults.counts() == {"finish_timeout": 1}
    assert inner.get_run(w.run_id).status is aa.RunStatus.RUNNING
    hung.release()
    deadline = time.monotonic() + 5
    while inner.get_run(w.run_id).status is aa.RunStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert inner.get_run(w.run_id).status is aa.RunStatus.SUCCEEDED


async def test_aclose_is_bounded_and_does_not_block_the_loop():
    inner = aa.MemoryStore()
    hung = BlockingStore(inner)
    w = aa.Auditor(hung, finish_timeout=0.2).start_run("agent")
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await w.aclose()
    task.cancel()
    assert ticks >= 5
    hung.release()


def test_mask_that_raises_is_a_fault_and_the_event_still_lands(store):
    def bad_mask(text):
        raise ValueError("nope")

    auditor = aa.Auditor(store, redaction=aa.RedactionPolicy(mask=bad_mask))
    w = auditor.start_run("agent")
    w.on_step(1, aa.Response(text="hello"))
    w.close()
    assert payloads(store, w.run_id, "step")[0]["text"] == "<mask failed on step.text>"
    assert auditor.faults.counts()["mask"] >= 1


def test_a_step_lists_the_tool_calls_it_asked_for_up_to_a_bound(store):
    auditor = aa.Auditor(store, strict=True)
    w = auditor.start_run("agent")
    many = tuple(aa.ToolCall("lookup", {"n": i}, f"c{i}") for i in range(70))
    w.on_step(1, aa.Response(text="two", tool_calls=many[:2]))
    w.on_step(2, aa.Response(text="many", tool_calls=many))
    w.on_step(3, aa.Response(text="none"))
    w.close()
    first, second, third = (e.payload for e in store.get_logs(w.run_id) if e.event_type == "step")
    assert first["requested_tool_calls"] == [{"id": "c0", "name": "lookup"}, {"id": "c1", "name": "lookup"}]
    listed = second["requested_tool_calls"]
    assert listed[:64] == [{"id": f"c{i}", "name": "lookup"} for i in range(64)]
    assert listed[64:] == [{"id": "", "name": "…[+6 more]"}]
    assert "requested_tool_calls" not in third
