"""The defects of "Trust the record" (issue 11), one regression test each, through the
real stores: what an honest run records always verifies, a hook after close is
refused and counted, a bad argument never leaves a run running, and no field reaches
the file unmasked or unbounded."""

from __future__ import annotations

import math
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed

SECRET = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"  # the shape of an OpenAI key


@pytest.fixture(params=["memory", "sqlite", "sqlite-sync"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        yield aa.MemoryStore()
        return
    durability = "sync" if request.param == "sqlite-sync" else "batched"
    with aa.SQLiteStore(tmp_path / "audit.db", durability=durability) as sqlite_store:
        yield sqlite_store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Any:
    with aa.SQLiteStore(tmp_path / "audit.db") as store:
        yield store


def file_bytes(directory: Path) -> bytes:
    """Every byte agentaudit wrote under ``directory``: the database, its WAL, its -shm."""
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


# -- 1. content no store can refuse ----------------------------------------------------


def test_a_lone_surrogate_in_an_event_type_or_a_model_leaves_no_gap(store: Any) -> None:
    auditor = aa.Auditor(store)
    w = auditor.start_run("agent")
    w.log_event("custom\ud800type", {"k": "v\udfff"})
    w.on_step(1, aa.Response(text="hi", model="openai/gpt\ud83d-4o", finish_reason="stop\udc00"))
    w.log_event("after", {})
    w.close()
    events = store.get_logs(w.run_id)
    assert [e.sequence for e in events] == [1, 2, 3, 4]
    assert events[0].event_type == "custom\ufffdtype"
    assert events[1].payload["model"] == "openai/gpt\ufffd-4o"
    assert store.verify(w.run_id).ok
    assert auditor.faults.counts() == {}


# -- 2. hooks during and after close -----------------------------------------------------


def test_a_hook_after_close_is_refused_counted_and_the_seal_holds(store: Any) -> None:
    auditor = aa.Auditor(store)
    w = auditor.start_run("agent")
    w.on_step(1, aa.Response(text="a", model="p/m"))
    w.close()
    w.on_tool(aa.ToolCall("late", {}, "c9"), "too late")
    w.on_step(2, aa.Response(text="late"))
    w.log_event("late", {})
    store.flush()
    run = store.get_run(w.run_id)
    assert [e.event_type for e in store.get_logs(w.run_id)] == ["step", "resolved_model"]
    assert run.steps == 1 and run.tool_calls == 0
    assert store.verify(w.run_id).ok
    assert auditor.faults.counts() == {"after_close": 3}


def test_close_racing_a_recording_thread_keeps_the_chain_consistent(store: Any) -> None:
    auditor = aa.Auditor(store)
    for _ in range(20):
        w = auditor.start_run("race")
        go = threading.Event()

        def record(writer: aa.Writer = w, started: threading.Event = go) -> None:
            started.set()
            for i in range(200):
                writer.on_tool(aa.ToolCall("t", {"i": i}, f"c{i}"), "r")

        thread = threading.Thread(target=record)
        thread.start()
        go.wait()
        w.close()
        thread.join()
        store.flush()
        run = assert_run_well_formed(store, w.run_id)
        assert run.tool_calls == len(store.get_logs(w.run_id, event_types=["tool_call"]))
    assert set(auditor.faults.counts()) <= {"after_close"}


# -- 3. one strict behaviour ---------------------------------------------------------------


@pytest.mark.parametrize("durability", ["batched", "sync"])
def test_strict_mode_raises_a_mask_fault_at_the_hook_and_records_nothing_of_it(
    tmp_path: Path, durability: str
) -> None:
    def mask(text: str) -> str:
        if "explode" in text:
            raise RuntimeError("mask broke")
        return text

    with aa.SQLiteStore(tmp_path / "a.db", durability=durability) as store:
        auditor = aa.Auditor(store, redaction=aa.RedactionPolicy(mask=mask), strict=True)
        w = auditor.start_run("agent")
        w.log_event("before", {})
        with pytest.raises(RuntimeError, match="mask broke"):
            w.on_tool(aa.ToolCall("t", {}, "c1"), "explode")
        w.log_event("after", {})
        w.close()
        assert [e.event_type for e in store.get_logs(w.run_id)] == ["before", "after"]
        assert store.verify(w.run_id).ok
        assert auditor.faults.counts() == {"mask": 1}


# -- 7. a reused run id ----------------------------------------------------------------------


def test_reusing_a_run_id_is_refused_and_the_first_run_is_untouched(store: Any) -> None:
    auditor = aa.Auditor(store)
    first = auditor.start_run("agent", run_id="fixed-id", input="pay $10 to bob")
    first.on_step(1, aa.Response(text="paying bob"))
    first.close(aa.RunStats(output="paid $10 to bob"))
    second = auditor.start_run("agent", run_id="fixed-id", input="pay $10000 to mallory")
    second.on_step(1, aa.Response(text="paying mallory"))
    second.close(aa.RunStats(status="failed", output="paid $10000 to mallory"))
    store.flush()
    run = store.get_run("fixed-id")
    assert (run.status, run.input, run.output) == (aa.RunStatus.SUCCEEDED, "pay $10 to bob", "paid $10 to bob")
    assert [e.payload.get("text") for e in store.get_logs("fixed-id")] == ["paying bob"]
    assert store.verify("fixed-id").ok
    assert auditor.faults.total >= 1  # refused at start (memory, sync) or at close (batched)


# -- 8. a run never stays running ----------------------------------------------------------


@pytest.mark.parametrize("ending", ["failed", aa.RunStatus.FAILED])
def test_close_takes_a_bare_status(store: Any, ending: Any) -> None:
    auditor = aa.Auditor(store, strict=True)
    w = auditor.start_run("agent")
    w.close(ending)
    store.flush()
    assert store.get_run(w.run_id).status is aa.RunStatus.FAILED


def test_close_with_a_bad_argument_still_closes_the_run_failed_with_the_reason(store: Any) -> None:
    auditor = aa.Auditor(store)
    w = auditor.start_run("agent")
    w.close(123)  # type: ignore[arg-type]
    w.close()  # a second close changes nothing
    store.flush()
    run = store.get_run(w.run_id)
    assert run.status is aa.RunStatus.FAILED and "bad argument" in run.error
    assert auditor.faults.counts() == {"close_argument": 1}
    assert store.verify(w.run_id).ok


@pytest.mark.parametrize("price", [-1.0, math.nan, math.inf])
def test_a_pricing_callable_returning_nonsense_costs_the_step_its_price_only(store: Any, price: float) -> None:
    auditor = aa.Auditor(store, pricing=lambda model, usage: price)
    w = auditor.start_run("agent")
    w.on_step(1, aa.Response(text="x", model="p/m", usage=aa.Usage(1, 1)))
    w.close()
    store.flush()
    run = store.get_run(w.run_id)
    assert run.status is aa.RunStatus.SUCCEEDED and run.cost_usd is None and run.steps == 1
    assert auditor.faults.counts() == {"pricing": 1}


def test_token_counts_past_64_bits_are_refused_where_they_are_made(store: Any) -> None:
    with pytest.raises(ValueError, match="2\\*\\*63"):
        aa.Usage(input_tokens=2**63)
    with pytest.raises(ValueError, match="2\\*\\*63"):
        aa.RunStats(output_tokens=2**64)
    # Totals saturate instead of overflowing the store's integers.
    auditor = aa.Auditor(store, strict=True)
    w = auditor.start_run("agent")
    w.on_step(1, aa.Response(usage=aa.Usage(input_tokens=2**63 - 1)))
    w.on_step(2, aa.Response(usage=aa.Usage(input_tokens=2**63 - 1)))
    w.close()
    store.flush()
    run = store.get_run(w.run_id)
    assert run.status is aa.RunStatus.SUCCEEDED and run.input_tokens == 2**63 - 1


# -- 9. an exception that cannot be printed ------------------------------------------------


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def test_an_unprintable_exception_reaches_the_caller_and_fails_the_run(store: Any) -> None:
    auditor = aa.Auditor(store)
    with pytest.raises(Unprintable), auditor.run("agent") as w:
        raise Unprintable()
    store.flush()
    run = store.get_run(w.run_id)
    assert run.status is aa.RunStatus.FAILED and run.error == "Unprintable: <unprintable Unprintable>"


# -- 11. boundary values -------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda p: aa.SQLiteStore(p, commit_delay=math.inf), ValueError),
        (lambda p: aa.SQLiteStore(p, queue_timeout=math.nan), ValueError),
        (lambda p: aa.SQLiteStore(p, commit_delay="0.1"), TypeError),
        (lambda p: aa.Auditor("agentaudit.db"), TypeError),
        (lambda p: aa.Auditor(aa.MemoryStore(), finish_timeout=math.inf), ValueError),
        (lambda p: aa.Auditor(aa.MemoryStore()).start_run("a", parent_run_id=123), TypeError),
        (lambda p: aa.Auditor(aa.MemoryStore()).start_run("a", metadata=[1, 2]), TypeError),
        (lambda p: aa.Auditor(aa.MemoryStore()).start_run("a", caller=42), TypeError),
    ],
)
def test_bad_values_are_refused_at_the_boundary(tmp_path: Path, make: Any, error: type) -> None:
    with pytest.raises(error):
        make(tmp_path / "x.db")


