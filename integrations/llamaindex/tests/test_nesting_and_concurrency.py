"""Runs inside runs, and runs side by side: each agent run is its own audit run."""

from __future__ import annotations

import asyncio
import threading

import pytest
from li_support import events, get_weather, mock_llm, say, step, tool, tool_calls
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms.mock import MockFunctionCallingLLM

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed

pytestmark = pytest.mark.usefixtures("instrumented")


async def test_an_agent_run_inside_a_tool_is_a_child_run(store: aa.MemoryStore) -> None:
    inner = FunctionAgent(
        name="researcher",
        tools=[get_weather],
        llm=mock_llm(tool_calls(("i1", "get_weather", {"city": "Oslo"})), say("Oslo: sunny.")),
        streaming=False,
    )

    async def research(question: str) -> str:
        """Ask the researcher."""
        return str(await inner.run(user_msg=question))

    outer = FunctionAgent(
        name="manager",
        tools=[research],
        llm=mock_llm(tool_calls(("o1", "research", {"question": "Oslo?"})), say("Done: sunny.")),
        streaming=False,
    )
    assert str(await outer.run(user_msg="Find out about Oslo")) == "Done: sunny."

    [child] = store.list_runs(aa.RunFilter(name="researcher"))
    [parent] = store.list_runs(aa.RunFilter(name="manager"))
    for run in (parent, child):
        assert_run_well_formed(store, run.run_id)
        assert run.status == aa.RunStatus.SUCCEEDED
    assert parent.parent_run_id is None
    assert child.parent_run_id == parent.run_id
    assert [r.run_id for r in store.children(parent.run_id)] == [child.run_id]
    assert (child.input, child.output) == ("Oslo?", "Oslo: sunny.")
    # The child's steps and tools are its own, not its parent's.
    assert events(store, child.run_id) == [
        step(1, agent="researcher", calls=[("i1", "get_weather")]),
        ("resolved_model", {"model": "mock/unknown"}),
        *tool("i1", "get_weather", '{"city":"Oslo"}', "sunny in Oslo"),
        step(2, agent="researcher", text="Oslo: sunny."),
    ]
    assert events(store, parent.run_id) == [
        step(1, agent="manager", calls=[("o1", "research")]),
        ("resolved_model", {"model": "mock/unknown"}),
        *tool("o1", "research", '{"question":"Oslo?"}', "Oslo: sunny."),
        step(2, agent="manager", text="Done: sunny."),
    ]


def city_answering_llm() -> MockFunctionCallingLLM:
    """A model that asks for the weather of the city in the user's message, then
    answers with it: its output depends only on its own conversation."""

    def generate(messages: list[ChatMessage], **_kwargs: object) -> ChatMessage:
        city = next(m.content for m in messages if m.role == "user").split()[-1]
        tool_result = next((m for m in messages if m.role == "tool"), None)
        if tool_result is None:
            return tool_calls((f"call-{city}", "get_weather", {"city": city}))
        return say(f"{city}: {tool_result.content}")

    return MockFunctionCallingLLM(response_generator=generate)


@pytest.mark.parametrize("shared_agent", [False, True], ids=["agents", "one-agent"])
async def test_concurrent_runs_stay_apart(store: aa.MemoryStore, shared_agent: bool) -> None:
    cities = ["Paris", "Rome", "Oslo", "Lima"]
    one = FunctionAgent(name="forecaster", tools=[get_weather], llm=city_answering_llm(), streaming=True)

    def agent_for(_city: str) -> FunctionAgent:
        if shared_agent:
            return one
        return FunctionAgent(name="forecaster", tools=[get_weather], llm=city_answering_llm(),
                             streaming=True)

    results = await asyncio.gather(*(agent_for(c).run(user_msg=f"weather in {c}") for c in cities))

    assert [str(r) for r in results] == [f"{c}: sunny in {c}" for c in cities]
    runs = store.list_runs(aa.RunFilter(name="forecaster"))
    assert sorted(r.input for r in runs) == sorted(f"weather in {c}" for c in cities)
    for run in runs:
        assert_run_well_formed(store, run.run_id)
        city = run.input.split()[-1]
        assert (run.status, run.output, run.parent_run_id) == (
            aa.RunStatus.SUCCEEDED, f"{city}: sunny in {city}", None,
        )
        assert events(store, run.run_id) == [
            step(1, agent="forecaster", calls=[(f"call-{city}", "get_weather")]),
            ("resolved_model", {"model": "mock/unknown"}),
            *tool(f"call-{city}", "get_weather", f'{{"city":"{city}"}}', f"sunny in {city}"),
            step(2, agent="forecaster", text=f"{city}: sunny in {city}"),
        ]


def test_runs_on_threads_with_their_own_event_loops_stay_apart(store: aa.MemoryStore) -> None:
    cities = ["Quito", "Accra", "Perth"]
    errors: list[BaseException] = []

    def run_in_thread(city: str) -> None:
        agent = FunctionAgent(name="threaded", tools=[get_weather], llm=city_answering_llm(),
                              streaming=False)

        async def go() -> None:
            await agent.run(user_msg=f"weather in {city}")

        try:
            asyncio.run(go())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run_in_thread, args=(c,)) for c in cities]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    runs = store.list_runs(aa.RunFilter(name="threaded"))
    assert sorted(r.output for r in runs) == sorted(f"{c}: sunny in {c}" for c in cities)
    for run in runs:
        assert_run_well_formed(store, run.run_id)
        city = run.input.split()[-1]
        assert [p.get("id") for t, p in events(store, run.run_id) if t == "tool_call"] == [
            f"call-{city}"
        ]


async def test_an_agent_run_inside_an_audited_block_is_its_child(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    agent = FunctionAgent(name="helper", tools=[get_weather], llm=mock_llm(say("ok")), streaming=False)
    async with auditor.run("request", caller="user:7") as request:
        assert str(await agent.run(user_msg="help")) == "ok"

    [child] = store.list_runs(aa.RunFilter(name="helper"))
    assert child.parent_run_id == request.run_id
    assert child.status == aa.RunStatus.SUCCEEDED
