"""Hand-written tool-calling loops over the real `openai` and `anthropic` clients,
offline: OpenAI against respx-mocked Chat Completions and Responses endpoints,
Anthropic through an `httpx2.MockTransport`. Sync, async and streaming (the final
message the SDK's stream helper assembles). Each stored run is checked event by event
against what the mocked API returned, and with `assert_run_well_formed`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
import respx

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed, paired_tool_events


@dataclass(frozen=True)
class Turn:
    """One model turn of the scripted conversation, provider-neutral."""

    text: str
    calls: tuple[tuple[str, dict[str, Any]], ...]
    input_tokens: int  # the whole prompt, cached part included
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int


TURNS = (
    Turn("Let me check the weather first.", (("get_weather", {"city": "Paris"}),), 100, 20, 64, 8),
    Turn("", (("add", {"a": 2, "b": 3}), ("get_weather", {"city": "Rome"})), 150, 30, 128, 16),
    Turn("Paris is sunny, Rome is sunny, and 2+3=5.", (), 200, 15, 128, 0),
)


def call_id(prefix: str, turn: int, index: int) -> str:
    return f"{prefix}_{turn}{index}"


def sse(events: list[tuple[str | None, dict[str, Any]]], done: bool = False) -> bytes:
    out = []
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        out.append(f"{head}data: {json.dumps(data)}\n\n")
    if done:
        out.append("data: [DONE]\n\n")
    return "".join(out).encode()


# -- OpenAI Chat Completions --------------------------------------------------------------

CHAT_MODEL = "gpt-4o-mini-2024-07-18"


def chat_usage(t: Turn) -> dict[str, Any]:
    return {
        "prompt_tokens": t.input_tokens,
        "completion_tokens": t.output_tokens,
        "total_tokens": t.input_tokens + t.output_tokens,
        "prompt_tokens_details": {"cached_tokens": t.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": t.reasoning_tokens, "audio_tokens": 0},
    }


def chat_tool_calls(i: int, t: Turn) -> list[dict[str, Any]]:
    return [
        {"id": call_id("call", i, j), "type": "function",
         "function": {"name": name, "arguments": json.dumps(args)}}
        for j, (name, args) in enumerate(t.calls)
    ]


def chat_finish(t: Turn) -> str:
    return "tool_calls" if t.calls else "stop"


def chat_json(i: int) -> dict[str, Any]:
    t = TURNS[i]
    message: dict[str, Any] = {"role": "assistant", "content": t.text or None, "refusal": None}
    if t.calls:
        message["tool_calls"] = chat_tool_calls(i, t)
    return {
        "id": f"chatcmpl-{i}", "object": "chat.completion", "created": 1_700_000_000 + i,
        "model": CHAT_MODEL,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": chat_finish(t)}],
        "usage": chat_usage(t),
    }


def chat_sse(i: int, include_usage: bool) -> bytes:
    t = TURNS[i]
    base = {"id": f"chatcmpl-{i}", "object": "chat.completion.chunk",
            "created": 1_700_000_000 + i, "model": CHAT_MODEL}
    chunks: list[dict[str, Any]] = []

    def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
        chunks.append({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                            "finish_reason": finish}]})

    chunk({"role": "assistant", "content": ""})
    words = t.text.split(" ") if t.text else []
    for k, word in enumerate(words):
        chunk({"content": word if k == len(words) - 1 else word + " "})
    for j, call in enumerate(chat_tool_calls(i, t)):
        args = call["function"]["arguments"]
        chunk({"tool_calls": [{"index": j, "id": call["id"], "type": "function",
                               "function": {"name": call["function"]["name"], "arguments": ""}}]})
        half = len(args) // 2
        chunk({"tool_calls": [{"index": j, "function": {"arguments": args[:half]}}]})
        chunk({"tool_calls": [{"index": j, "function": {"arguments": args[half:]}}]})
    chunk({}, chat_finish(t))
    if include_usage:
        chunks.append({**base, "choices": [], "usage": chat_usage(t)})
    return sse([(None, c) for c in chunks], done=True)


# -- OpenAI Responses ---------------------------------------------------------------

RESPONSES_MODEL = "gpt-4.1-mini-2025-04-14"


def responses_items(i: int, t: Turn) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if t.text:
        items.append({"id": f"msg_{i}", "type": "message", "role": "assistant", "status": "completed",
                      "content": [{"type": "output_text", "text": t.text, "annotations": []}]})
    for j, (name, args) in enumerate(t.calls):
        items.append({"id": f"fc_{i}{j}", "type": "function_call", "call_id": call_id("call", i, j),
                      "name": name, "arguments": json.dumps(args), "status": "completed"})
    return items


def responses_json(i: int, *, status: str = "completed", items: bool = True) -> dict[str, Any]:
    t = TURNS[i]
    return {
        "id": f"resp_{i}", "object": "response", "created_at": 1_700_000_000.0 + i,
        "model": RESPONSES_MODEL, "status": status,
        "output": responses_items(i, t) if items else [],
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "usage": None if not items else {
            "input_tokens": t.input_tokens,
            "input_tokens_details": {"cached_tokens": t.cached_tokens},
            "output_tokens": t.output_tokens,
            "output_tokens_details": {"reasoning_tokens": t.reasoning_tokens},
            "total_tokens": t.input_tokens + t.output_tokens,
        },
    }


def responses_sse(i: int) -> bytes:
    t = TURNS[i]
    seq = iter(range(10_000))
    events: list[tuple[str | None, dict[str, Any]]] = []

    def ev(kind: str, **data: Any) -> None:
        events.append((kind, {"type": kind, "sequence_number": next(seq), **data}))

    ev("response.created", response=responses_json(i, status="in_progress", items=False))
    for index, item in enumerate(responses_items(i, t)):
        if item["type"] == "message":
            ev("response.output_item.added", output_index=index,
               item={**item, "status": "in_progress", "content": []})
            part = {"type": "output_text", "text": "", "annotations": []}
            ev("response.content_part.added", item_id=item["id"], output_index=index,
               content_index=0, part=part)
            for word in t.text.split(" "):
                ev("response.output_text.delta", item_id=item["id"], output_index=index,
                   content_index=0, delta=word + " ", logprobs=[])
            ev("response.output_text.done", item_id=item["id"], output_index=index,
               content_index=0, text=t.text, logprobs=[])
        else:
            ev("response.output_item.added", output_index=index,
               item={**item, "arguments": "", "status": "in_progress"})
            ev("response.function_call_arguments.delta", item_id=item["id"],
               output_index=index, delta=item["arguments"])
            ev("response.function_call_arguments.done", item_id=item["id"],
               output_index=index, arguments=item["arguments"], name=item["name"])
        ev("response.output_item.done", output_index=index, item=item)
    ev("response.completed", response=responses_json(i))
    return sse(events)


# -- Anthropic Messages ----------------------------------------------------------------

ANTHROPIC_MODEL = "claude-sonnet-4-6"


def anthropic_usage(t: Turn) -> dict[str, Any]:
    # Anthropic counts cached input apart from input_tokens.
    return {"input_tokens": t.input_tokens - t.cached_tokens, "output_tokens": t.output_tokens,
            "cache_read_input_tokens": t.cached_tokens, "cache_creation_input_tokens": 0,
            "output_tokens_details": {"thinking_tokens": t.reasoning_tokens}}


def anthropic_blocks(i: int, t: Turn) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if t.text:
        blocks.append({"type": "text", "text": t.text})
    for j, (name, args) in enumerate(t.calls):
        blocks.append({"type": "tool_use", "id": call_id("toolu", i, j), "name": name, "input": args})
    return blocks


def anthropic_stop(t: Turn) -> str:
    return "tool_use" if t.calls else "end_turn"


def anthropic_json(i: int) -> dict[str, Any]:
    t = TURNS[i]
    return {"id": f"msg_{i}", "type": "message", "role": "assistant", "model": ANTHROPIC_MODEL,
            "content": anthropic_blocks(i, t), "stop_reason": anthropic_stop(t),
            "stop_sequence": None, "usage": anthropic_usage(t)}


def anthropic_sse(i: int) -> bytes:
    t = TURNS[i]
    start = {**anthropic_json(i), "content": [], "stop_reason": None,
             "usage": {**anthropic_usage(t), "output_tokens": 1}}
    events: list[tuple[str | None, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(anthropic_blocks(i, t)):
        if block["type"] == "text":
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "text", "text": ""}}))
            words = block["text"].split(" ")
            for k, word in enumerate(words):
                piece = word if k == len(words) - 1 else word + " "
                events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "text_delta", "text": piece}}))
        else:
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {**block, "input": {}}}))
            raw = json.dumps(block["input"])
            half = len(raw) // 2
            for piece in (raw[:half], raw[half:]):
                events.append(("content_block_delta", {
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": anthropic_stop(t), "stop_sequence": None},
                                     "usage": {"output_tokens": t.output_tokens}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return sse(events)


@dataclass
class ScriptedAPI:
    """Serves TURNS in order to whichever SDK calls; keeps each request body."""

    requests: list[dict[str, Any]] = field(default_factory=list)

    def _next(self, request_content: bytes) -> tuple[int, dict[str, Any]]:
        body = json.loads(request_content)
        self.requests.append(body)
        return len(self.requests) - 1, body

    def openai_chat(self, request: httpx.Request) -> httpx.Response:
        i, body = self._next(request.content)
        if body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            return httpx.Response(200, content=chat_sse(i, include),
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=chat_json(i))

    def openai_responses(self, request: httpx.Request) -> httpx.Response:
        i, body = self._next(request.content)
        if body.get("stream"):
            return httpx.Response(200, content=responses_sse(i),
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=responses_json(i))

    def anthropic_messages(self, request: httpx2.Request) -> httpx2.Response:
        i, body = self._next(request.content)
        if body.get("stream"):
            return httpx2.Response(200, content=anthropic_sse(i),
                                   headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, json=anthropic_json(i))


# -- the tools, and the loops a team would write ---------------------------------------

QUESTION = "What is the weather in Paris and Rome, and what is 2 + 3?"


def weather(city: str) -> str:
    return f"{city}: sunny, 22 C"


def plus(a: int, b: int) -> int:
    return a + b


TOOL_IMPLS: dict[str, Callable[..., Any]] = {"get_weather": weather, "add": plus}


@aa.audit_tool(name="get_weather")
def get_weather_tool(city: str) -> str:
    return weather(city)


@aa.audit_tool
def add(a: int, b: int) -> int:
    return plus(a, b)


@aa.audit_tool(name="get_weather")
async def get_weather_async(city: str) -> str:
    await asyncio.sleep(0)  # let the other tool of the step run meanwhile
    return weather(city)


@aa.audit_tool(name="add")
async def add_async(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return plus(a, b)


SYNC_TOOLS: dict[str, Callable[..., Any]] = {"get_weather": get_weather_tool, "add": add}
ASYNC_TOOLS: dict[str, Callable[..., Any]] = {"get_weather": get_weather_async, "add": add_async}

_WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
_ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
# strict: the Chat Completions stream helper insists on it
CHAT_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": _WEATHER_SCHEMA, "strict": True}},
    {"type": "function", "function": {"name": "add", "parameters": _ADD_SCHEMA, "strict": True}},
]
RESPONSES_TOOLS = [
    {"type": "function", "name": "get_weather", "parameters": _WEATHER_SCHEMA, "strict": True},
    {"type": "function", "name": "add", "parameters": _ADD_SCHEMA, "strict": True},
]
ANTHROPIC_TOOLS = [
    {"name": "get_weather", "input_schema": _WEATHER_SCHEMA},
    {"name": "add", "input_schema": _ADD_SCHEMA},
]
MAX_STEPS = 5


def chat_loop(client: openai.OpenAI, question: str, *, stream: bool) -> str:
    messages: list[Any] = [{"role": "user", "content": question}]
    for _ in range(MAX_STEPS):
        if stream:
            with client.chat.completions.stream(
                model="gpt-4o-mini",
                messages=messages,
                tools=CHAT_TOOLS,
                stream_options={"include_usage": True},
            ) as events:
                for _event in events:
                    pass
                completion = events.get_final_completion()
        else:
            completion = client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, tools=CHAT_TOOLS
            )
        aa.record_step(completion)
        message = completion.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            return message.content or ""
        for call in message.tool_calls:
            tool = SYNC_TOOLS[call.function.name]
            result = tool(**json.loads(call.function.arguments), tool_call_id=call.id)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": str(result)})
    raise AssertionError("the loop did not finish")


async def chat_loop_async(client: openai.AsyncOpenAI, question: str, *, stream: bool) -> str:
    messages: list[Any] = [{"role": "user", "content": question}]
    for _ in range(MAX_STEPS):
        if stream:
            async with client.chat.completions.stream(
                model="gpt-4o-mini",
                messages=messages,
                tools=CHAT_TOOLS,
                stream_options={"include_usage": True},
            ) as events:
                async for _event in events:
                    pass
                completion = await events.get_final_completion()
        else:
            completion = await client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, tools=CHAT_TOOLS
            )
        aa.record_step(completion)
        message = completion.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            return message.content or ""
        calls = message.tool_calls
        results = await asyncio.gather(
            *(
                ASYNC_TOOLS[c.function.name](**json.loads(c.function.arguments), tool_call_id=c.id)
                for c in calls
            )
        )
        for call, result in zip(calls, results, strict=True):
            messages.append({"role": "tool", "tool_call_id": call.id, "content": str(result)})
    raise AssertionError("the loop did not finish")


def responses_loop(client: openai.OpenAI, question: str, *, stream: bool) -> str:
    history: list[Any] = [{"role": "user", "content": question}]
    for _ in range(MAX_STEPS):
        if stream:
            with client.responses.stream(
                model="gpt-4.1-mini", input=history, tools=RESPONSES_TOOLS
            ) as events:
                for _event in events:
                    pass
                response = events.get_final_response()
        else:
            response = client.responses.create(
                model="gpt-4.1-mini", input=history, tools=RESPONSES_TOOLS
            )
        aa.record_step(response)
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            return response.output_text
        history += [item.model_dump(exclude_none=True) for item in response.output]
        for call in calls:
            result = SYNC_TOOLS[call.name](**json.loads(call.arguments), tool_call_id=call.call_id)
            history.append(
                {"type": "function_call_output", "call_id": call.call_id, "output": str(result)}
            )
    raise AssertionError("the loop did not finish")


async def responses_loop_async(client: openai.AsyncOpenAI, question: str, *, stream: bool) -> str:
    history: list[Any] = [{"role": "user", "content": question}]
    for _ in range(MAX_STEPS):
        if stream:
            async with client.responses.stream(
                model="gpt-4.1-mini", input=history, tools=RESPONSES_TOOLS
            ) as events:
                async for _event in events:
                    pass
                response = await events.get_final_response()
        else:
            response = await client.responses.create(
                model="gpt-4.1-mini", input=history, tools=RESPONSES_TOOLS
            )
        aa.record_step(response)
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            return response.output_text
        history += [item.model_dump(exclude_none=True) for item in response.output]
        results = await asyncio.gather(
            *(ASYNC_TOOLS[c.name](**json.loads(c.arguments), tool_call_id=c.call_id) for c in calls)
        )
        for call, result in zip(calls, results, strict=True):
            history.append(
                {"type": "function_call_output", "call_id": call.call_id, "output": str(result)}
            )
    raise AssertionError("the loop did not finish")


def anthropic_loop(client: anthropic.Anthropic, question: str, *, stream: bool) -> str:
    messages: list[Any] = [{"role": "user", "content": question}]
    for _ in range(MAX_STEPS):
        request = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "messages": messages,
                   "tools": ANTHROPIC_TOOLS}
        if stream:
            with client.messages.stream(**request) as events:
                for _text in events.text_stream:
                    pass
                message = events.get_final_message()
        else:
            message = client.messages.create(**request)
        aa.record_step(message)
        messages.append({"role": "assistant", "content": [b.model_dump() for b in message.content]})
        uses = [block for block in message.content if block.type == "tool_use"]
        if not uses:
            return "".join(block.text for block in message.content if block.type == "text")
        results = [SYNC_TOOLS[use.name](**use.input, tool_call_id=use.id) for use in uses]
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": use.id, "content": str(result)}
            for use, result in zip(uses, results, strict=True)
        ]})
    raise AssertionError("the loop did not finish")


async def anthropic_loop_async(client: anthropic.AsyncAnthropic, question: str, *, stream: bool) -> str:
    messages: list[Any] = [{"role": "user", "content": question}]
    for _ in range(MAX_STEPS):
        request = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "messages": messages,
                   "tools": ANTHROPIC_TOOLS}
        if stream:
            async with client.messages.stream(**request) as events:
                async for _text in events.text_stream:
                    pass
                message = await events.get_final_message()
        else:
            message = await client.messages.create(**request)
        aa.record_step(message)
        messages.append({"role": "assistant", "content": [b.model_dump() for b in message.content]})
        uses = [block for block in message.content if block.type == "tool_use"]
        if not uses:
            return "".join(block.text for block in message.content if block.type == "text")
        results = await asyncio.gather(
            *(ASYNC_TOOLS[use.name](**use.input, tool_call_id=use.id) for use in uses)
        )
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": use.id, "content": str(result)}
            for use, result in zip(uses, results, strict=True)
        ]})
    raise AssertionError("the loop did not finish")


# -- driving the loops, and what the store must then hold ------------------------------

OPENAI_BASE = "http://test/v1"
ANTHROPIC_BASE = "http://an.test"


@dataclass(frozen=True)
class API:
    """One provider API: its recorded model name, call ids and stop reasons."""

    name: str
    model: str
    id_prefix: str
    finish: Callable[[Turn], str]


CHAT = API("chat", f"openai/{CHAT_MODEL}", "call", chat_finish)
RESPONSES = API("responses", f"openai/{RESPONSES_MODEL}", "call", lambda t: "completed")
ANTHROPIC = API("anthropic", f"anthropic/{ANTHROPIC_MODEL}", "toolu", anthropic_stop)


def expected_events(api: API) -> list[tuple[str, dict[str, Any]]]:
    """The events a run of the scripted conversation must hold, in order, as the
    mocked API returned it (without step_ms and duration_ms, which are timings)."""
    events: list[tuple[str, dict[str, Any]]] = []
    for i, turn in enumerate(TURNS):
        step: dict[str, Any] = {
            "iter": i + 1,
            "text_len": len(turn.text),
            "model": api.model,
            "finish_reason": api.finish(turn),
            "in_tokens": turn.input_tokens,
            "out_tokens": turn.output_tokens,
        }
        if turn.reasoning_tokens:
            step["thinking_tokens"] = turn.reasoning_tokens
        if turn.cached_tokens:
            step["cache_read_tokens"] = turn.cached_tokens
        if turn.calls:  # what the model asked for, whether or not it ran
            step["requested_tool_calls"] = [
                {"id": call_id(api.id_prefix, i, j), "name": name} for j, (name, _) in enumerate(turn.calls)
            ]
        if turn.text:
            step["text"] = turn.text
        events.append(("step", step))
        if i == 0:
            events.append(("resolved_model", {"model": api.model}))
        for j, (name, args) in enumerate(turn.calls):
            cid = call_id(api.id_prefix, i, j)
            result = TOOL_IMPLS[name](**args)
            events.append(
                ("tool_call", {"name": name, "args": json.dumps(args, sort_keys=True, separators=(",", ":")), "id": cid})
            )
            events.append(
                ("tool_result", {"name": name, "id": cid, "result": result if isinstance(result, str) else json.dumps(result), "truncated": False})
            )
    return events


def recorded_events(store: aa.Store, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The run's events, with their timings checked and set aside."""
    out = []
    for event in store.get_logs(run_id):
        payload = dict(event.payload)
        if event.event_type == "step":
            step_ms = payload.pop("step_ms")
            assert isinstance(step_ms, (int, float)) and step_ms >= 0
        if event.event_type == "tool_result":
            duration = payload.pop("duration_ms")
            assert isinstance(duration, (int, float)) and duration >= 0
        out.append((event.event_type, payload))
    return out


