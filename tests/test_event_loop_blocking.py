"""No blocking call on an event loop's thread (issue 11, defect 16).

agentaudit's async paths (``async with auditor.run``, a Writer's hooks, its sync
``close`` called from a coroutine, ``aclose``, ``@aa.audited`` coroutines and async
generators, ``aa.audit_tool``, ``aa.record_step``) run here under blockbuster, which
raises on any blocking call (file, socket, sqlite, sleep, a contended lock, a future
or an event waited on) made on a thread while it runs an event loop. A BlockingError
is recorded when it is raised, so a hook that swallows it as a fault still fails the
test.

The SQLite store's file is held locked by another connection while the coroutines
record, so any wait for a commit on the loop's thread would find the commit still
pending (and be caught) instead of winning a race against the writer thread. Every
read of the stores is made after the loop, where blocking is fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import blockbuster.blockbuster
import pytest
from blockbuster import BlockBuster, BlockingError

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed

T = TypeVar("T")

RUNS = 40


# -- the harness ---------------------------------------------------------------------------
def _devnull_or(allowed: Callable[..., bool], file: Any, *args: Any, **kwargs: Any) -> bool:
    return getattr(file, "name", None) == os.devnull or allowed(file, *args, **kwargs)


@contextlib.contextmanager
def blocking_calls_recorded() -> Iterator[list[str]]:
    """blockbuster active; yields the blocking calls it caught (with their stacks),
    each also raised where it was made."""
    blocked: list[str] = []

    class RecordedBlockingError(BlockingError):
        def __init__(self, func: str) -> None:
            super().__init__(func)
            blocked.append(f"{func}, called at:\n{''.join(traceback.format_stack()[:-1])}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blockbuster.blockbuster, "BlockingError", RecordedBlockingError)
        bb = BlockBuster()
        # pytest's log file handler writes every record to os.devnull, which never blocks.
        for name in ("io.TextIOWrapper.write", "io.BufferedWriter.write"):
            write = bb.functions[name]
            write.can_block_predicate = functools.partial(_devnull_or, write.can_block_predicate)
        bb.activate()
        try:
            yield blocked
        finally:
            bb.deactivate()


def _fail_if_blocked(blocked: list[str]) -> None:
    if blocked:  # the first few stacks: enough to see where, and a report pytest can print
        shown = "\n\n".join(blocked[:3])
        pytest.fail(f"{len(blocked)} blocking call(s) on an event loop's thread; {shown}", pytrace=False)


def run_without_blocking(main: Callable[[], Awaitable[T]]) -> T:
    """``asyncio.run(main())``, failing when anything blocked the loop's thread (or
    when it has not finished after a minute)."""
    with blocking_calls_recorded() as blocked:
        try:
            return asyncio.run(asyncio.wait_for(main(), 60))
        finally:
            _fail_if_blocked(blocked)


@contextlib.contextmanager
def file_locked(store: Any) -> Iterator[sqlite3.Connection | None]:
    """Another connection holds the SQLite file's write lock (nothing for a
    MemoryStore): the store's writer thread cannot commit until it is released."""
    if not isinstance(store, aa.SQLiteStore):
        yield None
        return
    conn = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def released_later(lock: sqlite3.Connection | None, delay: float) -> Awaitable[None]:
    """A task that releases ``lock`` after ``delay`` seconds, on an executor thread."""

    async def release() -> None:
        await asyncio.sleep(delay)
        if lock is not None:
            await asyncio.get_running_loop().run_in_executor(None, lock.execute, "ROLLBACK")

    return asyncio.ensure_future(release())


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield aa.MemoryStore()
        return
    sqlite = aa.SQLiteStore(tmp_path / "audit.db")
    yield sqlite
    sqlite.close()


@pytest.fixture
def auditor(store: Any) -> Iterator[aa.Auditor]:
    auditor = aa.Auditor(store, strict=True)
    yield auditor
    store.flush()
    assert auditor.faults.counts() == {}


def response(text: str, tools: tuple[aa.ToolCall, ...] = ()) -> aa.Response:
    return aa.Response(
        text=text,
        model="test/model",
        finish_reason="tool_calls" if tools else "stop",
        usage=aa.Usage(input_tokens=10, output_tokens=5),
        tool_calls=tools,
    )


