"""instrument(): attaching once, detaching cleanly, the end states of a run, and
faults that stay inside agentaudit."""

from __future__ import annotations

import asyncio
import logging

import pytest
from li_support import events, get_weather, mock_llm, only_run, say, tool_calls
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms.mock import MockFunctionCallingLLM

import agentaudit as aa
import agentaudit_llamaindex
from agentaudit.testing import assert_run_well_formed
from agentaudit_llamaindex import Instrumentation, instrument

EMPTY = {"runs": 0, "spans": 0, "llm_calls": 0}


def answering_agent(answer: str = "hi", name: str = "greeter") -> FunctionAgent:
    return FunctionAgent(name=name, tools=[get_weather], llm=mock_llm(say(answer)), streaming=False)


def ours(handlers: list) -> list:
    return [h for h in handlers if type(h).__module__.startswith("agentaudit_llamaindex")]


# -- attaching ----------------------------------------------------------------------------


async def test_instrument_twice_attaches_once(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    root = get_dispatcher()
    first = instrument(auditor, caller="svc")
    second = instrument(auditor, caller="svc")

    assert second is first
    assert len(ours(root.event_handlers)) == 1 and len(ours(root.span_handlers)) == 1
    await answering_agent().run(user_msg="hello")
    assert len(store.list_runs(aa.RunFilter())) == 1  # not recorded twice
    first.uninstrument()


def test_instrument_again_with_other_options_is_refused(auditor: aa.Auditor) -> None:
    handle = instrument(auditor, caller="a")
    with pytest.raises(ValueError, match="uninstrument"):
        instrument(auditor, caller="b")
    with pytest.raises(ValueError, match="uninstrument"):
        instrument(auditor, caller="a", metadata={"env": "x"})
    handle.uninstrument()
    instrument(auditor, caller="b").uninstrument()  # fine once detached


async def test_two_auditors_over_one_store_attach_once(store: aa.Store) -> None:
    # Two Auditor objects for one store (made in two modules, say): one attachment,
    # every run recorded once.
    root = get_dispatcher()
    first = instrument(aa.Auditor(store), caller="svc")
    second = instrument(aa.Auditor(store), caller="svc")

    assert second is first
    assert len(ours(root.event_handlers)) == 1 and len(ours(root.span_handlers)) == 1
    await answering_agent().run(user_msg="hello")
    assert len(store.list_runs(aa.RunFilter())) == 1  # not recorded twice
    first.uninstrument()


def test_another_auditor_with_other_settings_over_one_store_is_refused(store: aa.Store) -> None:
    handle = instrument(aa.Auditor(store))
    with pytest.raises(ValueError, match=r"auditor pricing.*uninstrument"):
        instrument(aa.Auditor(store, pricing={"openai/gpt-4o-mini": {"input": 1.0, "output": 2.0}}))
    with pytest.raises(ValueError, match=r"auditor strict"):
        instrument(aa.Auditor(store, strict=True))
    with pytest.raises(ValueError, match=r"caller"):
        instrument(aa.Auditor(store), caller="other")
    assert len(ours(get_dispatcher().span_handlers)) == 1
    handle.uninstrument()
    instrument(aa.Auditor(store, strict=True)).uninstrument()  # fine once detached


def test_bad_arguments_are_type_errors(auditor: aa.Auditor) -> None:
    with pytest.raises(TypeError, match=r"agentaudit\.Auditor"):
        instrument(aa.MemoryStore())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="caller"):
        instrument(auditor, caller=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="metadata"):
        instrument(auditor, metadata=["env"])  # type: ignore[arg-type]
    assert ours(get_dispatcher().span_handlers) == []


async def test_two_auditors_each_record_the_run() -> None:
    stores = [aa.MemoryStore(), aa.MemoryStore()]
    handles = [instrument(aa.Auditor(s)) for s in stores]
    await answering_agent().run(user_msg="hello")
    for s in stores:
        assert only_run(s).output == "hi"
    for h in handles:
        h.uninstrument()