def check_run(store: aa.Store, api: API, answer: str, name: str) -> None:
    assert answer == TURNS[-1].text
    [run] = store.list_runs(aa.RunFilter(name=name))
    assert_run_well_formed(store, run.run_id)
    assert paired_tool_events(recorded_events(store, run.run_id)) == expected_events(api)
    assert run.status is aa.RunStatus.SUCCEEDED
    assert json.loads(run.input) == {"question": QUESTION}
    assert run.output == answer
    assert run.steps == len(TURNS)
    assert run.tool_calls == sum(len(t.calls) for t in TURNS)
    assert run.input_tokens == sum(t.input_tokens for t in TURNS)
    assert run.output_tokens == sum(t.output_tokens for t in TURNS)
    assert run.thinking_tokens == sum(t.reasoning_tokens for t in TURNS)


@pytest.fixture
def store() -> aa.MemoryStore:
    return aa.MemoryStore()


@pytest.fixture
def auditor(store: aa.MemoryStore) -> aa.Auditor:
    return aa.Auditor(store, strict=True)  # strict: a fault inside a hook fails the test


@pytest.fixture
def scripted() -> ScriptedAPI:
    return ScriptedAPI()


@pytest.fixture
def openai_mock(scripted: ScriptedAPI) -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=OPENAI_BASE, assert_all_called=False) as router:
        router.post("/chat/completions").mock(side_effect=scripted.openai_chat)
        router.post("/responses").mock(side_effect=scripted.openai_responses)
        yield router


