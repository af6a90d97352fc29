from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helper modules beside this file, also when pytest runs from another rootdir.
sys.path.insert(0, str(Path(__file__).parent))


import agentaudit as aa
import agentaudit_langchain
from agentaudit import testing as aa_testing
from agentaudit_langchain import AuditCallbackHandler

# agentaudit's own code: a blocking call under it on a loop's thread is never exempt.
_OWN = (aa, agentaudit_langchain)
_TESTS = Path(__file__).resolve().parent


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[aa.Store]:
    """Each test runs on both stores: the SQLite one is where a hook or a run's close
    could block an event loop's thread (its writer thread, its commits)."""
    with aa_testing.store_under_test(request.param, tmp_path, tests_dir=_TESTS, own=_OWN) as store:
        yield store


@pytest.fixture
def auditor(store: aa.Store) -> aa.Auditor:
    # Strict: a fault in the handler fails the test instead of being counted.
    return aa.Auditor(store, strict=True)


def assert_no_state(handler: AuditCallbackHandler) -> None:
    """Nothing of any run is left in the handler once its invocations returned."""
    assert handler._runs == {}
    assert handler._models == {}
    assert handler._tools == {}


@pytest.fixture
def handler(auditor: aa.Auditor) -> Iterator[AuditCallbackHandler]:
    h = AuditCallbackHandler(auditor, caller="user:42", metadata={"env": "test"})
    yield h
    assert auditor.faults.counts() == {}
    assert_no_state(h)


# -- no blocking call on an event loop's thread ----------------------------------------------
@pytest.fixture(autouse=True)
def no_blocking_on_the_loop() -> Iterator[None]:
    """Any blocking call made on a thread while it runs an event loop fails the test,
    even one something swallowed. Active in every test: blockbuster only looks at
    threads running a loop. Exempt: the test's own reads of its store, never anything
    agentaudit does (see agentaudit.testing.no_blocking_on_event_loops)."""
    with aa_testing.no_blocking_on_event_loops(allow=()):
        yield
