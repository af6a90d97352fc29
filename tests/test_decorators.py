"""@aa.audited, aa.configure, @aa.audit_tool and aa.current_run: one run per call of a
decorated function (sync, async, generator, async generator), tool calls in the current
run, and how the current run reaches tasks and threads."""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed


@pytest.fixture
def store() -> aa.MemoryStore:
    return aa.MemoryStore()


@pytest.fixture
def auditor(store: aa.MemoryStore) -> aa.Auditor:
    return aa.Auditor(store)


@pytest.fixture(autouse=True)
def no_default_auditor() -> Iterator[None]:
    previous = aa.configure(None)
    yield
    aa.configure(previous)


def only_run(store: aa.Store, **filters: Any) -> aa.Run:
    [run] = store.list_runs(aa.RunFilter(**filters))
    return run


def events(store: aa.Store, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.event_type, e.payload) for e in store.get_logs(run_id)]


# -- @audited: functions ---------------------------------------------------------------


def test_a_call_is_one_run_with_its_arguments_and_return_value(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    @aa.audited(auditor, caller="user:42")
    def triage(ticket: str, priority: int = 3, **extra: Any) -> dict[str, Any]:
        return {"queue": "billing", "priority": priority}

    assert triage("refund please", priority=1, lang="en") == {"queue": "billing", "priority": 1}

    run = only_run(store)
    assert run.name == "triage"
    assert run.caller == "user:42"
    assert run.status is aa.RunStatus.SUCCEEDED
    # bound by parameter name, **kwargs spread out, defaults not invented
    assert json.loads(run.input) == {"ticket": "refund please", "priority": 1, "lang": "en"}
    assert json.loads(run.output) == {"queue": "billing", "priority": 1}
    assert run.finished_at is not None
    assert_run_well_formed(store, run.run_id)


def test_methods_record_neither_self_nor_cls(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    class Agent:
        secret = "instance state is not input"

        @aa.audited(auditor)
        def answer(self, question: str) -> str:
            return question.upper()

        @aa.audited(auditor)
        @classmethod
        def build(cls, model: str) -> str:
            return model

        @aa.audited(auditor, name="static-helper")
        @staticmethod
        def helper(x: int) -> int:
            return x + 1

    assert Agent().answer("why?") == "WHY?"
    assert Agent.build("gpt") == "gpt"
    assert Agent.helper(1) == 2

    assert json.loads(only_run(store, name="Agent.answer").input) == {"question": "why?"}
    assert json.loads(only_run(store, name="Agent.build").input) == {"model": "gpt"}
    assert json.loads(only_run(store, name="static-helper").input) == {"x": 1}


def test_an_exception_fails_the_run_and_is_reraised_unchanged(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    boom = KeyError("missing tool")

    @aa.audited(auditor)
    def agent() -> None:
        raise boom

    with pytest.raises(KeyError) as caught:
        agent()

    assert caught.value is boom
    run = only_run(store)
    assert run.status is aa.RunStatus.FAILED
    assert "missing tool" in run.error
    assert_run_well_formed(store, run.run_id)


async def test_async_function(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    @aa.audited(auditor, name="async-agent")
    async def agent(question: str) -> str:
        await asyncio.sleep(0)
        aa.current_run().log_event("thinking", {"about": question})
        return "42"

    assert await agent("life") == "42"

    run = only_run(store)
    assert (run.name, run.status, run.output) == ("async-agent", aa.RunStatus.SUCCEEDED, "42")
    assert events(store, run.run_id) == [("thinking", {"about": "life"})]


async def test_cancelling_an_async_call_cancels_its_run(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    started = asyncio.Event()

    @aa.audited(auditor)
    async def agent() -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(agent())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert only_run(store).status is aa.RunStatus.CANCELLED


async def test_async_exception_fails_the_run(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    @aa.audited(auditor)
    async def agent() -> None:
        raise ValueError("bad plan")

    with pytest.raises(ValueError, match="bad plan"):
        await agent()
    run = only_run(store)
    assert run.status is aa.RunStatus.FAILED and "bad plan" in run.error


def test_capture_flags_leave_input_and_output_out(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    @aa.audited(auditor, capture_input=False, capture_output=False)
    def login(password: str) -> str:
        return "session-token"

    assert login("hunter2") == "session-token"
    run = only_run(store)
    assert run.input == "" and run.output == ""
    assert run.status is aa.RunStatus.SUCCEEDED


def test_large_input_and_output_are_capped(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    @aa.audited(auditor)
    def echo(document: str) -> str:
        return document

    echo("é" * 10_000)  # 20 000 UTF-8 bytes
    run = only_run(store)
    for text in (run.input, run.output):
        kept, marker = text.split("…[+")
        assert len(kept.encode()) <= 8000
        assert marker.endswith(" bytes]")


# -- @audited: generators ------------------------------------------------------------


def test_generator_run_spans_the_iteration_and_records_the_items(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    seen_inside: list[str] = []

    @aa.audited(auditor)
    def stream_answer(question: str) -> Iterator[str]:
        seen_inside.append(aa.current_run().run_id)
        yield "Hello"
        seen_inside.append(aa.current_run().run_id)
        yield " world"

    gen = stream_answer("hi")
    assert store.list_runs(aa.RunFilter()) == []  # nothing runs before the first next()

    outside: list[bool] = []
    for _chunk in gen:
        outside.append(aa.current_run().enabled)  # the consumer's code is not in the run

    run = only_run(store)
    assert seen_inside == [run.run_id, run.run_id]
    assert outside == [False, False]
    assert run.status is aa.RunStatus.SUCCEEDED
    assert json.loads(run.input) == {"question": "hi"}
    assert json.loads(run.output) == ["Hello", " world"]


def test_generator_keeps_send_throw_and_return_value(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    @aa.audited(auditor)
    def accumulator() -> Any:
        total = 0
        while True:
            try:
                value = yield total
            except ValueError:
                value = 100
            if value is None:
                return total
            total += value

    def drive() -> Any:
        result = yield from accumulator()
        return result

    gen = drive()
    assert next(gen) == 0
    assert gen.send(5) == 5
    assert gen.throw(ValueError("reset")) == 105
    with pytest.raises(StopIteration) as stop:
        gen.send(None)
    assert stop.value.value == 105
    run = only_run(store)
    assert run.status is aa.RunStatus.SUCCEEDED
    assert json.loads(run.output) == [0, 5, 105]


def test_generator_stopped_early_is_cancelled_with_what_it_yielded(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    closed = []

    @aa.audited(auditor)
    def numbers() -> Iterator[int]:
        try:
            yield from range(1_000)
        finally:
            closed.append(aa.current_run().enabled)  # cleanup code runs inside the run

    for n in numbers():
        if n == 2:
            break

    run = only_run(store)
    assert closed == [True]
    assert run.status is aa.RunStatus.CANCELLED  # cut short: the generator did not finish
    assert run.error == "closed by its consumer before it finished"
    assert json.loads(run.output) == [0, 1, 2]


def test_generator_exception_fails_the_run(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    @aa.audited(auditor)
    def flaky() -> Iterator[int]:
        yield 1
        raise RuntimeError("stream broke")

    with pytest.raises(RuntimeError, match="stream broke"):
        list(flaky())
    run = only_run(store)
    assert run.status is aa.RunStatus.FAILED
    assert "stream broke" in run.error
    assert json.loads(run.output) == [1]


def test_generator_output_keeps_items_up_to_the_cap(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    @aa.audited(auditor)
    def tokens() -> Iterator[str]:
        for i in range(5_000):
            yield f"token-{i:04d}"

    assert sum(1 for _ in tokens()) == 5_000
    output = only_run(store).output
    kept, marker = output.split("…[+")
    items = json.loads(kept)
    assert items[:2] == ["token-0000", "token-0001"]
    assert len(kept.encode()) <= 8000
    assert marker == f"{5_000 - len(items)} more items]"


async def test_async_generator(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    @aa.audited(auditor, name="async-stream")
    async def stream_answer(question: str) -> AsyncIterator[str]:
        for word in ("a", "b", "c"):
            await asyncio.sleep(0)
            assert aa.current_run().enabled
            yield word

    received = [chunk async for chunk in stream_answer("q") if not aa.current_run().enabled]
    assert received == ["a", "b", "c"]
    run = only_run(store)
    assert (run.name, run.status) == ("async-stream", aa.RunStatus.SUCCEEDED)
    assert json.loads(run.output) == ["a", "b", "c"]


async def test_async_generator_asend_athrow_and_early_close(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    @aa.audited(auditor)
    async def echo() -> AsyncIterator[Any]:
        value: Any = "ready"
        while True:
            try:
                value = yield value
            except KeyError:
                value = "recovered"

    agen = echo()
    assert await agen.asend(None) == "ready"
    assert await agen.asend("ping") == "ping"
    assert await agen.athrow(KeyError("x")) == "recovered"
    await agen.aclose()
    run = only_run(store)
    assert run.status is aa.RunStatus.CANCELLED
    assert json.loads(run.output) == ["ready", "ping", "recovered"]


async def test_async_generator_failure_and_cancellation(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    @aa.audited(auditor, name="failing")
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise OSError("socket closed")

    with pytest.raises(OSError, match="socket closed"):
        async for _ in failing():
            pass
    assert only_run(store, name="failing").status is aa.RunStatus.FAILED

    @aa.audited(auditor, name="slow")
    async def slow() -> AsyncIterator[int]:
        yield 1
        await asyncio.sleep(60)
        yield 2

    async def consume() -> None:
        async for _ in slow():
            pass

    task = asyncio.create_task(consume())
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert only_run(store, name="slow").status is aa.RunStatus.CANCELLED


# -- nesting, the default auditor, bad arguments ------------------------------------------


def test_a_decorated_call_inside_another_is_a_child_run(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    @aa.audited(auditor)
    def researcher(topic: str) -> str:
        return f"notes on {topic}"

    @aa.audited(auditor)
    def writer_agent(topic: str) -> str:
        return researcher(topic).upper()

    writer_agent("tides")
    parent = only_run(store, name="writer_agent")
    child = only_run(store, name="researcher")
    assert parent.parent_run_id is None
    assert child.parent_run_id == parent.run_id
    assert store.children(parent.run_id)[0].run_id == child.run_id


async def test_async_children_of_concurrent_parents_stay_apart(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    @aa.audited(auditor)
    async def child(tag: str) -> str:
        await asyncio.sleep(0)
        return tag

    @aa.audited(auditor)
    async def parent(tag: str) -> list[str]:
        return list(await asyncio.gather(child(tag + "1"), child(tag + "2")))

    await asyncio.gather(parent("a"), parent("b"))
    for tag in ("a", "b"):
        [p] = [r for r in store.list_runs(aa.RunFilter(name="parent")) if json.loads(r.input)["tag"] == tag]
        kids = sorted(json.loads(r.input)["tag"] for r in store.children(p.run_id))
        assert kids == [tag + "1", tag + "2"]


def test_without_any_auditor_the_function_runs_untouched(store: aa.MemoryStore) -> None:
    @aa.audited
    def agent(x: int) -> int:
        assert not aa.current_run().enabled
        return x * 2

    @aa.audited()
    def gen() -> Iterator[int]:
        yield 1

    assert agent(21) == 42
    assert list(gen()) == [1]
    assert store.list_runs(aa.RunFilter()) == []


def test_configure_sets_the_default_looked_up_at_each_call(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    @aa.audited
    def agent() -> str:
        return "ok"

    agent()  # not configured yet: nothing recorded
    assert aa.configure(auditor) is None
    agent()
    other_store = aa.MemoryStore()
    assert aa.configure(aa.Auditor(other_store)) is auditor
    agent()

    assert [r.name for r in store.list_runs(aa.RunFilter())] == ["agent"]
    assert [r.name for r in other_store.list_runs(aa.RunFilter())] == ["agent"]


def test_an_explicit_auditor_wins_over_the_default(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    default_store = aa.MemoryStore()
    aa.configure(aa.Auditor(default_store))

    @aa.audited(auditor)
    def agent() -> None:
        pass

    agent()
    assert len(store.list_runs(aa.RunFilter())) == 1
    assert default_store.list_runs(aa.RunFilter()) == []


def test_bad_arguments_are_rejected_at_decoration(auditor: aa.Auditor) -> None:
    with pytest.raises(TypeError, match="Auditor"):
        aa.configure("memory://")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Auditor"):
        aa.audited(aa.MemoryStore())  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="name"):
        aa.audited(auditor, name=3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="callable"):
        aa.audited(auditor)(42)  # type: ignore[type-var]
    with pytest.raises(ValueError, match="id_kwarg"):
        aa.audit_tool(id_kwarg="not a name")
    with pytest.raises(TypeError, match="callable"):
        aa.audit_tool(42)


def test_a_disabled_auditor_costs_nothing_and_records_nothing() -> None:
    @aa.audited(aa.Auditor(None))
    def agent() -> str:
        return "fine"

    assert agent() == "fine"


def test_arguments_that_do_not_bind_still_reach_the_function(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    @aa.audited(auditor)
    def agent(a: int) -> int:
        return a

    with pytest.raises(TypeError):
        agent(1, 2)  # type: ignore[call-arg]
    run = only_run(store)
    assert run.status is aa.RunStatus.FAILED
    assert json.loads(run.input) == {"args": [1, 2], "kwargs": {}}


# -- @audit_tool ---------------------------------------------------------------------


def test_tool_calls_are_recorded_in_the_current_run(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    @aa.audit_tool
    def search(query: str, limit: int = 5) -> list[str]:
        return [f"{query}-{i}" for i in range(2)]

    @aa.audited(auditor)
    def agent() -> None:
        assert search("tides", limit=2, tool_call_id="call_1") == ["tides-0", "tides-1"]

    agent()
    run = only_run(store)
    (call_type, call), (result_type, result) = events(store, run.run_id)
    assert (call_type, call) == ("tool_call", {"name": "search", "args": '{"limit":2,"query":"tides"}', "id": "call_1"})
    assert result_type == "tool_result"
    assert result["name"] == "search" and result["id"] == "call_1"
    assert json.loads(result["result"]) == ["tides-0", "tides-1"]
    assert result["truncated"] is False
    assert "error" not in result
    assert result["duration_ms"] >= 0
    assert run.tool_calls == 1
    assert_run_well_formed(store, run.run_id)


def test_a_failing_tool_is_flagged_and_reraised(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    @aa.audit_tool(name="http_get")
    def fetch(url: str) -> str:
        raise ConnectionError("refused")

    @aa.audited(auditor)
    def agent() -> str:
        try:
            fetch("http://x", tool_call_id="call_9")
        except ConnectionError:
            return "recovered"
        return "unreachable"

    assert agent() == "recovered"
    run = only_run(store)
    _, result = events(store, run.run_id)[1]
    assert result["error"] is True
    assert result["name"] == "http_get" and result["id"] == "call_9"
    assert result["result"] == "ConnectionError: refused"
    assert run.status is aa.RunStatus.SUCCEEDED  # the agent handled it


async def test_async_tool_and_generated_ids(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    @aa.audit_tool
    async def lookup(key: str) -> str:
        await asyncio.sleep(0)
        return key[::-1]

    @aa.audited(auditor)
    async def agent() -> list[str]:
        return list(await asyncio.gather(lookup("ab"), lookup("cd")))

    assert await agent() == ["ba", "dc"]
    run = only_run(store)
    calls = [p for t, p in events(store, run.run_id) if t == "tool_call"]
    assert [json.loads(c["args"]) for c in calls] == [{"key": "ab"}, {"key": "cd"}]
    ids = [c["id"] for c in calls]
    assert len(set(ids)) == 2 and all(i.startswith("aa-") for i in ids)
    assert_run_well_formed(store, run.run_id)


def test_a_tool_declaring_the_id_parameter_receives_it(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    @aa.audit_tool
    def remember(note: str, tool_call_id: str = "") -> str:
        return f"{note}@{tool_call_id}"

    @aa.audited(auditor)
    def agent() -> str:
        return remember("x", tool_call_id="call_7")

    assert agent() == "x@call_7"
    call = events(store, only_run(store).run_id)[0][1]
    assert call["id"] == "call_7"
    assert json.loads(call["args"]) == {"note": "x"}


def test_a_custom_id_keyword(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    @aa.audit_tool(id_kwarg="call_id")
    def ping() -> str:
        return "pong"

    @aa.audited(auditor)
    def agent() -> None:
        ping(call_id="toolu_01")

    agent()
    assert events(store, only_run(store).run_id)[0][1]["id"] == "toolu_01"


def test_outside_a_run_a_tool_just_runs(store: aa.MemoryStore) -> None:
    @aa.audit_tool
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3, tool_call_id="call_1") == 5  # the id keyword is still taken away
    assert store.list_runs(aa.RunFilter()) == []


def test_secret_tool_arguments_are_masked(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    @aa.audit_tool
    def login(user: str, password: str) -> str:
        return "ok"

    @aa.audited(auditor, capture_input=False)
    def agent() -> None:
        login("ada", "hunter2", tool_call_id="c")

    agent()
    args = events(store, only_run(store).run_id)[0][1]["args"]
    assert "hunter2" not in args and json.loads(args)["user"] == "ada"


# -- the current run across tasks and threads --------------------------------------------


def _run_id_or_none() -> str | None:
    writer = aa.current_run()
    return writer.run_id if writer.enabled else None


def test_current_run_outside_any_run_is_a_no_op_writer() -> None:
    writer = aa.current_run()
    assert writer.enabled is False
    writer.log_event("ignored", {})
    writer.on_tool(aa.ToolCall("t"), "r")
    assert aa.record_step(aa.Response(text="x")) is None


async def test_asyncio_tasks_and_to_thread_inherit_the_current_run(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    @aa.audited(auditor)
    async def agent() -> dict[str, Any]:
        me = aa.current_run().run_id
        task = await asyncio.create_task(asyncio.sleep(0, result=_run_id_or_none()))
        gathered = await asyncio.gather(*(asyncio.to_thread(_run_id_or_none) for _ in range(2)))
        loop = asyncio.get_running_loop()
        in_executor = await loop.run_in_executor(None, _run_id_or_none)
        return {"me": me, "task": task, "to_thread": gathered, "run_in_executor": in_executor}

    seen = await agent()
    assert seen["task"] == seen["me"]
    assert seen["to_thread"] == [seen["me"], seen["me"]]
    assert seen["run_in_executor"] is None  # executors do not copy the context


def test_threads_see_the_run_only_through_a_copied_context(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    @aa.audit_tool
    def work(n: int) -> int:
        return n * n

    @aa.audited(auditor)
    def agent() -> dict[str, Any]:
        me = aa.current_run().run_id
        with ThreadPoolExecutor(max_workers=4) as pool:
            plain = pool.submit(_run_id_or_none).result()
            copied = [
                pool.submit(contextvars.copy_context().run, work, n, tool_call_id=f"c{n}")
                for n in range(8)
            ]
            results = [f.result() for f in copied]
        seen_in_thread: list[str | None] = []
        thread = threading.Thread(target=lambda: seen_in_thread.append(_run_id_or_none()))
        thread.start()
        thread.join()
        return {"me": me, "plain": plain, "results": results, "thread": seen_in_thread[0]}

    seen = agent()
    assert seen["plain"] is None and seen["thread"] is None
    assert seen["results"] == [n * n for n in range(8)]
    run = only_run(store)
    assert run.run_id == seen["me"]
    assert run.tool_calls == 8
    ids = sorted(p["id"] for t, p in events(store, run.run_id) if t == "tool_result")
    assert ids == sorted(f"c{n}" for n in range(8))
    assert_run_well_formed(store, run.run_id)


# -- @audit_tool: write-ahead intent -----------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def any_store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[aa.Store]:
    if request.param == "memory":
        yield aa.MemoryStore()
        return
    sqlite = aa.SQLiteStore(tmp_path / "audit.db")
    yield sqlite
    sqlite.close()


def committed(store: aa.Store, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    store.flush(timeout=10)
    return events(store, run_id)


def test_a_tool_call_is_on_record_before_the_tool_body_runs(any_store: aa.Store) -> None:
    seen_inside: list[list[tuple[str, dict[str, Any]]]] = []

    @aa.audit_tool
    def wire_money(amount: int) -> str:
        seen_inside.append(committed(any_store, aa.current_run().run_id))
        return f"sent {amount}"

    @aa.audited(aa.Auditor(any_store, strict=True))
    def agent() -> str:
        return wire_money(100, tool_call_id="wire_1")

    assert agent() == "sent 100"
    assert seen_inside == [
        [("tool_call", {"name": "wire_money", "args": '{"amount":100}', "id": "wire_1"})]
    ]
    run = any_store.list_runs(aa.RunFilter())[0]
    assert_run_well_formed(any_store, run.run_id)
    kinds = [kind for kind, _ in committed(any_store, run.run_id)]
    assert kinds == ["tool_call", "tool_result"]


async def test_an_async_tool_call_is_on_record_before_the_tool_body_runs(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    seen_inside: list[list[str]] = []

    @aa.audit_tool
    async def lookup(key: str) -> str:
        seen_inside.append([t for t, _ in events(store, aa.current_run().run_id)])
        await asyncio.sleep(0)
        return key.upper()

    @aa.audited(auditor)
    async def agent() -> list[str]:
        return list(await asyncio.gather(lookup("a", tool_call_id="c1"), lookup("b", tool_call_id="c2")))

    assert await agent() == ["A", "B"]
    # Both tools started before either ended: their calls are on record side by side.
    assert seen_inside == [["tool_call"], ["tool_call", "tool_call"]]
    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert [t for t, _ in events(store, run.run_id)] == ["tool_call", "tool_call", "tool_result", "tool_result"]


async def test_a_tool_cancelled_mid_call_has_its_call_and_a_cancelled_result(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    started = asyncio.Event()

    @aa.audit_tool
    async def wait_for_bank(account: str) -> str:
        started.set()
        await asyncio.sleep(3600)
        return "never"

    @aa.audited(auditor)
    async def agent() -> str:
        return await wait_for_bank("A", tool_call_id="b1")

    task = asyncio.ensure_future(agent())
    await started.wait()
    assert [t for t, _ in events(store, only_run(store).run_id)] == ["tool_call"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    assert run.status is aa.RunStatus.CANCELLED
    _, result = events(store, run.run_id)[1]
    assert (result["id"], result["result"], result["error"]) == ("b1", aa.payloads.CANCELLED_TOOL_RESULT, True)


def test_a_tool_still_running_when_its_run_closes_gets_a_cancelled_result(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    entered, release = threading.Event(), threading.Event()

    @aa.audit_tool
    def slow() -> str:
        entered.set()
        release.wait(timeout=10)
        return "late"

    @aa.audited(auditor)
    def agent() -> threading.Thread:
        worker = threading.Thread(target=contextvars.copy_context().run, args=(slow,))
        worker.start()
        entered.wait(timeout=10)
        return worker  # the run ends with its tool still running

    worker = agent()
    release.set()
    worker.join(timeout=10)

    run = only_run(store)
    assert_run_well_formed(store, run.run_id)
    (_, call), (_, result) = events(store, run.run_id)
    assert call["name"] == result["name"] == "slow"
    assert (result["result"], result["error"]) == (aa.payloads.CANCELLED_TOOL_RESULT, True)
    # The result that came after the close is refused, and counted.
    assert auditor.faults.counts() == {"after_close": 1}


# -- exceptions whose str() raises are never replaced by ours ----------------------------


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception raises")


UNPRINTABLE = "Unprintable: <unprintable Unprintable>"


def test_an_unprintable_exception_reaches_the_caller_of_audited_unchanged(
    store: aa.MemoryStore,
) -> None:
    auditor = aa.Auditor(store, strict=True)
    boom = Unprintable()

    @aa.audited(auditor)
    def agent() -> None:
        raise boom

    @aa.audited(auditor, name="gen")
    def gen() -> Iterator[int]:
        yield 1
        raise boom

    for call in (agent, lambda: list(gen())):
        with pytest.raises(Unprintable) as caught:
            call()
        assert caught.value is boom
    for run in store.list_runs(aa.RunFilter()):
        assert (run.status, run.error) == (aa.RunStatus.FAILED, UNPRINTABLE)
    assert auditor.faults.counts() == {}


async def test_an_unprintable_exception_reaches_the_caller_of_async_audited_unchanged(
    store: aa.MemoryStore,
) -> None:
    auditor = aa.Auditor(store, strict=True)
    boom = Unprintable()

    @aa.audited(auditor)
    async def agent() -> None:
        raise boom

    @aa.audited(auditor, name="agen")
    async def agen() -> AsyncIterator[int]:
        yield 1
        raise boom

    async def drain() -> None:
        async for _ in agen():
            pass

    for call in (agent, drain):
        with pytest.raises(Unprintable) as caught:
            await call()
        assert caught.value is boom
    for run in store.list_runs(aa.RunFilter()):
        assert (run.status, run.error) == (aa.RunStatus.FAILED, UNPRINTABLE)


def test_an_unprintable_exception_reaches_the_caller_of_audit_tool_and_run_unchanged(
    store: aa.MemoryStore,
) -> None:
    auditor = aa.Auditor(store, strict=True)
    boom = Unprintable()

    @aa.audit_tool
    def tool() -> None:
        raise boom

    with pytest.raises(Unprintable) as caught, auditor.run("r") as writer:
        tool(tool_call_id="t1")
    assert caught.value is boom
    run = only_run(store)
    assert (run.status, run.error) == (aa.RunStatus.FAILED, UNPRINTABLE)
    _, result = events(store, writer.run_id)[1]
    assert (result["result"], result["error"]) == (UNPRINTABLE, True)
    assert auditor.faults.counts() == {}


async def test_an_unprintable_exception_leaves_async_run_and_tool_unchanged(
    store: aa.MemoryStore,
) -> None:
    auditor = aa.Auditor(store, strict=True)
    boom = Unprintable()

    @aa.audit_tool
    async def tool() -> None:
        raise boom

    with pytest.raises(Unprintable) as caught:
        async with auditor.run("r"):
            await tool()
    assert caught.value is boom
    run = only_run(store)
    assert (run.status, run.error) == (aa.RunStatus.FAILED, UNPRINTABLE)


# -- record_step: a bad iter never reaches the loop ---------------------------------------


@pytest.mark.parametrize("bad", ["1", 0, -3, True, 1.0])
def test_a_bad_iter_is_a_fault_and_the_step_is_still_recorded(
    store: aa.MemoryStore, auditor: aa.Auditor, bad: Any
) -> None:
    with auditor.run("r") as writer:
        first = aa.record_step(aa.Response(text="a"), iter=bad)
        aa.record_step(aa.Response(text="b"))
    assert first == aa.Response(text="a")
    assert [p["iter"] for t, p in events(store, writer.run_id) if t == "step"] == [1, 2]
    assert auditor.faults.counts() == {"record_step.argument": 1}
    assert_run_well_formed(store, writer.run_id)


@pytest.mark.parametrize(("bad", "error"), [("1", TypeError), (True, TypeError), (0, ValueError)])
def test_a_bad_iter_raises_in_strict_mode(store: aa.MemoryStore, bad: Any, error: type) -> None:
    auditor = aa.Auditor(store, strict=True)
    with auditor.run("r"), pytest.raises(error, match=r"iter"):
        aa.record_step(aa.Response(text="a"), iter=bad)


def test_a_bad_iter_in_a_disabled_run_is_ignored() -> None:
    with aa.Auditor(None).run("r"):
        assert aa.record_step(aa.Response(text="a"), iter="1") is None  # type: ignore[arg-type]
