"""A real ``langchain_openai.ChatOpenAI`` behind ``create_agent``, answered by
respx-mocked Chat Completions: what the server reported (served model, finish
reason, usage with cached and reasoning tokens) is what each step records, on
every entry point and when streaming."""

from __future__ import annotations

import pytest
import respx
from langchain.agents import create_agent
from langchain_openai import ChatOpenAI
from lc_openai import BASE_URL, MODEL_SERVED, TURNS, mock_openai
from lc_support import add, ask, check_run_matches_messages, get_weather

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed

SERVED = f"openai/{MODEL_SERVED}"
ANSWER = "Paris is sunny, Rome is sunny, and 2+3=5."


@pytest.fixture
def openai_server():
    with respx.mock(assert_all_called=True) as router:
        yield mock_openai(router)


def agent(**model_options):
    model = ChatOpenAI(
        model="gpt-4o-mini", base_url=BASE_URL, api_key="sk-test", max_retries=0, **model_options
    )
    return create_agent(model, tools=[get_weather, add], name="weather_agent")


def only_run(store: aa.MemoryStore) -> aa.Run:
    runs = store.list_runs()
    assert len(runs) == 1, runs
    return runs[0]


def assert_server_usage(store: aa.MemoryStore, run: aa.Run) -> None:
    """Each step holds exactly the usage the server sent for that turn."""
    steps = [e.payload for e in store.get_logs(run.run_id) if e.event_type == "step"]
    assert len(steps) == len(TURNS)
    for step, (_content, _calls, finish, usage) in zip(steps, TURNS, strict=True):
        assert step["model"] == SERVED
        assert step["finish_reason"] == finish
        assert step["in_tokens"] == usage["prompt_tokens"]
        assert step["out_tokens"] == usage["completion_tokens"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
        assert step.get("cache_read_tokens", 0) == cached
        assert step.get("thinking_tokens", 0) == reasoning
    assert run.input_tokens == sum(u["prompt_tokens"] for *_, u in TURNS)
    assert run.output_tokens == sum(u["completion_tokens"] for *_, u in TURNS)
    assert run.thinking_tokens == sum(
        u["completion_tokens_details"]["reasoning_tokens"] for *_, u in TURNS
    )


def test_invoke(store, handler, openai_server):
    result = agent().invoke(ask(), config={"callbacks": [handler]})

    run = only_run(store)
    assert run.output == ANSWER
    check_run_matches_messages(store, run.run_id, result["messages"], model=SERVED)
    assert_server_usage(store, run)
    assert [r["stream"] for r in openai_server.requests] == [False] * 3


async def test_ainvoke(store, handler, openai_server):
    result = await agent().ainvoke(ask(), config={"callbacks": [handler]})

    run = only_run(store)
    check_run_matches_messages(store, run.run_id, result["messages"], model=SERVED)
    assert_server_usage(store, run)


def final_messages(store: aa.MemoryStore):
    """The conversation the agent streamed, rebuilt unaudited (same server script)."""
    with respx.mock() as router:
        mock_openai(router)
        return agent().invoke(ask())["messages"]


def test_stream_messages_mode_records_the_final_usage(store, handler, openai_server):
    # A non-default base URL: ChatOpenAI asks for usage only with stream_usage=True.
    tokens = list(
        agent(stream_usage=True).stream(ask(), config={"callbacks": [handler]}, stream_mode="messages")
    )

    assert len(tokens) > len(TURNS)  # it did stream, token by token
    assert all(r["stream"] for r in openai_server.requests)
    assert openai_server.requests[0]["stream_options"] == {"include_usage": True}
    run = only_run(store)
    assert run.output.strip() == ANSWER
    assert_server_usage(store, run)
    # Streamed text carries the fixture's trailing spaces; the steps store it trimmed.
    steps = [e.payload for e in store.get_logs(run.run_id) if e.event_type == "step"]
    assert steps[0]["text"] == "Let me check the weather first."
    tool_ids = [e.payload["id"] for e in store.get_logs(run.run_id) if e.event_type == "tool_call"]
    assert sorted(tool_ids) == ["call_1", "call_2", "call_3"]


async def test_astream_messages_mode_records_the_final_usage(store, handler, openai_server):
    tokens = [
        t
        async for t in agent(stream_usage=True).astream(
            ask(), config={"callbacks": [handler]}, stream_mode="messages"
        )
    ]

    assert len(tokens) > len(TURNS)
    assert_server_usage(store, only_run(store))


def test_streaming_without_usage_records_zeros(store, handler, openai_server):
    list(agent().stream(ask(), config={"callbacks": [handler]}, stream_mode="messages"))

    assert "stream_options" not in openai_server.requests[0]
    run = only_run(store)
    steps = [e.payload for e in store.get_logs(run.run_id) if e.event_type == "step"]
    assert [(s["in_tokens"], s["out_tokens"]) for s in steps] == [(0, 0)] * 3
    assert all("cache_read_tokens" not in s and "thinking_tokens" not in s for s in steps)
    assert [s["model"] for s in steps] == [SERVED] * 3
    assert (run.input_tokens, run.output_tokens) == (0, 0)


async def test_abatch_runs_do_not_cross(store, handler, openai_server):
    results = await agent().abatch([ask(f"q{i}") for i in range(3)], config={"callbacks": [handler]})

    runs = {run.input: run for run in store.list_runs()}
    assert sorted(runs) == ["q0", "q1", "q2"]
    for i, result in enumerate(results):
        check_run_matches_messages(store, runs[f"q{i}"].run_id, result["messages"], model=SERVED)


async def test_stopping_a_token_stream_mid_call_cancels_the_run(store, handler, openai_server):
    stream = agent(stream_usage=True).astream(
        ask(), config={"callbacks": [handler]}, stream_mode="messages"
    )
    first_token, _metadata = await anext(stream)
    assert first_token.content == ""  # the model's reply has begun, not ended
    await stream.aclose()

    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert run.status == "cancelled"
