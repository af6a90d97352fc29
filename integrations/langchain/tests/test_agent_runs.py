"""A real ``create_agent`` agent with a deterministic tool-calling model, through
every entry point: each invocation is one run whose events are, one by one, what
the agent's messages say."""

from __future__ import annotations

import asyncio
import threading

import pytest
from conftest import assert_no_state
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from lc_support import (
    QUESTION,
    WEATHER_TURNS,
    ScriptedChatModel,
    add,
    ai,
    ask,
    check_run_matches_messages,
    get_weather,
    scripted,
)

import agentaudit as aa
from agentaudit_langchain import AuditCallbackHandler


def weather_agent(name: str | None = "weather_agent"):
    model = ScriptedChatModel(respond=scripted(*WEATHER_TURNS))
    return create_agent(model, tools=[get_weather, add], name=name)


def only_run(store: aa.MemoryStore) -> aa.Run:
    runs = store.list_runs()
    assert len(runs) == 1, runs
    return runs[0]


def test_invoke_records_one_run_matching_the_messages(store, handler):
    result = weather_agent().invoke(ask(), config={"callbacks": [handler]})

    run = only_run(store)
    assert run.name == "weather_agent"
    assert run.caller == "user:42"
    assert run.parent_run_id is None
    assert run.metadata == {"env": "test"}
    assert run.input == QUESTION
    assert run.output == "Paris is sunny, Rome is sunny, and 2+3=5."
    assert (run.input_tokens, run.output_tokens, run.thinking_tokens) == (450, 65, 8)
    events = check_run_matches_messages(store, run.run_id, result["messages"])
    kinds = [e.event_type for e in events]
    # The two tools of the second step run in parallel: each call is recorded when
    # it starts, so their events may interleave.
    assert kinds[:5] + sorted(kinds[5:9]) + kinds[9:] == [
        "step", "resolved_model", "tool_call", "tool_result",
        "step", "tool_call", "tool_call", "tool_result", "tool_result",
        "step",
    ]  # fmt: skip
    first_step = events[0].payload
    assert first_step["model"] == "scripted/scripted-1"
    assert first_step["cache_read_tokens"] == 64
    assert first_step["thinking_tokens"] == 8


async def test_ainvoke_records_the_same_run(store, handler):
    result = await weather_agent().ainvoke(ask(), config={"callbacks": [handler]})

    run = only_run(store)
    assert run.output == "Paris is sunny, Rome is sunny, and 2+3=5."
    check_run_matches_messages(store, run.run_id, result["messages"])


@pytest.mark.parametrize("mode", ["updates", "messages", "values"])
def test_stream_records_the_same_run(store, handler, mode):
    chunks = list(weather_agent().stream(ask(), config={"callbacks": [handler]}, stream_mode=mode))

    assert chunks
    run = only_run(store)
    assert run.status == "succeeded"
    assert run.output == "Paris is sunny, Rome is sunny, and 2+3=5."
    final = weather_agent().invoke(ask())  # the same deterministic conversation, unaudited
    check_run_matches_messages(store, run.run_id, final["messages"])


async def test_astream_messages_mode_records_the_same_run(store, handler):
    chunks = [
        chunk
        async for chunk in weather_agent().astream(
            ask(), config={"callbacks": [handler]}, stream_mode="messages"
        )
    ]

    assert chunks
    final = await weather_agent().ainvoke(ask())
    check_run_matches_messages(store, only_run(store).run_id, final["messages"])


def test_name_defaults_to_the_run_name_and_the_handler_name_wins(store, auditor):
    agent = weather_agent(name=None)
    agent.invoke(ask(), config={"callbacks": [AuditCallbackHandler(auditor)]})
    agent.invoke(ask(), config={"callbacks": [AuditCallbackHandler(auditor)], "run_name": "triage"})
    agent.invoke(ask(), config={"callbacks": [AuditCallbackHandler(auditor, name="fixed")]})

    names = [run.name for run in reversed(store.list_runs())]
    assert names == ["LangGraph", "triage", "fixed"]


def test_invocation_metadata_and_caller_override_the_handler(store, handler):
    weather_agent().invoke(
        ask(),
        config={
            "callbacks": [handler],
            "metadata": {"agentaudit_caller": "user:7", "tenant": "acme", "obj": object()},
            "configurable": {"thread_id": "t-1"},
        },
    )

    run = only_run(store)
    assert run.caller == "user:7"
    # LangGraph's thread_id joins the user's metadata; LangChain's own keys and
    # values that are not plain JSON scalars do not.
    assert run.metadata == {"env": "test", "tenant": "acme", "thread_id": "t-1"}


def test_parallel_tool_calls_on_other_threads_are_each_recorded(store, handler):
    threads: dict[str, str] = {}

    @tool
    def slow_weather(city: str) -> str:
        """Weather, slowly."""
        threads[city] = threading.current_thread().name
        barrier.wait(timeout=5)  # both calls run at once, or this times out
        return f"rain in {city}"

    barrier = threading.Barrier(2)
    model = ScriptedChatModel(
        respond=scripted(
            ai("", [("slow_weather", {"city": "Oslo"}, "c1"), ("slow_weather", {"city": "Bergen"}, "c2")]),
            ai("Rain in both."),
        )
    )
    result = create_agent(model, tools=[slow_weather]).invoke(ask(), config={"callbacks": [handler]})

    assert threads["Oslo"] != threads["Bergen"]
    check_run_matches_messages(store, only_run(store).run_id, result["messages"])


