"""`stats` from the summary rollup (`agentaudit.stores._server_summary`) against the
exact path, on both servers: the writers keep the rollup through every change
(finish, import, abandon, late events, delete, purge, many processes at once), an
upgraded database gets it filled, and what it cannot answer is computed exactly."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import agentaudit as aa
from agentaudit._chain import seal_events
from agentaudit._verify import record_of_run, seal_of
from agentaudit.stores._server_summary import ALPHA, TOTALS, read_rollup

from .conftest import admin_sql
from .test_server_processes import _start_together

MODELS = ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4", "google/gemini-2.0-flash")
STATUSES = ("succeeded", "succeeded", "succeeded", "failed", "timeout", "cancelled")
COUNTS = (
    "runs",
    "failed",
    "finished",
    "input_tokens",
    "output_tokens",
    "thinking_tokens",
    "tool_calls",
    "steps",
)
SPREADS = tuple(f"{what}_{p}_ms" for what in ("duration", "step", "tool") for p in ("p50", "p95"))
# A fixed instant, so the windows' edges fall in the same place on every run. With
# the clock's time (e.g. 20:39 UTC on 2026-11-30) a window's partial first day held
# step times of -1075, -708, 99, 318 ... ms: its p50 interpolates across zero, where
# the histogram's bound is 0.99 % of the larger neighbour, not of the p50 (storage.md).
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(server_url: str) -> Iterator[Any]:
    opened = aa.open_store(server_url)
    yield opened
    opened.close()


def _run(
    rng: random.Random, started: datetime, *, status: str = "", model: str = ""
) -> tuple[aa.Run, list[aa.Event], str]:
    """A run as a spool forwards it: its row, its sealed events, its seal."""
    run_id = f"{rng.getrandbits(96):024x}"
    model = model or rng.choice(MODELS)
    status = status or rng.choice(STATUSES)
    payloads: list[tuple[str, dict[str, Any]]] = [("resolved_model", {"model": model})]
    for step in range(1, rng.randint(1, 3) + 1):
        payloads.append(
            (
                "step",
                {
                    "iter": step,
                    "text": "t",
                    "in_tokens": 10,
                    "out_tokens": 2,
                    # now and then a negative one (a clock stepped back)
                    "step_ms": round(rng.lognormvariate(6, 1.2) * rng.choice([1, 1, 1, 1, -1]), 3),
                },
            )
        )
        payloads.append(("tool_call", {"id": f"c{step}", "name": "lookup", "args": {}}))
        payloads.append(
            (
                "tool_result",
                {
                    "id": f"c{step}",
                    "result": "ok",
                    "duration_ms": rng.choice([0.0, round(rng.expovariate(1 / 40), 3)]),
                },
            )
        )
    events = seal_events(run_id, 0, "", payloads, started + timedelta(milliseconds=1))
    running = status == "running"
    steps = (len(payloads) - 1) // 2
    run = aa.Run(
        run_id=run_id,
        name=rng.choice(["triage", "support"]),
        caller=f"user:{rng.randrange(20)}",
        status=status,
        started_at=started,
        finished_at=None
        if running
        else started + timedelta(milliseconds=rng.lognormvariate(8, 1.5)),
        input="q",
        output="" if running else "a",
        error="boom" if status == "failed" else "",
        tool_calls=steps,
        steps=steps,
        input_tokens=rng.randrange(1, 500),
        output_tokens=rng.randrange(1, 90),
        thinking_tokens=rng.randrange(0, 3),
        cost_usd=None if rng.random() < 0.2 else round(rng.uniform(0.0001, 0.01), 6),
        host="h",
        pid=1,
    )
    seal = "" if running else seal_of(record_of_run(run), None, len(events), events[-1].hash)
    return run, events, seal


def _import(store: Any, made: Sequence[tuple[aa.Run, list[aa.Event], str]]) -> None:
    for start in range(0, len(made), 250):
        chunk = made[start : start + 250]
        store.import_records(
            [r for r, _e, _s in chunk],
            [e for _r, es, _s in chunk for e in es],
            {r.run_id: s for r, _e, s in chunk if s},
        )


def _load(store: Any, count: int, seed: int = 1) -> list[tuple[aa.Run, list[aa.Event], str]]:
    """``count`` runs spread over the last 45 days (some still running)."""
    rng = random.Random(seed)
    made = [
        _run(
            rng,
            NOW - timedelta(days=45) + timedelta(seconds=rng.uniform(0, 45 * 86400 - 60)),
            status="running" if rng.random() < 0.05 else "",
        )
        for _ in range(count)
    ]
    _import(store, made)
    return made


def _both(
    store: Any, by: str, flt: aa.RunFilter | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(exact, from the rollup) of the same summary."""
    store.summary_exact_below = 10**9
    exact = store.summary(by, flt) if by != "total" else [store.summary_total(flt)]
    store.summary_exact_below = 0
    rolled = store.summary(by, flt) if by != "total" else [store.summary_total(flt)]
    return exact, rolled


