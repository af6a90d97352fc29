"""Helpers shared by the LlamaIndex adapter tests: scripted models, tools, and
reading back what the store holds."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM

import agentaudit as aa


def tool_calls(*calls: tuple[str, str, dict[str, Any]]) -> ChatMessage:
    """An assistant message asking for tools: ``(id, name, kwargs)`` each."""
    return ChatMessage(
        role="assistant",
        blocks=[ToolCallBlock(tool_call_id=i, tool_name=n, tool_kwargs=kw) for i, n, kw in calls],
    )


def say(text: str) -> ChatMessage:
    return ChatMessage(role="assistant", content=text)


def scripted(*messages: ChatMessage) -> Callable[..., ChatMessage]:
    """A response generator giving ``messages`` in order, one per model call."""
    script = list(messages)

    def generate(_messages: Any, **_kwargs: Any) -> ChatMessage:
        return script.pop(0)

    return generate


def mock_llm(*messages: ChatMessage, react: bool = False) -> MockFunctionCallingLLM:
    return MockFunctionCallingLLM(response_generator=scripted(*messages), is_chat_model=react)


def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"sunny in {city}"


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def flaky(x: int) -> str:
    """A tool that always fails."""
    raise ValueError(f"flaky failed for {x}")


def only_run(store: aa.Store) -> aa.Run:
    runs = store.list_runs(aa.RunFilter())
    assert len(runs) == 1, [r.name for r in runs]
    return runs[0]


def events(store: aa.Store, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The run's events as ``(event_type, payload)``, with the wall-clock fields
    (``step_ms``, ``duration_ms``) checked for shape and taken out."""
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


def types(store: aa.Store, run_id: str) -> list[str]:
    return [event.event_type for event in store.get_logs(run_id)]


def step(
    iter: int,
    *,
    agent: str,
    model: str = "mock/unknown",
    text: str = "",
    finish_reason: str = "",
    in_tokens: int = 0,
    out_tokens: int = 0,
    calls: Iterable[tuple[str, str]] = (),
    **more: Any,
) -> tuple[str, dict[str, Any]]:
    """The expected ``step`` event, as :func:`events` gives it; ``calls`` are the
    ``(id, name)`` of the tool calls the model asked for."""
    payload: dict[str, Any] = {"iter": iter, "text_len": len(text), "model": model,
                               "in_tokens": in_tokens, "out_tokens": out_tokens, "agent": agent}
    if finish_reason:
        payload["finish_reason"] = finish_reason
    requested = [{"id": call_id, "name": name} for call_id, name in calls]
    if requested:
        payload["requested_tool_calls"] = requested
    if text.strip():
        payload["text"] = text.strip()
    payload.update(more)
    return ("step", payload)


def tool(
    call_id: str, name: str, args: str, result: str, *, error: bool = False
) -> Iterable[tuple[str, dict[str, Any]]]:
    """The expected ``tool_call`` and ``tool_result`` events of one tool execution."""
    outcome: dict[str, Any] = {"name": name, "id": call_id, "result": result, "truncated": False}
    if error:
        outcome["error"] = True
    return [("tool_call", {"name": name, "args": args, "id": call_id}), ("tool_result", outcome)]