# -- the tests -----------------------------------------------------------------------------
def test_many_concurrent_async_runs_record_without_blocking(store: Any, auditor: aa.Auditor) -> None:
    doomed_ids = range(RUNS, RUNS + 3)  # cancelled in a tool
    recorded: set[int] = set()
    all_recorded = asyncio.Event()

    async def one_run(i: int) -> str:
        async with auditor.run("agent", caller=f"user:{i}", input=f"question {i}") as writer:
            for step in (1, 2):
                await asyncio.sleep(0)
                call = aa.ToolCall("lookup", {"i": i, "step": step}, f"lookup-{i}-{step}")
                aa.record_step(response(f"thinking {i}.{step}", (call,)))
                writer.tool_started(call)
                await asyncio.sleep(0)
                writer.tool_finished(call, f"result {i}.{step}")
            writer.on_tool(aa.ToolCall("add", {"a": i, "b": 1}, f"add-{i}"), i + 1)
            writer.log_event("compaction_fired", {"run": i})
            writer.log_error("a recoverable error")
            if i in doomed_ids:
                writer.tool_started(aa.ToolCall("human", {}, f"human-{i}"))
            recorded.add(i)
            if len(recorded) == RUNS + len(doomed_ids):
                all_recorded.set()
            if i in doomed_ids:
                await asyncio.Event().wait()  # cancelled here, the tool still running
            if i % 10 == 9:
                raise ValueError(f"run {i} failed")
            writer.set_output(f"answer {i}")
            return writer.run_id

    async def main() -> tuple[list[Any], list[Any]]:
        tasks = [asyncio.ensure_future(one_run(i)) for i in range(RUNS)]
        doomed = [asyncio.ensure_future(one_run(i)) for i in doomed_ids]
        await asyncio.wait_for(all_recorded.wait(), 10)
        for task in doomed:
            task.cancel()
        await asyncio.sleep(0.05)
        if lock is not None:
            # Every run has started, recorded and ended (the failed and cancelled ones
            # too) with the file locked: each now awaits its finish in aclose, which
            # cannot commit yet.
            assert not any(task.done() for task in tasks + doomed)
            await asyncio.get_running_loop().run_in_executor(None, lock.execute, "ROLLBACK")
        results = await asyncio.gather(*tasks, return_exceptions=True)
        cancelled = await asyncio.gather(*doomed, return_exceptions=True)
        return results, cancelled

    with file_locked(store) as lock:
        results, cancelled = run_without_blocking(main)

    assert all(isinstance(c, asyncio.CancelledError) for c in cancelled)
    failed = [r for r in results if isinstance(r, ValueError)]
    assert len(failed) == RUNS // 10
    store.flush()
    runs = store.list_runs(aa.RunFilter(name="agent"))
    assert len(runs) == RUNS + 3
    by_status: dict[str, int] = {}
    for run in runs:
        by_status[run.status.value] = by_status.get(run.status.value, 0) + 1
        assert_run_well_formed(store, run.run_id)
        i = int(run.input.split()[-1])
        assert run.caller == f"user:{i}"
        types = [e.event_type for e in store.get_logs(run.run_id)]
        assert types[:11] == [
            "step", "resolved_model", "tool_call", "tool_result", "step", "tool_call",
            "tool_result", "tool_call", "tool_result", "compaction_fired", "error",
        ]
        if run.status is aa.RunStatus.SUCCEEDED:
            assert run.output == f"answer {i}"
            assert (run.steps, run.tool_calls, run.input_tokens, run.output_tokens) == (2, 3, 20, 10)
        elif run.status is aa.RunStatus.CANCELLED:
            assert types[11:] == ["tool_call", "tool_result"]
            assert store.get_logs(run.run_id)[-1].payload["result"] == "tool call cancelled"
        else:
            assert run.error == f"ValueError: run {i} failed"
    assert by_status == {"succeeded": RUNS - RUNS // 10, "failed": RUNS // 10, "cancelled": 3}


def test_sync_close_in_a_coroutine_returns_before_the_commit(store: Any, auditor: aa.Auditor) -> None:
    async def main() -> str:
        writer = auditor.start_run("sync-close", input="question")
        writer.on_step(1, response("let me look", (aa.ToolCall("lookup", {"q": 1}, "c1"),)))
        writer.on_tool(aa.ToolCall("lookup", {"q": 1}, "c1"), "found")
        writer.on_step(2, response("the answer"))
        writer.close(aa.RunStats(status=aa.RunStatus.SUCCEEDED, output="the answer"))
        assert writer.closed
        writer.close()  # idempotent, and just as quick
        return writer.run_id

    with file_locked(store) as lock:
        run_id = run_without_blocking(main)
        if lock is not None:  # close returned while its commit could not happen yet
            with pytest.raises(aa.StoreError, match="not committed"):
                store.flush(timeout=0.05)

    store.flush()  # outside the loop: the run is durable once this returns
    run = assert_run_well_formed(store, run_id)
    assert (run.status, run.output, run.steps, run.tool_calls) == (aa.RunStatus.SUCCEEDED, "the answer", 2, 1)
    assert [e.event_type for e in store.get_logs(run_id)] == [
        "step", "resolved_model", "tool_call", "tool_result", "step",
    ]


def test_aclose_awaits_the_commit_while_the_loop_runs(store: Any, auditor: aa.Auditor) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    async def main() -> tuple[str, bool, int]:
        ticker = asyncio.ensure_future(tick())
        writer = auditor.start_run("aclose", input="question")
        writer.on_step(1, response("the answer"))
        release = released_later(lock, 0.2)
        before = ticks
        await writer.aclose(aa.RunStatus.SUCCEEDED)
        released = release.done()
        ticked = ticks - before
        ticker.cancel()
        await release
        return writer.run_id, released, ticked

    with file_locked(store) as lock:
        run_id, released, ticked = run_without_blocking(main)

    if lock is not None:
        # aclose came back only once the file was free and the finish committed; the
        # loop ran on meanwhile (200 ms of 5 ms ticks).
        assert released
        assert ticked >= 5
        run = store.get_run(run_id)  # committed: nothing left to flush
        assert run is not None and run.status is aa.RunStatus.SUCCEEDED
    run = assert_run_well_formed(store, run_id)
    assert (run.status, run.steps) == (aa.RunStatus.SUCCEEDED, 1)


def test_audited_coroutines_async_generators_and_tools_do_not_block(store: Any, auditor: aa.Auditor) -> None:
    @aa.audit_tool
    async def lookup(city: str) -> str:
        await asyncio.sleep(0)
        return f"sunny in {city}"

    @aa.audited(auditor, name="answer")
    async def answer(city: str) -> str:
        aa.record_step(response("looking", (aa.ToolCall("lookup", {"city": city}, f"call-{city}"),)))
        found = await lookup(city, tool_call_id=f"call-{city}")
        aa.record_step(response(found))
        return found

    @aa.audited(auditor, name="stream")
    async def stream(city: str) -> AsyncIterator[str]:
        for i in range(3):
            aa.record_step(response(f"{city} part {i}"))
            await asyncio.sleep(0)
            yield f"{city}-{i}"

    @aa.audited(auditor, name="broken")
    async def broken() -> None:
        aa.record_step(response("about to fail"))
        await asyncio.sleep(0)
        raise RuntimeError("broken")

    @aa.audited(auditor, name="parent")
    async def parent(city: str) -> list[str]:
        first = await answer(city)
        parts = [part async for part in stream(city)]
        with contextlib.suppress(RuntimeError):
            await broken()
        return [first, *parts]

    cities = [f"city{i}" for i in range(10)]

    async def main() -> list[list[str]]:
        release = released_later(lock, 0.1)
        results = await asyncio.gather(*(parent(city) for city in cities))
        await release
        return results

    with file_locked(store) as lock:
        results = run_without_blocking(main)

    assert results == [[f"sunny in {c}", f"{c}-0", f"{c}-1", f"{c}-2"] for c in cities]
    store.flush()
    parents = store.list_runs(aa.RunFilter(name="parent"))
    assert len(parents) == len(cities)
    for run in parents:
        assert_run_well_formed(store, run.run_id)
        assert run.status is aa.RunStatus.SUCCEEDED
        children = store.children(run.run_id)
        assert sorted(c.name for c in children) == ["answer", "broken", "stream"]
        for child in children:
            assert_run_well_formed(store, child.run_id)
            if child.name == "broken":
                assert (child.status, child.error) == (aa.RunStatus.FAILED, "RuntimeError: broken")
            elif child.name == "answer":
                assert (child.status, child.steps, child.tool_calls) == (aa.RunStatus.SUCCEEDED, 2, 1)
            else:
                assert (child.status, child.steps) == (aa.RunStatus.SUCCEEDED, 3)


def test_the_harness_catches_a_wait_for_a_commit_on_the_loop(tmp_path: Path) -> None:
    """The tests above would catch a close that waits: waiting on the loop's thread
    for a commit the file's lock holds back is a BlockingError."""
    with aa.SQLiteStore(tmp_path / "audit.db") as store:

        async def main() -> None:
            aa.Auditor(store).start_run("queued")
            with contextlib.suppress(BlockingError):
                store.flush(timeout=1)

        with file_locked(store), blocking_calls_recorded() as blocked:
            asyncio.run(main())
        assert len(blocked) == 1 and blocked[0].startswith("lock.acquire"), blocked
