"""Canned OpenAI Chat Completions answers (JSON and SSE) and a respx side effect
that serves them in order: turn 1 asks for one tool, turn 2 for two in parallel,
turn 3 answers. Every turn reports usage with cached and reasoning tokens."""
from __future__ import annotations

import json
from typing import Any

import httpx
import respx

BASE_URL = "http://test/v1"
MODEL_SERVED = "gpt-4o-mini-2024-07-18"  # what the "server" reports in `model`


def _usage(p: int, c: int, cached: int, reasoning: int) -> dict[str, Any]:
    return {
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": p + c,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
    }


def _tc(call_id: str, name: str, args: dict) -> dict[str, Any]:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)}}


# (assistant content, tool_calls, finish_reason, usage)
TURNS: list[tuple[str | None, list[dict] | None, str, dict]] = [
    ("Let me check the weather first.",
     [_tc("call_1", "get_weather", {"city": "Paris"})], "tool_calls", _usage(100, 20, 64, 8)),
    (None,
     [_tc("call_2", "add", {"a": 2, "b": 3}), _tc("call_3", "get_weather", {"city": "Rome"})],
     "tool_calls", _usage(150, 30, 128, 16)),
    ("Paris is sunny, Rome is sunny, and 2+3=5.", None, "stop", _usage(200, 15, 128, 0)),
]


def completion_json(i: int) -> dict[str, Any]:
    content, tool_calls, finish, usage = TURNS[i]
    msg: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return {
        "id": f"chatcmpl-{i}",
        "object": "chat.completion",
        "created": 1_700_000_000 + i,
        "model": MODEL_SERVED,
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }


def sse_body(i: int, include_usage: bool) -> bytes:
    """Streaming variant of turn i as text/event-stream."""
    content, tool_calls, finish, usage = TURNS[i]
    base = {"id": f"chatcmpl-{i}", "object": "chat.completion.chunk",
            "created": 1_700_000_000 + i, "model": MODEL_SERVED,
            "system_fingerprint": "fp_test"}
    chunks: list[dict[str, Any]] = []

    def ch(delta: dict, finish_reason: str | None = None) -> None:
        chunks.append({**base, "choices": [{"index": 0, "delta": delta,
                                            "logprobs": None, "finish_reason": finish_reason}]})

    ch({"role": "assistant", "content": ""})
    if content:
        for word in content.split(" "):
            ch({"content": word + " "})
    for idx, tc in enumerate(tool_calls or []):
        ch({"tool_calls": [{"index": idx, "id": tc["id"], "type": "function",
                            "function": {"name": tc["function"]["name"], "arguments": ""}}]})
        ch({"tool_calls": [{"index": idx, "function": {"arguments": tc["function"]["arguments"]}}]})
    ch({}, finish)
    if include_usage:  # only sent when request had stream_options.include_usage
        chunks.append({**base, "choices": [], "usage": usage})
    out = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return out.encode()


class FakeOpenAI:
    """respx side effect: answers turn k of a conversation (k = assistant messages
    already in the request) with TURNS[k], so concurrent conversations cannot
    cross; records the request bodies."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        i = sum(1 for m in body["messages"] if m["role"] == "assistant")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return httpx.Response(200, content=sse_body(i, include_usage),
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=completion_json(i))


def mock_openai(router: respx.MockRouter) -> FakeOpenAI:
    fake = FakeOpenAI()
    router.post(f"{BASE_URL}/chat/completions").mock(side_effect=fake)
    return fake
