from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helper modules beside this file, also when pytest runs from another rootdir.
sys.path.insert(0, str(Path(__file__).parent))

import agentaudit as aa
from agentaudit_langchain import AuditCallbackHandler


@pytest.fixture
def store() -> aa.MemoryStore:
    return aa.MemoryStore()


@pytest.fixture
def auditor(store: aa.MemoryStore) -> aa.Auditor:
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
