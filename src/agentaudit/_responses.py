"""Reading a model SDK's response into an `aa.Response`, duck-typed.

`record_step` takes whatever a hand-written loop got back from its SDK: an OpenAI
Chat Completions object, an OpenAI Responses object, an Anthropic Messages object, or
the plain dicts of those shapes (`model_dump()`, JSON from a proxy). No SDK is
imported: fields are read by name from attributes or mapping keys, so a new SDK
release that adds fields changes nothing, and the core stays standard library only.

Reading never raises. What cannot be read is left at its default and named in the
returned problems, which the caller reports as one fault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._model import Response, ToolCall, Usage

__all__ = ["ResponseShape", "describe_shape", "to_response"]


class ResponseShape:
    """The names of the shapes `to_response` knows."""

    RESPONSE = "agentaudit.Response"
    CHAT_COMPLETION = "openai.chat.completion"
    CHAT_COMPLETION_CHUNK = "openai.chat.completion.chunk"
    OPENAI_RESPONSE = "openai.response"
    ANTHROPIC_MESSAGE = "anthropic.message"
    UNKNOWN = "unknown"


_MISSING = object()


def _field(obj: Any, name: str, default: Any = None) -> Any:
    """`obj[name]` for a mapping, `obj.name` otherwise; `default` when absent
    or when reading it raises (a property of a half-built object, say)."""
    if obj is None:
        return default
    try:
        if isinstance(obj, Mapping):
            return obj.get(name, default)
        return getattr(obj, name, default)
    except Exception:
        return default


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))


def describe_shape(obj: Any) -> str:
    """Which known shape `obj` has (a `ResponseShape` value)."""
    if isinstance(obj, Response):
        return ResponseShape.RESPONSE
    kind = _field(obj, "object")
    if kind == "chat.completion.chunk":
        return ResponseShape.CHAT_COMPLETION_CHUNK
    if kind == "chat.completion" or _is_list(_field(obj, "choices")):
        return ResponseShape.CHAT_COMPLETION
    if kind == "response" or (
        _is_list(_field(obj, "output")) and _field(obj, "content", _MISSING) is _MISSING
    ):
        return ResponseShape.OPENAI_RESPONSE
    if _is_list(_field(obj, "content")) and (
        _field(obj, "type") == "message" or _field(obj, "stop_reason", _MISSING) is not _MISSING
    ):
        return ResponseShape.ANTHROPIC_MESSAGE
    return ResponseShape.UNKNOWN


class _Reader:
    """Collects what one response yields, and what could not be read."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def count(self, obj: Any, name: str, where: str) -> int:
        """A token count: absent or None is 0 (providers omit what they did not
        measure); anything but a non-negative int is a problem, read as 0."""
        value = _field(obj, name)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and value >= 0:
                return int(value)
            self.problem(f"{where}.{name} is not a token count: {value!r:.60}")
            return 0
        if value < 0:
            self.problem(f"{where}.{name} is negative: {value}")
            return 0
        return value

    def text(self, value: Any, where: str) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        self.problem(f"{where} is not text: {type(value).__name__}")
        return ""

    def model(self, obj: Any, provider: str) -> str:
        model = _field(obj, "model")
        if model is None or model == "":
            return ""
        if not isinstance(model, str):
            self.problem(f"model is not text: {type(model).__name__}")
            return ""
        # Already qualified (an OpenAI-compatible router serving "anthropic/claude-…"):
        # the router's name says more about who served it than the SDK's does.
        if "/" in model or not provider:
            return model
        return f"{provider}/{model}"

    def tool_call(self, name: Any, arguments: Any, call_id: Any, where: str) -> ToolCall | None:
        if not isinstance(name, str) or not name:
            self.problem(f"{where} has no tool name")
            name = "<unnamed>"
        if call_id is not None and not isinstance(call_id, str):
            call_id = str(call_id)
        try:
            return ToolCall.lenient(name, arguments, call_id or "")
        except Exception as exc:  # lenient only raises on a name/id it cannot hold
            self.problem(f"{where} could not be read: {exc}")
            return None

    def usage(self, **counts: int) -> Usage:
        try:
            return Usage(**counts)
        except ValueError as exc:  # counts are checked above; defence in depth
            self.problem(str(exc))
            return Usage()

    def build(self, **fields: Any) -> Response:
        try:
            return Response(**fields)
        except ValueError as exc:
            self.problem(str(exc))
            return Response()