SYNC_OPENAI_LOOPS = {"chat": (CHAT, chat_loop), "responses": (RESPONSES, responses_loop)}
ASYNC_OPENAI_LOOPS = {"chat": (CHAT, chat_loop_async), "responses": (RESPONSES, responses_loop_async)}


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("endpoint", ["chat", "responses"])
def test_openai_sync_loop(
    endpoint: str, stream: bool, store: aa.MemoryStore, auditor: aa.Auditor,
    scripted: ScriptedAPI, openai_mock: respx.MockRouter,
) -> None:
    api, loop = SYNC_OPENAI_LOOPS[endpoint]
    client = openai.OpenAI(base_url=OPENAI_BASE, api_key="sk-test", max_retries=0)

    @aa.audited(auditor, name="openai-agent")
    def agent(question: str) -> str:
        return loop(client, question, stream=stream)

    answer = agent(QUESTION)

    assert len(scripted.requests) == len(TURNS)
    check_run(store, api, answer, "openai-agent")


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("endpoint", ["chat", "responses"])
async def test_openai_async_loop(
    endpoint: str, stream: bool, store: aa.MemoryStore, auditor: aa.Auditor,
    scripted: ScriptedAPI, openai_mock: respx.MockRouter,
) -> None:
    api, loop = ASYNC_OPENAI_LOOPS[endpoint]
    client = openai.AsyncOpenAI(base_url=OPENAI_BASE, api_key="sk-test", max_retries=0)

    @aa.audited(auditor, name="openai-agent")
    async def agent(question: str) -> str:
        return await loop(client, question, stream=stream)

    answer = await agent(QUESTION)

    assert len(scripted.requests) == len(TURNS)
    check_run(store, api, answer, "openai-agent")


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_anthropic_sync_loop(
    stream: bool, store: aa.MemoryStore, auditor: aa.Auditor, scripted: ScriptedAPI
) -> None:
    client = anthropic.Anthropic(
        base_url=ANTHROPIC_BASE, api_key="k", max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(scripted.anthropic_messages)),
    )

    @aa.audited(auditor, name="anthropic-agent")
    def agent(question: str) -> str:
        return anthropic_loop(client, question, stream=stream)

    answer = agent(QUESTION)

    assert len(scripted.requests) == len(TURNS)
    check_run(store, ANTHROPIC, answer, "anthropic-agent")


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_anthropic_async_loop(
    stream: bool, store: aa.MemoryStore, auditor: aa.Auditor, scripted: ScriptedAPI
) -> None:
    client = anthropic.AsyncAnthropic(
        base_url=ANTHROPIC_BASE, api_key="k", max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(scripted.anthropic_messages)),
    )

    @aa.audited(auditor, name="anthropic-agent")
    async def agent(question: str) -> str:
        return await anthropic_loop_async(client, question, stream=stream)

    answer = await agent(QUESTION)

    assert len(scripted.requests) == len(TURNS)
    check_run(store, ANTHROPIC, answer, "anthropic-agent")


