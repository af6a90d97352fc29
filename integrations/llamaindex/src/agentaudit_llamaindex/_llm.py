"""Reading a LlamaIndex ``ChatResponse`` into an ``agentaudit.Response``.

LlamaIndex normalizes text and tool calls (``message.content``, ``ToolCallBlock``) but
keeps only prompt and completion counts of the usage (``additional_kwargs``); the
cached and reasoning breakdowns live in the provider's own object at
``response.raw``. That object is read duck-typed, as attributes or mapping keys,
so no provider SDK is imported and a raw ``model_dump()`` dict reads the same.

Everything here is best effort and never raises on odd data: what cannot be read
is left empty.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import agentaudit as aa

__all__ = [
    "chunk_finish_reason",
    "is_structured_wrapper",
    "llm_metadata",
    "provider_of",
    "read_chat_response",
    "tool_calls_of",
]


def _field(obj: Any, name: str) -> Any:
    """``obj[name]`` for a mapping, ``obj.name`` otherwise; None when absent."""
    if obj is None:
        return None
    try:
        if isinstance(obj, Mapping):
            return obj.get(name)
        return getattr(obj, name, None)
    except Exception:  # a property of a half-built object
        return None


def _first(seq: Any) -> Any:
    if isinstance(seq, Sequence) and not isinstance(seq, (str, bytes)) and seq:
        return seq[0]
    return None


def _count(obj: Any, name: str) -> int:
    value = _field(obj, name)
    if isinstance(value, bool):
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value > 0 else 0


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


_PROVIDER_SUFFIX = re.compile(r"[_\-]?llm$", re.IGNORECASE)


def provider_of(model_dict: Mapping[str, Any] | None) -> str:
    """The provider part of ``provider/model``, from the LLM's ``class_name()``
    (``openai_llm`` -> ``openai``, ``Anthropic_LLM`` -> ``anthropic``)."""
    class_name = _text(_field(model_dict, "class_name")).strip()
    if class_name.lower().startswith("mock"):
        return "mock"
    return _PROVIDER_SUFFIX.sub("", class_name).lower()


def is_structured_wrapper(model_dict: Mapping[str, Any] | None) -> bool:
    """Whether the LLM is a ``StructuredLLM`` (``llm.as_structured_llm(cls)``): a
    wrapper whose own name (``structured_llm``) is no provider's."""
    return _text(_field(model_dict, "class_name")).lower().startswith("structured")


def llm_metadata(llm: Any) -> dict[str, Any]:
    """``class_name`` and ``model_name`` of an LLM instance, as ``to_payload()`` gives
    them in recent releases."""
    described: dict[str, Any] = {}
    try:
        described["class_name"] = llm.class_name()
        described["model_name"] = llm.metadata.model_name
    except Exception:  # an LLM whose metadata property needs what it lacks
        pass
    return described


def chunk_finish_reason(raw: Any) -> str:
    """The finish reason a streamed chunk carries, or "" (most chunks carry none)."""
    reason = _text(_field(_first(_field(raw, "choices")), "finish_reason"))
    return reason or _text(_field(raw, "stop_reason")) or _text(_field(raw, "finish_reason"))


def _model(raw: Any, model_dict: Mapping[str, Any] | None) -> str:
    # The model the server reports (a dated snapshot) says more than the one asked for.
    model = _text(_field(raw, "model")) or _text(_field(model_dict, "model_name"))
    model = model or _text(_field(model_dict, "model"))
    if not model:
        return ""
    provider = provider_of(model_dict)
    # Already qualified, as routers name them ("anthropic/claude-…"): keep it whole.
    if "/" in model or not provider:
        return model
    return f"{provider}/{model}"


def _usage(raw: Any, additional_kwargs: Any) -> aa.Usage:
    usage = _field(raw, "usage")
    if usage is None:
        usage = _field(raw, "usage_metadata")  # some integrations' dicts
    if usage is not None:
        if _field(usage, "prompt_tokens") is not None:  # OpenAI Chat Completions
            return aa.Usage(
                input_tokens=_count(usage, "prompt_tokens"),
                output_tokens=_count(usage, "completion_tokens"),
                cache_read_tokens=_count(_field(usage, "prompt_tokens_details"), "cached_tokens"),
                reasoning_tokens=_count(
                    _field(usage, "completion_tokens_details"), "reasoning_tokens"
                ),
            )
        if _field(usage, "cache_read_input_tokens") is not None or (
            _field(usage, "cache_creation_input_tokens") is not None
        ):
            # Anthropic: input_tokens excludes cached input; Usage.input_tokens is the
            # whole prompt with cache_read_tokens a part of it, as OpenAI reports it.
            cache_read = _count(usage, "cache_read_input_tokens")
            cache_write = _count(usage, "cache_creation_input_tokens")
            return aa.Usage(
                input_tokens=_count(usage, "input_tokens") + cache_read + cache_write,
                output_tokens=_count(usage, "output_tokens"),
                cache_read_tokens=cache_read,
            )
        if _field(usage, "input_tokens") is not None:  # OpenAI Responses, Anthropic
            return aa.Usage(
                input_tokens=_count(usage, "input_tokens"),
                output_tokens=_count(usage, "output_tokens"),
                cache_read_tokens=_count(_field(usage, "input_tokens_details"), "cached_tokens"),
                reasoning_tokens=_count(
                    _field(usage, "output_tokens_details"), "reasoning_tokens"
                ),
            )
    # What LlamaIndex itself keeps (prompt and completion counts only).
    return aa.Usage(
        input_tokens=_count(additional_kwargs, "prompt_tokens")
        or _count(additional_kwargs, "input_tokens"),
        output_tokens=_count(additional_kwargs, "completion_tokens")
        or _count(additional_kwargs, "output_tokens"),
    )


def tool_calls_of(message: Any) -> tuple[aa.ToolCall, ...]:
    """The tool calls a chat message asks for: its ``ToolCallBlock`` blocks, or,
    for integrations that do not fill blocks, OpenAI-shaped
    ``additional_kwargs["tool_calls"]``."""
    calls: list[aa.ToolCall] = []
    for block in _field(message, "blocks") or ():
        if _field(block, "block_type") == "tool_call" or type(block).__name__ == "ToolCallBlock":
            calls.append(
                aa.ToolCall.lenient(
                    _text(_field(block, "tool_name")),
                    _field(block, "tool_kwargs"),
                    _text(_field(block, "tool_call_id")),
                )
            )
    if calls:
        return tuple(calls)
    for raw_call in _field(_field(message, "additional_kwargs"), "tool_calls") or ():
        function = _field(raw_call, "function")
        calls.append(
            aa.ToolCall.lenient(
                _text(_field(function, "name")),
                _field(function, "arguments"),
                _text(_field(raw_call, "id")),
            )
        )
    return tuple(calls)


def read_chat_response(
    response: Any, model_dict: Mapping[str, Any] | None, streamed_finish_reason: str = ""
) -> aa.Response:
    """One LLM chat end as an ``agentaudit.Response``.

    ``streamed_finish_reason`` is the reason seen on in-progress chunks: the final
    chunk of an OpenAI stream with ``include_usage`` has no choices, so the end event
    alone cannot tell it.
    """
    raw = _field(response, "raw")
    message = _field(response, "message")
    finish = chunk_finish_reason(raw) or streamed_finish_reason
    return aa.Response(
        text=_text(_field(message, "content")),
        model=_model(raw, model_dict),
        finish_reason=finish,
        usage=_usage(raw, _field(response, "additional_kwargs")),
        tool_calls=tool_calls_of(message),
    )
