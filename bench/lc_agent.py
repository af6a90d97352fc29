"""The LangChain agent every configuration runs: ``create_agent`` with two tools and a
deterministic tool-calling chat model, no network.

An ``n_steps`` run makes ``n_steps - 1`` model steps that each call one tool, then a
final step that answers; the default (3 steps) is two tool calls over three steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool

QUESTION = "What is the weather in Paris, and what is 2+3?"


@tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"sunny in {city}"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _ai(text: str, call: tuple[str, dict[str, Any], str] | None) -> AIMessage:
    calls = [] if call is None else [{"name": call[0], "args": call[1], "id": call[2],
                                      "type": "tool_call"}]
    return AIMessage(
        content=text,
        tool_calls=calls,
        usage_metadata={"input_tokens": 120, "output_tokens": 24, "total_tokens": 144},
        response_metadata={"model_name": "scripted-1",
                           "finish_reason": "tool_calls" if calls else "stop"},
    )


def script(n_steps: int) -> tuple[AIMessage, ...]:
    """``n_steps - 1`` turns calling one tool each (weather and add alternating), then the answer."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    turns = []
    for i in range(1, n_steps):
        call = (("get_weather", {"city": f"City{i}"}, f"call_{i}") if i % 2
                else ("add", {"a": i, "b": 3}, f"call_{i}"))
        turns.append(_ai(f"Step {i}: let me use a tool.", call))
    turns.append(_ai("Paris is sunny and 2+3=5.", None))
    return tuple(turns)


class ScriptedChatModel(BaseChatModel):
    """Answers turn k of a conversation (k = AI messages already in it) with ``turns[k]``.
    Stateless, so every invocation replays the same script."""

    turns: Sequence[AIMessage]

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(ls_provider="scripted", ls_model_name="scripted-1",
                               ls_model_type="chat")

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        k = sum(1 for m in messages if isinstance(m, AIMessage))
        return ChatResult(generations=[ChatGeneration(message=self.turns[k].model_copy())])


def build_agent(n_steps: int = 3) -> Any:
    return create_agent(ScriptedChatModel(turns=script(n_steps)), tools=[get_weather, add])


def agent_input() -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": QUESTION}]}
