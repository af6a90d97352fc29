"""`@aa.audited` and `@aa.audit_tool`, bare and with arguments, sync and async, as a
user with `mypy --strict` writes them: decorated functions keep their return types,
and a tool takes the model's call id as `tool_call_id=`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import agentaudit as aa

auditor = aa.Auditor(aa.MemoryStore())


@aa.audit_tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"sunny in {city}"


@aa.audit_tool(name="add_numbers", id_kwarg="call_id")
async def add(a: int, b: int) -> int:
    return a + b


@aa.audited(auditor, name="support-agent", caller="user:42")
def agent(question: str) -> str:
    call = aa.ToolCall("get_weather", {"city": "Paris"}, "call_1")
    aa.record_step(aa.Response(text="Let me look.", tool_calls=[call]))
    weather = get_weather(**call.args, tool_call_id=call.id)
    total = asyncio.run(add(1, 2, call_id="call_2"))
    return f"{weather}, {total}"


@aa.audited
def untouched(x: int) -> int:
    return x * 2


@aa.audited(name="async-agent")
async def async_agent(question: str) -> str:
    return question.upper()


answer: str = agent("What is the weather?")
doubled: int = untouched(21)
shouted: str = asyncio.run(async_agent("hi"))
print(answer, doubled, shouted)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any

    from typing_extensions import assert_type

    async def typed_results() -> None:
        assert_type(await add(1, 2), int)

    assert_type(agent("x"), str)
    assert_type(get_weather("Paris"), str)
    assert_type(add, Callable[..., Coroutine[Any, Any, int]])
    assert_type(aa.configure(auditor), aa.Auditor | None)