async def test_concurrent_agents_over_both_sdks_keep_their_runs_apart(
    store: aa.MemoryStore, auditor: aa.Auditor, openai_mock: respx.MockRouter
) -> None:
    scripted_anthropic = ScriptedAPI()
    openai_client = openai.AsyncOpenAI(base_url=OPENAI_BASE, api_key="sk-test", max_retries=0)
    anthropic_client = anthropic.AsyncAnthropic(
        base_url=ANTHROPIC_BASE, api_key="k", max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(scripted_anthropic.anthropic_messages)),
    )

    @aa.audited(auditor, name="openai-agent")
    async def openai_agent(question: str) -> str:
        return await chat_loop_async(openai_client, question, stream=True)

    @aa.audited(auditor, name="anthropic-agent")
    async def anthropic_agent(question: str) -> str:
        return await anthropic_loop_async(anthropic_client, question, stream=False)

    first, second = await asyncio.gather(openai_agent(QUESTION), anthropic_agent(QUESTION))

    check_run(store, CHAT, first, "openai-agent")
    check_run(store, ANTHROPIC, second, "anthropic-agent")


def test_an_api_error_fails_the_run_with_the_sdk_exception(
    store: aa.MemoryStore, auditor: aa.Auditor, scripted: ScriptedAPI
) -> None:
    served = 0

    def first_turn_then_overloaded(request: httpx2.Request) -> httpx2.Response:
        nonlocal served
        served += 1
        if served == 1:
            return scripted.anthropic_messages(request)
        return httpx2.Response(
            529, json={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        )

    client = anthropic.Anthropic(
        base_url=ANTHROPIC_BASE, api_key="k", max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(first_turn_then_overloaded)),
    )

    @aa.audited(auditor, name="anthropic-agent")
    def agent(question: str) -> str:
        return anthropic_loop(client, question, stream=False)

    with pytest.raises(anthropic.APIStatusError):
        agent(QUESTION)

    [run] = store.list_runs(aa.RunFilter(name="anthropic-agent"))
    assert run.status is aa.RunStatus.FAILED
    assert "Overloaded" in run.error
    assert_run_well_formed(store, run.run_id)
    # what happened before the failure is all there: step 1 and its tool call
    assert recorded_events(store, run.run_id) == expected_events(ANTHROPIC)[:4]


