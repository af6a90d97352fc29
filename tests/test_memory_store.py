"""MemoryStore passes the storage conformance suite."""

import pytest

import agentaudit as aa
from agentaudit.testing import StoreConformance


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def store(self):
        return aa.MemoryStore()


def test_max_runs_evicts_oldest_finished_runs():
    store = aa.MemoryStore(max_runs=3)
    auditor = aa.Auditor(store)
    live = auditor.start_run("live")
    ids = []
    for _ in range(5):
        with auditor.run("done") as w:
            ids.append(w.run_id)
    assert store.count_runs() == 3
    assert store.get_run(live.run_id) is not None
    assert [r.run_id for r in store.list_runs(aa.RunFilter(name="done"))] == ids[:-3:-1]


def test_bad_max_runs_is_rejected():
    with pytest.raises(ValueError, match="max_runs"):
        aa.MemoryStore(max_runs=0)
