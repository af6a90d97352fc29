"""Test helpers for third parties: a store conformance suite, an adapter contract,
and fault-injecting stores.

Store authors subclass [`StoreConformance`][agentaudit.testing.StoreConformance] in a ``Test…`` class and give it a
``store`` pytest fixture (and optionally ``reopen_store``, a callable returning a new
store over the same data). Adapter authors call [`assert_run_well_formed`][agentaudit.testing.assert_run_well_formed] on
every run their tests record. Nothing here is imported by ``import agentaudit``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from ._auditor import Auditor
from ._model import Event, Response, Run, RunFilter, RunStats, RunStatus, ToolCall, Usage
from .payloads import ID, TOOL_CALL, TOOL_RESULT
from .stores.memory import MemoryStore

__all__ = [
    "BlockingStore",
    "RaisingStore",
    "StoreConformance",
    "assert_run_well_formed",
    "exempt_test_reads",
    "no_blocking_on_event_loops",
    "paired_tool_events",
    "store_under_test",
]


def assert_run_well_formed(store: Any, run_id: str) -> Run:
    """The adapter contract: what every recorded run must satisfy. Returns the run.

    Sequences 1..n with no gap; the hash chain verifies; step ``iter`` values are
    1..k; every ``tool_call`` is followed later by a ``tool_result`` with the same id;
    the run is terminal; its tool-call count and token totals equal its events'."""
    run: Run | None = store.get_run(run_id)
    assert run is not None, f"run {run_id} was not recorded"
    events = store.get_logs(run_id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1)), "sequence gap or repeat"
    result = store.verify(run_id)
    assert result.ok, f"hash chain broken at {result.broken_sequence}: {result.reason}"
    steps = [e for e in events if e.event_type == "step"]
    assert [e.payload["iter"] for e in steps] == list(range(1, len(steps) + 1)), (
        f"step iters are {[e.payload['iter'] for e in steps]}"
    )
    pending: dict[str, int] = {}
    for e in events:
        if e.event_type == "tool_call":
            pending[e.payload["id"]] = pending.get(e.payload["id"], 0) + 1
        elif e.event_type == "tool_result":
            call_id = e.payload["id"]
            assert pending.get(call_id), f"tool_result {call_id!r} has no earlier tool_call"
            pending[call_id] -= 1
    assert not any(pending.values()), f"tool_call without tool_result: {pending}"
    assert run.status.is_terminal, f"run is still {run.status}"
    calls = sum(1 for e in events if e.event_type == "tool_call")
    assert run.tool_calls == calls, f"run.tool_calls={run.tool_calls}, tool_call events={calls}"
    assert run.steps == len(steps), f"run.steps={run.steps}, step events={len(steps)}"
    assert run.input_tokens == sum(e.payload.get("in_tokens", 0) for e in steps)
    assert run.output_tokens == sum(e.payload.get("out_tokens", 0) for e in steps)
    models = [e for e in events if e.event_type == "resolved_model"]
    assert len(models) <= 1, "resolved_model recorded more than once"
    return run


