"""Reading other providers' raw responses: what a step records when the LLM is not
OpenAI (LlamaIndex keeps the provider's object, or its dict, at response.raw)."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ToolCallBlock

import agentaudit as aa
from agentaudit_llamaindex._llm import provider_of, read_chat_response


def chat_response(raw: Any = None, *, text: str = "hi", **additional_kwargs: Any) -> ChatResponse:
    return ChatResponse(message=ChatMessage(role="assistant", content=text), raw=raw,
                        additional_kwargs=additional_kwargs)


def test_anthropic_message_dict() -> None:
    raw = {
        "id": "msg_1", "type": "message", "model": "claude-sonnet-4-5", "stop_reason": "end_turn",
        "usage": {"input_tokens": 20, "output_tokens": 7, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 5},
    }
    response = read_chat_response(chat_response(raw), {"class_name": "Anthropic_LLM", "model": "claude"})
    # Anthropic's input_tokens leaves cached input out; the step counts the whole prompt.
    assert response == aa.Response(
        text="hi", model="anthropic/claude-sonnet-4-5", finish_reason="end_turn",
        usage=aa.Usage(input_tokens=125, output_tokens=7, cache_read_tokens=100),
    )


def test_openai_responses_usage() -> None:
    raw = {"model": "gpt-5", "usage": {"input_tokens": 50, "output_tokens": 30,
                                       "input_tokens_details": {"cached_tokens": 10},
                                       "output_tokens_details": {"reasoning_tokens": 20}}}
    response = read_chat_response(chat_response(raw), {"class_name": "openai_responses_llm"})
    assert response.usage == aa.Usage(input_tokens=50, output_tokens=30, cache_read_tokens=10,
                                      reasoning_tokens=20)
    assert response.model == "openai_responses/gpt-5"


def test_usage_from_additional_kwargs_when_raw_has_none() -> None:
    response = read_chat_response(
        chat_response(None, prompt_tokens=12, completion_tokens=3),
        {"class_name": "Ollama_llm", "model_name": "llama3"},
    )
    assert (response.model, response.usage) == (
        "ollama/llama3", aa.Usage(input_tokens=12, output_tokens=3),
    )


def test_a_routed_model_name_is_kept_whole() -> None:
    response = read_chat_response(chat_response({"model": "anthropic/claude-3-haiku"}),
                                  {"class_name": "openrouter_llm"})
    assert response.model == "anthropic/claude-3-haiku"


def test_tool_calls_from_openai_additional_kwargs_when_no_blocks() -> None:
    message = ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "search", "arguments": '{"q": "x"}'}},
        {"id": "call_10", "type": "function", "function": {"name": "broken", "arguments": "{not json"}},
    ]})
    response = read_chat_response(ChatResponse(message=message), {"class_name": "openai_llm"})
    assert response.tool_calls == (
        aa.ToolCall("search", '{"q":"x"}', "call_9"),
        aa.ToolCall.lenient("broken", "{not json", "call_10"),
    )


def test_tool_call_blocks_with_text_arguments() -> None:
    message = ChatMessage(role="assistant", blocks=[
        ToolCallBlock(tool_call_id="t1", tool_name="add", tool_kwargs='{"a": 1}')])
    response = read_chat_response(ChatResponse(message=message), {})
    assert response.tool_calls == (aa.ToolCall("add", '{"a":1}', "t1"),)
    assert response.model == ""


def test_streamed_finish_reason_is_used_when_the_last_chunk_has_none() -> None:
    raw = {"model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    response = read_chat_response(chat_response(raw), {"class_name": "openai_llm"}, "length")
    assert response.finish_reason == "length"


@pytest.mark.parametrize(
    ("class_name", "provider"),
    [("openai_llm", "openai"), ("Anthropic_LLM", "anthropic"), ("azure_openai_llm", "azure_openai"),
     ("MockFunctionCallingLLM", "mock"), ("GoogleGenAI", "googlegenai"), ("", "")],
)
def test_provider_names(class_name: str, provider: str) -> None:
    assert provider_of({"class_name": class_name}) == provider


def test_odd_values_are_skipped_not_raised() -> None:
    raw = {"model": 7, "choices": "nope", "usage": {"prompt_tokens": "many", "completion_tokens": -3}}
    response = read_chat_response(chat_response(raw, text=""), {"class_name": None})
    assert response == aa.Response()
