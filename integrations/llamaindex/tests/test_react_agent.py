"""ReActAgent runs: the model's tool calls are in its text, so a step's tool calls
come from what the agent parsed."""

from __future__ import annotations

import pytest
from li_support import events, get_weather, mock_llm, only_run, say, step
from llama_index.core.agent.workflow import ReActAgent

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed

pytestmark = pytest.mark.usefixtures("instrumented")

THOUGHT_1 = 'Thought: I need the weather.\nAction: get_weather\nAction Input: {"city": "Paris"}'
THOUGHT_2 = "Thought: I can answer without using any more tools.\nAnswer: Paris is sunny."


@pytest.mark.parametrize("streaming", [False, True], ids=["chat", "stream"])
async def test_react_run(store: aa.MemoryStore, streaming: bool) -> None:
    agent = ReActAgent(
        name="reasoner",
        tools=[get_weather],
        llm=mock_llm(say(THOUGHT_1), say(THOUGHT_2), react=True),
        streaming=streaming,
    )
    result = await agent.run(user_msg="Weather in Paris?")

    assert str(result) == "Paris is sunny."
    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert (run.name, run.status, run.output, run.steps, run.tool_calls) == (
        "reasoner", aa.RunStatus.SUCCEEDED, "Paris is sunny.", 2, 1,
    )
    logged = events(store, run.run_id)
    call_id = logged[2][1]["id"]  # ReActAgent makes up a uuid for each call
    assert call_id
    assert logged == [
        step(1, agent="reasoner", text=THOUGHT_1, calls=[(call_id, "get_weather")]),
        ("resolved_model", {"model": "mock/unknown"}),
        ("tool_call", {"name": "get_weather", "args": '{"city":"Paris"}', "id": call_id}),
        ("tool_result", {"name": "get_weather", "id": call_id, "result": "sunny in Paris",
                         "truncated": False}),
        step(2, agent="reasoner", text=THOUGHT_2),
    ]


async def test_narration_before_a_secret_bearing_tool_is_redacted(store: aa.MemoryStore) -> None:
    def http_get(url: str) -> str:
        """Fetch a URL."""
        return "200 OK"

    thought = 'Thought: call it with my token.\nAction: http_get\nAction Input: {"url": "https://x.test/?t=1"}'
    agent = ReActAgent(
        name="fetcher",
        tools=[http_get],
        llm=mock_llm(say(thought), say(THOUGHT_2), react=True),
        streaming=False,
    )
    await agent.run(user_msg="fetch it")

    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    logged = events(store, run.run_id)
    call_id = logged[2][1]["id"]
    assert logged[0] == step(
        1, agent="fetcher", text_redacted=True, text_len=len(thought), calls=[(call_id, "http_get")]
    )
