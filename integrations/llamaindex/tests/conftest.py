from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helper modules beside this file, also when pytest runs from another rootdir.
sys.path.insert(0, str(Path(__file__).parent))

from llama_index.core.instrumentation import get_dispatcher

import agentaudit as aa
from agentaudit_llamaindex import Instrumentation, instrument


@pytest.fixture(autouse=True)
def restore_root_dispatcher() -> Iterator[None]:
    """The root dispatcher is process-wide and has no remove API: put its handler
    lists back after every test."""
    root = get_dispatcher()
    event_handlers, span_handlers = list(root.event_handlers), list(root.span_handlers)
    yield
    root.event_handlers = event_handlers
    root.span_handlers = span_handlers


@pytest.fixture
def store() -> aa.MemoryStore:
    return aa.MemoryStore()


@pytest.fixture
def auditor(store: aa.MemoryStore) -> aa.Auditor:
    return aa.Auditor(store)


@pytest.fixture
def instrumented(auditor: aa.Auditor) -> Iterator[Instrumentation]:
    """Instrumentation that must see no fault and hold no state once the test ran."""
    handle = instrument(auditor, caller="user:42", metadata={"env": "test"})
    yield handle
    assert auditor.faults.counts() == {}
    assert handle._recorder.tracked() == {"runs": 0, "spans": 0, "llm_calls": 0}
    handle.uninstrument()
