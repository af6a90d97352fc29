"""Write-ahead tool intent: a tool's ``tool_call`` is on record as soon as its
``call_tool`` step starts, before the tool returns; its ``tool_result`` follows when
it ends, or says why it never will (cancelled, waiting for an event)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from li_support import events, mock_llm, only_run, say, step, tool, tool_calls
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.workflow import Context

import agentaudit as aa
from agentaudit.adapters import CANCELLED_TOOL_RESULT
from agentaudit.testing import assert_run_well_formed
from agentaudit_llamaindex._recorder import WAITING_TOOL_RESULT

pytestmark = pytest.mark.usefixtures("instrumented")


def logged(store: aa.Store) -> list[tuple[str, dict[str, Any]]]:
    """The one run's events as the store holds them right now (committed, for SQLite)."""
    store.flush(timeout=10)
    runs = store.list_runs(aa.RunFilter())
    if not runs:
        return []
    return [(e.event_type, e.payload) for e in store.get_logs(runs[0].run_id)]


async def until(condition: Any, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


class Bank:
    """A tool that waits until the test lets it answer."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def wire_money(self, amount: int) -> str:
        """Send money; waits for the bank's answer."""
        self.entered.set()
        await self.release.wait()
        return f"sent {amount}"


def banker(bank: Bank, *answers: Any) -> FunctionAgent:
    llm = mock_llm(tool_calls(("wire_1", "wire_money", {"amount": 100})), *answers)
    return FunctionAgent(name="banker", tools=[bank.wire_money], llm=llm, streaming=False)


async def test_a_running_tool_is_on_record_before_it_returns(store: aa.Store) -> None:
    bank = Bank()
    task = asyncio.ensure_future(banker(bank, say("Sent.")).run(user_msg="send 100"))
    await asyncio.wait_for(bank.entered.wait(), 10)

    # The tool is running: its call is on record, with no result yet.
    in_progress = logged(store)
    assert [kind for kind, _ in in_progress] == ["step", "resolved_model", "tool_call"]
    assert in_progress[-1][1] == {"name": "wire_money", "args": '{"amount":100}', "id": "wire_1"}
    assert only_run(store).status == aa.RunStatus.RUNNING

    bank.release.set()
    assert str(await task) == "Sent."
    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert (run.status, run.tool_calls) == (aa.RunStatus.SUCCEEDED, 1)
    assert events(store, run.run_id)[2:] == [
        *tool("wire_1", "wire_money", '{"amount":100}', "sent 100"),
        step(2, agent="banker", text="Sent."),
    ]


async def test_a_task_cancelled_mid_tool_ends_with_the_call_and_a_cancelled_result(
    store: aa.Store,
) -> None:
    bank = Bank()
    task = asyncio.ensure_future(banker(bank, say("never")).run(user_msg="send 100"))
    await asyncio.wait_for(bank.entered.wait(), 10)
    assert [kind for kind, _ in logged(store)][-1] == "tool_call"

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await until(lambda: only_run(store).status.is_terminal)
    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert (run.status, run.tool_calls) == (aa.RunStatus.CANCELLED, 1)
    assert events(store, run.run_id)[2:] == [
        ("tool_call", {"name": "wire_money", "args": '{"amount":100}', "id": "wire_1"}),
        ("tool_result", {"name": "wire_money", "id": "wire_1", "result": CANCELLED_TOOL_RESULT,
                         "truncated": False, "error": True}),
    ]


async def test_a_tool_waiting_for_a_human_is_on_record_and_runs_again(store: aa.Store) -> None:
    from workflows.events import HumanResponseEvent, InputRequiredEvent

    runs_of_tool = 0

    async def approve(ctx: Context, amount: int) -> str:
        """Pay once a human approved."""
        nonlocal runs_of_tool
        runs_of_tool += 1
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix=f"pay {amount}?")
        )
        return f"paid {amount}: {answer.response}"

    # LlamaIndex finds the context parameter by its annotation, which must be the
    # class itself (this module's annotations are strings).
    approve.__annotations__["ctx"] = Context
    llm = mock_llm(tool_calls(("pay_1", "approve", {"amount": 5})), say("Paid."))
    handler = FunctionAgent(name="payer", tools=[approve], llm=llm, streaming=False).run(
        user_msg="pay the bill"
    )
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            # The step paused: the call it made is on record, with a result saying why.
            paused = logged(store)
            assert [kind for kind, _ in paused][-2:] == ["tool_call", "tool_result"]
            assert paused[-1][1]["result"] == WAITING_TOOL_RESULT
            handler.ctx.send_event(HumanResponseEvent(response="approved"))
    assert str(await handler) == "Paid."

    assert runs_of_tool == 2  # the workflow ran the step again once the answer came
    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert (run.status, run.tool_calls) == (aa.RunStatus.SUCCEEDED, 2)
    assert events(store, run.run_id)[2:] == [
        *tool("pay_1", "approve", '{"amount":5}', WAITING_TOOL_RESULT, error=True),
        *tool("pay_1", "approve", '{"amount":5}', "paid 5: approved"),
        step(2, agent="payer", text="Paid."),
    ]
