"""What the tests drive: a deterministic tool-calling chat model for real
``create_agent`` agents, the tools it calls, and the check that a stored run says
exactly what the agent's messages say."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed

PROVIDER = "scripted"
MODEL = "scripted-1"


def usage(i: int, o: int, cache: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": i,
        "output_tokens": o,
        "total_tokens": i + o,
        "input_token_details": {"cache_read": cache},
        "output_token_details": {"reasoning": reasoning},
    }


def ai(
    text: str = "",
    calls: Sequence[tuple[str, dict[str, Any], str]] = (),
    *,
    tokens: tuple[int, int] = (10, 5),
    cache: int = 0,
    reasoning: int = 0,
    finish: str | None = None,
) -> AIMessage:
    """One scripted model turn: text, tool calls as (name, args, id), usage."""
    return AIMessage(
        content=text,
        tool_calls=[{"name": n, "args": a, "id": i, "type": "tool_call"} for n, a, i in calls],
        usage_metadata=usage(*tokens, cache=cache, reasoning=reasoning),
        response_metadata={
            "model_name": MODEL,
            "finish_reason": finish or ("tool_calls" if calls else "stop"),
        },
    )


Responder = Callable[[list[BaseMessage]], AIMessage]


def scripted(*turns: AIMessage) -> Responder:
    """Answer turn k of a conversation (k = AI messages already in it) with
    ``turns[k]``. Stateless, so concurrent conversations cannot cross."""

    def respond(messages: list[BaseMessage]) -> AIMessage:
        k = sum(1 for m in messages if isinstance(m, AIMessage))
        return turns[k].model_copy(deep=True)

    return respond


class ScriptedChatModel(BaseChatModel):
    """A deterministic chat model that supports tools: ``respond`` maps the
    conversation so far to the next AI message."""

    respond: Responder
    model: str = MODEL

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(ls_provider=PROVIDER, ls_model_name=self.model, ls_model_type="chat")

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.respond(messages))])


@tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"sunny in {city}"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


# The conversation of FACTS.md: one tool call, then two in parallel, then the answer.
WEATHER_TURNS = (
    ai(
        "Let me check the weather first.",
        [("get_weather", {"city": "Paris"}, "call_1")],
        tokens=(100, 20),
        cache=64,
        reasoning=8,
    ),
    ai("", [("add", {"a": 2, "b": 3}, "call_2"), ("get_weather", {"city": "Rome"}, "call_3")],
       tokens=(150, 30)),
    ai("Paris is sunny, Rome is sunny, and 2+3=5.", tokens=(200, 15)),
)
QUESTION = "weather in Paris and Rome, and 2+3?"


def ask(text: str = QUESTION) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


# -- checking a stored run against the agent's messages ----------------------------------


def _step_expectation(message: AIMessage, iteration: int, model: str) -> dict[str, Any]:
    usage_md = message.usage_metadata or {}
    expected: dict[str, Any] = {
        "iter": iteration,
        "text_len": len(message.text),
        "in_tokens": usage_md.get("input_tokens", 0),
        "out_tokens": usage_md.get("output_tokens", 0),
    }
    if model:
        expected["model"] = model
    finish = message.response_metadata.get("finish_reason")
    if finish:
        expected["finish_reason"] = finish
    cache = (usage_md.get("input_token_details") or {}).get("cache_read", 0)
    reasoning = (usage_md.get("output_token_details") or {}).get("reasoning", 0)
    if cache:
        expected["cache_read_tokens"] = cache
    if reasoning:
        expected["thinking_tokens"] = reasoning
    if message.tool_calls:
        expected["requested_tool_calls"] = [
            {"id": call["id"], "name": call["name"]} for call in message.tool_calls
        ]
    if message.text.strip():
        expected["text"] = message.text.strip()
    return expected


def _tool_result_text(message: ToolMessage) -> str:
    return message.content if isinstance(message.content, str) else json.dumps(message.content)


def check_run_matches_messages(
    store: aa.Store,
    run_id: str,
    messages: Sequence[BaseMessage],
    *,
    model: str = f"{PROVIDER}/{MODEL}",
    status: str = "succeeded",
) -> list[aa.Event]:
    """Assert that the run's events are, one
    by one, a step per AI message (text, model, finish reason, tokens), then for each
    of its tool calls a tool_call (name, JSON arguments, id) recorded when the tool
    started and, later, its tool_result (the ToolMessage's content). The tools of one
    step run in parallel, so their calls and results may interleave; each result
    still comes after its own call. Returns the events."""
    assert_run_well_formed(store, run_id)
    run = store.get_run(run_id)
    assert run is not None
    assert run.status == status, (run.status, run.error)
    events = store.get_logs(run_id)
    results = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    position = 0
    iteration = 0
    first_model_logged = False
    for message in messages:
        if not isinstance(message, AIMessage):
            continue
        iteration += 1
        step = events[position]
        assert step.event_type == "step", (position, step)
        expected = _step_expectation(message, iteration, model)
        got = {k: v for k, v in step.payload.items() if k != "step_ms"}
        assert got == expected, (iteration, got, expected)
        assert isinstance(step.payload["step_ms"], (int, float))
        position += 1
        if model and not first_model_logged:
            assert events[position].event_type == "resolved_model"
            assert events[position].payload == {"model": model}
            first_model_logged = True
            position += 1
        expected_calls = {
            call["id"]: {
                "name": call["name"],
                "args": json.dumps(call["args"], sort_keys=True, separators=(",", ":")),
                "id": call["id"],
            }
            for call in message.tool_calls
        }
        block = events[position : position + 2 * len(expected_calls)]
        position += len(block)
        started: set[str] = set()
        finished: set[str] = set()
        for event in block:
            call_id = event.payload["id"]
            if event.event_type == "tool_call":
                assert event.payload == expected_calls[call_id], event
                assert call_id not in started, event
                started.add(call_id)
                continue
            assert event.event_type == "tool_result", event
            assert call_id in started and call_id not in finished, event  # after its call
            finished.add(call_id)
            tool_message = results[call_id]
            assert event.payload["name"] == expected_calls[call_id]["name"]
            assert event.payload["result"] == _tool_result_text(tool_message)
            assert event.payload["truncated"] is False
            assert event.payload.get("error", False) is (tool_message.status == "error")
            assert event.payload["duration_ms"] >= 0
        assert started == finished == set(expected_calls), (started, finished)
    assert position == len(events), events[position:]
    assert run.steps == iteration
    assert run.tool_calls == sum(len(m.tool_calls) for m in messages if isinstance(m, AIMessage))
    return events


def human_text(messages: Sequence[BaseMessage]) -> str:
    return next(m.text for m in reversed(messages) if isinstance(m, HumanMessage))
