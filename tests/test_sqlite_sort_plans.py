"""Sorted listings and the min-cost filter are answered from an index (issue 15: the
viewer's runs page at 1,000,000 runs), and give the same runs, in the same order, as
the memory store.

Each sort (`RunFilter.order_by` cost, duration, tokens, either direction) reads its
own index on (value, start) and never sorts the table ("USE TEMP B-TREE FOR ORDER BY");
runs without a value come last in both directions, from a second query. A minimum
cost that few runs reach is read from the cost index rather than by walking every run
newest first (the planner cannot tell from a bound parameter how far the cost reaches).
A search word that many runs hold is probed run by run along the order's index rather
than gathered whole; both ways find the same runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import agentaudit as aa
import agentaudit.stores.sqlite as sqlite_module
from agentaudit.stores.sqlite import SQLiteStore
from tests.test_cli_search import START, fill, plans, record

SORTS = [("cost", "runs_cost"), ("duration", "runs_duration"), ("tokens", "runs_tokens")]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with SQLiteStore(path) as store:
        fill(store)
    return path


@pytest.mark.parametrize("ascending", [False, True], ids=["desc", "asc"])
@pytest.mark.parametrize(("order_by", "index"), SORTS, ids=[s for s, _ in SORTS])
def test_each_sort_reads_its_index_and_never_sorts_the_table(db: Path, order_by: str, index: str,
                                                             ascending: bool) -> None:
    with SQLiteStore(db, read_only=True) as store:
        found = plans(store, aa.RunFilter(order_by=order_by, ascending=ascending, limit=3), db)
    assert found, "no query on runs was seen"
    assert f"INDEX {index}" in found[0], found
    for plan in found:
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan, plan


def _many_costed_runs(path: Path, runs: int) -> None:
    """``runs`` finished runs, each with a cost under $0.01, loaded directly (as
    bench/bench_ui.py does) and analyzed: the shape under which the planner walked the
    start index for a minimum cost."""
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO runs (run_id, name, status, started_at, finished_at, cost_usd, model) "
        "VALUES (?, 'agent', 'succeeded', ?, ?, ?, 'm')",
        [(f"r{i:06d}", (START + timedelta(seconds=i)).isoformat(timespec="microseconds"),
          (START + timedelta(days=1)).isoformat(timespec="microseconds"), (i % 97) / 10_000)
         for i in range(runs)],
    )
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()


def test_a_minimum_cost_no_run_reaches_reads_the_cost_index(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    _many_costed_runs(path, 20_000)
    with SQLiteStore(path, read_only=True) as store:
        flt = aa.RunFilter(min_cost_usd=5.0, limit=50)
        found = plans(store, flt, path)
        assert store.list_runs(flt) == []
        reaching = aa.RunFilter(min_cost_usd=0.00955, limit=50)  # 1 run in 97: fewer than 10,000
        assert [r.run_id for r in store.list_runs(reaching)] == [
            f"r{i:06d}" for i in sorted((i for i in range(20_000) if i % 97 == 96), reverse=True)
        ][:50]
    listing = [plan for plan in found if "count(" not in plan.lower()]
    assert found and all("INDEX runs_cost" in plan for plan in found), found
    assert all("runs_started" not in plan for plan in listing), found


@pytest.fixture
def both_stores(tmp_path: Path) -> Iterator[tuple[aa.MemoryStore, SQLiteStore]]:
    memory = aa.MemoryStore()
    path = tmp_path / "audit.db"
    with SQLiteStore(path) as sqlite:
        for store in (memory, sqlite):
            fill(store)  # two runs without a cost
            for i in range(4):  # more without a cost, and ties on tokens
                record(store, f"r-nocost-{i}", minutes=10 + i, tokens=300, seconds=4)
            store.start_run(aa.Run(run_id="r-running", name="agent",  # no duration, no cost
                                   started_at=START + timedelta(minutes=30)))
        sqlite.flush()
        yield memory, sqlite


@pytest.mark.parametrize("offset", [0, 1, 3, 5, 8, 11, 20])
@pytest.mark.parametrize("limit", [None, 2, 4])
@pytest.mark.parametrize("ascending", [False, True], ids=["desc", "asc"])
@pytest.mark.parametrize("order_by", ["cost", "duration", "tokens", "started_at"])
def test_runs_without_a_value_come_last_and_pages_match_memory(
        both_stores: tuple[aa.MemoryStore, SQLiteStore], order_by: str, ascending: bool,
        limit: int | None, offset: int) -> None:
    memory, sqlite = both_stores
    flt = aa.RunFilter(order_by=order_by, ascending=ascending, limit=limit, offset=offset)
    expected = [r.run_id for r in memory.list_runs(flt)]
    assert [r.run_id for r in sqlite.list_runs(flt)] == expected
    if order_by == "cost" and offset == 0 and limit is None:
        costs = [r.cost_usd for r in sqlite.list_runs(flt)]
        first_missing = costs.index(None)
        assert all(c is not None for c in costs[:first_missing])
        assert all(c is None for c in costs[first_missing:])


# -- a search word that many runs hold: probed along the order's index -----------------------

SEARCHES = [
    aa.RunFilter(text="paris"),
    aa.RunFilter(text="PARÍS sun"),  # words in different events of one run
    aa.RunFilter(text="zur cloud", order_by="cost"),
    aa.RunFilter(text="lyon", ascending=True),  # the run's own output
    aa.RunFilter(text="timed"),  # the run's error
    aa.RunFilter(text="city", order_by="tokens", ascending=True),  # a tool's arguments
    aa.RunFilter(text="weather tiny"),  # no run has both
    aa.RunFilter(text="a", limit=2, offset=1),
    aa.RunFilter(text="paris zzz"),  # one word no run holds
]


# _FEW_HITS 1: every word with a hit is common (one probed, or all gathered when two
# are); 2: "paris" is common, "sun" is not (one probed, one gathered); 10**9: none is.
@pytest.mark.parametrize("broad_from", [1, 2, 10**9], ids=["probed", "mixed", "gathered"])
@pytest.mark.parametrize("flt", SEARCHES, ids=[str(i) for i in range(len(SEARCHES))])
def test_a_search_finds_the_same_runs_probed_or_gathered(
        both_stores: tuple[aa.MemoryStore, SQLiteStore], monkeypatch: pytest.MonkeyPatch,
        flt: aa.RunFilter, broad_from: int) -> None:
    memory, sqlite = both_stores
    monkeypatch.setattr(sqlite_module, "_FEW_HITS", broad_from)
    assert [r.run_id for r in sqlite.list_runs(flt)] == [r.run_id for r in memory.list_runs(flt)]
    assert sqlite.count_runs(flt) == memory.count_runs(flt)


def test_a_broad_search_walks_the_start_index_without_sorting(db: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_module, "_FEW_HITS", 1)  # every word counts as broad
    with SQLiteStore(db, read_only=True) as store:
        found = plans(store, aa.RunFilter(text="weather", limit=3), db)
    listing = [plan for plan in found if "run_search" in plan and "runs_started" in plan]
    assert listing, found
    assert all("USE TEMP B-TREE FOR ORDER BY" not in plan for plan in listing), listing
