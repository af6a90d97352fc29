"""The event types and payload keys of the audit log, named once.

Why one module: the writer builds these payloads, the stores index and total them,
the CLI and the testing helpers read them, and the integrations check them in their
tests. A key spelled in one place cannot drift between those readers. The names are
the seed's (see the design contract); the TypedDicts say which keys each event has.
"""

from __future__ import annotations

from typing import TypedDict

__all__ = [
    "ARGS",
    "CACHE_READ_TOKENS",
    "CANCELLED_TOOL_RESULT",
    "DURATION_MS",
    "ERROR",
    "ERROR_FLAG",
    "FINISH_REASON",
    "ID",
    "IN_TOKENS",
    "ITER",
    "MESSAGE",
    "MODEL",
    "NAME",
    "OUT_TOKENS",
    "REQUESTED_TOOL_CALLS",
    "REQUESTED_TOOL_CALLS_MAX",
    "RESERVED_EVENT_TYPES",
    "RESOLVED_MODEL",
    "RESULT",
    "STEP",
    "STEP_MS",
    "TEXT",
    "TEXT_LEN",
    "TEXT_REDACTED",
    "THINKING_TOKENS",
    "TOOL_CALL",
    "TOOL_RESULT",
    "TRUNCATED",
    "ErrorPayload",
    "RequestedToolCall",
    "ResolvedModelPayload",
    "StepPayload",
    "ToolCallPayload",
    "ToolResultPayload",
]

# -- event types -------------------------------------------------------------------
STEP = "step"
RESOLVED_MODEL = "resolved_model"
TOOL_CALL = "tool_call"
TOOL_RESULT = "tool_result"
ERROR = "error"
# Written only by the Writer's own hooks: `log_event` refuses them, so a custom event
# can never pose as a step or a tool call in totals and checks.
RESERVED_EVENT_TYPES = frozenset({STEP, RESOLVED_MODEL, TOOL_CALL, TOOL_RESULT, ERROR})

# -- step --------------------------------------------------------------------------
ITER = "iter"
STEP_MS = "step_ms"
TEXT_LEN = "text_len"
MODEL = "model"
FINISH_REASON = "finish_reason"
IN_TOKENS = "in_tokens"
OUT_TOKENS = "out_tokens"
THINKING_TOKENS = "thinking_tokens"
CACHE_READ_TOKENS = "cache_read_tokens"
TEXT = "text"
TEXT_REDACTED = "text_redacted"
# The tool calls the model asked for in this step, each ``{"id", "name"}`` (arguments
# are on each call's ``tool_call`` event). A call that never ran (rejected at a
# human-in-the-loop interrupt, blocked by a limit) has no tool_call: it shows here.
REQUESTED_TOOL_CALLS = "requested_tool_calls"
# How many are listed; past that, one last entry ``{"id": "", "name": "…[+N more]"}``.
REQUESTED_TOOL_CALLS_MAX = 64

# -- tool_call / tool_result -------------------------------------------------------
NAME = "name"
ARGS = "args"
ID = "id"
RESULT = "result"
TRUNCATED = "truncated"
ERROR_FLAG = "error"
DURATION_MS = "duration_ms"
# The result recorded for a tool that was still running when its run closed, or
# whose task was cancelled: the call was made, its effect is unknown.
CANCELLED_TOOL_RESULT = "tool call cancelled"

# -- error -------------------------------------------------------------------------
MESSAGE = "message"


class _StepRequired(TypedDict):
    iter: int
    step_ms: float
    text_len: int


class RequestedToolCall(TypedDict):
    id: str
    name: str


class StepPayload(_StepRequired, total=False):
    model: str
    finish_reason: str
    in_tokens: int
    out_tokens: int
    thinking_tokens: int
    cache_read_tokens: int
    text: str
    text_redacted: bool
    requested_tool_calls: list[RequestedToolCall]


class ResolvedModelPayload(TypedDict):
    model: str


class ToolCallPayload(TypedDict):
    name: str
    args: str
    id: str


class _ToolResultRequired(TypedDict):
    name: str
    id: str
    result: str
    truncated: bool


class ToolResultPayload(_ToolResultRequired, total=False):
    error: bool
    duration_ms: float


class ErrorPayload(TypedDict):
    message: str
