"""Tables that fit a standard terminal (issue 13, item 8).

The real `agentaudit` command, with COLUMNS=80 and COLUMNS=60: `runs` keeps whole
columns (name, caller, tools are never cut to `…` when they can fit), leaves out
the least wanted ones and says which; `stats` never cuts a number.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import agentaudit as aa
from agentaudit.stores.sqlite import SQLiteStore
from tests.test_cli import record_agent_run
from tests.test_cli_readonly import AGENTAUDIT

RUN_COLUMNS = ["id", "name", "caller", "status", "started (UTC)", "duration", "steps", "tools", "tokens",
               "cost", "model"]
STATS_COLUMNS = ["runs", "failed", "failure rate", "input tokens", "output tokens", "thinking", "cost",
                 "p50 time", "p95 time", "p50 step", "p95 step", "p50 tool", "p95 tool"]
NOTE = re.compile(r"not shown at (\d+) columns: (.*) \(widen the terminal, or use --json\)")


def at_width(db: Path, columns: int, *args: str) -> str:
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb"}
    result = subprocess.run([AGENTAUDIT, "--db", str(db), *args], capture_output=True, text=True, env=env,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def header_columns(output: str, known: list[str]) -> list[str]:
    header = output.splitlines()[0]
    return [name for name in known if re.search(rf"(^|\s){re.escape(name)}(\s|$)", header)]


def left_out(output: str, width: int) -> list[str]:
    flat = " ".join(output.split("\n"))  # the note may wrap
    match = NOTE.search(re.sub(r"\s+", " ", flat))
    if match is None:
        return []
    assert int(match.group(1)) == width
    return match.group(2).split(", ")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with SQLiteStore(path) as store:
        auditor = aa.Auditor(store, strict=True)
        ok = record_agent_run(auditor)
        record_agent_run(auditor, caller="user:7", fail=True)
        record_agent_run(auditor, name="sub-agent", parent=ok)
    return path


@pytest.mark.parametrize("width", [80, 60])
def test_runs_keeps_whole_columns_and_names_those_left_out(db: Path, width: int) -> None:
    out = at_width(db, width, "runs")
    lines = out.splitlines()
    assert all(len(line) <= width for line in lines), out
    assert "…" not in out
    shown = header_columns(out, RUN_COLUMNS)
    missing = left_out(out, width)
    assert missing, out
    assert sorted(shown + missing) == sorted(RUN_COLUMNS)
    assert {"id", "name", "status"} <= set(shown)
    for name in ("research-agent", "sub-agent"):
        assert name in out
    if width == 80:  # a standard terminal shows who ran what, and the tools they used
        assert {"caller", "started (UTC)", "tools"} <= set(shown)
        assert "user:42" in out and "user:7" in out


def test_runs_wide_shows_every_column_and_no_note(db: Path) -> None:
    out = at_width(db, 200, "runs")
    assert header_columns(out, RUN_COLUMNS) == RUN_COLUMNS
    assert left_out(out, 200) == []
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", out)  # the full date when there is room


def test_a_long_name_gives_way_only_when_nothing_else_can(tmp_path: Path) -> None:
    path = tmp_path / "long.db"
    with SQLiteStore(path) as store:
        aa.Auditor(store).start_run("x" * 120).close()
    out = at_width(path, 60, "runs")
    assert all(len(line) <= 60 for line in out.splitlines())
    assert "xxxxxxxx…" in out and "succeeded" in out


@pytest.fixture
def big_db(tmp_path: Path) -> Path:
    """Runs with numbers as wide as real ones get: tokens in the hundreds of millions."""
    path = tmp_path / "big.db"
    day = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    with SQLiteStore(path) as store:
        for i in range(3):
            run = aa.Run(run_id=f"big-{i}", name="batch", started_at=day + timedelta(hours=i))
            store.start_run(run)
            store.finish_run(run.run_id, aa.RunStats(
                status="failed" if i == 0 else "succeeded", input_tokens=123_456_789, output_tokens=98_765_432,
                thinking_tokens=5_000_000, cost_usd=1234.5678,
            ), run.started_at + timedelta(minutes=61))
    return path


@pytest.mark.parametrize("width", [80, 60])
def test_stats_never_cuts_a_number(big_db: Path, width: int) -> None:
    out = at_width(big_db, width, "stats", "--by", "status")
    assert all(len(line) <= width for line in out.splitlines()), out
    assert "…" not in out
    shown = header_columns(out, STATS_COLUMNS)
    assert sorted(shown + left_out(out, width)) == sorted(STATS_COLUMNS)
    expected = {
        "input tokens": "246,913,578", "output tokens": "197,530,864", "cost": "$2,469.14",
        "thinking": "10,000,000", "p50 time": "1h01m", "failure rate": "33.3%",
    }
    for column, text in expected.items():
        if column in shown:
            assert text in out, (column, out)
    assert "runs" in shown and "cost" in shown  # the most wanted stay


def test_stats_json_has_the_percentiles(big_db: Path) -> None:
    rows = json.loads(at_width(big_db, 80, "stats", "--by", "name", "--json"))
    assert rows[0]["duration_p50_ms"] == 61 * 60 * 1000.0
    assert rows[0]["duration_p95_ms"] == 61 * 60 * 1000.0
    assert rows[0]["step_p50_ms"] is None  # no steps recorded
