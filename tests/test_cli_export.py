"""Export and numbers as a user meets them (issue 13, item 9).

The real `agentaudit` command in a subprocess: an export to a path it cannot write
is one line and a non-zero exit, never a traceback; real small costs show as
themselves, not `$0.0000`; floats in JSON are rounded (costs to 1e-9 dollars,
durations to the microsecond); counts agree in number; and every JSON, JSONL and CSV
output escapes what a terminal would obey (C1 controls, U+2028/2029, bidi overrides,
ESC), JSON losslessly with `\\uXXXX`, CSV with visible escapes.
"""

from __future__ import annotations

import csv
import io
import json
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import agentaudit as aa
from agentaudit.stores.sqlite import SQLiteStore
from tests.test_cli_readonly import agentaudit

START = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
# What a terminal obeys or hides, beyond the C0 controls JSON escapes anyway.
HOSTILE = "esc\x1b[2J c1\x9b\x85 ls\u2028ps\u2029 bidi\u202eevil del\x7f zw\u200b"
RAW = ["\x1b", "\x9b", "\x85", "\u2028", "\u2029", "\u202e", "\x7f", "\u200b"]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with SQLiteStore(path) as store:
        cheap = aa.Run(run_id="cheap-run", name="cheap", started_at=START)
        store.start_run(cheap)
        # 0.01 + 0.003: a float sum that prints as 0.013000000000000001
        store.finish_run("cheap-run", aa.RunStats(cost_usd=0.01 + 0.003, input_tokens=3),
                         START + timedelta(microseconds=1_234_567))
        tiny = aa.Run(run_id="tiny-run", name="tiny", started_at=START + timedelta(hours=1))
        store.start_run(tiny)
        store.finish_run("tiny-run", aa.RunStats(cost_usd=1e-05), tiny.started_at + timedelta(seconds=1))
        auditor = aa.Auditor(store, strict=True)
        w = auditor.start_run("hostile" + HOSTILE, run_id="hostile-run", caller="=HYPERLINK(\"http://evil\")",
                              input=HOSTILE)
        w.on_step(1, aa.Response(text=HOSTILE, model="m", usage=aa.Usage(1, 1)))
        w.on_tool(aa.ToolCall("fetch", {"q": HOSTILE}, "c1"), HOSTILE)
        w.close(aa.RunStats(output=HOSTILE, error=""))
    return path


@pytest.mark.parametrize(
    ("target", "reason"),
    [("/nonexistent/x.jsonl", "No such file or directory"), ("{tmp}", "is a directory (give a file name)")],
    ids=["missing-directory", "a-directory"],
)
def test_an_export_it_cannot_write_is_one_line(db: Path, tmp_path: Path, target: str, reason: str) -> None:
    target = target.format(tmp=tmp_path)
    result = agentaudit(db, "export", "-o", target, expect=2)
    assert result.stderr == f"agentaudit: cannot write {target}: {reason}\n"
    assert result.stdout == ""
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".agentaudit-export")]


def test_export_says_run_or_runs_and_replaces_a_file_whole(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old content\n")
    one = agentaudit(db, "export", "--limit", "1", "-o", str(target))
    assert one.stderr == f"exported 1 run to {target}\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert len(target.read_text().splitlines()) == 1 and "old content" not in target.read_text()
    every = agentaudit(db, "export", "-o", str(target))
    assert every.stderr == f"exported 3 runs to {target}\n"
    events = agentaudit(db, "export", "--events", "--name", "cheap", "-o", str(target))
    assert events.stderr == f"exported 0 events to {target}\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".agentaudit-export")]


def test_small_costs_are_shown_as_they_are(db: Path) -> None:
    runs = agentaudit(db, "runs").stdout
    assert "$0.00001" in runs and "$0.0000 " not in runs
    assert "$0.0130" in runs
    assert "cost $0.00001" in agentaudit(db, "show", "tiny-run").stdout
    assert "$0.00001" in agentaudit(db, "stats", "--by", "name").stdout


def test_floats_in_json_are_rounded(db: Path) -> None:
    record = json.loads(agentaudit(db, "export", "--name", "cheap").stdout)
    assert record["cost_usd"] == 0.013 and "0.013000000000000001" not in json.dumps(record)
    assert record["duration_ms"] == 1234.567
    listed = agentaudit(db, "runs", "--json", "--name", "cheap").stdout
    assert '"cost_usd": 0.013,' in listed
    stats = {row["day"]: row for row in json.loads(agentaudit(db, "stats", "--json").stdout)}
    assert stats["2024-05-01"]["cost_usd"] == 0.01301  # 0.013000000000000001 + 0.00001, rounded


def assert_no_raw(data: str) -> None:
    for char in RAW:
        assert char not in data, f"raw U+{ord(char):04X} in output"


@pytest.mark.parametrize(
    "args",
    [["export"], ["export", "--events"], ["runs", "--json"], ["show", "hostile-run", "--json"],
     ["tail", "--json", "-n", "100"], ["stats", "--by", "name", "--json"]],
    ids=["export", "export-events", "runs", "show", "tail", "stats"],
)
def test_json_outputs_escape_what_a_terminal_obeys_and_keep_it_exact(db: Path, args: list[str]) -> None:
    out = agentaudit(db, *args).stdout
    assert_no_raw(out)
    assert "\\u202e" in out and "\\u2028" in out and "\\u009b" in out
    text = json.dumps([json.loads(line) for line in out.splitlines()] if args[0] in ("export", "tail")
                      else json.loads(out), ensure_ascii=False)
    assert HOSTILE in text or json.dumps(HOSTILE, ensure_ascii=False)[1:-1] in text  # the exact text, decoded


def test_export_jsonl_round_trips_the_hostile_text(db: Path) -> None:
    records = [json.loads(line) for line in agentaudit(db, "export", "--name", "hostile" + "x").stdout.splitlines()]
    assert records == []  # an exact name that matches nothing
    hostile = next(json.loads(line) for line in agentaudit(db, "export").stdout.splitlines()
                   if json.loads(line)["run_id"] == "hostile-run")
    assert hostile["input"] == hostile["output"] == HOSTILE
    assert [e["payload"]["result"] for e in hostile["events"] if e["event_type"] == "tool_result"] == [HOSTILE]


@pytest.mark.parametrize("per_event", [False, True], ids=["runs", "events"])
def test_csv_shows_control_characters_as_visible_escapes(db: Path, per_event: bool) -> None:
    out = agentaudit(db, "export", "--format", "csv", *(["--events"] if per_event else [])).stdout
    assert_no_raw(out)
    assert "\\x1b[2J" in out or "\\u001b[2J" in out
    rows = list(csv.DictReader(io.StringIO(out)))
    if not per_event:
        hostile = next(row for row in rows if row["run_id"] == "hostile-run")
        assert hostile["input"] == ("esc\\x1b[2J c1\\x9b\\x85 ls\\u2028ps\\u2029 bidi\\u202eevil del\\x7f "
                                    "zw\\u200b")
        assert hostile["caller"] == "'=HYPERLINK(\"http://evil\")"  # never run as a formula
    else:
        payloads = [json.loads(row["payload"]) for row in rows if row["run_id"] == "hostile-run"]
        assert any(p.get("result") == HOSTILE for p in payloads)  # JSON cells stay exact