def to_response(obj: Any) -> tuple[Response, tuple[str, ...]]:
    """`obj` as a `Response`, and what could not be read from it (empty when
    everything was understood). Never raises."""
    reader = _Reader()
    shape = ResponseShape.UNKNOWN
    try:
        shape = describe_shape(obj)
        if shape == ResponseShape.RESPONSE:
            return obj, ()
        convert = _CONVERTERS.get(shape, _read_unknown)
        response = convert(obj, reader)
    except Exception as exc:  # a shape that lies about itself; keep the step anyway
        reader.problem(f"reading a {shape} failed: {type(exc).__name__}: {exc}")
        response = Response(model=_safe_model(obj))
    return response, tuple(reader.problems)


def _safe_model(obj: Any) -> str:
    model = _field(obj, "model")
    return model if isinstance(model, str) else ""


# -- OpenAI Chat Completions ----------------------------------------------------------


def _chat_usage(usage: Any, reader: _Reader) -> Usage:
    if usage is None:
        # Streams send usage only with stream_options={"include_usage": True}.
        return Usage()
    prompt = _field(usage, "prompt_tokens_details")
    completion = _field(usage, "completion_tokens_details")
    return reader.usage(
        input_tokens=reader.count(usage, "prompt_tokens", "usage"),
        output_tokens=reader.count(usage, "completion_tokens", "usage"),
        cache_read_tokens=reader.count(prompt, "cached_tokens", "usage.prompt_tokens_details"),
        reasoning_tokens=reader.count(
            completion, "reasoning_tokens", "usage.completion_tokens_details"
        ),
    )


def _chat_content(content: Any, reader: _Reader) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if _is_list(content):  # OpenAI-compatible servers that send content parts
        return "".join(
            part_text
            for part in content
            if isinstance(part_text := _field(part, "text"), str)
        )
    reader.problem(f"message.content is not text: {type(content).__name__}")
    return ""


def _chat_tool_calls(message: Any, reader: _Reader) -> list[ToolCall]:
    calls: list[ToolCall] = []
    raw_calls = _field(message, "tool_calls") or ()
    if not _is_list(raw_calls):
        reader.problem(f"message.tool_calls is not a list: {type(raw_calls).__name__}")
        raw_calls = ()
    for index, raw in enumerate(raw_calls):
        where = f"message.tool_calls[{index}]"
        custom = _field(raw, "custom")
        if _field(raw, "type") == "custom" or (custom is not None and _field(raw, "function") is None):
            call = reader.tool_call(
                _field(custom, "name"), _field(custom, "input"), _field(raw, "id"), where
            )
        else:
            function = _field(raw, "function")
            call = reader.tool_call(
                _field(function, "name"), _field(function, "arguments"), _field(raw, "id"), where
            )
        if call is not None:
            calls.append(call)
    legacy = _field(message, "function_call")  # the deprecated single-function form
    if legacy is not None:
        call = reader.tool_call(
            _field(legacy, "name"), _field(legacy, "arguments"), "", "message.function_call"
        )
        if call is not None:
            calls.append(call)
    return calls


def _read_chat_completion(obj: Any, reader: _Reader) -> Response:
    model = reader.model(obj, "openai")
    usage = _chat_usage(_field(obj, "usage"), reader)
    choices = _field(obj, "choices") or ()
    if not choices:
        reader.problem("chat completion has no choices")
        return reader.build(model=model, usage=usage)
    # n > 1 asks for alternatives; a loop carries on with the first, as the SDK docs do.
    choice = choices[0]
    message = _field(choice, "message")
    if message is None:
        reader.problem("choices[0] has no message")
    text = _chat_content(_field(message, "content"), reader)
    if not text:
        text = reader.text(_field(message, "refusal"), "message.refusal")
    return reader.build(
        text=text,
        model=model,
        finish_reason=reader.text(_field(choice, "finish_reason"), "choices[0].finish_reason"),
        usage=usage,
        tool_calls=_chat_tool_calls(message, reader),
    )


