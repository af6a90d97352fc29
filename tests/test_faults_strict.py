"""Strict mode counts a fault once, however many guards it passes on its way out,
and a fault never leaves a run ``running``.

In strict mode a fault is re-raised through every guard around it (the writer's
hook, an adapter's hook guard, the framework's callback manager re-raising into the
agent, which the adapter's error hook sees again). Each layer used to count it: one
store refusal read as three faults. Outside strict mode each report is a fault of its
own, even when a store hands back the same exception object again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed


class RefusingStore(aa.MemoryStore):
    """Refuses every batch that holds an event of the given types."""

    def __init__(self, *event_types: str, same_error: bool = False) -> None:
        super().__init__()
        self.event_types = set(event_types)
        # A store that keeps one saved error and raises it again each time.
        self.saved = OSError("bad block") if same_error else None

    def append_events(self, events: Sequence[aa.Event]) -> None:
        if any(e.event_type in self.event_types for e in events):
            raise self.saved or OSError("bad block")
        super().append_events(events)


def test_a_fault_raised_through_nested_guards_is_counted_once() -> None:
    faults = aa.Auditor(aa.MemoryStore(), strict=True).faults

    @faults.guarded("outer")
    def hook() -> None:
        with faults.guard("middle"), faults.guard("inner"):
            raise ValueError("ours")

    with pytest.raises(ValueError, match="ours"):
        hook()
    assert faults.counts() == {"inner": 1}
    assert faults.total == 1


def test_a_store_refusal_in_strict_mode_is_one_fault_through_every_layer() -> None:
    store = RefusingStore("tool_call")
    auditor = aa.Auditor(store, strict=True)
    writer = auditor.start_run("agent")

    # The writer's hook, then an adapter's guard, then the adapter's guard again as
    # the framework re-raises the same exception into the agent's error hook.
    with pytest.raises(OSError, match="bad block"), auditor.guard("adapter.on_chain_error"):
        try:
            with auditor.guard("adapter.on_tool_start"):
                writer.tool_started(aa.ToolCall("pay", {"amount": 5}, "c1"))
        except OSError as exc:
            with auditor.guard("adapter.on_chain_error"):
                raise exc
    assert auditor.faults.counts() == {"append_log": 1}


def test_outside_strict_mode_each_refusal_is_counted_even_with_one_saved_error() -> None:
    store = RefusingStore("step", same_error=True)
    auditor = aa.Auditor(store)
    writer = auditor.start_run("agent")

    writer.on_step(1, aa.Response(text="one"))
    writer.on_step(2, aa.Response(text="two"))
    writer.close()

    assert auditor.faults.counts() == {"append_log": 2}
    assert store.get_run(writer.run_id).status == aa.RunStatus.SUCCEEDED


@pytest.mark.parametrize("strict", [True, False])
def test_close_in_strict_mode_still_closes_the_run_when_its_last_write_is_refused(
    strict: bool,
) -> None:
    # A tool still open at close gets its cancelled result; the store refuses that
    # result. The run closes all the same, and strict mode raises the one fault after.
    store = RefusingStore("tool_result")
    auditor = aa.Auditor(store, strict=strict)
    writer = auditor.start_run("agent")
    writer.tool_started(aa.ToolCall("wait", {}, "c1"))

    if strict:
        with pytest.raises(OSError, match="bad block"):
            writer.close(aa.RunStats(status="cancelled"))
    else:
        writer.close(aa.RunStats(status="cancelled"))

    run = store.get_run(writer.run_id)
    assert run.status == aa.RunStatus.CANCELLED
    assert [e.event_type for e in store.get_logs(writer.run_id)] == ["tool_call"]
    assert auditor.faults.total == 1


def test_a_run_whose_every_write_fails_still_ends(tmp_path: Path) -> None:
    with aa.SQLiteStore(tmp_path / "a.db") as sqlite:
        auditor = aa.Auditor(sqlite, strict=True)
        writer = auditor.start_run("agent")
        writer.on_step(1, aa.Response(text="fine"))
        with pytest.raises(TypeError):
            writer.on_step("two", aa.Response(text="bad"))  # type: ignore[arg-type]
        writer.close()
        sqlite.flush()
        run = assert_run_well_formed(sqlite, writer.run_id)
        assert run.status == aa.RunStatus.SUCCEEDED and run.steps == 1
        assert auditor.faults.counts() == {"on_step": 1}
