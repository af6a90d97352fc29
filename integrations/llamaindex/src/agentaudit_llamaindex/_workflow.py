"""What a LlamaIndex instrumentation span is, in agent terms.

Workflow agents report through spans only: ``<AgentClass>.run-<uuid>`` wraps one
run (opened by ``workflows``' run function with the agent as ``instance``), and each
workflow step is a span whose bound arguments hold the step's input event: an
``AgentSetup`` for a model turn (``run_agent_step``), a ``ToolCall`` for a tool
execution (``call_tool``).
"""

from __future__ import annotations

import inspect
from typing import Any

from llama_index.core.agent.workflow import (
    AgentOutput,
    AgentSetup,
    AgentWorkflow,
    ToolCall,
    ToolCallResult,
)
from llama_index.core.agent.workflow.base_agent import DEFAULT_AGENT_NAME, BaseWorkflowAgent

import agentaudit as aa

__all__ = [
    "agent_of_step",
    "is_agent_run",
    "run_input",
    "run_name",
    "run_output",
    "tool_call_of",
    "tool_result_of",
]


def _method(span_id: str) -> str:
    """``"FunctionAgent.run-<uuid>"`` -> ``"run"``."""
    head = span_id[: -37] if len(span_id) > 37 and span_id[-37] == "-" else span_id
    return head.rsplit(".", 1)[-1]


def is_agent_run(span_id: str, instance: Any) -> bool:
    """Whether a span is one run of a workflow agent or an ``AgentWorkflow``."""
    return isinstance(instance, (BaseWorkflowAgent, AgentWorkflow)) and _method(span_id) == "run"


def run_name(agent: Any) -> str:
    """The audit run's name: the agent's own name when it was given one, else its
    class (``FunctionAgent``, ``AgentWorkflow``)."""
    name = getattr(agent, "name", None)
    if isinstance(name, str) and name.strip() and name != DEFAULT_AGENT_NAME:
        return name
    return type(agent).__name__


def _message_text(message: Any) -> str | None:
    if message is None:
        return None
    if isinstance(message, str):
        return message
    content = getattr(message, "content", None)
    return content if isinstance(content, str) else None


def run_input(bound_args: inspect.BoundArguments) -> str | None:
    """The user message that started the run (or the last message of the chat
    history it was given), or None for a run resumed from a context."""
    start_event = bound_args.arguments.get("start_event")
    if start_event is None:
        return None
    try:
        text = _message_text(start_event.get("user_msg"))
        if text is None:
            history = start_event.get("chat_history") or []
            if history:
                text = _message_text(history[-1])
    except Exception:  # a custom StartEvent without dict access
        return None
    return text


def run_output(result: Any) -> Any:
    """The final response of a run from its ``StopEvent``: the answer's text, or the
    structured response when the answer has no text."""
    output = getattr(result, "result", result)
    if isinstance(output, AgentOutput):
        text = output.response.content
        if text:
            return text
        return output.structured_response
    return output


def agent_of_step(bound_args: inspect.BoundArguments) -> str | None:
    """The agent a ``run_agent_step`` span runs, or None for any other span."""
    event = bound_args.arguments.get("ev")
    return event.current_agent_name if isinstance(event, AgentSetup) else None


def tool_call_of(span_id: str, bound_args: inspect.BoundArguments) -> aa.ToolCall | None:
    """The tool call a ``call_tool`` span executes, or None for any other span."""
    event = bound_args.arguments.get("ev")
    if not isinstance(event, ToolCall) or _method(span_id) != "call_tool":
        return None
    return aa.ToolCall.lenient(event.tool_name, event.tool_kwargs, event.tool_id)


def tool_result_of(result: Any) -> tuple[str, bool] | None:
    """``(output text, failed)`` of a finished ``call_tool`` span, or None when the
    step did not produce a result (it is waiting for an event and will run again)."""
    if not isinstance(result, ToolCallResult):
        return None
    output = result.tool_output
    return output.content, bool(output.is_error)
