"""FunctionAgent runs driven by MockFunctionCallingLLM: one agent run is one audit
run, each model turn one step, each tool execution one tool_call + tool_result."""

from __future__ import annotations

import pytest
from li_support import (
    add,
    events,
    flaky,
    get_weather,
    mock_llm,
    only_run,
    say,
    step,
    tool,
    tool_calls,
)
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.llms.mock import MockFunctionCallingLLM

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed, paired_tool_events

pytestmark = pytest.mark.usefixtures("instrumented")


def weather_agent(*, streaming: bool, name: str = "forecaster") -> FunctionAgent:
    llm = mock_llm(
        tool_calls(("call_1", "get_weather", {"city": "Paris"})),
        tool_calls(("call_2", "add", {"a": 2, "b": 3}), ("call_3", "get_weather", {"city": "Rome"})),
        say("Paris and Rome are sunny; 2+3=5."),
    )
    return FunctionAgent(name=name, tools=[get_weather, add], llm=llm, streaming=streaming)


@pytest.mark.parametrize("streaming", [False, True], ids=["chat", "stream"])
async def test_one_run_with_every_step_and_tool(store: aa.MemoryStore, streaming: bool) -> None:
    result = await weather_agent(streaming=streaming).run(user_msg="Weather in Paris and Rome?")

    assert str(result) == "Paris and Rome are sunny; 2+3=5."
    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert (run.name, run.status, run.caller) == ("forecaster", aa.RunStatus.SUCCEEDED, "user:42")
    assert run.input == "Weather in Paris and Rome?"
    assert run.output == "Paris and Rome are sunny; 2+3=5."
    assert run.parent_run_id is None
    assert run.metadata["env"] == "test"
    assert isinstance(run.metadata["llamaindex.run_id"], str)
    assert (run.steps, run.tool_calls) == (3, 3)
    # Without streaming, MockFunctionCallingLLM.achat calls .chat: two chat events
    # for one model call, recorded as one step.
    # The two tools of step 2 run in parallel.
    assert paired_tool_events(events(store, run.run_id)) == [
        step(1, agent="forecaster", calls=[("call_1", "get_weather")]),
        ("resolved_model", {"model": "mock/unknown"}),
        *tool("call_1", "get_weather", '{"city":"Paris"}', "sunny in Paris"),
        step(2, agent="forecaster", calls=[("call_2", "add"), ("call_3", "get_weather")]),
        *tool("call_2", "add", '{"a":2,"b":3}', "5"),
        *tool("call_3", "get_weather", '{"city":"Rome"}', "sunny in Rome"),
        step(3, agent="forecaster", text="Paris and Rome are sunny; 2+3=5."),
    ]


async def test_a_failing_tool_is_an_error_result_and_the_run_goes_on(store: aa.MemoryStore) -> None:
    llm = mock_llm(tool_calls(("c1", "flaky", {"x": 1})), say("recovered"))
    result = await FunctionAgent(name="fragile", tools=[flaky], llm=llm, streaming=False).run(
        user_msg="try it"
    )

    assert str(result) == "recovered"
    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert (run.status, run.output, run.tool_calls) == (aa.RunStatus.SUCCEEDED, "recovered", 1)
    assert events(store, run.run_id)[2:] == [
        *tool("c1", "flaky", '{"x":1}', "flaky failed for 1", error=True),
        step(2, agent="fragile", text="recovered"),
    ]


class ExplodingLLM(MockFunctionCallingLLM):
    def chat(self, messages, **kwargs):  # type: ignore[no-untyped-def]
        raise ConnectionError("model down")


async def test_a_failing_model_fails_the_run_with_the_exception_text(store: aa.MemoryStore) -> None:
    agent = FunctionAgent(name="doomed", tools=[get_weather], llm=ExplodingLLM(), streaming=False)
    with pytest.raises(ConnectionError, match="model down"):
        await agent.run(user_msg="hello?")

    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert (run.status, run.error, run.input) == (
        aa.RunStatus.FAILED,
        "ConnectionError: model down",
        "hello?",
    )
    assert events(store, run.run_id) == [
        ("error", {"message": "model call failed: ConnectionError: model down"})
    ]


async def test_an_unnamed_agent_is_named_by_its_class(store: aa.MemoryStore) -> None:
    agent = FunctionAgent(tools=[get_weather], llm=mock_llm(say("hi")), streaming=False)
    await agent.run(user_msg="hello")

    run = only_run(store)
    assert (run.name, run.output) == ("FunctionAgent", "hi")
    # The step still names the agent as LlamaIndex does.
    assert events(store, run.run_id)[0] == step(1, agent="Agent", text="hi")


async def test_input_from_chat_history_when_no_user_message(store: aa.MemoryStore) -> None:
    from llama_index.core.base.llms.types import ChatMessage

    agent = FunctionAgent(name="chat", tools=[get_weather], llm=mock_llm(say("ok")), streaming=False)
    await agent.run(chat_history=[ChatMessage(role="user", content="earlier question")])

    assert only_run(store).input == "earlier question"