def paired_tool_events(logged: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """``logged`` ((event type, payload) in sequence order) with each ``tool_result``
    moved up to just after its ``tool_call``: a call is recorded when its tool starts,
    so the calls and results of tools run in parallel interleave. Lets a test compare
    a run's log with the order its agent saw. Asserts each result comes after its own
    call."""
    out: list[tuple[str, Any]] = []
    for kind, payload in logged:
        if kind != TOOL_RESULT:
            out.append((kind, payload))
            continue
        at = next(
            (i for i, (k, p) in enumerate(out) if k == TOOL_CALL and p[ID] == payload[ID]),
            None,
        )
        assert at is not None, f"tool_result {payload[ID]!r} before its tool_call"
        out.insert(at + 1, (kind, payload))
    return out


class RaisingStore:
    """A store that raises, as a full, locked or closed disk does: the agent must not
    notice.

    Args:
        exc: what to raise (default ``OSError("disk on fire")``).
        methods: raise only from these store methods (``"start_run"``,
            ``"append_log"``, ...); the others go to ``inner``. Default: every method.
            The optional batch methods are not forwarded (the Writer uses them only
            when the store's class defines them), so the plain ones are what fail.
        inner: the store the other methods reach (default a fresh MemoryStore).
    """

    def __init__(
        self,
        exc: Exception | None = None,
        *,
        methods: Iterable[str] | None = None,
        inner: Any = None,
    ) -> None:
        self.exc = exc or OSError("disk on fire")
        self.methods = None if methods is None else frozenset(methods)
        self.inner = inner if inner is not None else MemoryStore()
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        if self.methods is not None and name not in self.methods:
            return getattr(self.inner, name)

        def fail(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            raise self.exc

        return fail


class BlockingStore:
    """Wraps a store; ``finish_run`` (and, with ``block_appends``, ``append_log``)
    blocks until [`release`][agentaudit.testing.BlockingStore.release] is called. Models a hung database."""

    def __init__(self, inner: Any, *, block_appends: bool = False) -> None:
        self.inner = inner
        self.block_appends = block_appends
        self.released = threading.Event()

    def release(self) -> None:
        self.released.set()

    def finish_run(self, *args: Any, **kwargs: Any) -> None:
        self.released.wait()
        self.inner.finish_run(*args, **kwargs)

    def append_log(self, event: Event) -> None:
        if self.block_appends:
            self.released.wait()
        self.inner.append_log(event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _response(i: int) -> Response:
    return Response(
        text=f"thinking about step {i}",
        model="openai/gpt-4o-mini",
        finish_reason="tool_calls",
        usage=Usage(input_tokens=10 * i, output_tokens=i, reasoning_tokens=1, cache_read_tokens=2),
        tool_calls=(ToolCall("search", {"q": i}, f"call_{i}"),),
    )


def _record(auditor: Auditor, name: str, *, steps: int = 2, status: str = "succeeded", **kw: Any) -> str:
    writer = auditor.start_run(name, **kw)
    for i in range(1, steps + 1):
        writer.on_step(i, _response(i))
        writer.on_tool(ToolCall("search", {"q": i}, f"call_{i}"), f"result {i}", duration_ms=1.5)
    writer.log_event("custom", {"k": [1, 2]})
    writer.close(RunStats(status=status, output="done"))
    return writer.run_id


class StoreConformance:
    """The storage conformance suite. Subclass in a ``Test…`` class and define a
    ``store`` fixture; define ``reopen_store`` (a fixture returning a zero-argument
    callable that opens a new store over the same data) to check durability."""

    def _auditor(self, store: Any) -> Auditor:
        return Auditor(store, strict=True)

    def test_run_round_trip(self, store: Any) -> None:
        auditor = self._auditor(store)
        run_id = _record(auditor, "agent", caller="user:1", input="question", metadata={"env": "prod"})
        store.flush()
        run = assert_run_well_formed(store, run_id)
        assert (run.name, run.caller, run.input, run.output) == ("agent", "user:1", "question", "done")
        assert run.status is RunStatus.SUCCEEDED and run.metadata == {"env": "prod"}
        assert run.tool_calls == 2 and run.steps == 2
        assert (run.input_tokens, run.output_tokens, run.thinking_tokens) == (30, 3, 2)
        assert run.finished_at is not None and run.finished_at >= run.started_at
        assert run.pid > 0 and run.host

    def test_events_round_trip_exactly(self, store: Any) -> None:
        auditor = self._auditor(store)
        writer = auditor.start_run("agent", parent_run_id=None)
        writer.log_event("custom", {"text": "héllo 🌍", "n": 1.5, "nested": {"b": [1, None, True]}})
        writer.close()
        events = store.get_logs(writer.run_id)
        assert len(events) == 1
        assert events[0].payload == {"n": 1.5, "nested": {"b": [1, None, True]}, "text": "héllo 🌍"}
        assert events[0].created_at.tzinfo is not None
        assert store.verify(writer.run_id).ok

    def test_get_logs_filters(self, store: Any) -> None:
        run_id = _record(self._auditor(store), "agent", steps=3)
        assert [e.event_type for e in store.get_logs(run_id, event_types=["step"])] == ["step"] * 3
        after = store.get_logs(run_id, after=4)
        assert after[0].sequence == 5
        assert [e.sequence for e in store.get_logs(run_id, after=2, limit=3)] == [3, 4, 5]
        assert store.get_logs("no-such-run") == []

    def test_unknown_run(self, store: Any) -> None:
        assert store.get_run("no-such-run") is None
        assert store.delete_run("no-such-run") is False
        assert store.children("no-such-run") == []

    def test_list_count_filters_newest_first(self, store: Any) -> None:
        auditor = self._auditor(store)
        ids = [_record(auditor, "a" if i % 2 else "b", caller=f"user:{i % 3}", steps=1,
                       status="failed" if i == 4 else "succeeded") for i in range(6)]
        store.flush()
        listed = store.list_runs()
        assert [r.run_id for r in listed] == ids[::-1]
        assert store.count_runs() == 6
        assert {r.run_id for r in store.list_runs(RunFilter(name="a"))} == set(ids[1::2])
        assert store.count_runs(RunFilter(caller="user:0")) == 2
        assert [r.run_id for r in store.list_runs(RunFilter(status="failed"))] == [ids[4]]
        assert store.count_runs(RunFilter(status=["failed", "succeeded"])) == 6
        assert [r.run_id for r in store.list_runs(RunFilter(limit=2, offset=1))] == ids[::-1][1:3]
        pivot = listed[2].started_at
        assert all(r.started_at >= pivot for r in store.list_runs(RunFilter(since=pivot)))
        assert all(r.started_at < pivot for r in store.list_runs(RunFilter(until=pivot)))
        assert [r.run_id for r in store.iter_runs(RunFilter(name="b"))] == ids[0::2][::-1]

    def test_iter_runs_walks_everything(self, store: Any) -> None:
        auditor = self._auditor(store)
        ids = {_record(auditor, "agent", steps=0) for _ in range(7)}
        assert {r.run_id for r in store.iter_runs()} == ids
        assert {r.run_id for r in store.iter_runs(RunFilter(limit=3))} <= ids

    def test_children_and_parent_filter(self, store: Any) -> None:
        auditor = self._auditor(store)
        with auditor.run("parent") as parent:
            first = _record(auditor, "child")
            second = _record(auditor, "child")
        assert [r.run_id for r in store.children(parent.run_id)] == [first, second]
        assert store.count_runs(RunFilter(parent_run_id=parent.run_id)) == 2
        assert store.get_run(first).parent_run_id == parent.run_id

    def test_purge_by_age_and_status_never_running(self, store: Any) -> None:
        auditor = self._auditor(store)
        done = _record(auditor, "old")
        failed = _record(auditor, "old", status="failed")
        running = auditor.start_run("still-going").run_id
        store.flush()
        future = datetime.now(timezone.utc) + timedelta(seconds=5)
        assert store.purge(future, statuses=["failed"]) == 1
        assert store.get_run(failed) is None and store.get_logs(failed) == []
        assert store.purge(datetime.now(timezone.utc) - timedelta(days=1)) == 0
        assert store.purge(future) == 1
        assert store.get_run(done) is None
        assert store.get_run(running) is not None

    def test_delete_run(self, store: Any) -> None:
        run_id = _record(self._auditor(store), "agent")
        assert store.delete_run(run_id) is True
        assert store.get_run(run_id) is None and store.get_logs(run_id) == []

    def test_verify_names_first_broken_sequence(self, store: Any) -> None:
        run_id = _record(self._auditor(store), "agent", steps=2)
        assert store.verify(run_id).ok
        assert store.verify(run_id).events == len(store.get_logs(run_id))
        empty = self._auditor(store).start_run("empty")
        empty.close()
        assert store.verify(empty.run_id).ok and store.verify(empty.run_id).events == 0

    def test_concurrent_writers_one_run(self, store: Any) -> None:
        writer = self._auditor(store).start_run("threads")

        def work(t: int) -> None:
            for i in range(50):
                writer.log_event("tick", {"t": t, "i": i})

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        writer.close()
        assert [e.sequence for e in store.get_logs(writer.run_id)] == list(range(1, 401))
        assert store.verify(writer.run_id).ok

    def test_finish_overwrites_status(self, store: Any) -> None:
        writer = self._auditor(store).start_run("agent")
        store.finish_run(writer.run_id, RunStats(status="abandoned"), datetime.now(timezone.utc))
        writer.close(RunStats(status="failed", error="boom"))
        run = store.get_run(writer.run_id)
        assert run.status is RunStatus.FAILED and run.error == "boom"

    def test_durable_after_close(self, store: Any, request: Any) -> None:
        import pytest  # only this suite needs it, and only under pytest

        run_id = _record(self._auditor(store), "agent", steps=3)
        try:
            reopen_store = request.getfixturevalue("reopen_store")
        except pytest.FixtureLookupError:
            assert_run_well_formed(store, run_id)  # no reopen: at least readable now
            return
        store.close()
        again = reopen_store()
        try:
            assert_run_well_formed(again, run_id)
            assert again.get_run(run_id).output == "done"
        finally:
            again.close()


# -- no blocking call on an event loop's thread (blockbuster) --------------------------

# The store methods a test reads with (the write protocol is agentaudit's, never exempt).
_READS = ("get_run", "get_logs", "list_runs", "iter_runs", "count_runs", "children", "flush", "verify")


def _package_dir(module: ModuleType) -> str:
    return str(Path(module.__file__ or "").resolve().parent) + os.sep


def _tests_own_read(read: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A test reading its store: blockbuster lets it block (by this function's name)."""
    return read(*args, **kwargs)


def exempt_test_reads(store: Any, *, tests_dir: str | os.PathLike[str], own: Iterable[ModuleType]) -> None:
    """Let a test's own reads of ``store`` (a query, a flush, on an async test's loop
    thread) block under [`no_blocking_on_event_loops`][agentaudit.testing.no_blocking_on_event_loops]; the same read made from
    the code of ``own`` (agentaudit, an adapter) is still caught."""
    tests = str(Path(tests_dir).resolve()) + os.sep
    own_dirs = tuple(_package_dir(m) for m in own)
    this_file = str(Path(__file__).resolve())

    def called_by_own_code() -> bool:
        frame: FrameType | None = sys._getframe(2)
        while frame is not None:
            name = frame.f_code.co_filename
            if name.startswith(tests):
                return False
            if name.startswith(own_dirs) and name != this_file:
                return True
            frame = frame.f_back
        return True

    for name in _READS:
        read = getattr(store, name, None)
        if read is None:
            continue

        @functools.wraps(read)
        def wrapper(*args: Any, _read: Callable[..., Any] = read, **kwargs: Any) -> Any:
            if called_by_own_code():
                return _read(*args, **kwargs)
            return _tests_own_read(_read, *args, **kwargs)

        setattr(store, name, wrapper)


@contextlib.contextmanager
def store_under_test(
    kind: str, directory: str | os.PathLike[str], *, tests_dir: str | os.PathLike[str],
    own: Iterable[ModuleType],
) -> Iterator[Any]:
    """An adapter suite's store: ``"memory"``, or ``"sqlite"`` (a file in ``directory``,
    the test's own reads exempted as `exempt_test_reads` says; at the end everything
    written must have landed: nothing failed, nothing dropped)."""
    if kind == "memory":
        yield MemoryStore()
        return
    if kind != "sqlite":
        raise ValueError(f"kind must be 'memory' or 'sqlite', got {kind!r}")
    from .stores.sqlite import SQLiteStore

    sqlite = SQLiteStore(Path(directory) / "audit.db")
    exempt_test_reads(sqlite, tests_dir=tests_dir, own=own)
    yield sqlite
    sqlite.flush(timeout=10)
    assert (sqlite.failed, sqlite.dropped) == (0, 0), "the SQLite store failed or dropped writes"
    sqlite.close()


@contextlib.contextmanager
def no_blocking_on_event_loops(allow: Iterable[tuple[str, str]] = ()) -> Iterator[None]:
    """Fail (``AssertionError``, with the first stacks) when any blocking call is made
    on a thread while it runs an event loop, even one something swallowed (a hook
    counts a fault; a framework logs a handler's error). Needs the ``blockbuster``
    package. Exempt: a test's reads wrapped by [`exempt_test_reads`][agentaudit.testing.exempt_test_reads], writes to
    ``os.devnull`` (pytest's log handler), and the ``(file suffix, function)`` pairs
    in ``allow`` (a framework's own blocking code)."""
    import blockbuster.blockbuster as bb_module  # a test dependency, not the core's

    blocked: list[str] = []
    base_error = bb_module.BlockingError

    class RecordedBlockingError(base_error):  # type: ignore[misc, valid-type]
        def __init__(self, func: str) -> None:
            super().__init__(func)
            blocked.append(f"{func}, called at:\n{''.join(traceback.format_stack()[:-1])}")

    bb_module.BlockingError = RecordedBlockingError  # type: ignore[misc]
    buster = bb_module.BlockBuster()
    this_file = str(Path(__file__).resolve())
    for function in buster.functions.values():
        function.can_block_in(this_file, "_tests_own_read")
        for file_suffix, function_name in allow:
            function.can_block_in(file_suffix, function_name)
    for name in ("io.TextIOWrapper.write", "io.BufferedWriter.write"):
        write = buster.functions[name]
        write.can_block_predicate = functools.partial(_devnull_or, write.can_block_predicate)
    buster.activate()
    try:
        yield
    finally:
        buster.deactivate()
        bb_module.BlockingError = base_error  # type: ignore[misc]
    if blocked:
        shown = "\n\n".join(blocked[:3])
        raise AssertionError(f"{len(blocked)} blocking call(s) on an event loop's thread; {shown}")


def _devnull_or(allowed: Callable[..., bool], file: Any, *args: Any, **kwargs: Any) -> bool:
    return getattr(file, "name", None) == os.devnull or bool(allowed(file, *args, **kwargs))