async def test_caller_may_be_a_callable_read_at_each_run(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    users = iter(["user:1", "user:2"])
    with instrument(auditor, caller=lambda: next(users)):
        await answering_agent().run(user_msg="a")
        await answering_agent().run(user_msg="b")
    assert sorted(r.caller for r in store.list_runs(aa.RunFilter())) == ["user:1", "user:2"]


# -- detaching ----------------------------------------------------------------------------


async def test_uninstrument_detaches_cleanly(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    root = get_dispatcher()
    before = (list(root.event_handlers), list(root.span_handlers))
    handle = instrument(auditor)
    assert handle.active
    await answering_agent().run(user_msg="recorded")

    handle.uninstrument()
    handle.uninstrument()  # idempotent

    assert not handle.active
    assert (root.event_handlers, root.span_handlers) == before
    await answering_agent().run(user_msg="not recorded")
    assert only_run(store).input == "recorded"


async def test_as_a_context_manager(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    with instrument(auditor) as handle:
        assert isinstance(handle, Instrumentation) and handle.active
        await answering_agent().run(user_msg="inside")
    assert not handle.active
    await answering_agent().run(user_msg="outside")
    assert only_run(store).input == "inside"


async def test_uninstrument_mid_run_abandons_the_run(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    handle = instrument(auditor)
    released = asyncio.Event()

    async def wait_here() -> str:
        """Waits."""
        handle.uninstrument()
        released.set()
        return "done waiting"

    agent = FunctionAgent(
        name="long", tools=[wait_here],
        llm=mock_llm(tool_calls(("w1", "wait_here", {})), say("finished")), streaming=False,
    )
    assert str(await agent.run(user_msg="go")) == "finished"

    assert released.is_set()
    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert run.status == aa.RunStatus.ABANDONED
    assert "uninstrumented" in run.error
    assert handle._recorder.tracked() == EMPTY


# -- how runs end -------------------------------------------------------------------------


async def slow_tool(seconds: float) -> str:
    """Sleeps."""
    await asyncio.sleep(seconds)
    return "slept"


def sleeper(**kwargs: object) -> FunctionAgent:
    llm = mock_llm(tool_calls(("s1", "slow_tool", {"seconds": 30})), say("never"))
    return FunctionAgent(name="sleeper", tools=[slow_tool], llm=llm, streaming=False, **kwargs)


async def test_a_workflow_timeout_ends_the_run_as_timeout(store: aa.MemoryStore, instrumented: Instrumentation) -> None:
    from workflows.errors import WorkflowTimeoutError

    with pytest.raises(WorkflowTimeoutError):
        await sleeper(timeout=0.2).run(user_msg="nap")

    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert run.status == aa.RunStatus.TIMEOUT
    assert run.error.startswith("WorkflowTimeoutError: ")
    # The tool that was running is closed as cancelled, not left dangling.
    tool_result = events(store, run.run_id)[-1]
    assert tool_result == ("tool_result", {"name": "slow_tool", "id": "s1", "result": "tool call cancelled",
                                           "truncated": False, "error": True})


async def test_cancel_run_ends_the_run_as_cancelled(store: aa.MemoryStore, instrumented: Instrumentation) -> None:
    from workflows.errors import WorkflowCancelledByUser

    handler = sleeper().run(user_msg="nap")
    async for event in handler.stream_events():
        if type(event).__name__ == "ToolCall":
            break
    await handler.cancel_run()
    with pytest.raises(WorkflowCancelledByUser):
        await handler

    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert run.status == aa.RunStatus.CANCELLED


async def test_a_cancelled_task_ends_the_run_as_cancelled(store: aa.MemoryStore, instrumented: Instrumentation) -> None:
    task = asyncio.ensure_future(sleeper().run(user_msg="nap"))
    for _ in range(200):  # until the tool is running
        await asyncio.sleep(0.01)
        if store.list_runs(aa.RunFilter()) and "tool_call" in [
            e.event_type for e in store.get_logs(store.list_runs(aa.RunFilter())[0].run_id)
        ]:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert run.status == aa.RunStatus.CANCELLED


# -- faults stay inside ---------------------------------------------------------------------


async def test_a_failing_store_never_reaches_the_agent(caplog: pytest.LogCaptureFixture) -> None:
    from agentaudit.testing import RaisingStore

    auditor = aa.Auditor(RaisingStore())
    with instrument(auditor), caplog.at_level(logging.WARNING, logger="agentaudit"):
        llm = mock_llm(tool_calls(("c1", "get_weather", {"city": "Paris"})), say("sunny"))
        result = await FunctionAgent(name="x", tools=[get_weather], llm=llm, streaming=False).run(
            user_msg="weather?"
        )
    assert str(result) == "sunny"
    assert auditor.faults.total > 0


async def test_a_fault_in_a_hook_is_counted_and_swallowed(
    store: aa.MemoryStore, auditor: aa.Auditor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentaudit_llamaindex import _recorder

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("bug in the reader")

    monkeypatch.setattr(_recorder, "read_chat_response", broken)
    with instrument(auditor) as handle:
        llm = mock_llm(tool_calls(("c1", "get_weather", {"city": "Paris"})), say("sunny"))
        result = await FunctionAgent(name="x", tools=[get_weather], llm=llm, streaming=False).run(
            user_msg="weather?"
        )
        assert handle._recorder.tracked() == EMPTY

    assert str(result) == "sunny"
    assert auditor.faults.counts() == {"llamaindex.llm_chat_end": 2}
    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    # The rest of the run is still recorded.
    assert (run.status, run.output, run.tool_calls) == (aa.RunStatus.SUCCEEDED, "sunny", 1)


@pytest.mark.parametrize("strict", [False, True])
async def test_a_fault_in_the_hook_that_ends_a_run_still_closes_it(
    store: aa.Store, monkeypatch: pytest.MonkeyPatch, strict: bool
) -> None:
    from agentaudit_llamaindex import _recorder

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("bug in the output reader")

    monkeypatch.setattr(_recorder, "run_output", broken)
    auditor = aa.Auditor(store, strict=strict)
    with instrument(auditor) as handle:
        result = await answering_agent().run(user_msg="hello")
        assert handle._recorder.tracked() == EMPTY

    assert str(result) == "hi"  # LlamaIndex swallows what strict mode raises
    run = only_run(store)
    assert_run_well_formed(store, run.run_id)  # terminal, never left running
    assert run.status == aa.RunStatus.FAILED
    assert "could not read how the run ended" in run.error
    assert auditor.faults.counts() == {"llamaindex.span_exit": 1}


async def test_a_raising_caller_callable_is_a_fault_not_an_error(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    def caller() -> str:
        raise LookupError("no request in context")

    with instrument(auditor, caller=caller):
        assert str(await answering_agent().run(user_msg="hello")) == "hi"
    run = only_run(store)
    assert (run.caller, run.status) == ("", aa.RunStatus.SUCCEEDED)
    assert auditor.faults.counts() == {"llamaindex.caller": 1}


# -- no state left behind ---------------------------------------------------------------------


async def test_no_state_is_left_behind_after_runs_end(instrumented: Instrumentation) -> None:
    recorder = instrumented._recorder

    class Exploding(MockFunctionCallingLLM):
        def chat(self, messages, **kwargs):  # type: ignore[no-untyped-def]
            raise ConnectionError("down")

    await answering_agent().run(user_msg="ok")
    assert recorder.tracked() == EMPTY
    with pytest.raises(ConnectionError):
        await FunctionAgent(name="x", tools=[get_weather], llm=Exploding(), streaming=False).run(
            user_msg="fail"
        )
    assert recorder.tracked() == EMPTY
    await asyncio.gather(*(answering_agent(name=f"a{i}").run(user_msg="x") for i in range(5)))
    assert recorder.tracked() == EMPTY


async def test_spans_outside_agent_runs_are_not_tracked(instrumented: Instrumentation) -> None:
    from llama_index.core.base.llms.types import ChatMessage

    llm = mock_llm(say("direct"))
    response = await llm.achat([ChatMessage(role="user", content="hi")])
    assert response.message.content == "direct"
    assert instrumented._recorder.tracked() == EMPTY


def test_public_names() -> None:
    assert agentaudit_llamaindex.__all__ == ["Instrumentation", "instrument"]


async def test_a_disabled_auditor_records_nothing_and_gets_in_no_way() -> None:
    with instrument(aa.Auditor(None)) as handle:
        assert str(await answering_agent().run(user_msg="hello")) == "hi"
        assert handle._recorder.tracked() == EMPTY
