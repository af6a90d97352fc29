"""A deterministic, tool-calling chat model for the demo: no network, no API key.

It plays a weather assistant: asked about cities, it looks each one up with
``get_weather`` (all in one step, as parallel tool calls), converts each
temperature with ``celsius_to_fahrenheit``, then answers from the tool results.
It reports token usage like a real provider does (about four characters a
token), so the audit has numbers to show.
"""

from __future__ import annotations

import re
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

CITIES = ("Paris", "Rome", "Oslo", "Lisbon", "Tokyo")


class LocalWeatherModel(BaseChatModel):
    """``create_agent(LocalWeatherModel(), tools=[get_weather, celsius_to_fahrenheit])``."""

    model: str = "weather-sim-1"

    @property
    def _llm_type(self) -> str:
        return "local"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(ls_provider="local", ls_model_name=self.model, ls_model_type="chat")

    def bind_tools(self, tools: Any, **kwargs: Any) -> LocalWeatherModel:
        return self  # it knows its two tools already

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        question = next(m.text for m in reversed(messages) if isinstance(m, HumanMessage))
        results = {m.name: [] for m in messages if isinstance(m, ToolMessage)}
        for m in messages:
            if isinstance(m, ToolMessage):
                results[m.name].append(m.text)
        cities = [c for c in CITIES if c.lower() in question.lower()] or ["Paris"]
        done = sum(len(r) for r in results.values())  # tool calls answered so far
        if "get_weather" not in results:
            reply = self._call("Let me look up the weather.", "get_weather",
                               [{"city": c} for c in cities], done)
        elif "celsius_to_fahrenheit" not in results:
            temps = [float(re.search(r"-?\d+", r).group()) for r in results["get_weather"]]
            reply = self._call("", "celsius_to_fahrenheit", [{"celsius": t} for t in temps], done)
        else:
            lines = [f"{c}: {w} ({f}°F)." for c, w, f in
                     zip(cities, results["get_weather"], results["celsius_to_fahrenheit"], strict=True)]
            reply = AIMessage(content=" ".join(lines),
                              response_metadata={"finish_reason": "stop"})
        tokens_in = sum(len(m.text) for m in messages) // 4 + 40
        tokens_out = len(reply.text) // 4 + 12 * len(reply.tool_calls) + 1
        reply.usage_metadata = {"input_tokens": tokens_in, "output_tokens": tokens_out,
                                "total_tokens": tokens_in + tokens_out}
        reply.response_metadata["model_name"] = self.model
        return ChatResult(generations=[ChatGeneration(message=reply)])

    @staticmethod
    def _call(text: str, tool: str, argument_sets: list[dict[str, Any]], done: int) -> AIMessage:
        return AIMessage(
            content=text,
            tool_calls=[{"name": tool, "args": args, "id": f"call_{done + i}", "type": "tool_call"}
                        for i, args in enumerate(argument_sets, 1)],
            response_metadata={"finish_reason": "tool_calls"},
        )
