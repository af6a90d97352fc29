"""One model call's ``LLMResult`` as an `agentaudit.Response`.

Where LangChain keeps each field (langchain-core 1.x): the ``AIMessage`` of the
first generation carries the text, ``response_metadata`` (served model name and
finish reason), ``usage_metadata`` (LangChain's provider-neutral token counts, also
when streaming: the aggregated message's usage is the final usage, never a sum of
chunk deltas) and ``tool_calls``. The provider comes from the chat-model start
event's ``ls_provider`` metadata, so the model is named ``provider/model``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import agentaudit as aa

from ._messages import content_text

__all__ = ["model_name", "to_response", "usage_of"]

_NO_USAGE = aa.Usage()


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def _is_mapping(value: Any) -> bool:
    # A dict first: isinstance against the Mapping ABC costs far more, every call.
    return type(value) is dict or isinstance(value, Mapping)


def _detail(details: Any, key: str) -> int:
    """``details[key]`` plus service-tier variants (``priority_cache_read``):
    langchain-openai prefixes the keys for the priority and flex tiers."""
    if not _is_mapping(details):
        return 0
    suffix = "_" + key
    total = 0
    for name, value in details.items():
        if name == key or (isinstance(name, str) and name.endswith(suffix)):
            total += _count(value)
    return total


def usage_of(usage_metadata: Any, llm_output: Any = None) -> aa.Usage:
    """Token counts from a message's ``usage_metadata``; failing that, from an
    OpenAI-style ``llm_output["token_usage"]``; zeros when the call reported none."""
    if _is_mapping(usage_metadata):
        return aa.Usage(
            input_tokens=_count(usage_metadata.get("input_tokens")),
            output_tokens=_count(usage_metadata.get("output_tokens")),
            cache_read_tokens=_detail(usage_metadata.get("input_token_details"), "cache_read"),
            reasoning_tokens=_detail(usage_metadata.get("output_token_details"), "reasoning"),
        )
    raw = llm_output.get("token_usage") if isinstance(llm_output, Mapping) else None
    if isinstance(raw, Mapping):
        prompt_details = raw.get("prompt_tokens_details")
        completion_details = raw.get("completion_tokens_details")
        return aa.Usage(
            input_tokens=_count(raw.get("prompt_tokens")),
            output_tokens=_count(raw.get("completion_tokens")),
            cache_read_tokens=_count(
                prompt_details.get("cached_tokens") if isinstance(prompt_details, Mapping) else 0
            ),
            reasoning_tokens=_count(
                completion_details.get("reasoning_tokens")
                if isinstance(completion_details, Mapping)
                else 0
            ),
        )
    return _NO_USAGE


def model_name(provider: str | None, served: str | None, requested: str | None) -> str:
    """``provider/model``, preferring the model the server reports having served
    over the one requested; just the model when the provider is unknown."""
    model = served or requested or ""
    if not model:
        return ""
    if provider and not model.startswith(provider + "/"):
        return f"{provider}/{model}"
    return model


def _first_str(mapping: Any, *keys: str) -> str | None:
    if not _is_mapping(mapping):
        return None
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _tool_calls(message: Any) -> tuple[aa.ToolCall, ...]:
    calls = getattr(message, "tool_calls", None) or ()
    # Calls whose JSON arguments did not parse are kept too: the model did ask for them.
    invalid = getattr(message, "invalid_tool_calls", None) or ()
    if not calls and not invalid:
        return ()
    out = [
        aa.ToolCall.lenient(call.get("name") or "", call.get("args"), call.get("id"))
        for call in calls
        if _is_mapping(call)
    ]
    out.extend(
        aa.ToolCall.lenient(call.get("name") or "", call.get("args"), call.get("id"))
        for call in invalid
        if isinstance(call, Mapping)
    )
    return tuple(out)


def to_response(result: Any, provider: str | None, requested_model: str | None) -> aa.Response:
    """The step a model call's ``LLMResult`` records."""
    generations = getattr(result, "generations", None)
    generation = generations[0][0] if generations and generations[0] else None
    llm_output = getattr(result, "llm_output", None)
    generation_info = getattr(generation, "generation_info", None)
    message = getattr(generation, "message", None)
    if message is not None:  # a chat model
        metadata = getattr(message, "response_metadata", None)
        text = content_text(getattr(message, "content", ""))
        usage = usage_of(getattr(message, "usage_metadata", None), llm_output)
        tool_calls = _tool_calls(message)
    else:  # a completion (string) model
        metadata = generation_info
        text = getattr(generation, "text", "")
        usage = usage_of(None, llm_output)
        tool_calls = ()
    served = (
        _first_str(metadata, "model_name", "model", "model_id")
        or _first_str(llm_output, "model_name", "model")
    )
    provider = provider or _first_str(metadata, "model_provider")
    finish = _first_str(metadata, "finish_reason", "stop_reason", "stopReason") or _first_str(
        generation_info, "finish_reason", "stop_reason"
    )
    return aa.Response(
        text=text if isinstance(text, str) else "",
        model=model_name(provider, served, requested_model),
        finish_reason=finish or "",
        usage=usage,
        tool_calls=tool_calls,
    )
