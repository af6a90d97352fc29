"""AgentWorkflow: one audit run for the whole workflow; each step names the agent
whose turn it was, and each hand-off is logged."""

from __future__ import annotations

import pytest
from li_support import events, get_weather, mock_llm, only_run, say, step, tool, tool_calls
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed

pytestmark = pytest.mark.usefixtures("instrumented")


def workflow(*, streaming: bool) -> AgentWorkflow:
    triage = FunctionAgent(
        name="triage",
        description="Sends each question to the right agent.",
        llm=mock_llm(tool_calls(("h1", "handoff", {"to_agent": "weather", "reason": "weather"}))),
        can_handoff_to=["weather"],
        streaming=streaming,
    )
    weather = FunctionAgent(
        name="weather",
        description="Knows the weather.",
        tools=[get_weather],
        llm=mock_llm(tool_calls(("c1", "get_weather", {"city": "Paris"})), say("Sunny in Paris.")),
        streaming=streaming,
    )
    return AgentWorkflow(agents=[triage, weather], root_agent="triage")


@pytest.mark.parametrize("streaming", [False, True], ids=["chat", "stream"])
async def test_hand_off_between_agents(store: aa.MemoryStore, streaming: bool) -> None:
    result = await workflow(streaming=streaming).run(user_msg="Weather in Paris?")

    assert str(result) == "Sunny in Paris."
    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert (run.name, run.status, run.input, run.output) == (
        "AgentWorkflow", aa.RunStatus.SUCCEEDED, "Weather in Paris?", "Sunny in Paris.",
    )
    logged = events(store, run.run_id)
    handoff_result = logged[3][1]["result"]
    assert "weather" in handoff_result
    assert logged == [
        step(1, agent="triage", calls=[("h1", "handoff")]),
        ("resolved_model", {"model": "mock/unknown"}),
        *tool("h1", "handoff", '{"reason":"weather","to_agent":"weather"}', handoff_result),
        ("handoff", {"from_agent": "triage", "to_agent": "weather"}),
        step(2, agent="weather", calls=[("c1", "get_weather")]),
        *tool("c1", "get_weather", '{"city":"Paris"}', "sunny in Paris"),
        step(3, agent="weather", text="Sunny in Paris."),
    ]
