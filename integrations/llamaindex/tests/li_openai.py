"""A scripted OpenAI Chat Completions server for respx: each request gets the next
turn, as JSON or as server-sent events (with the usage chunk only when the request
asked for ``stream_options.include_usage``, as the real API does)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import respx

BASE_URL = "http://test/v1"
MODEL_SERVED = "gpt-4o-mini-2024-07-18"  # what the server reports, not what was asked


def usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
    }


def call(call_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


@dataclass
class Turn:
    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "stop"
    usage: dict[str, Any] = field(default_factory=lambda: usage(10, 5))


def _completion(turn: Turn, i: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.content, "refusal": None}
    if turn.tool_calls:
        message["tool_calls"] = turn.tool_calls
    return {
        "id": f"chatcmpl-{i}",
        "object": "chat.completion",
        "created": 1_700_000_000 + i,
        "model": MODEL_SERVED,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": turn.finish_reason}],
        "usage": turn.usage,
    }


def _sse(turn: Turn, i: int, include_usage: bool) -> bytes:
    base = {"id": f"chatcmpl-{i}", "object": "chat.completion.chunk", "created": 1_700_000_000 + i, "model": MODEL_SERVED}
    chunks: list[dict[str, Any]] = []

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> None:
        chunks.append({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]})

    chunk({"role": "assistant", "content": ""})
    if turn.content:
        words = turn.content.split(" ")
        for n, word in enumerate(words):
            chunk({"content": word if n == len(words) - 1 else word + " "})
    for index, tool_call in enumerate(turn.tool_calls):
        head = {"index": index, "id": tool_call["id"], "type": "function",
                "function": {"name": tool_call["function"]["name"], "arguments": ""}}
        chunk({"tool_calls": [head]})
        chunk({"tool_calls": [{"index": index, "function": {"arguments": tool_call["function"]["arguments"]}}]})
    chunk({}, turn.finish_reason)
    if include_usage:  # the usage chunk has no choices
        chunks.append({**base, "choices": [], "usage": turn.usage})
    return ("".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n").encode()


class OpenAIServer:
    """The respx side effect: serves ``turns`` in order and keeps the request bodies."""

    def __init__(self, turns: list[Turn]) -> None:
        self.turns = list(turns)
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        i = len(self.requests) - 1
        turn = self.turns[i]
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return httpx.Response(200, content=_sse(turn, i, include_usage),
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=_completion(turn, i))

    def mount(self, router: respx.MockRouter) -> OpenAIServer:
        router.post(f"{BASE_URL}/chat/completions").mock(side_effect=self)
        return self
