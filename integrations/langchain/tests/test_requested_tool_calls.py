"""A step records the tool calls the model asked for (id, name), so a call that
never ran (rejected by a human at an interrupt, blocked by a limit) is on record
even though it has no tool_call event."""

from __future__ import annotations

from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware, ToolCallLimitMiddleware
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from lc_support import ScriptedChatModel, add, ai, ask, get_weather, scripted

from agentaudit import payloads
from agentaudit.testing import assert_run_well_formed


def steps_of(store, run_id):
    return [e.payload for e in store.get_logs(run_id) if e.event_type == payloads.STEP]


def test_a_call_a_human_rejected_is_on_its_step_and_never_ran(store, handler):
    model = ScriptedChatModel(
        respond=scripted(
            ai("Paying and checking.", [("add", {"a": 1, "b": 2}, "pay_1"),
                                        ("get_weather", {"city": "Oslo"}, "w_1")]),
            ai("Oslo is sunny; I did not pay."),
        )
    )
    agent = create_agent(
        model,
        tools=[add, get_weather],
        middleware=[HumanInTheLoopMiddleware(interrupt_on={"add": True})],
        checkpointer=InMemorySaver(),
    )
    config = {"callbacks": [handler], "configurable": {"thread_id": "hitl"}}

    paused = agent.invoke(ask("pay and check"), config=config)
    assert "__interrupt__" in paused
    agent.invoke(Command(resume={"decisions": [{"type": "reject", "message": "no"}]}), config=config)

    first, second = sorted(store.list_runs(), key=lambda r: r.started_at)
    for run in (first, second):
        assert_run_well_formed(store, run.run_id)
    assert first.status == "interrupted"
    (asked,) = steps_of(store, first.run_id)
    assert asked[payloads.REQUESTED_TOOL_CALLS] == [
        {"id": "pay_1", "name": "add"},
        {"id": "w_1", "name": "get_weather"},
    ]
    ran = {
        e.payload["id"]
        for run in (first, second)
        for e in store.get_logs(run.run_id)
        if e.event_type == payloads.TOOL_CALL
    }
    assert "pay_1" not in ran  # rejected: asked for, never run
    (answer,) = steps_of(store, second.run_id)
    assert payloads.REQUESTED_TOOL_CALLS not in answer  # asked for nothing


def test_a_call_a_limit_blocked_is_on_its_step(store, handler):
    model = ScriptedChatModel(
        respond=scripted(
            ai("", [("add", {"a": 1, "b": 2}, "a1"), ("add", {"a": 3, "b": 4}, "a2")]),
            ai("only one sum allowed"),
        )
    )
    agent = create_agent(
        model,
        tools=[add],
        middleware=[ToolCallLimitMiddleware(tool_name="add", run_limit=1, exit_behavior="continue")],
    )

    agent.invoke(ask("two sums"), config={"callbacks": [handler]})

    (run,) = store.list_runs()
    assert_run_well_formed(store, run.run_id)
    first = steps_of(store, run.run_id)[0]
    assert first[payloads.REQUESTED_TOOL_CALLS] == [
        {"id": "a1", "name": "add"},
        {"id": "a2", "name": "add"},
    ]
    ran = [e.payload["id"] for e in store.get_logs(run.run_id) if e.event_type == payloads.TOOL_CALL]
    assert ran == ["a1"]