def _agree(store: Any, by: str, flt: aa.RunFilter | None = None) -> None:
    exact, rolled = _both(store, by, flt)
    assert [g[by] for g in rolled] == [g[by] for g in exact]
    for want, got in zip(exact, rolled, strict=True):
        for name in COUNTS:
            assert got[name] == want[name], (by, want[by], name)
        assert got["failure_rate"] == want["failure_rate"]
        if want["cost_usd"] is None:
            assert got["cost_usd"] is None
        else:
            assert got["cost_usd"] == pytest.approx(want["cost_usd"], abs=2e-9)
        for name in SPREADS:
            if want[name] is None:
                assert got[name] is None, (by, want[by], name)
            else:  # the documented bound, plus the 3 decimals both are rounded to
                assert abs(got[name] - want[name]) <= ALPHA * abs(want[name]) + 0.002, (
                    by,
                    want[by],
                    name,
                )


def _agree_all(store: Any) -> None:
    store.flush()
    cut = NOW - timedelta(days=4, hours=7, minutes=13)
    for by in ("day", "model", "status", "total"):
        _agree(store, by)
        _agree(store, by, aa.RunFilter(since=cut))
        _agree(store, by, aa.RunFilter(since=NOW - timedelta(days=8, hours=3), until=cut))
        _agree(
            store, by, aa.RunFilter(since=NOW - timedelta(days=38, hours=2))
        )  # a whole month, and days
        _agree(store, by, aa.RunFilter(until=NOW - timedelta(days=2, hours=5)))
    _agree(store, "day", aa.RunFilter(model=MODELS[1], since=cut))
    _agree(store, "model", aa.RunFilter(status=["failed", "timeout"]))
    _agree(store, "status", aa.RunFilter(status="running"))
    _assert_stored_is_rebuilt(store)


def _assert_stored_is_rebuilt(store: Any) -> None:
    """The cells and buckets held are exactly what the runs held make, from scratch."""

    def read(cur: Any) -> tuple[Any, ...]:
        fresh = read_rollup(cur, store.dialect, "1 = 1", ())
        cur.execute(
            "SELECT grain, day, model, status, runs, failed, input_tokens, output_tokens, thinking_tokens, "
            "cost_usd, priced, tool_calls, steps FROM run_rollup WHERE runs <> 0"
        )
        cells = {(g, d, m, s): list(rest) for g, d, m, s, *rest in cur.fetchall()}
        cur.execute(
            "SELECT grain, day, model, status, kind, bucket, n FROM run_rollup_ms WHERE n <> 0"
        )
        buckets = {tuple(row[:6]): int(row[6]) for row in cur.fetchall()}
        return fresh, cells, buckets

    fresh, cells, buckets = store._run(read)
    assert buckets == fresh.buckets
    assert cells.keys() == fresh.cells.keys()
    for key, values in fresh.cells.items():
        held = [float(v) for v in cells[key]]
        cost = TOTALS.index("cost_usd")
        assert held[:cost] + held[cost + 1 :] == [
            float(v) for v in values[:cost] + values[cost + 1 :]
        ], key
        assert held[cost] == pytest.approx(values[cost], abs=1e-9)


def test_the_rollup_agrees_with_the_exact_path(store: Any) -> None:
    _load(store, 2500)
    _agree_all(store)


def test_the_rollup_follows_every_change(store: Any) -> None:
    made = _load(store, 1200, seed=2)
    running = [(r, es, s) for r, es, s in made if r.status is aa.RunStatus.RUNNING]
    assert len(running) > 20
    # a forwarded run takes its final row
    finals = [
        (
            r.finished(
                aa.RunStats(output="done", status="succeeded"), r.started_at + timedelta(seconds=3)
            ),
            es,
        )
        for r, es, _s in running[:10]
    ]
    _import(
        store,
        [(run, es, seal_of(record_of_run(run), None, len(es), es[-1].hash)) for run, es in finals],
    )
    _agree_all(store)
    # the rest stopped long ago: reaped (abandoned, totals from their events)
    reaped = store.reap(timedelta(minutes=1))
    assert len(reaped) == len(running) - 10
    _agree_all(store)
    # late events of an abandoned run: its totals and buckets are redone
    run, events, _seal = running[12]
    late = seal_events(
        run.run_id,
        len(events),
        events[-1].hash,
        [("step", {"iter": 9, "text": "late", "in_tokens": 5, "step_ms": 12345.0})],
        run.started_at + timedelta(seconds=2),
    )
    store.import_records([], late, {})
    assert store.get_run(run.run_id).steps == sum(e.event_type == "step" for e in [*events, *late])
    _agree_all(store)
    # the host's real final row replaces the abandoned one
    final = run.finished(
        aa.RunStats(output="late but done", status="failed", error="x"),
        run.started_at + timedelta(seconds=40),
    )
    everything = [*events, *late]
    store.import_records(
        [final],
        everything,
        {run.run_id: seal_of(record_of_run(final), None, len(everything), everything[-1].hash)},
    )
    assert store.get_run(run.run_id).status is aa.RunStatus.FAILED
    _agree_all(store)
    # deleted runs, and purged ones (whole days and a partial one)
    for doomed, _es, _s in made[100:130]:
        assert store.delete_run(doomed.run_id)
    _agree_all(store)
    assert store.purge(NOW - timedelta(days=6, hours=5)) > 0
    _agree_all(store)


