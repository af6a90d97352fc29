"""Local, deterministic stand-ins for the models the integration READMEs use
(`"openai:gpt-4o-mini"`, `OpenAI(model="gpt-4o-mini")`), so tests/test_packaging.py
runs each README example as written, in a fresh venv, without a network or a key.

Each asks for `get_weather(city="Paris")` once, then answers from the tool's result.
Imports are inside the functions: each venv has only its own framework.
"""

from __future__ import annotations

from typing import Any


def langchain_model() -> Any:
    """A LangChain chat model for `create_agent(...)`."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class LocalForecastModel(BaseChatModel):
        model: str = "forecast-sim-1"

        @property
        def _llm_type(self) -> str:
            return "local"

        def bind_tools(self, tools: Any, **kwargs: Any) -> LocalForecastModel:
            return self

        def _generate(
            self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
        ) -> ChatResult:
            results = [m.text for m in messages if isinstance(m, ToolMessage)]
            if not results:
                reply = AIMessage(
                    content="",
                    tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}],
                    response_metadata={"finish_reason": "tool_calls"},
                )
            else:
                reply = AIMessage(
                    content=f"It is {results[-1]}.", response_metadata={"finish_reason": "stop"}
                )
            reply.usage_metadata = {"input_tokens": 50, "output_tokens": 10, "total_tokens": 60}
            return ChatResult(generations=[ChatGeneration(message=reply)])

    return LocalForecastModel()


def llamaindex_llm() -> Any:
    """A LlamaIndex function-calling LLM for `FunctionAgent(llm=...)`."""
    from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock
    from llama_index.core.llms.mock import MockFunctionCallingLLM

    script = [
        ChatMessage(
            role="assistant",
            blocks=[
                ToolCallBlock(
                    tool_call_id="call_1", tool_name="get_weather", tool_kwargs={"city": "Paris"}
                )
            ],
        ),
        ChatMessage(role="assistant", content="It is sunny in Paris."),
    ]
    return MockFunctionCallingLLM(response_generator=lambda messages, **kw: script.pop(0))
