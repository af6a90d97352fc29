"""What users of such tools expect (issue 13, item 10): full-text search, filters
by model, error and cost, sort orders, time percentiles, `delete RUN`, and shell
completion, through the real `agentaudit` command; the filters behave the same on
the memory and SQLite stores, and the new filters are answered from an index.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import agentaudit as aa
from agentaudit.stores.sqlite import SQLiteStore
from tests.test_cli_readonly import AGENTAUDIT, agentaudit

START = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)


def record(store: Any, run_id: str, *, name: str = "agent", model: str = "openai/gpt-4o-mini",
           minutes: int = 0, seconds: float = 1.0, tokens: int = 10, cost: float | None = None,
           status: str = "succeeded", error: str = "", input: str = "", output: str = "",
           step_text: str = "", tool_args: dict[str, Any] | None = None, tool_result: str = "",
           step_ms: float = 100.0, tool_ms: float = 10.0) -> None:
    """One run through the store protocol, with the events an adapter writes (their
    times and durations chosen; the filters do not look at hashes)."""
    started = START + timedelta(minutes=minutes)
    store.start_run(aa.Run(run_id=run_id, name=name, started_at=started, input=input))
    payloads: list[tuple[str, dict[str, Any]]] = [
        ("step", {"iter": 1, "model": model, "text": step_text, "in_tokens": tokens, "out_tokens": 0,
                  "step_ms": step_ms}),
        ("resolved_model", {"model": model}),
    ]
    if tool_args is not None:
        payloads += [
            ("tool_call", {"name": "search", "args": json.dumps(tool_args), "id": "c1"}),
            ("tool_result", {"name": "search", "result": tool_result, "id": "c1", "duration_ms": tool_ms}),
        ]
    store.append_events([aa.Event(run_id, sequence, kind, payload, started)
                         for sequence, (kind, payload) in enumerate(payloads, 1)])
    store.finish_run(run_id, aa.RunStats(status=status, error=error, output=output, input_tokens=tokens,
                                         output_tokens=0, cost_usd=cost), started + timedelta(seconds=seconds))


def fill(store: Any) -> None:
    record(store, "r-paris", input="What is the weather in Paris?", step_text="Let me look it up.",
           tool_args={"city": "Paris"}, tool_result="sunny, 24 °C", seconds=4, tokens=300, cost=0.004)
    record(store, "r-zurich", minutes=1, model="anthropic/claude-3-5-haiku", step_text="Zürich is cloudy",
           seconds=12, tokens=5000, cost=0.02, step_ms=900, tool_args={"q": "zurich"}, tool_result="clouds",
           tool_ms=300)
    record(store, "r-failed", minutes=2, status="failed", error="upstream timed out", seconds=30,
           tokens=50, output="partial answer about Lyon")
    record(store, "r-abandoned", minutes=3, status="abandoned", seconds=2, tokens=0)
    record(store, "r-cheap", minutes=4, cost=1e-05, seconds=0.5, tokens=1, input="tiny question")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with SQLiteStore(path) as store:
        fill(store)
    return path


def ids(db: Path, *args: str) -> list[str]:
    return [run["run_id"] for run in json.loads(agentaudit(db, *args, "--json").stdout)]


# -- RunFilter ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": 3}, "RunFilter.model must be a str"),
        ({"text": "  ?! "}, "RunFilter.text has no word"),
        ({"has_error": 1}, "RunFilter.has_error must be True, False or None"),
        ({"min_cost_usd": -1}, "finite number >= 0"),
        ({"min_cost_usd": math.nan}, "finite number >= 0"),
        ({"min_cost_usd": True}, "must be a number"),
        ({"order_by": "name"}, "RunFilter.order_by must be one of started_at, duration, tokens, cost"),
        ({"ascending": "yes"}, "RunFilter.ascending must be a bool"),
    ],
)
def test_run_filter_validates_its_new_fields(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aa.RunFilter(**fields)


FILTERS = [
    aa.RunFilter(model="anthropic/claude-3-5-haiku"),
    aa.RunFilter(has_error=True),
    aa.RunFilter(has_error=False),
    aa.RunFilter(min_cost_usd=0.004),
    aa.RunFilter(text="paris"),
    aa.RunFilter(text="PARÍS sun"),  # case, accents, word prefixes; words in different events
    aa.RunFilter(text="zur cloud"),
    aa.RunFilter(text="lyon"),
    aa.RunFilter(text="timed"),
    aa.RunFilter(text="city"),  # a tool's arguments are text: their names too
    aa.RunFilter(order_by="duration"),
    aa.RunFilter(order_by="tokens", ascending=True),
    aa.RunFilter(order_by="cost"),
    aa.RunFilter(order_by="cost", ascending=True),
    aa.RunFilter(ascending=True, limit=2, offset=1),
    aa.RunFilter(order_by="duration", limit=2, offset=1),
]


@pytest.fixture
def both_stores(tmp_path: Path) -> Iterator[tuple[aa.MemoryStore, SQLiteStore]]:
    memory = aa.MemoryStore()
    fill(memory)
    with SQLiteStore(tmp_path / "same.db") as sqlite:
        fill(sqlite)
        yield memory, sqlite


def described(flt: aa.RunFilter) -> str:
    default = aa.RunFilter()
    return ",".join(f"{name}={getattr(flt, name)}" for name in flt.__dataclass_fields__
                    if getattr(flt, name) != getattr(default, name))


@pytest.mark.parametrize("flt", FILTERS, ids=[described(f) for f in FILTERS])
def test_memory_and_sqlite_agree(both_stores: tuple[aa.MemoryStore, SQLiteStore], flt: aa.RunFilter) -> None:
    memory, sqlite = both_stores
    assert [r.run_id for r in memory.list_runs(flt)] == [r.run_id for r in sqlite.list_runs(flt)]
    assert memory.count_runs(flt) == sqlite.count_runs(flt)


def test_the_filters_select_what_they_say(both_stores: tuple[aa.MemoryStore, SQLiteStore]) -> None:
    _memory, store = both_stores

    def found(**fields: Any) -> list[str]:
        return [r.run_id for r in store.list_runs(aa.RunFilter(**fields))]

    assert found(model="anthropic/claude-3-5-haiku") == ["r-zurich"]
    assert found(has_error=True) == ["r-abandoned", "r-failed"]
    assert found(min_cost_usd=0.004) == ["r-zurich", "r-paris"]
    assert found(text="PARÍS sun") == ["r-paris"]
    assert found(text="city") == ["r-paris"]
    assert found(order_by="duration") == ["r-failed", "r-zurich", "r-paris", "r-abandoned", "r-cheap"]
    # Unpriced runs come last, in the same direction: the older first.
    assert found(order_by="cost", ascending=True) == ["r-cheap", "r-paris", "r-zurich", "r-failed", "r-abandoned"]


# -- the command line ------------------------------------------------------------------------


def test_search_finds_text_in_inputs_outputs_steps_and_tools(db: Path) -> None:
    assert ids(db, "search", "weather") == ["r-paris"]  # input
    assert ids(db, "search", "sunny") == ["r-paris"]  # tool result
    assert ids(db, "search", "ZURICH") == ["r-zurich"]  # step text (Zürich) and tool argument
    assert ids(db, "search", "lyon") == ["r-failed"]  # output
    assert ids(db, "search", "upstream") == ["r-failed"]  # error
    assert ids(db, "runs", "--search", "look weather") == ["r-paris"]  # words in different places
    assert ids(db, "search", "paris", "--search", "clouds") == []
    table = agentaudit(db, "search", "paris").stdout
    assert "r-paris" in table and "r-zurich" not in table
    refused = agentaudit(db, "search", "?!", expect=2)
    assert "no word to search for" in refused.stderr


def test_runs_filters_and_sorts(db: Path) -> None:
    assert ids(db, "runs", "--model", "anthropic/claude-3-5-haiku") == ["r-zurich"]
    assert ids(db, "runs", "--errors") == ["r-abandoned", "r-failed"]
    assert ids(db, "runs", "--min-cost", "0.004") == ["r-zurich", "r-paris"]
    assert ids(db, "runs", "--sort", "tokens") == ["r-zurich", "r-paris", "r-failed", "r-cheap", "r-abandoned"]
    assert ids(db, "runs", "--sort", "duration", "--asc", "--limit", "2") == ["r-cheap", "r-abandoned"]
    assert ids(db, "runs", "--sort", "cost", "--limit", "1") == ["r-zurich"]
    assert ids(db, "runs", "--asc")[0] == "r-paris"
    exported = [json.loads(line)["run_id"] for line in agentaudit(db, "export", "--errors").stdout.splitlines()]
    assert exported == ["r-abandoned", "r-failed"]
    assert "--min-cost" in agentaudit(db, "runs", "--min-cost", "-1", expect=2).stderr


def test_stats_shows_duration_and_latency_percentiles(db: Path) -> None:
    rows = {row["model"]: row for row in json.loads(agentaudit(db, "stats", "--by", "model", "--json").stdout)}
    gpt = rows["openai/gpt-4o-mini"]  # durations 4, 30, 2, 0.5 s; step 100 ms each; one tool at 10 ms
    assert gpt["duration_p50_ms"] == 3000.0
    assert gpt["duration_p95_ms"] == pytest.approx(26_100.0)
    assert (gpt["step_p50_ms"], gpt["step_p95_ms"]) == (100.0, 100.0)
    assert (gpt["tool_p50_ms"], gpt["tool_p95_ms"]) == (10.0, 10.0)
    assert rows["anthropic/claude-3-5-haiku"]["step_p50_ms"] == 900.0
    table = subprocess.run([AGENTAUDIT, "--db", str(db), "stats", "--by", "model"], capture_output=True,
                           text=True, env={**os.environ, "COLUMNS": "200"}, check=True).stdout
    for header in ("p50 time", "p95 time", "p50 step", "p95 step", "p50 tool", "p95 tool"):
        assert header in table
    assert "26.1 s" in table and "900 ms" in table


def test_delete_asks_then_deletes_one_run_and_search_forgets_it(db: Path) -> None:
    declined = subprocess.run([AGENTAUDIT, "--db", str(db), "delete", "r-par"], input="n\n",
                              capture_output=True, text=True, check=False)
    assert declined.returncode == 1
    assert "Delete run r-paris (agent, succeeded, started 2024-05-01 12:00:00 UTC) and its 4 events?" in (
        declined.stdout)
    assert "r-paris" in ids(db, "runs")
    deleted = agentaudit(db, "delete", "r-paris", "--yes")
    assert deleted.stdout == "deleted run r-paris (agent, succeeded, started 2024-05-01 12:00:00 UTC) and its 4 events\n"
    assert "r-paris" not in ids(db, "runs")
    assert ids(db, "search", "sunny") == []
    assert sqlite3.connect(db).execute("SELECT count(*) FROM events WHERE run_id = 'r-paris'").fetchone()[0] == 0
    assert "no run 'r-paris'" in agentaudit(db, "delete", "r-paris", "-y", expect=2).stderr
    assert "ambiguous" in agentaudit(db, "delete", "r-", "-y", expect=2).stderr


def test_delete_refuses_a_running_run(db: Path) -> None:
    with SQLiteStore(db) as store:
        store.start_run(aa.Run(run_id="live-run", name="live"))
    result = agentaudit(db, "delete", "live-run", "--yes", expect=2)
    assert "still running" in result.stderr
    assert "live-run" in ids(db, "runs")


def test_the_search_index_follows_edits_purges_and_hand_deletes(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("UPDATE events SET payload = json_set(payload, '$.result', 'hail') "
                 "WHERE run_id = 'r-paris' AND event_type = 'tool_result'")
    conn.commit()
    assert ids(db, "search", "sunny") == [] and ids(db, "search", "hail") == ["r-paris"]
    conn.execute("DELETE FROM events WHERE run_id = 'r-zurich'")
    conn.commit()
    assert ids(db, "search", "clouds") == []
    conn.execute("INSERT INTO run_search(run_search) VALUES ('integrity-check')")  # raises if out of step
    conn.close()
    agentaudit(db, "purge", "--before", "2024-06-01", "--yes")
    assert ids(db, "search", "weather") == [] and ids(db, "runs") == []


def plans(store: SQLiteStore, flt: aa.RunFilter, db: Path) -> list[str]:
    """The query plan of every query `list_runs(flt)` runs on the runs table."""
    seen: list[str] = []
    conn = store._read()
    conn.set_trace_callback(seen.append)
    try:
        store.list_runs(flt)
    finally:
        conn.set_trace_callback(None)
    explain = sqlite3.connect(db)
    found = []
    for sql in seen:
        if sql.lstrip().upper().startswith("SELECT") and "FROM runs" in sql:
            found.append(" | ".join(row[-1] for row in explain.execute("EXPLAIN QUERY PLAN " + sql)))
    explain.close()
    return found


@pytest.mark.parametrize(
    ("flt", "index"),
    [(aa.RunFilter(model="openai/gpt-4o-mini", limit=20), "runs_model"),
     (aa.RunFilter(has_error=True, limit=20), "runs_errors"),
     (aa.RunFilter(min_cost_usd=0.01, limit=20), "runs_cost")],
    ids=["model", "errors", "min-cost"],
)
def test_the_new_filters_use_an_index(db: Path, flt: aa.RunFilter, index: str) -> None:
    with SQLiteStore(db, read_only=True) as store:
        found = plans(store, flt, db)
    assert found, "no query on runs was seen"
    for plan in found:
        assert f"INDEX {index}" in plan, plan  # USING (COVERING) INDEX


# -- shell completion ----------------------------------------------------------------------------


def complete(words: str, cword: int, db: Path | None = None) -> str:
    env = {**os.environ, "_AGENTAUDIT_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    return subprocess.run([AGENTAUDIT], capture_output=True, text=True, env=env, check=True).stdout


def test_shell_completion_as_documented() -> None:
    script = subprocess.run([AGENTAUDIT], capture_output=True, text=True, check=True,
                            env={**os.environ, "_AGENTAUDIT_COMPLETE": "bash_source"}).stdout
    assert "_agentaudit_completion()" in script and "complete -o nosort -F _agentaudit_completion agentaudit" in script
    assert "plain,runs" in complete("agentaudit ru", 1).splitlines()
    assert {"plain,search", "plain,show", "plain,stats"} <= set(complete("agentaudit s", 1).splitlines())
    assert "plain,--errors" in complete("agentaudit runs --err", 2).splitlines()


def test_shell_completion_of_run_ids(db: Path) -> None:
    lines = complete(f"agentaudit --db {db} show r-", 4).splitlines()
    assert sorted(lines) == sorted(f"plain,{run_id}" for run_id in ids(db, "runs"))
    assert complete(f"agentaudit --db {db} show r-z", 4).splitlines() == ["plain,r-zurich"]
    assert complete(f"agentaudit --db {db.parent / 'missing.db'} show r", 4).strip() == ""