def test_the_auditor_refusing_a_path_says_what_to_pass() -> None:
    with pytest.raises(TypeError, match=r"aa.SQLiteStore\('agentaudit.db'\)"):
        aa.Auditor("agentaudit.db")


@pytest.mark.parametrize(
    "hook",
    [
        lambda w: w.on_step(1, {"text": "a dict, not a Response"}),
        lambda w: w.on_step("1", aa.Response(text="x")),
        lambda w: w.on_tool({"name": "t"}, "r"),
        lambda w: w.on_tool(aa.ToolCall("t"), "r", duration_ms="abc"),
        lambda w: w.tool_started("t"),
        lambda w: w.log_event("x", [1, 2]),
        lambda w: w.log_event("step", {"iter": 1}),  # only on_step writes steps
        lambda w: w.log_event(" tool_result ", {}),
    ],
)
def test_a_hook_given_a_bad_argument_records_and_counts_nothing_but_the_fault(store: Any, hook: Any) -> None:
    auditor = aa.Auditor(store)
    w = auditor.start_run("agent")
    hook(w)
    assert (w.steps_count(), w.tool_calls_count(), w.events_count) == (0, 0, 0)
    w.close()
    store.flush()
    run = store.get_run(w.run_id)
    assert (run.steps, run.tool_calls, store.get_logs(w.run_id)) == (0, 0, [])
    assert auditor.faults.total == 1
    with pytest.raises((TypeError, ValueError)):
        strict = aa.Auditor(aa.MemoryStore(), strict=True).start_run("agent")
        hook(strict)


