from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The helper modules beside this file, also when pytest runs from another rootdir.
# Appended, not prepended: run together with the LangChain suite, whose tests import
# their own conftest by name, this directory's conftest.py must not shadow it.
sys.path.append(str(Path(__file__).parent))

import blockbuster.blockbuster
from blockbuster import BlockBuster, BlockingError
from llama_index.core.instrumentation import get_dispatcher

import agentaudit as aa
import agentaudit_llamaindex
from agentaudit import testing as aa_testing
from agentaudit_llamaindex import Instrumentation, instrument

_HERE = str(Path(__file__).resolve())
_TESTS = str(Path(__file__).resolve().parent) + "/"
# agentaudit's own code: a blocking call under it on a loop's thread is never exempt.
_AGENTAUDIT = tuple(str(Path(m.__file__).resolve().parent) + "/" for m in (aa, agentaudit_llamaindex))
_AA_TESTING = str(Path(aa_testing.__file__).resolve())
# The store methods a test reads with (the write protocol is agentaudit's, never wrapped).
_READS = ("get_run", "get_logs", "list_runs", "iter_runs", "count_runs", "children", "flush", "verify")


@pytest.fixture(autouse=True)
def restore_root_dispatcher() -> Iterator[None]:
    """The root dispatcher is process-wide and has no remove API: put its handler
    lists back after every test."""
    root = get_dispatcher()
    event_handlers, span_handlers = list(root.event_handlers), list(root.span_handlers)
    yield
    root.event_handlers = event_handlers
    root.span_handlers = span_handlers


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[aa.Store]:
    """Each test runs on both stores: the SQLite one is where a hook or a run's close
    could block an event loop's thread (its writer thread, its commits)."""
    if request.param == "memory":
        yield aa.MemoryStore()
        return
    sqlite = aa.SQLiteStore(tmp_path / "audit.db")
    _exempt_test_reads(sqlite)
    yield sqlite
    sqlite.flush(timeout=10)
    assert (sqlite.failed, sqlite.dropped) == (0, 0)
    sqlite.close()


@pytest.fixture
def auditor(store: aa.Store) -> aa.Auditor:
    return aa.Auditor(store)


@pytest.fixture
def instrumented(auditor: aa.Auditor) -> Iterator[Instrumentation]:
    """Instrumentation that must see no fault and hold no state once the test ran."""
    handle = instrument(auditor, caller="user:42", metadata={"env": "test"})
    yield handle
    assert auditor.faults.counts() == {}
    assert handle._recorder.tracked() == {"runs": 0, "spans": 0, "llm_calls": 0}
    handle.uninstrument()


# -- no blocking call on an event loop's thread ----------------------------------------------
@pytest.fixture(autouse=True)
def no_blocking_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any blocking call (file, socket, sqlite, sleep, a lock or a future waited on)
    made on a thread while it runs an event loop raises blockbuster's BlockingError,
    and fails the test even when something swallowed it (agentaudit counts a fault in
    a hook, a framework logs a handler's error). Active in every test: blockbuster only
    looks at threads running a loop, so it checks async tests, and sync tests where
    the test or the framework runs a loop on some thread. Exempt: the test's own reads of
    its store (see `_exempt_test_reads`), never anything agentaudit does."""
    blocked: list[str] = []

    class RecordedBlockingError(BlockingError):
        def __init__(self, func: str) -> None:
            super().__init__(func)
            blocked.append(f"{func}, called at:\n{''.join(traceback.format_stack()[:-1])}")

    monkeypatch.setattr(blockbuster.blockbuster, "BlockingError", RecordedBlockingError)
    bb = BlockBuster()
    for function in bb.functions.values():
        function.can_block_in(_HERE, "_tests_own_read")
        # LlamaIndex's, not agentaudit's: a workflow agent's default memory loads
        # tiktoken's tokenizer (stats, directory scans, file reads) on the loop, once
        # per process.
        function.can_block_in("llama_index/core/utils.py", "get_tokenizer")
    # pytest's log file handler writes every record to os.devnull, which never blocks.
    for name in ("io.TextIOWrapper.write", "io.BufferedWriter.write"):
        write = bb.functions[name]
        write.can_block_predicate = functools.partial(_devnull_or, write.can_block_predicate)
    bb.activate()
    try:
        yield
    finally:
        bb.deactivate()
    _fail_if_blocked(blocked)


def _fail_if_blocked(blocked: list[str]) -> None:
    if blocked:  # the first few stacks: enough to see where, and a report pytest can print
        shown = "\n\n".join(blocked[:3])
        pytest.fail(f"{len(blocked)} blocking call(s) on an event loop's thread; {shown}", pytrace=False)


def _devnull_or(allowed: Callable[..., bool], file: Any, *args: Any, **kwargs: Any) -> bool:
    return getattr(file, "name", None) == os.devnull or allowed(file, *args, **kwargs)


def _tests_own_read(read: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A test reading its store: blockbuster lets it block (by this function's name)."""
    return read(*args, **kwargs)


def _called_by_agentaudit() -> bool:
    """Whether the read method's caller is agentaudit's code (as opposed to a test,
    or a test helper such as agentaudit.testing called by one)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(_TESTS):
            return False
        if name.startswith(_AGENTAUDIT) and name != _AA_TESTING:
            return True
        frame = frame.f_back
    return True


def _exempt_test_reads(store: Any) -> None:
    """Wrap the store's read methods so that a test's own read (a query, a flush, on
    the loop's thread of an async test) may block; the same read made by agentaudit's
    code is still caught."""
    for name in _READS:
        read = getattr(store, name, None)
        if read is None:
            continue

        @functools.wraps(read)
        def wrapper(*args: Any, _read: Callable[..., Any] = read, **kwargs: Any) -> Any:
            if _called_by_agentaudit():
                return _read(*args, **kwargs)
            return _tests_own_read(_read, *args, **kwargs)

        setattr(store, name, wrapper)