def test_runs_recorded_through_the_writer(store: Any) -> None:
    """The writer's own path: runs started, logged and finished by an Auditor (in one
    batch, and across batches)."""
    auditor = aa.Auditor(store)
    rng = random.Random(5)
    for i in range(120):
        writer = auditor.start_run("job", caller="me")
        writer.on_step(
            1,
            aa.Response(
                text="x", model=MODELS[i % 3], usage=aa.Usage(input_tokens=i, output_tokens=1)
            ),
        )
        writer.on_tool(aa.ToolCall("t", {}, "c"), "ok", duration_ms=rng.uniform(1, 900))
        if i % 2:
            store.flush()  # the finish lands in a later batch than the start
        writer.close(
            aa.RunStats(output="o", status=rng.choice(["succeeded", "failed"]), cost_usd=0.001 * i)
        )
    _agree_all(store)


def test_many_processes_finish_runs_at_once(server_url: str, tmp_path: Path) -> None:
    aa.open_store(server_url).close()
    outputs = _start_together(server_url, "write", 6, tmp_path / "gate", "15")
    ids = [run_id for out in outputs for run_id in json.loads(out)]
    store = aa.open_store(server_url)
    try:
        assert store.count_runs() == len(ids) == 90
        _agree_all(store)
        store.summary_exact_below = 0
        (total,) = store.summary("model")
        assert total["runs"] == 90 and total["input_tokens"] == 6 * 90  # as the workers wrote
    finally:
        store.close()


def test_filters_the_rollup_cannot_answer_are_exact(store: Any, server_url: str) -> None:
    _load(store, 600, seed=3)
    store.summary_exact_below = 0
    served = [
        store.summary("model"),
        store.summary("day", aa.RunFilter(since=NOW - timedelta(days=3))),
    ]
    exact = [
        store.summary("caller", aa.RunFilter(since=NOW - timedelta(days=3))),
        store.summary("model", aa.RunFilter(caller="user:3")),
        store.summary("model", aa.RunFilter(has_error=True)),
        store.summary("name"),
        store.summary("day", aa.RunFilter(min_cost_usd=0.005)),
    ]
    # emptied behind the store's back: what the rollup served changes, the rest does not
    admin_sql(server_url, "DELETE FROM run_rollup")
    admin_sql(server_url, "DELETE FROM run_rollup_ms")
    assert [
        store.summary("model"),
        store.summary("day", aa.RunFilter(since=NOW - timedelta(days=3))),
    ] != served
    assert exact == [
        store.summary("caller", aa.RunFilter(since=NOW - timedelta(days=3))),
        store.summary("model", aa.RunFilter(caller="user:3")),
        store.summary("model", aa.RunFilter(has_error=True)),
        store.summary("name"),
        store.summary("day", aa.RunFilter(min_cost_usd=0.005)),
    ]
    # a small set is computed exactly, whatever the rollup holds
    store.summary_exact_below = 10**9
    (whole,) = store.summary("model", aa.RunFilter(model=MODELS[0]))
    assert whole["runs"] == store.count_runs(aa.RunFilter(model=MODELS[0]))


def test_an_upgraded_database_gets_the_same_stats(server_url: str) -> None:
    store = aa.open_store(server_url)
    try:
        _load(store, 800, seed=4)
        store.summary_exact_below = 0
        before = {by: store.summary(by) for by in ("day", "model", "status")}
    finally:
        store.close()
    # the database as the version before the rollup left it, with its runs
    admin_sql(server_url, "DROP TABLE run_rollup")
    admin_sql(server_url, "DROP TABLE run_rollup_ms")
    admin_sql(server_url, "DELETE FROM schema_version WHERE version = 6")
    store = aa.open_store(server_url)  # upgrades: the migration fills the rollup
    try:
        store.summary_exact_below = 0
        assert {by: store.summary(by) for by in ("day", "model", "status")} == before
        _agree_all(store)
    finally:
        store.close()
