"""How a run ends: failed with the error's text, interrupted by LangGraph (control
flow, not a failure), cancelled; and what tools and models that fail record."""

from __future__ import annotations

import asyncio

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.tools import ToolException, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, interrupt
from lc_support import ScriptedChatModel, ai, ask, check_run_matches_messages, scripted

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed
from agentaudit_langchain._handler import INTERRUPTED_TOOL_RESULT


def only_run(store: aa.MemoryStore) -> aa.Run:
    runs = store.list_runs()
    assert len(runs) == 1, runs
    return runs[0]


@tool
def flaky(x: int) -> str:
    """Always fails."""
    raise ValueError(f"flaky failed for {x}")


@tool
def soft_fail(x: int) -> str:
    """Fails softly: the agent sees the error and goes on."""
    raise ToolException(f"soft failure for {x}")


soft_fail.handle_tool_error = True


def test_a_raising_tool_fails_the_run_with_its_error(store, handler):
    model = ScriptedChatModel(respond=scripted(ai("", [("flaky", {"x": 1}, "c1")]), ai("unused")))

    with pytest.raises(ValueError, match="flaky failed for 1"):
        create_agent(model, tools=[flaky]).invoke(ask(), config={"callbacks": [handler]})

    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert run.status == "failed"
    assert run.error == "ValueError: flaky failed for 1"
    tool_events = [e for e in store.get_logs(run.run_id) if e.event_type.startswith("tool_")]
    assert [e.event_type for e in tool_events] == ["tool_call", "tool_result"]
    assert tool_events[0].payload == {"name": "flaky", "args": '{"x":1}', "id": "c1"}
    assert tool_events[1].payload["error"] is True
    assert tool_events[1].payload["result"] == "ValueError: flaky failed for 1"


def test_a_tool_error_the_agent_handles_is_an_error_result_in_a_succeeded_run(store, handler):
    model = ScriptedChatModel(
        respond=scripted(ai("", [("soft_fail", {"x": 2}, "c2")]), ai("recovered"))
    )

    result = create_agent(model, tools=[soft_fail]).invoke(ask(), config={"callbacks": [handler]})

    events = check_run_matches_messages(store, only_run(store).run_id, result["messages"])
    tool_result = next(e for e in events if e.event_type == "tool_result")
    assert tool_result.payload["error"] is True
    assert tool_result.payload["result"] == "soft failure for 2"


def test_invalid_tool_arguments_are_an_error_result(store, handler):
    # The model sends a string where the tool takes an int: LangChain's validation
    # error goes back to the model as an error ToolMessage.
    model = ScriptedChatModel(
        respond=scripted(ai("", [("add_ints", {"a": "two", "b": 3}, "c3")]), ai("sorry"))
    )

    @tool
    def add_ints(a: int, b: int) -> int:
        """Add."""
        return a + b

    result = create_agent(model, tools=[add_ints]).invoke(ask(), config={"callbacks": [handler]})

    run = only_run(store)
    assert run.status == "succeeded"
    assert_run_well_formed(store, run.run_id)
    tool_call, tool_result = (
        e for e in store.get_logs(run.run_id) if e.event_type.startswith("tool_")
    )
    assert tool_call.payload["args"] == '{"a":"two","b":3}'
    assert tool_result.payload["error"] is True
    assert result["messages"][2].status == "error"


class BrokenModel(ScriptedChatModel):
    def _generate(self, *args, **kwargs):
        raise ConnectionError("model down")


def test_a_model_error_is_an_error_event_and_fails_the_run(store, handler):
    with pytest.raises(ConnectionError):
        create_agent(BrokenModel(respond=scripted()), tools=[]).invoke(
            ask(), config={"callbacks": [handler]}
        )

    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert run.status == "failed"
    assert run.error == "ConnectionError: model down"
    assert [(e.event_type, e.payload) for e in store.get_logs(run.run_id)] == [
        ("error", {"message": "ConnectionError: model down"})
    ]
    assert run.steps == 0


@tool
def needs_approval(amount: int) -> str:
    """Pay, once a human approved."""
    answer = interrupt({"question": f"pay {amount}?"})
    return f"paid {amount}: {answer}"


def approval_agent(checkpointer=None):
    model = ScriptedChatModel(
        respond=scripted(
            ai("I will ask first.", [("needs_approval", {"amount": 5}, "pay_1")]), ai("Paid.")
        )
    )
    return create_agent(model, tools=[needs_approval], checkpointer=checkpointer, name="payer")


