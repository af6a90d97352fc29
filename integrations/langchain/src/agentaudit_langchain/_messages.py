"""Reading text out of what LangChain passes around: the messages of an agent's
input and output state, a model call's prompt, a tool's result.

Messages arrive in every form LangChain accepts (``HumanMessage``, ``{"role":
"user", "content": ...}``, ``("user", "...")``, a bare string) and content as a
string or a list of content blocks. These functions read them without copying the
state and never raise on an odd object: they return ``None`` (no text found) instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "content_text",
    "final_output",
    "last_human_text",
    "run_input",
    "tool_result",
]

_HUMAN_ROLES = frozenset({"human", "user"})
_AI_ROLES = frozenset({"ai", "assistant"})


def content_text(content: Any) -> str:
    """The text of a message's content: a string as is; from a list of content
    blocks, the text blocks joined (images, tool-use and reasoning blocks skipped),
    as ``BaseMessage.text`` does."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        parts: list[str] = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and block.get("type") == "text":
                text = block.get("text")
                if isinstance(text, str):
                    parts.append(text)
        return "".join(parts)
    return ""


def _role_and_content(message: Any) -> tuple[str, Any]:
    """The role (``human``, ``ai``, ``tool``, ...) and content of a message-like."""
    if isinstance(message, str):
        return "human", message  # LangChain reads a bare string as a human message
    kind = getattr(message, "type", None)
    if isinstance(kind, str) and hasattr(message, "content"):
        return kind, message.content  # a BaseMessage
    if isinstance(message, Mapping):
        role = message.get("role", message.get("type", ""))
        return (role if isinstance(role, str) else ""), message.get("content")
    if isinstance(message, tuple) and len(message) == 2 and isinstance(message[0], str):
        return message[0], message[1]
    return "", None


def _messages_of(state: Any) -> Sequence[Any] | None:
    messages = state.get("messages") if isinstance(state, Mapping) else state
    if isinstance(messages, Sequence) and not isinstance(messages, (str, bytes, bytearray)):
        return messages
    return None


def last_human_text(messages: Any) -> str | None:
    """The text of the last human message in a list of messages (or in a state
    mapping's ``messages``), or None when there is none."""
    found = _messages_of(messages)
    if not found:
        return None
    for message in reversed(found):
        role, content = _role_and_content(message)
        if role in _HUMAN_ROLES:
            return content_text(content)
    return None


def run_input(inputs: Any) -> Any:
    """What a run records as its input: the last human message's text when the
    input carries messages (an agent's state, a prompt); a string as is; a
    LangGraph ``Command`` (resuming an interrupt) as its resume value; otherwise
    the input itself, which the writer serializes and caps."""
    if isinstance(inputs, str):
        return inputs
    text = last_human_text(inputs)
    if text is not None:
        return text
    if type(inputs).__name__ == "Command" and hasattr(inputs, "resume"):
        resume = inputs.resume
        if resume is not None:
            return {"resume": resume}
        goto = getattr(inputs, "goto", None)
        return {"goto": goto} if goto else None
    if isinstance(inputs, Mapping) and "messages" in inputs:
        return None  # a message list with no human message in it
    return inputs


def _last_ai_text(messages: Sequence[Any]) -> str | None:
    for message in reversed(messages):
        role, content = _role_and_content(message)
        if role in _AI_ROLES:
            return content_text(content)
    return None


def final_output(outputs: Any) -> Any:
    """What a run records as its output: an agent's structured response when it
    asked for one, else the text of the final AI message; a string or message as
    its text; anything else as is (serialized and capped by the writer)."""
    if isinstance(outputs, str):
        return outputs
    if isinstance(outputs, Mapping):
        structured = outputs.get("structured_response")
        if structured is not None:
            return structured
        messages = _messages_of(outputs)
        if messages is not None:
            return _last_ai_text(messages)
        return dict(outputs) if outputs else None
    role, content = _role_and_content(outputs)
    if role:
        return content_text(content)
    return outputs


def tool_result(output: Any) -> tuple[Any, bool, str | None]:
    """A tool's result as (what to record, whether it is an error, its tool-call id).

    Under ``create_agent`` a tool returns a ``ToolMessage`` (status ``error`` when
    the tool's error handler turned a failure into a message) or a ``Command`` whose
    update carries that ToolMessage; called directly, a tool returns its raw value.
    """
    if type(output).__name__ == "Command":
        update = getattr(output, "update", None)
        messages = _messages_of(update) if isinstance(update, Mapping) else None
        for message in messages or ():
            if getattr(message, "type", None) == "tool":
                return tool_result(message)
        return update, False, None
    if getattr(output, "type", None) == "tool" and hasattr(output, "content"):
        call_id = getattr(output, "tool_call_id", None)
        content = output.content
        text = content_text(content)
        return (
            # Content with no text block (an image, say) is kept as the blocks themselves.
            text if text or not content else content,
            getattr(output, "status", None) == "error",
            call_id if isinstance(call_id, str) else None,
        )
    return output, False, None