def test_batch_with_one_handler_gives_each_input_its_own_run(store, handler):
    def respond_by_city(messages):
        city = messages[-1].text if len(messages) == 1 else messages[0].text
        if not any(isinstance(m, AIMessage) for m in messages):
            return ai("", [("get_weather", {"city": city}, f"call-{city}")])
        return ai(f"It is sunny in {city}.")

    agent = create_agent(ScriptedChatModel(respond=respond_by_city), tools=[get_weather])
    cities = [f"city{i}" for i in range(8)]

    results = agent.batch([ask(c) for c in cities], config={"callbacks": [handler]})

    runs = {run.input: run for run in store.list_runs()}
    assert sorted(runs) == sorted(cities)
    for city, result in zip(cities, results, strict=True):
        run = runs[city]
        assert run.output == f"It is sunny in {city}."
        events = check_run_matches_messages(store, run.run_id, result["messages"])
        assert {e.payload["id"] for e in events if e.event_type == "tool_call"} == {f"call-{city}"}


async def test_abatch_and_concurrent_ainvoke_do_not_cross(store, handler):
    agent = weather_agent()
    results = await agent.abatch([ask(f"q{i}") for i in range(4)], config={"callbacks": [handler]})
    results += await asyncio.gather(
        *(agent.ainvoke(ask(f"q{i}"), config={"callbacks": [handler]}) for i in range(4, 8))
    )

    runs = {run.input: run for run in store.list_runs()}
    assert sorted(runs) == sorted(f"q{i}" for i in range(8))
    for i, result in enumerate(results):
        check_run_matches_messages(store, runs[f"q{i}"].run_id, result["messages"])


def test_handler_registered_twice_records_each_event_once(store, handler):
    model = ScriptedChatModel(respond=scripted(*WEATHER_TURNS), callbacks=[handler])
    agent = create_agent(model, tools=[get_weather.model_copy(update={"callbacks": [handler]}), add])

    result = agent.invoke(ask(), config={"callbacks": [handler, handler]})

    check_run_matches_messages(store, only_run(store).run_id, result["messages"])


def test_sub_agent_invoked_in_a_tool_is_a_child_run(store, handler):
    inner = create_agent(
        ScriptedChatModel(
            respond=scripted(ai("", [("add", {"a": 20, "b": 22}, "inner_1")]), ai("It is 42."))
        ),
        tools=[add],
        name="calculator",
    )

    @tool
    def ask_calculator(question: str) -> str:
        """Ask the calculator agent."""
        answer = inner.invoke({"messages": [{"role": "user", "content": question}]})
        captured.append(answer["messages"])
        return answer["messages"][-1].text

    captured: list = []
    outer = create_agent(
        ScriptedChatModel(
            respond=scripted(
                ai("", [("ask_calculator", {"question": "what is 20+22?"}, "outer_1")]),
                ai("The calculator says 42."),
            )
        ),
        tools=[ask_calculator],
        name="planner",
    )

    result = outer.invoke(ask("plan it"), config={"callbacks": [handler]})

    parent = store.list_runs(aa.RunFilter(name="planner"))[0]
    child = store.list_runs(aa.RunFilter(name="calculator"))[0]
    assert parent.parent_run_id is None
    assert child.parent_run_id == parent.run_id
    assert [r.run_id for r in store.children(parent.run_id)] == [child.run_id]
    assert child.input == "what is 20+22?"
    assert child.output == "It is 42."
    assert child.caller == "user:42"
    # The child's steps and tools are its own; the parent records the tool call.
    check_run_matches_messages(store, child.run_id, captured[0])
    check_run_matches_messages(store, parent.run_id, result["messages"])
    assert child.finished_at <= parent.finished_at


def test_an_agent_nested_in_another_traced_chain_is_still_a_root(store, handler):
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.runnables import RunnableLambda

    agent = weather_agent()
    outer = RunnableLambda(lambda x: agent.invoke(x, config={"callbacks": [handler]}))

    result = outer.invoke(ask(), config={"callbacks": [BaseCallbackHandler()]})

    run = only_run(store)
    assert run.parent_run_id is None
    check_run_matches_messages(store, run.run_id, result["messages"])


def test_no_run_state_is_left_after_many_invocations(store, auditor):
    handler = AuditCallbackHandler(auditor)
    agent = weather_agent()
    for _ in range(20):
        agent.invoke(ask(), config={"callbacks": [handler]})
        for _chunk in agent.stream(ask(), config={"callbacks": [handler]}, stream_mode="updates"):
            break  # the caller stops reading: the run is cancelled, its state swept
    assert_no_state(handler)
    assert store.count_runs(aa.RunFilter(status="succeeded")) == 20
    assert store.count_runs(aa.RunFilter(status="cancelled")) == 20