def _read_chat_chunk(obj: Any, reader: _Reader) -> Response:
    # One chunk of a stream is a fragment, not a step: keep what it holds and say so.
    reader.problem(
        "a streamed chat.completion.chunk is one fragment of a step; record the final "
        "completion (stream.get_final_completion()) instead"
    )
    choices = _field(obj, "choices") or ()
    choice = choices[0] if choices else None
    delta = _field(choice, "delta")
    return reader.build(
        text=_chat_content(_field(delta, "content"), reader),
        model=reader.model(obj, "openai"),
        finish_reason=reader.text(_field(choice, "finish_reason"), "choices[0].finish_reason"),
        usage=_chat_usage(_field(obj, "usage"), reader),
    )


# -- OpenAI Responses ------------------------------------------------------------------


def _read_openai_response(obj: Any, reader: _Reader) -> Response:
    messages: list[str] = []
    calls: list[ToolCall] = []
    output = _field(obj, "output") or ()
    for index, item in enumerate(output):
        kind = _field(item, "type")
        where = f"output[{index}]"
        if kind == "message":
            parts = _field(item, "content") or ()
            pieces = []
            for part in parts:
                part_kind = _field(part, "type")
                if part_kind == "output_text":
                    pieces.append(reader.text(_field(part, "text"), f"{where}.content.text"))
                elif part_kind == "refusal":
                    pieces.append(reader.text(_field(part, "refusal"), f"{where}.content.refusal"))
            messages.append("".join(pieces))
        elif kind == "function_call":
            call = reader.tool_call(
                _field(item, "name"), _field(item, "arguments"), _field(item, "call_id"), where
            )
            if call is not None:
                calls.append(call)
        elif kind == "custom_tool_call":
            call = reader.tool_call(
                _field(item, "name"), _field(item, "input"), _field(item, "call_id"), where
            )
            if call is not None:
                calls.append(call)
        # reasoning items and built-in tools the server ran (web_search_call,
        # file_search_call, mcp_call, ...) are not calls the loop executes.
    status = _field(obj, "status")
    finish_reason = ""
    if status == "incomplete":
        finish_reason = _field(_field(obj, "incomplete_details"), "reason") or "incomplete"
    elif isinstance(status, str):
        finish_reason = status
    usage = _responses_usage(_field(obj, "usage"), reader)
    return reader.build(
        text="\n".join(m for m in messages if m),
        model=reader.model(obj, "openai"),
        finish_reason=reader.text(finish_reason, "status"),
        usage=usage,
        tool_calls=calls,
    )


def _responses_usage(usage: Any, reader: _Reader) -> Usage:
    if usage is None:
        return Usage()
    return reader.usage(
        input_tokens=reader.count(usage, "input_tokens", "usage"),
        output_tokens=reader.count(usage, "output_tokens", "usage"),
        cache_read_tokens=reader.count(
            _field(usage, "input_tokens_details"), "cached_tokens", "usage.input_tokens_details"
        ),
        reasoning_tokens=reader.count(
            _field(usage, "output_tokens_details"), "reasoning_tokens", "usage.output_tokens_details"
        ),
    )


# -- Anthropic Messages ------------------------------------------------------------------


def _anthropic_usage(usage: Any, reader: _Reader) -> Usage:
    if usage is None:
        return Usage()
    cache_read = reader.count(usage, "cache_read_input_tokens", "usage")
    cache_write = reader.count(usage, "cache_creation_input_tokens", "usage")
    # Anthropic's input_tokens excludes cached input; Usage.input_tokens is the whole
    # prompt with cache_read_tokens a part of it, as OpenAI reports it.
    return reader.usage(
        input_tokens=reader.count(usage, "input_tokens", "usage") + cache_read + cache_write,
        output_tokens=reader.count(usage, "output_tokens", "usage"),
        cache_read_tokens=cache_read,
        reasoning_tokens=reader.count(
            _field(usage, "output_tokens_details"), "thinking_tokens", "usage.output_tokens_details"
        ),
    )



