"""Byte caps on persisted text.

Caps count UTF-8 bytes (what a database column and a log line cost), never split a
character, and say how much was dropped: ``…[+N bytes]``.
"""

from __future__ import annotations

__all__ = [
    "ARGS_MAX",
    "EVENT_TYPE_MAX",
    "PAYLOAD_MAX",
    "RUN_IO_MAX",
    "STEP_TEXT_MAX",
    "TOOL_RESULT_MAX",
    "VALUE_MAX",
    "cap",
    "utf8_len",
]

# The seed's caps: step narration is the best clue to why a model misfired a tool,
# but bounded so one payload cannot balloon; tool results likewise.
STEP_TEXT_MAX = 2000
TOOL_RESULT_MAX = 4000
# A run's input, output and error text, and log_error messages.
RUN_IO_MAX = 8000
# A tool call's arguments as JSON text (past the cap, the text is cut and marked, and
# is no longer valid JSON: the marker says so).
ARGS_MAX = 8000
# Names: an event type, a tool's name and id, a payload key, a model name.
EVENT_TYPE_MAX = 200
# Any other string inside a payload, the metadata or a step's extra values.
VALUE_MAX = 4000
# A custom event's payload, a step's extra values or a run's metadata, as JSON: past
# it, a capped preview of the JSON is kept under "truncated_payload".
PAYLOAD_MAX = 16_000


def utf8_len(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def cap(text: str, max_bytes: int, *, dropped_before: int = 0) -> tuple[str, bool]:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes plus a ``…[+N bytes]`` marker
    naming the bytes dropped; and whether it was cut. ``dropped_before``: bytes the
    caller already cut from the end of the original, counted in N."""
    if text.isascii():
        if len(text) <= max_bytes and not dropped_before:
            return text, False
        kept = text[:max_bytes]
        return f"{kept}…[+{len(text) - len(kept) + dropped_before} bytes]", True
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= max_bytes and not dropped_before:
        return text, False
    if len(raw) <= max_bytes:
        return f"{text}…[+{dropped_before} bytes]", True
    end = max_bytes
    # Back off continuation bytes (10xxxxxx) so no character is split.
    while end > 0 and (raw[end] & 0xC0) == 0x80:
        end -= 1
    kept = raw[:end].decode("utf-8", "surrogatepass")
    return f"{kept}…[+{len(raw) - end + dropped_before} bytes]", True