def test_lenient_tool_calls_survive_absurdly_nested_json() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    call = aa.ToolCall.lenient("t", deep, "c1")
    assert call.args == deep  # kept verbatim, as a JSON string
    with pytest.raises(ValueError, match="nested too deeply"):
        aa.ToolCall("t", deep)


# -- 12. refusals reach the auditor, logged once per kind per run --------------------------


def test_sqlite_refusals_reach_the_auditor_once_per_kind_per_run(
    sqlite_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    auditor = aa.Auditor(sqlite_store)
    for n in range(2):
        taken = auditor.start_run("agent", run_id=f"dup-{n}")
        taken.close()
        again = auditor.start_run("agent", run_id=f"dup-{n}")
        again.log_event("lost", {})
        again.close()
    assert auditor.faults.counts() == {"finish_run": 2}
    refusals = [r for r in caplog.records if "refused the start of run" in r.getMessage()]
    assert len(refusals) == 2 and {"dup-0", "dup-1"} == {
        run_id for r in refusals for run_id in ("dup-0", "dup-1") if run_id in r.getMessage()
    }


# -- 13. secrets masked in every field -----------------------------------------------------


def test_no_field_reaches_the_file_with_a_secret_in_it(tmp_path: Path) -> None:
    directory = tmp_path / "db"
    directory.mkdir()
    with aa.SQLiteStore(directory / "audit.db") as store:
        auditor = aa.Auditor(store)
        w = auditor.start_run(
            f"agent {SECRET}", caller=f"user {SECRET}", input=f"in {SECRET}",
            metadata={f"k {SECRET}": SECRET, "nested": [{"x": SECRET}]},
        )
        w.on_step(
            1,
            aa.Response(text=f"t {SECRET}", model=f"m {SECRET}", finish_reason=f"f {SECRET}"),
            extra={f"e {SECRET}": SECRET},
        )
        call = aa.ToolCall(f"tool {SECRET}", {f"a {SECRET}": SECRET}, f"id {SECRET}")
        w.tool_started(call)
        w.tool_finished(call, f"result {SECRET}")
        w.log_event(f"event {SECRET}", {f"p {SECRET}": SECRET})
        w.log_error(f"error {SECRET}")
        w.close(aa.RunStats(output=f"out {SECRET}", error=f"err {SECRET}"))
        assert store.verify(w.run_id).ok
        assert "[REDACTED:openai_key]" in store.get_run(w.run_id).caller
    raw = file_bytes(directory)
    assert SECRET.encode() not in raw
    assert b"REDACTED:openai_key" in raw


# -- 15. every recorded field is bounded ----------------------------------------------------


def test_huge_payloads_are_capped_in_every_field(sqlite_store: Any) -> None:
    huge = "x" * 5_000_000
    wide = {f"k{i}": i for i in range(100_000)}
    auditor = aa.Auditor(sqlite_store, strict=True)
    w = auditor.start_run("agent", metadata={"blob": huge, "wide": wide})
    w.on_step(1, aa.Response(text="t"), extra={"blob": huge})
    w.on_tool(aa.ToolCall("t", {"blob": huge}, "c1"), huge)
    w.log_event("custom", {"blob": huge, "wide": wide, "list": list(range(100_000))})
    w.close(aa.RunStats(output=huge))
    run = sqlite_store.get_run(w.run_id)
    assert len(aa.canonical_json(run.metadata)) <= 17_000
    assert len(run.output) <= 8_100
    for event in sqlite_store.get_logs(w.run_id):
        assert len(aa.canonical_json(event.payload)) <= 17_000, event.event_type
    assert sqlite_store.verify(w.run_id).ok


def test_masking_a_huge_text_does_not_walk_all_of_it(store: Any) -> None:
    # The cut comes before the regex work: the first bytes keep their masking.
    auditor = aa.Auditor(store, strict=True)
    w = auditor.start_run("agent")
    w.on_tool(aa.ToolCall("t", {}, "c1"), f"{SECRET} " + "y" * 50_000_000)
    w.close()
    store.flush()
    (result,) = [e.payload["result"] for e in store.get_logs(w.run_id, event_types=["tool_result"])]
    assert result.startswith("[REDACTED:openai_key] yyy") and result.endswith("bytes]")


# -- the store protocol: one direction, named rows -------------------------------------------


def test_a_store_with_only_the_plain_protocol_methods_records_everything() -> None:
    class PlainStore:
        """A third party's store: the required methods only."""

        def __init__(self) -> None:
            self.inner = aa.MemoryStore()

        def start_run(self, run: aa.Run) -> None:
            self.inner.start_run(run)

        def append_log(self, event: aa.Event) -> None:
            self.inner.append_log(event)

        def finish_run(self, run_id: str, stats: aa.RunStats, finished_at: Any) -> None:
            self.inner.finish_run(run_id, stats, finished_at)

    store = PlainStore()
    auditor = aa.Auditor(store, strict=True)
    w = auditor.start_run("agent")
    call = aa.ToolCall("t", {}, "c1")
    w.tool_started(call)
    w.tool_finished(call, "r")
    w.close()
    assert_run_well_formed(store.inner, w.run_id)


def test_the_sqlite_rows_hold_what_the_chain_hashed(sqlite_store: Any, tmp_path: Path) -> None:
    auditor = aa.Auditor(sqlite_store, strict=True)
    w = auditor.start_run("agent")
    w.log_event("custom", {"b": 1, "a": [1.5, None, "é"]})
    w.close()
    sqlite_store.flush()
    conn = sqlite3.connect(tmp_path / "audit.db")
    (payload,) = conn.execute("SELECT payload FROM events").fetchone()
    assert payload == '{"a":[1.5,null,"é"],"b":1}'
    assert sqlite_store.verify(w.run_id).ok
