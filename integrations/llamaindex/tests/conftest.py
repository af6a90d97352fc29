from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helper modules beside this file, also when pytest runs from another rootdir.
# Appended, not prepended: run together with the LangChain suite, whose tests import
# their own conftest by name, this directory's conftest.py must not shadow it.
sys.path.append(str(Path(__file__).parent))

from llama_index.core.instrumentation import get_dispatcher

import agentaudit as aa
import agentaudit_llamaindex
from agentaudit import testing as aa_testing
from agentaudit_llamaindex import Instrumentation, instrument

# agentaudit's own code: a blocking call under it on a loop's thread is never exempt.
_OWN = (aa, agentaudit_llamaindex)
_TESTS = Path(__file__).resolve().parent


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
    with aa_testing.store_under_test(request.param, tmp_path, tests_dir=_TESTS, own=_OWN) as store:
        yield store


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
def no_blocking_on_the_loop() -> Iterator[None]:
    """Any blocking call made on a thread while it runs an event loop fails the test,
    even one something swallowed. Active in every test: blockbuster only looks at
    threads running a loop. Exempt: the test's own reads of its store, never anything
    agentaudit does (see agentaudit.testing.no_blocking_on_event_loops)."""
    # LlamaIndex's, not agentaudit's: a workflow agent's default memory loads
    # tiktoken's tokenizer (stats, directory scans, file reads) on the loop, once per
    # process.
    with aa_testing.no_blocking_on_event_loops(allow=(("llama_index/core/utils.py", "get_tokenizer"),)):
        yield