def _read_anthropic_message(obj: Any, reader: _Reader) -> Response:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for index, block in enumerate(_field(obj, "content") or ()):
        kind = _field(block, "type")
        if kind == "text":
            # Citations split one passage into several blocks: they join without a gap.
            texts.append(reader.text(_field(block, "text"), f"content[{index}].text"))
        elif kind == "tool_use":
            call = reader.tool_call(
                _field(block, "name"), _field(block, "input"), _field(block, "id"), f"content[{index}]"
            )
            if call is not None:
                calls.append(call)
        # thinking blocks and server_tool_use (tools Anthropic ran) are not narration
        # nor calls the loop executes.
    usage = _anthropic_usage(_field(obj, "usage"), reader)
    return reader.build(
        text="".join(texts),
        model=reader.model(obj, "anthropic"),
        finish_reason=reader.text(_field(obj, "stop_reason"), "stop_reason"),
        usage=usage,
        tool_calls=calls,
    )


# -- anything else --------------------------------------------------------------------


def _read_unknown(obj: Any, reader: _Reader) -> Response:
    reader.problem(
        f"unrecognized response shape {type(obj).__qualname__}: expected an agentaudit.Response, "
        "an OpenAI ChatCompletion or Response, an Anthropic Message, or a dict of one"
    )
    if obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        return Response()
    # Salvage the fields most shapes name alike.
    text = _field(obj, "text")
    if not isinstance(text, str):
        content = _field(obj, "content")
        text = content if isinstance(content, str) else ""
    finish = _field(obj, "finish_reason", _field(obj, "stop_reason"))
    usage_obj = _field(obj, "usage")
    usage = Usage()
    if usage_obj is not None:
        usage = reader.usage(
            input_tokens=reader.count(usage_obj, "input_tokens", "usage")
            or reader.count(usage_obj, "prompt_tokens", "usage"),
            output_tokens=reader.count(usage_obj, "output_tokens", "usage")
            or reader.count(usage_obj, "completion_tokens", "usage"),
        )
    return reader.build(
        text=text,
        model=reader.model(obj, ""),
        finish_reason=finish if isinstance(finish, str) else "",
        usage=usage,
    )


# -- a usage object alone ----------------------------------------------------------------


def _detail_sum(details: Any, key: str, reader: _Reader, where: str) -> int:
    """LangChain's ``usage_metadata`` details: ``cache_read``, or provider variants
    suffixed ``_cache_read``, summed."""
    if not isinstance(details, Mapping):
        return 0
    suffix = "_" + key
    return sum(
        reader.count(details, name, where)
        for name in details
        if name == key or (isinstance(name, str) and name.endswith(suffix))
    )


def _generic_usage(usage: Any, reader: _Reader) -> Usage:
    return reader.usage(
        input_tokens=reader.count(usage, "input_tokens", "usage"),
        output_tokens=reader.count(usage, "output_tokens", "usage"),
        cache_read_tokens=_detail_sum(
            _field(usage, "input_token_details"), "cache_read", reader, "usage.input_token_details"
        ),
        reasoning_tokens=_detail_sum(
            _field(usage, "output_token_details"), "reasoning", reader, "usage.output_token_details"
        ),
    )


def usage_from(usage: Any) -> tuple[Usage, tuple[str, ...]]:
    """Token counts from a provider's usage object or dict, whichever its shape: OpenAI
    Chat Completions (``prompt_tokens``), OpenAI Responses (``input_tokens_details``),
    Anthropic (``cache_read_input_tokens``), or ``input_tokens``/``output_tokens`` with
    LangChain's ``usage_metadata`` details; and what could not be read. Never raises."""
    reader = _Reader()
    try:
        if usage is None:
            return Usage(), ()
        if _field(usage, "prompt_tokens") is not None:
            read = _chat_usage
        elif _field(usage, "cache_read_input_tokens") is not None or (
            _field(usage, "cache_creation_input_tokens") is not None
        ):
            read = _anthropic_usage
        elif _field(usage, "input_tokens_details") is not None or (
            _field(usage, "output_tokens_details") is not None
        ):
            read = _responses_usage
        else:
            read = _generic_usage
        return read(usage, reader), tuple(reader.problems)
    except Exception as exc:  # a usage object that lies about itself
        return Usage(), (*reader.problems, f"reading usage failed: {type(exc).__name__}: {exc}")


_CONVERTERS = {
    ResponseShape.CHAT_COMPLETION: _read_chat_completion,
    ResponseShape.CHAT_COMPLETION_CHUNK: _read_chat_chunk,
    ResponseShape.OPENAI_RESPONSE: _read_openai_response,
    ResponseShape.ANTHROPIC_MESSAGE: _read_anthropic_message,
}