# -- the examples of docs/custom-loops.md run as written -----------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "custom-loops.md"


def docs_example(name: str) -> str:
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"no example {name!r} in {DOCS}"
    return match.group(1)


@pytest.fixture
def docs_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    previous = aa.configure(None)
    yield
    aa.configure(previous)


def run_docs_example(name: str, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    namespace: dict[str, Any] = {"__name__": f"docs_example_{name.replace('-', '_')}"}
    exec(compile(docs_example(name), f"{DOCS.name}:{name}", "exec"), namespace)
    return namespace, capsys.readouterr().out


def check_docs_run(namespace: dict[str, Any], api: API) -> None:
    store = namespace["store"]
    [run] = store.list_runs(aa.RunFilter(name="weather-agent"))
    assert_run_well_formed(store, run.run_id)
    assert run.status is aa.RunStatus.SUCCEEDED
    assert run.output == TURNS[-1].text
    assert [e.event_type for e in store.get_logs(run.run_id)] == [t for t, _ in expected_events(api)]


@pytest.mark.parametrize(("example", "api"), [("openai-chat", CHAT), ("openai-responses", RESPONSES)])
def test_docs_openai_examples_run(
    example: str, api: API, docs_env: None, scripted: ScriptedAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    with respx.mock(base_url="https://api.openai.com/v1", assert_all_called=False) as router:
        router.post("/chat/completions").mock(side_effect=scripted.openai_chat)
        router.post("/responses").mock(side_effect=scripted.openai_responses)
        namespace, printed = run_docs_example(example, capsys)
    assert TURNS[-1].text in printed
    check_docs_run(namespace, api)


def test_docs_anthropic_example_runs(
    docs_env: None, scripted: ScriptedAPI, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The example builds AsyncAnthropic() itself: hand it the mock transport.
    monkeypatch.setattr(
        anthropic, "AsyncAnthropic", functools.partial(
            anthropic.AsyncAnthropic,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(scripted.anthropic_messages)),
        ),
    )
    namespace, printed = run_docs_example("anthropic", capsys)
    assert TURNS[-1].text in printed
    check_docs_run(namespace, ANTHROPIC)