def test_an_interrupt_is_recorded_as_interrupted_and_the_resume_as_a_new_run(store, handler):
    agent = approval_agent(InMemorySaver())
    config = {"callbacks": [handler], "configurable": {"thread_id": "pay-thread"}}

    paused = agent.invoke(ask("pay the bill"), config=config)
    assert "__interrupt__" in paused

    first = only_run(store)
    assert_run_well_formed(store, first.run_id)
    assert first.status == "interrupted"
    assert first.error == ""
    assert first.output == "I will ask first."
    assert first.metadata["thread_id"] == "pay-thread"
    events = store.get_logs(first.run_id)
    # The tool's call was recorded when it started; interrupted, it did not run to an
    # end, and its result says so. Then the interrupt event.
    assert [e.event_type for e in events] == [
        "step", "resolved_model", "tool_call", "tool_result", "interrupt"
    ]  # fmt: skip
    assert events[2].payload == {"name": "needs_approval", "args": '{"amount":5}', "id": "pay_1"}
    assert events[3].payload["id"] == "pay_1"
    assert events[3].payload["result"] == INTERRUPTED_TOOL_RESULT == "tool call interrupted"
    assert events[3].payload["error"] is True
    assert first.tool_calls == 1
    (pending,) = events[-1].payload["interrupts"]
    assert pending["value"] == {"question": "pay 5?"}
    assert pending["id"] == paused["__interrupt__"][0].id

    done = agent.invoke(Command(resume="approved"), config=config)

    second = next(r for r in store.list_runs() if r.run_id != first.run_id)
    assert second.status == "succeeded"
    assert second.input == '{"resume":"approved"}' or second.input == {"resume": "approved"}
    assert second.output == "Paid."
    assert second.metadata["thread_id"] == "pay-thread"
    assert_run_well_formed(store, second.run_id)
    tool_result = next(
        e for e in store.get_logs(second.run_id) if e.event_type == "tool_result"
    )
    assert tool_result.payload["result"] == "paid 5: approved"
    assert done["messages"][-1].text == "Paid."


def test_an_interrupt_in_a_sub_agent_interrupts_both_runs(store, handler):
    inner = approval_agent()

    @tool
    def delegate(task: str) -> str:
        """Hand the task to the payer agent."""
        return inner.invoke({"messages": [{"role": "user", "content": task}]})["messages"][-1].text

    outer = create_agent(
        ScriptedChatModel(respond=scripted(ai("", [("delegate", {"task": "pay"}, "d1")]), ai("ok"))),
        tools=[delegate],
        checkpointer=InMemorySaver(),
        name="boss",
    )

    outer.invoke(ask(), config={"callbacks": [handler], "configurable": {"thread_id": "t"}})

    boss = store.list_runs(aa.RunFilter(name="boss"))[0]
    payer = store.list_runs(aa.RunFilter(name="payer"))[0]
    assert payer.parent_run_id == boss.run_id
    for run, tool_name in ((boss, "delegate"), (payer, "needs_approval")):
        assert_run_well_formed(store, run.run_id)
        assert run.status == "interrupted"
        events = store.get_logs(run.run_id)
        assert events[-1].event_type == "interrupt"
        # Each run's interrupted tool: its call on record, its result saying why.
        call, result = (e for e in events if e.event_type.startswith("tool_"))
        assert call.payload["name"] == result.payload["name"] == tool_name
        assert (result.payload["result"], result.payload["error"]) == (INTERRUPTED_TOOL_RESULT, True)


async def test_a_cancelled_ainvoke_is_recorded_as_cancelled(store, handler):
    started = asyncio.Event()

    @tool
    async def wait_forever(x: int) -> str:
        """Never returns."""
        started.set()
        await asyncio.sleep(3600)
        return "never"

    model = ScriptedChatModel(respond=scripted(ai("", [("wait_forever", {"x": 1}, "w1")])))
    task = asyncio.ensure_future(
        create_agent(model, tools=[wait_forever]).ainvoke(ask(), config={"callbacks": [handler]})
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert run.status == "cancelled"
    # The tool in flight gets its result, so the call is not left unanswered.
    tool_call, tool_result = (
        e for e in store.get_logs(run.run_id) if e.event_type.startswith("tool_")
    )
    assert tool_call.payload == {"name": "wait_forever", "args": '{"x":1}', "id": "w1"}
    assert tool_result.payload["error"] is True
    assert tool_result.payload["result"] == "tool call cancelled"


def test_stopping_a_stream_early_is_recorded_as_cancelled(store, handler):
    model = ScriptedChatModel(respond=scripted(ai("", [("soft_fail", {"x": 1}, "c1")]), ai("done")))
    stream = create_agent(model, tools=[soft_fail]).stream(
        ask(), config={"callbacks": [handler]}, stream_mode="updates"
    )
    first = next(stream)
    assert "model" in first
    stream.close()

    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert run.status == "cancelled"
    assert run.steps == 1


def test_a_model_used_without_an_agent_is_a_one_step_run(store, handler):
    model: BaseChatModel = ScriptedChatModel(respond=scripted(ai("hello there", tokens=(3, 2))))

    message = model.invoke("hi", config={"callbacks": [handler]})

    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert (run.input, run.output, run.steps) == ("hi", "hello there", 1)
    assert message.text == "hello there"


def test_a_tool_that_handles_its_own_error_on_its_own_is_a_succeeded_run(store, handler):
    # Invoked with a tool call, the tool turns its ToolException into an error
    # ToolMessage and returns it normally: that is the tool's answer, not a failure.
    message = soft_fail.invoke(
        {"name": "soft_fail", "args": {"x": 7}, "id": "s7", "type": "tool_call"},
        config={"callbacks": [handler]},
    )

    assert (message.status, message.content) == ("error", "soft failure for 7")
    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert (run.status, run.error, run.output) == ("succeeded", "", "soft failure for 7")
    call, result = store.get_logs(run.run_id)
    assert call.payload == {"name": "soft_fail", "args": '{"x":7}', "id": "s7"}
    assert (result.payload["result"], result.payload["error"]) == ("soft failure for 7", True)
