"""Nothing that goes wrong inside agentaudit reaches the agent: a store that raises,
odd objects from the model or a tool, values that will not serialize. Faults are
counted on the auditor, and the handler keeps no state of the runs involved."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_no_state
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.types import interrupt
from lc_support import WEATHER_TURNS, ScriptedChatModel, add, ai, ask, get_weather, scripted

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed
from agentaudit_langchain import AuditCallbackHandler

ANSWER = "Paris is sunny, Rome is sunny, and 2+3=5."


class FailingStore(aa.MemoryStore):
    """A store whose chosen write methods raise, as a full or locked disk does."""

    def __init__(self, *failing: str) -> None:
        super().__init__()
        self.failing = set(failing)

    def start_run(self, run: aa.Run) -> None:
        if "start_run" in self.failing:
            raise OSError("disk full")
        super().start_run(run)

    def append_log(self, event: aa.Event) -> None:
        if "append_log" in self.failing:
            raise OSError("disk full")
        super().append_log(event)

    def finish_run(self, run_id: str, stats: aa.RunStats, finished_at: Any) -> None:
        if "finish_run" in self.failing:
            raise OSError("disk full")
        super().finish_run(run_id, stats, finished_at)


def weather_agent():
    return create_agent(
        ScriptedChatModel(respond=scripted(*WEATHER_TURNS)), tools=[get_weather, add]
    )


@pytest.mark.parametrize(
    "failing", [("start_run",), ("append_log",), ("finish_run",), ("start_run", "append_log")]
)
def test_a_raising_store_never_reaches_the_agent(failing):
    store = FailingStore(*failing)
    auditor = aa.Auditor(store)
    handler = AuditCallbackHandler(auditor)
    agent = weather_agent()

    for _ in range(3):
        result = agent.invoke(ask(), config={"callbacks": [handler]})
        assert result["messages"][-1].text == ANSWER

    counts = auditor.faults.counts()
    assert counts
    if "start_run" in failing:  # one fault per invocation, not one per nested run
        assert counts == {"start_run": 3}
    assert_no_state(handler)


def test_a_raising_store_fails_loudly_in_strict_mode():
    auditor = aa.Auditor(FailingStore("append_log"), strict=True)
    with pytest.raises(OSError, match="disk full"):
        weather_agent().invoke(ask(), config={"callbacks": [AuditCallbackHandler(auditor)]})


def test_odd_model_output_is_recorded_as_far_as_it_can_be_read(store, handler):
    odd = AIMessage(
        content=[
            {"type": "image", "url": "http://x/y.png"},
            "plain string block, ",
            {"type": "text", "text": "a text block"},
            {"type": "text", "text": 5},
            {"type": "reasoning", "reasoning": "hidden"},
        ],
        response_metadata={"model_name": 123, "finish_reason": None, "stop_reason": "end_turn"},
        usage_metadata={"input_tokens": 7, "output_tokens": 3, "total_tokens": 10,
                        "input_token_details": {"cache_read": -1},
                        "output_token_details": {"reasoning": 2, "priority_reasoning": 1}},
    )
    agent = create_agent(ScriptedChatModel(respond=scripted(odd)), tools=[])

    agent.invoke(ask(), config={"callbacks": [handler]})

    [run] = store.list_runs()
    assert_run_well_formed(store, run.run_id)
    [step] = [e.payload for e in store.get_logs(run.run_id) if e.event_type == "step"]
    assert step["text"] == "plain string block, a text block"
    assert step["finish_reason"] == "end_turn"
    assert step["model"] == "scripted/scripted-1"  # the requested model: the served one was not a name
    assert (step["in_tokens"], step["out_tokens"], step["thinking_tokens"]) == (7, 3, 3)
    assert "cache_read_tokens" not in step


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


def test_values_that_will_not_serialize_cost_a_field_never_the_run(store, handler):
    @tool
    def ask_human(question: str) -> str:
        """Wait for a human."""
        return interrupt({"question": question, "handle": Unprintable(), "raw": {1, 2}})

    model = ScriptedChatModel(respond=scripted(ai("", [("ask_human", {"question": "go?"}, "h1")])))
    agent = create_agent(model, tools=[ask_human])

    agent.invoke(ask(), config={"callbacks": [handler]})
    # A tool invoked on its own is a run of its own; its result is an odd object.
    @tool("obj_tool")
    def obj_tool() -> Any:
        """Returns an object."""
        return Unprintable()

    returned = obj_tool.invoke({}, config={"callbacks": [handler]})

    assert isinstance(returned, Unprintable)
    interrupted = store.list_runs(aa.RunFilter(status="interrupted"))[0]
    assert_run_well_formed(store, interrupted.run_id)
    event = store.get_logs(interrupted.run_id)[-1]
    assert event.event_type == "interrupt"
    value = event.payload["interrupts"][0]["value"]
    assert value["question"] == "go?"
    assert "Unprintable" in str(value["handle"])
    tool_run = store.list_runs(aa.RunFilter(name="obj_tool"))[0]
    assert tool_run.status == "succeeded"
    assert_run_well_formed(store, tool_run.run_id)


class RefusingStore(aa.MemoryStore):
    """Refuses every batch holding an event of the given types, as a store with a
    bad disk block might."""

    def __init__(self, *event_types: str) -> None:
        super().__init__()
        self.event_types = set(event_types)

    def append_events(self, events: Any) -> None:
        if any(e.event_type in self.event_types for e in events):
            raise OSError("bad block")
        super().append_events(events)


@pytest.mark.parametrize("strict", [True, False])
def test_a_fault_in_the_hook_that_ends_a_standalone_tool_still_closes_its_run(strict):
    store = RefusingStore("tool_result")
    auditor = aa.Auditor(store, strict=strict)
    handler = AuditCallbackHandler(auditor)

    if strict:  # strict mode re-raises the fault through LangChain
        with pytest.raises(OSError, match="bad block"):
            add.invoke({"a": 1, "b": 2}, config={"callbacks": [handler]})
    else:
        assert add.invoke({"a": 1, "b": 2}, config={"callbacks": [handler]}) == 3

    [run] = store.list_runs()
    assert run.status == "succeeded"  # the tool returned: closed, never left running
    assert [e.event_type for e in store.get_logs(run.run_id)] == ["tool_call"]
    # Strict: the refusal raised through the writer, our guard and LangChain, counted
    # once. Otherwise the call stays open and its close meets a second refusal.
    assert auditor.faults.counts() == {"append_log": 1 if strict else 2}
    assert_no_state(handler)


def test_a_fault_in_strict_mode_still_closes_the_run_it_aborts():
    # The refused tool_call aborts the agent (strict mode raises into it); the run's
    # end then meets the same refusal for the tool's cancelled result, and the run
    # must close all the same.
    store = RefusingStore("tool_call")
    auditor = aa.Auditor(store, strict=True)
    handler = AuditCallbackHandler(auditor)

    with pytest.raises(OSError, match="bad block"):
        weather_agent().invoke(ask(), config={"callbacks": [handler]})

    [run] = store.list_runs()
    assert (run.status, run.error) == ("failed", "OSError: bad block")
    assert run.steps == 1
    # Two faults: the call refused when the tool started, its result at the run's end.
    assert auditor.faults.counts() == {"append_log": 2}
    assert_no_state(handler)


@pytest.mark.parametrize("strict", [True, False])
def test_a_fault_reading_how_a_run_ended_still_closes_it(monkeypatch, strict):
    from agentaudit_langchain import _handler

    def broken(outputs: Any) -> Any:
        raise RuntimeError("bug in the output reader")

    monkeypatch.setattr(_handler, "final_output", broken)
    store = aa.MemoryStore()
    auditor = aa.Auditor(store, strict=strict)
    handler = AuditCallbackHandler(auditor)

    if strict:
        with pytest.raises(RuntimeError, match="output reader"):
            weather_agent().invoke(ask(), config={"callbacks": [handler]})
    else:
        assert weather_agent().invoke(ask(), config={"callbacks": [handler]})["messages"][-1].text == ANSWER

    [run] = store.list_runs()
    assert_run_well_formed(store, run.run_id)  # terminal: never left running
    assert run.status == "failed" and "could not read how the run ended" in run.error
    assert run.steps == 3 and run.tool_calls == 3  # what was recorded stays
    assert auditor.faults.counts() == {"langchain.on_chain_end": 1}
    assert_no_state(handler)
