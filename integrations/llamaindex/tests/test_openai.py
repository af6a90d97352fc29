"""Workflow agents on the real llama-index-llms-openai client, against a scripted
Chat Completions server (respx): model, finish reason, usage with cached and
reasoning tokens, text and tool calls of every step, streamed or not."""

from __future__ import annotations

import json

import pytest
import respx
from li_openai import BASE_URL, MODEL_SERVED, OpenAIServer, Turn, call, usage
from li_support import add, events, get_weather, only_run, step, tool
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent
from llama_index.llms.openai import OpenAI
from pydantic import BaseModel

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed, paired_tool_events

pytestmark = pytest.mark.usefixtures("instrumented")


MODEL = f"openai/{MODEL_SERVED}"
ANSWER = "Paris is sunny, Rome is sunny, and 2+3=5."
TURNS = [
    Turn("Let me check the weather first.", [call("call_1", "get_weather", {"city": "Paris"})],
         "tool_calls", usage(100, 20, cached=64, reasoning=8)),
    Turn(None, [call("call_2", "add", {"a": 2, "b": 3}), call("call_3", "get_weather", {"city": "Rome"})],
         "tool_calls", usage(150, 30, cached=128, reasoning=16)),
    Turn(ANSWER, [], "stop", usage(200, 15, cached=128)),
]


def openai_llm(*, include_usage: bool = False) -> OpenAI:
    extra = {"additional_kwargs": {"stream_options": {"include_usage": True}}} if include_usage else {}
    return OpenAI(model="gpt-4o-mini", api_base=BASE_URL, api_key="sk-test", max_retries=0, **extra)


def expected_events(*, with_usage: bool) -> list:
    def tokens(turn: Turn) -> dict:
        if not with_usage:
            return {"in_tokens": 0, "out_tokens": 0}
        u = turn.usage
        out = {"in_tokens": u["prompt_tokens"], "out_tokens": u["completion_tokens"]}
        if u["prompt_tokens_details"]["cached_tokens"]:
            out["cache_read_tokens"] = u["prompt_tokens_details"]["cached_tokens"]
        if u["completion_tokens_details"]["reasoning_tokens"]:
            out["thinking_tokens"] = u["completion_tokens_details"]["reasoning_tokens"]
        return out

    return [
        step(1, agent="weather", model=MODEL, finish_reason="tool_calls",
             text="Let me check the weather first.", calls=[("call_1", "get_weather")],
             **tokens(TURNS[0])),
        ("resolved_model", {"model": MODEL}),
        *tool("call_1", "get_weather", '{"city":"Paris"}', "sunny in Paris"),
        step(2, agent="weather", model=MODEL, finish_reason="tool_calls",
             calls=[("call_2", "add"), ("call_3", "get_weather")], **tokens(TURNS[1])),
        *tool("call_2", "add", '{"a":2,"b":3}', "5"),
        *tool("call_3", "get_weather", '{"city":"Rome"}', "sunny in Rome"),
        step(3, agent="weather", model=MODEL, finish_reason="stop", text=ANSWER, **tokens(TURNS[2])),
    ]


@pytest.mark.parametrize(
    ("streaming", "include_usage"),
    [(False, False), (True, False), (True, True)],
    ids=["chat", "stream", "stream-with-usage"],
)
async def test_function_agent_on_openai(
    store: aa.MemoryStore, streaming: bool, include_usage: bool
) -> None:
    agent = FunctionAgent(
        name="weather", tools=[get_weather, add], llm=openai_llm(include_usage=include_usage),
        streaming=streaming,
    )
    with respx.mock(assert_all_called=True) as router:
        server = OpenAIServer(TURNS).mount(router)
        result = await agent.run(user_msg="Weather in Paris and Rome, and 2+3?")

    assert str(result).strip() == ANSWER
    assert len(server.requests) == 3
    assert all(bool(body.get("stream")) == streaming for body in server.requests)
    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    # A stream reports usage only when asked to (stream_options.include_usage).
    with_usage = include_usage or not streaming
    # The two tools of step 2 run in parallel.
    assert paired_tool_events(events(store, run.run_id)) == expected_events(with_usage=with_usage)
    assert (run.status, run.output, run.steps, run.tool_calls) == (
        aa.RunStatus.SUCCEEDED, ANSWER, 3, 3,
    )
    if with_usage:
        assert (run.input_tokens, run.output_tokens, run.thinking_tokens) == (450, 65, 24)
    else:
        assert (run.input_tokens, run.output_tokens, run.thinking_tokens) == (0, 0, 0)


