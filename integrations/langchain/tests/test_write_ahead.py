"""Write-ahead tool intent: a tool's ``tool_call`` is on record as soon as the tool
starts, before it returns; its ``tool_result`` follows when it ends, or says why it
never will (cancelled, interrupted)."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from langchain.agents import create_agent
from langchain_core.tools import tool
from lc_support import ScriptedChatModel, ai, ask, scripted

import agentaudit as aa
from agentaudit.adapters import CANCELLED_TOOL_RESULT
from agentaudit.testing import assert_run_well_formed


def logged(store: aa.Store, run_id: str) -> list[tuple[str, dict]]:
    """What the store holds for the run right now (committed, for SQLite)."""
    store.flush(timeout=10)
    return [(e.event_type, e.payload) for e in store.get_logs(run_id)]


def test_a_running_tool_is_on_record_before_it_returns(store, handler):
    entered, release = threading.Event(), threading.Event()

    @tool
    def wire_money(amount: int) -> str:
        """Send money; blocks until the bank answers."""
        entered.set()
        assert release.wait(timeout=10)
        return f"sent {amount}"

    model = ScriptedChatModel(
        respond=scripted(ai("Sending.", [("wire_money", {"amount": 100}, "wire_1")]), ai("Sent."))
    )
    agent = create_agent(model, tools=[wire_money], name="banker")
    run_id = uuid.uuid4()
    outcome: dict = {}

    def invoke() -> None:
        outcome["result"] = agent.invoke(
            ask("send 100"), config={"callbacks": [handler], "run_id": run_id}
        )

    thread = threading.Thread(target=invoke)
    thread.start()
    try:
        assert entered.wait(timeout=10)
        # The tool is running: its call is already on record, with no result yet.
        events = logged(store, str(run_id))
        assert [kind for kind, _ in events] == ["step", "resolved_model", "tool_call"]
        assert events[-1][1] == {"name": "wire_money", "args": '{"amount":100}', "id": "wire_1"}
        run = store.get_run(str(run_id))
        assert run is not None and run.status == "running"
    finally:
        release.set()
        thread.join(timeout=10)

    assert outcome["result"]["messages"][-1].text == "Sent."
    run = assert_run_well_formed(store, str(run_id))
    assert run.status == "succeeded" and run.tool_calls == 1
    events = logged(store, str(run_id))
    assert [kind for kind, _ in events] == [
        "step", "resolved_model", "tool_call", "tool_result", "step"
    ]  # fmt: skip
    result = events[3][1]
    assert (result["id"], result["result"], result.get("error", False)) == ("wire_1", "sent 100", False)
    assert result["duration_ms"] >= 0


async def test_a_task_cancelled_mid_tool_ends_with_the_call_and_a_cancelled_result(
    store, handler
):
    started = asyncio.Event()
    in_flight = 0

    @tool
    async def wait_for_bank(account: str) -> str:
        """Waits on the bank, which never answers."""
        nonlocal in_flight
        in_flight += 1
        if in_flight == 2:
            started.set()
        await asyncio.sleep(3600)
        return "never"

    model = ScriptedChatModel(
        respond=scripted(
            ai("", [("wait_for_bank", {"account": "A"}, "b1"), ("wait_for_bank", {"account": "B"}, "b2")])
        )
    )
    run_id = uuid.uuid4()
    task = asyncio.ensure_future(
        create_agent(model, tools=[wait_for_bank]).ainvoke(
            ask(), config={"callbacks": [handler], "run_id": run_id}
        )
    )
    await asyncio.wait_for(started.wait(), 10)
    # Both tools are awaiting: both calls are on record, neither has a result.
    in_progress = logged(store, str(run_id))
    assert [kind for kind, _ in in_progress] == ["step", "resolved_model", "tool_call", "tool_call"]
    assert {payload["id"] for _, payload in in_progress[2:]} == {"b1", "b2"}

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    run = assert_run_well_formed(store, str(run_id))
    assert run.status == "cancelled"
    assert run.tool_calls == 2
    results = [payload for kind, payload in logged(store, str(run_id)) if kind == "tool_result"]
    assert {r["id"] for r in results} == {"b1", "b2"}
    for result in results:
        assert result["result"] == CANCELLED_TOOL_RESULT
        assert result["error"] is True
        assert result["duration_ms"] >= 0


def test_a_tool_without_an_id_at_start_takes_the_id_the_step_asked_for(store, handler):
    # A tool invoked by hand inside a graph node, without the model's call id: the
    # call recorded at its start carries the id of the matching call the step asked for.
    from langchain_core.messages import AIMessage, ToolMessage
    from langgraph.graph import END, START, MessagesState, StateGraph

    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return key.upper()

    model = ScriptedChatModel(respond=scripted(ai("", [("lookup", {"key": "k"}, "look_1")]), ai("K.")))

    def call_model(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    def run_tools(state: MessagesState) -> dict:
        last = state["messages"][-1]
        assert isinstance(last, AIMessage)
        out = []
        for call in last.tool_calls:
            out.append(ToolMessage(lookup.invoke(call["args"]), tool_call_id=call["id"]))
        return {"messages": out}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", run_tools)
    graph.add_edge(START, "model")
    graph.add_edge("model", "tools")
    graph.add_edge("tools", END)
    graph.compile().invoke(ask(), config={"callbacks": [handler]})

    (run,) = store.list_runs()
    assert_run_well_formed(store, run.run_id)
    call, result = (e for e in store.get_logs(run.run_id) if e.event_type.startswith("tool_"))
    assert call.payload == {"name": "lookup", "args": '{"key":"k"}', "id": "look_1"}
    assert (result.payload["id"], result.payload["result"]) == ("look_1", "K")


def test_a_tool_run_on_its_own_is_a_run_with_its_call_and_result(store, handler):
    @tool
    def shout(text: str) -> str:
        """Shout."""
        return text.upper()

    assert shout.invoke({"text": "hi"}, config={"callbacks": [handler]}) == "HI"

    (run,) = store.list_runs()
    assert_run_well_formed(store, run.run_id)
    assert (run.name, run.status, run.output, run.tool_calls) == ("shout", "succeeded", "HI", 1)
    assert [e.event_type for e in store.get_logs(run.run_id)] == ["tool_call", "tool_result"]
