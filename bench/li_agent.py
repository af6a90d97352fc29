"""The LlamaIndex agent: a ``FunctionAgent`` with two tools and a deterministic
function-calling mock LLM (one tool call per step, then the answer), no network;
and its configurations: nothing, agentaudit, OpenInference."""

from __future__ import annotations

import uuid
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM
from otel_spans import InMemorySpans, OpenInferenceBlocks

import agentaudit as aa

QUESTION = "What is the weather in Paris, and what is 2+3?"


def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"sunny in {city}"


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _turn(k: int, n_steps: int) -> ChatMessage:
    if k >= n_steps - 1:
        return ChatMessage(role="assistant", content="Paris is sunny and 2+3=5.")
    i = k + 1
    name, kwargs = (("get_weather", {"city": f"City{i}"}) if i % 2 else ("add", {"a": i, "b": 3}))
    return ChatMessage(role="assistant",
                       blocks=[ToolCallBlock(tool_call_id=f"call_{i}", tool_name=name,
                                             tool_kwargs=kwargs)])


def build_agent(n_steps: int = 3) -> FunctionAgent:
    def respond(messages: Any, **_kwargs: Any) -> ChatMessage:
        # Stateless: turn k answers a conversation holding k assistant messages.
        k = sum(1 for m in messages if m.role == MessageRole.ASSISTANT)
        return _turn(k, n_steps)

    llm = MockFunctionCallingLLM(response_generator=respond)
    return FunctionAgent(name="forecaster", tools=[get_weather, add], llm=llm)


class Nothing:
    name = "none"
    label = "no instrumentation"

    def __init__(self) -> None:
        self.run_ids: list[tuple[uuid.UUID, int]] = []

    def begin_block(self) -> None:
        pass

    def end_block(self) -> None:
        pass

    def missing(self) -> str | None:
        return None

    def close(self) -> None:
        pass


class AgentAudit(Nothing):
    """``agentaudit_llamaindex.instrument``: attached to LlamaIndex's root dispatcher
    only during its own blocks (the returned handle detaches)."""

    def __init__(self, name: str, label: str, store: aa.Store) -> None:
        super().__init__()
        self.name, self.label, self.store = name, label, store
        self.auditor = aa.Auditor(store)
        self.handle: Any = None

    def begin_block(self) -> None:
        from agentaudit_llamaindex import instrument

        self.handle = instrument(self.auditor)

    def end_block(self) -> None:
        self.handle.uninstrument()
        self.store.flush(timeout=30)

    def missing(self) -> str | None:
        self.store.flush(timeout=30)
        ok = self.store.count_runs(aa.RunFilter(status="succeeded"))
        total = self.store.count_runs(aa.RunFilter())
        steps = sum(r.steps or 0 for r in self.store.iter_runs(aa.RunFilter()))
        expected = sum(n for _, n in self.run_ids)
        if ok != len(self.run_ids) or total != ok:
            return f"{total} runs stored ({ok} succeeded) for {len(self.run_ids)} runs"
        if steps != expected:
            return f"{steps} steps stored for {expected}"
        return None

    def close(self) -> None:
        self.store.close()


class OpenInference(OpenInferenceBlocks, Nothing):
    """OpenInference's LlamaIndexInstrumentor, TracerProvider + BatchSpanProcessor to
    memory, instrumented only during its own blocks."""

    def __init__(self) -> None:
        super().__init__()
        from openinference.instrumentation.llama_index import LlamaIndexInstrumentor

        self.spans = InMemorySpans(LlamaIndexInstrumentor())


def make_configs(names: list[str], workdir: str) -> list[Any]:
    made: list[Any] = []
    for name in names:
        if name == "none":
            made.append(Nothing())
        elif name == "agentaudit-sqlite":
            made.append(AgentAudit(name, "agentaudit + SQLiteStore",
                                   aa.SQLiteStore(f"{workdir}/li-{name}.db")))
        elif name == "agentaudit-memory":
            made.append(AgentAudit(name, "agentaudit + MemoryStore", aa.MemoryStore()))
        elif name == "openinference":
            made.append(OpenInference())
        else:
            raise ValueError(f"unknown configuration {name!r}")
    return made