@pytest.mark.parametrize("streaming", [False, True], ids=["chat", "stream-with-usage"])
async def test_react_agent_on_openai(store: aa.MemoryStore, streaming: bool) -> None:
    thought = 'Thought: I need the weather.\nAction: get_weather\nAction Input: {"city": "Oslo"}'
    answer = "Thought: I can answer without using any more tools.\nAnswer: Oslo is sunny."
    turns = [Turn(thought, [], "stop", usage(80, 12, cached=32)),
             Turn(answer, [], "stop", usage(120, 9, reasoning=4))]
    agent = ReActAgent(name="react", tools=[get_weather], llm=openai_llm(include_usage=True),
                       streaming=streaming)
    with respx.mock(assert_all_called=True) as router:
        OpenAIServer(turns).mount(router)
        result = await agent.run(user_msg="Weather in Oslo?")

    assert str(result) == "Oslo is sunny."
    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    logged = events(store, run.run_id)
    call_id = logged[2][1]["id"]
    assert logged == [
        step(1, agent="react", model=MODEL, finish_reason="stop", text=thought,
             calls=[(call_id, "get_weather")], in_tokens=80, out_tokens=12, cache_read_tokens=32),
        ("resolved_model", {"model": MODEL}),
        *tool(call_id, "get_weather", '{"city":"Oslo"}', "sunny in Oslo"),
        step(2, agent="react", model=MODEL, finish_reason="stop", text=answer,
             in_tokens=120, out_tokens=9, thinking_tokens=4),
    ]
    assert (run.output, run.input_tokens, run.output_tokens, run.thinking_tokens) == (
        "Oslo is sunny.", 200, 21, 4,
    )


async def test_a_server_error_fails_the_run(store: aa.MemoryStore) -> None:
    import httpx

    agent = FunctionAgent(name="weather", tools=[get_weather], llm=openai_llm(), streaming=False)
    with respx.mock() as router:
        router.post(f"{BASE_URL}/chat/completions").mock(
            return_value=httpx.Response(500, json={"error": {"message": "overloaded"}})
        )
        with pytest.raises(Exception, match="overloaded"):
            await agent.run(user_msg="Weather?")

    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert run.status == aa.RunStatus.FAILED
    assert "overloaded" in run.error
    [(kind, payload)] = events(store, run.run_id)
    assert kind == "error" and payload["message"].startswith("model call failed: InternalServerError")


class Forecast(BaseModel):
    city: str
    sunny: bool


async def test_the_structured_output_pass_is_a_step_of_the_provider(store, respx_mock):
    # FunctionAgent(output_cls=...) ends with a second model call through a
    # StructuredLLM wrapper: recorded as the OpenAI call it makes (the provider's
    # name, the served model, its usage), so prices and stats keyed on openai/... find it.
    answer = json.dumps({"city": "Paris", "sunny": True})
    OpenAIServer([Turn("It is sunny in Paris.", usage=usage(40, 6)), Turn(answer, usage=usage(30, 7))]).mount(
        respx_mock
    )
    agent = FunctionAgent(name="forecaster", tools=[], llm=openai_llm(), output_cls=Forecast, streaming=False)

    result = await agent.run(user_msg="weather in Paris?")

    assert result.structured_response == {"city": "Paris", "sunny": True}
    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert events(store, run.run_id) == [
        step(1, agent="forecaster", model=MODEL, finish_reason="stop", text="It is sunny in Paris.",
             in_tokens=40, out_tokens=6),
        ("resolved_model", {"model": MODEL}),
        step(2, agent="forecaster", model=MODEL, finish_reason="stop", text=answer, in_tokens=30, out_tokens=7),
    ]
    assert (run.steps, run.input_tokens, run.output_tokens) == (2, 70, 13)
