"""The `agentaudit` command on a real SQLite file written by the real Writer."""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import agentaudit as aa
from agentaudit.cli import cli
from agentaudit.stores.sqlite import SQLiteStore

SEARCH = aa.ToolCall(id="call_1", name="search", arguments={"q": "weather [bold]Paris[/bold]"})


def record_agent_run(auditor: aa.Auditor, *, caller: str = "user:42", fail: bool = False,
                     name: str = "research-agent", parent: str | None = None) -> str:
    """One run as an adapter would record it: two steps, a tool, maybe an error."""
    w = auditor.start_run(name, caller=caller, input="What is the weather in Paris?",
                          metadata={"env": "test"}, parent_run_id=parent)
    w.on_step(1, aa.Response(text="Let me search [red]first[/red].", model="openai/gpt-4o-mini",
                             finish_reason="tool_calls",
                             usage=aa.Usage(input_tokens=100, output_tokens=20),
                             tool_calls=(SEARCH,)))
    w.on_tool(SEARCH, "sunny, 24 °C", duration_ms=12.5)
    if fail:
        w.log_error("the model gave up")
        w.close(aa.RunStats(status="failed", error="gave up"))
    else:
        w.on_step(2, aa.Response(text="It is sunny in Paris.", model="openai/gpt-4o-mini",
                                 finish_reason="stop", usage=aa.Usage(input_tokens=150, output_tokens=10)))
        w.close(aa.RunStats(status="succeeded", output="It is sunny in Paris."))
    return w.run_id


def old_run(store: SQLiteStore, run_id: str, days: int, status: str = "succeeded") -> None:
    started = datetime.now(timezone.utc) - timedelta(days=days)
    store.start_run(aa.Run(run_id=run_id, name="nightly", caller="cron", started_at=started))
    store.finish_run(run_id, aa.RunStats(status=status), started + timedelta(seconds=3))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "audit.db"
    store = SQLiteStore(path)
    auditor = aa.Auditor(store, strict=True)
    ok = record_agent_run(auditor)
    record_agent_run(auditor, caller="user:7", fail=True)
    record_agent_run(auditor, name="sub-agent", parent=ok)
    old_run(store, "old-run-0001", days=40)
    old_run(store, "old-run-0002", days=3, status="failed")
    store.close()
    yield path


def invoke(db: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--db", str(db), *args], input=input, catch_exceptions=False)


def run_ids(db: Path) -> list[str]:
    return [r["run_id"] for r in json.loads(invoke(db, "runs", "--json", "--limit", "100").output)]


def ok_run(db: Path) -> str:
    return next(r["run_id"] for r in json.loads(invoke(db, "runs", "--json").output)
                if r["status"] == "succeeded" and r["name"] == "research-agent")


# -- runs ------------------------------------------------------------------------------------


def test_runs_lists_newest_first_with_the_columns(db: Path) -> None:
    result = invoke(db, "runs")
    assert result.exit_code == 0
    header = result.output.splitlines()[0]
    for column in ("id", "name", "caller", "status", "started", "duration", "steps", "tools",
                   "tokens", "cost", "model"):
        assert column in header
    lines = [line for line in result.output.splitlines()[2:] if line.strip()]
    assert "sub-agent" in lines[0] and "old-run-0001" in lines[-1]
    assert "280" in result.output  # tokens of the succeeded run: 250 in + 30 out


def test_runs_filters(db: Path) -> None:
    def names(*args: str) -> list[tuple[str, str]]:
        rows = json.loads(invoke(db, "runs", "--json", *args).output)
        return [(r["caller"], r["status"]) for r in rows]

    assert names("--caller", "user:7") == [("user:7", "failed")]
    assert names("--status", "failed") == [("user:7", "failed"), ("cron", "failed")]
    assert names("--name", "nightly", "--since", "7d") == [("cron", "failed")]
    assert names("--until", "30d") == [("cron", "succeeded")]
    assert len(names("--limit", "2")) == 2
    assert len(names("--since", (datetime.now(timezone.utc) - timedelta(days=50)).date().isoformat())) == 5


def test_runs_says_how_many_are_hidden(db: Path) -> None:
    assert "2 of 5 runs shown" in invoke(db, "runs", "--limit", "2").output


def test_runs_json_has_every_field(db: Path) -> None:
    run = json.loads(invoke(db, "runs", "--json", "--caller", "user:42", "--name", "research-agent").output)[0]
    assert run["status"] == "succeeded"
    assert (run["steps"], run["tool_calls"], run["input_tokens"], run["output_tokens"]) == (2, 1, 250, 30)
    assert run["model"] == "openai/gpt-4o-mini"
    assert run["metadata"] == {"env": "test"}
    assert run["duration_ms"] is not None


def test_a_bad_option_value_is_a_usage_error(db: Path) -> None:
    result = invoke(db, "runs", "--since", "yesterday-ish")
    assert result.exit_code == 2
    assert "neither a duration" in result.output


# -- show ------------------------------------------------------------------------------------


def test_show_prints_header_timeline_and_children(db: Path) -> None:
    run_id = ok_run(db)
    result = invoke(db, "show", run_id[:8])
    assert result.exit_code == 0, result.output
    out = result.output
    assert run_id in out and "research-agent" in out and "succeeded" in out
    assert "openai/gpt-4o-mini" in out and "user:42" in out
    assert "Let me search [red]first[/red]." in out  # user text is never rich markup
    assert 'search({"q":"weather [bold]Paris[/bold]"})' in out
    assert "sunny, 24 °C" in out
    assert "It is sunny in Paris." in out
    assert "+0." in out  # relative times
    assert "child runs" in out and "sub-agent" in out


def test_show_prints_errors(db: Path) -> None:
    failed = json.loads(invoke(db, "runs", "--json", "--caller", "user:7").output)[0]["run_id"]
    out = invoke(db, "show", failed).output
    assert "the model gave up" in out and "failed" in out and "gave up" in out


def test_show_json(db: Path) -> None:
    run_id = ok_run(db)
    data = json.loads(invoke(db, "show", run_id, "--json").output)
    assert data["run"]["run_id"] == run_id
    types = [e["event_type"] for e in data["events"]]
    assert types == ["step", "resolved_model", "tool_call", "tool_result", "step"]
    assert [e["sequence"] for e in data["events"]] == [1, 2, 3, 4, 5]
    assert data["events"][3]["payload"]["result"] == "sunny, 24 °C"
    assert [c["name"] for c in data["children"]] == ["sub-agent"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "zzz"], "no run 'zzz'"),
        (["verify", "zzz"], "no run 'zzz'"),
        (["tail", "--run", "zzz"], "no run 'zzz'"),
    ],
)
def test_an_unknown_run_is_one_line_and_exit_2(db: Path, args: list[str], message: str) -> None:
    result = invoke(db, *args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"agentaudit: {message} in {db}"]


def test_an_ambiguous_prefix_is_exit_2(db: Path) -> None:
    result = invoke(db, "show", "old-run")
    assert result.exit_code == 2
    assert "ambiguous" in result.output and "old-run-0001" in result.output


def test_a_missing_file_is_exit_2_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    for command in (["runs"], ["show", "x"], ["stats"], ["export"], ["verify", "--all"]):
        result = invoke(missing, *command)
        assert result.exit_code == 2
        assert result.output == f"agentaudit: no agentaudit database at {missing}\n"
    assert not missing.exists()


def test_a_newer_schema_is_exit_2(db: Path) -> None:
    sqlite3.connect(db).execute("PRAGMA user_version = 999")
    result = invoke(db, "runs")
    assert result.exit_code == 2
    assert len(result.output.splitlines()) == 1
    assert "schema version 999" in result.output and "upgrade agentaudit" in result.output


def test_a_file_that_is_not_a_database_is_exit_2(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello\n" * 500)
    result = invoke(junk, "runs")
    assert result.exit_code == 2
    assert "not a usable SQLite database" in result.output


# -- the database option ------------------------------------------------------------------------


def test_db_from_the_environment_and_after_the_command(db: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    from_env = runner.invoke(cli, ["runs", "--json"], env={"AGENTAUDIT_DB": str(db)})
    assert from_env.exit_code == 0 and len(json.loads(from_env.output)) == 5
    after = runner.invoke(cli, ["runs", "--json", "--db", str(db)], env={"AGENTAUDIT_DB": str(tmp_path / "x.db")})
    assert after.exit_code == 0 and len(json.loads(after.output)) == 5


# -- tail --------------------------------------------------------------------------------------


def test_tail_prints_the_latest_events(db: Path) -> None:
    out = invoke(db, "tail", "-n", "3").output.splitlines()
    assert len(out) == 3
    assert "tool_result" in out[1] and "step" in out[2]
    errors = invoke(db, "tail", "--type", "error").output.splitlines()
    assert len(errors) == 1 and "the model gave up" in errors[0]
    lines = invoke(db, "tail", "-n", "2", "--json").output.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["event_type"] for e in events] == ["tool_result", "step"]
    assert events[0]["position"] < events[1]["position"]


def test_tail_follow_prints_events_as_another_process_writes_them(db: Path) -> None:
    # `-n 1` prints the newest event first: the sign that the follower has taken its
    # place in the file (a fixed sleep raced a slow start and then waited forever).
    follower = subprocess.Popen(
        [sys.executable, "-m", "agentaudit.cli", "--db", str(db), "tail", "-f", "-n", "1",
         "--interval", "0.05", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        first = json.loads(lines.get(timeout=60))
        assert first["event_type"] == "step"  # the newest event already there
        with SQLiteStore(db) as store:
            w = aa.Auditor(store, strict=True).start_run("live-agent")
            w.log_event("heartbeat", {"n": 1})
            w.log_event("heartbeat", {"n": 2})
            w.close()
        seen = [json.loads(lines.get(timeout=60)) for _ in range(2)]
    finally:
        follower.terminate()
        follower.wait(5)
    assert [(e["event_type"], e["payload"]) for e in seen] == [("heartbeat", {"n": 1}), ("heartbeat", {"n": 2})]


# -- export ------------------------------------------------------------------------------------


def test_export_jsonl_one_run_per_line_with_events(db: Path) -> None:
    result = invoke(db, "export", "--caller", "user:42")
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [r["name"] for r in records] == ["sub-agent", "research-agent"]
    assert [e["event_type"] for e in records[1]["events"]][:3] == ["step", "resolved_model", "tool_call"]
    assert records[1]["model"] == "openai/gpt-4o-mini"


def test_export_csv_and_events_to_a_private_file(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "runs.csv"
    result = invoke(db, "export", "--format", "csv", "-o", str(target), "--status", "failed")
    assert result.exit_code == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [(r["caller"], r["status"]) for r in rows] == [("user:7", "failed"), ("cron", "failed")]
    assert json.loads(rows[0]["metadata"]) == {"env": "test"}

    events = invoke(db, "export", "--events", "--format", "csv", "--caller", "user:7").output
    event_rows = list(csv.DictReader(io.StringIO(events)))
    assert [r["sequence"] for r in event_rows] == ["1", "2", "3", "4", "5"]
    assert json.loads(event_rows[-1]["payload"]) == {"message": "the model gave up"}


def test_export_streams_more_runs_than_a_page(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    with SQLiteStore(path) as store:
        now = datetime.now(timezone.utc)
        for i in range(1300):
            store.start_run(aa.Run(run_id=f"r{i:05d}", name="bulk", started_at=now - timedelta(seconds=i)))
    lines = invoke(path, "export", "--events").output.splitlines()
    assert lines == []  # no events: one record per event
    ids = [json.loads(line)["run_id"] for line in invoke(path, "export").output.splitlines()]
    assert ids == [f"r{i:05d}" for i in range(1300)]


# -- purge -------------------------------------------------------------------------------------


def test_purge_asks_then_deletes_old_finished_runs(db: Path) -> None:
    declined = invoke(db, "purge", "--before", "30d", input="n\n")
    assert declined.exit_code == 1 and "Delete 1 run started" in declined.output
    assert "old-run-0001" in run_ids(db)
    accepted = invoke(db, "purge", "--before", "30d", input="y\n")
    assert accepted.exit_code == 0 and "deleted 1 run\n" in accepted.output
    assert "old-run-0001" not in run_ids(db)


def test_purge_by_status_without_asking(db: Path) -> None:
    result = invoke(db, "purge", "--before", "1d", "--status", "failed", "--yes")
    assert result.exit_code == 0 and "deleted 1 run\n" in result.output
    assert "old-run-0002" not in run_ids(db) and "old-run-0001" in run_ids(db)
    assert "no failed runs" in invoke(db, "purge", "--before", "1d", "--status", "failed", "-y").output


# -- verify ------------------------------------------------------------------------------------


def test_verify_a_run_and_all_runs(db: Path) -> None:
    run_id = ok_run(db)
    one = invoke(db, "verify", run_id[:10])
    assert one.exit_code == 0 and f"ok: run {run_id}, 5 events" in one.output
    every = invoke(db, "verify", "--all")
    assert every.exit_code == 0 and "verified 5 runs: 5 intact, 0 broken" in every.output


def test_verify_catches_a_plain_sql_edit(db: Path) -> None:
    run_id = ok_run(db)
    conn = sqlite3.connect(db)
    conn.execute(
        "UPDATE events SET payload = json_set(payload, '$.result', 'rainy') WHERE run_id = ? AND sequence = 4",
        (run_id,),
    )
    conn.commit()
    conn.close()
    one = invoke(db, "verify", run_id)
    assert one.exit_code == 1
    assert f"BROKEN run {run_id} at sequence 4" in one.output
    every = invoke(db, "verify", "--all")
    assert every.exit_code == 1 and "4 intact, 1 broken" in every.output
    data = json.loads(invoke(db, "verify", run_id, "--json").output)
    assert (data["ok"], data["broken_sequence"]) == (False, 4)


def test_verify_needs_a_run_or_all(db: Path) -> None:
    assert invoke(db, "verify").exit_code == 2
    assert invoke(db, "verify", "x", "--all").exit_code == 2


# -- stats and reap ------------------------------------------------------------------------------


def test_stats_by_model_caller_and_day(db: Path) -> None:
    by_model = {r["model"]: r for r in json.loads(invoke(db, "stats", "--by", "model", "--json").output)}
    gpt = by_model["openai/gpt-4o-mini"]
    assert (gpt["runs"], gpt["failed"], gpt["input_tokens"]) == (3, 1, 600)
    assert gpt["failure_rate"] == pytest.approx(1 / 3)
    by_caller = {r["caller"]: r["runs"] for r in json.loads(invoke(db, "stats", "--by", "caller", "--json").output)}
    assert by_caller == {"user:42": 2, "user:7": 1, "cron": 2}
    table = invoke(db, "stats", "--by", "day").output
    assert datetime.now(timezone.utc).date().isoformat() in table and "total" in table


def test_reap_marks_silent_runs(db: Path) -> None:
    with SQLiteStore(db) as store:
        long_ago = datetime.now(timezone.utc) - timedelta(hours=5)
        store.start_run(aa.Run(run_id="stuck-run", name="x", started_at=long_ago, host="other-box", pid=9))
    result = invoke(db, "reap", "--stale-after", "2h")
    assert "abandoned stuck-run" in result.output and "marked 1 run abandoned" in result.output
    assert json.loads(invoke(db, "runs", "--json", "--status", "abandoned").output)[0]["run_id"] == "stuck-run"


# -- packaging -----------------------------------------------------------------------------------


def test_importing_agentaudit_does_not_import_the_cli() -> None:
    code = "import sys, agentaudit; print(sorted(m for m in ('agentaudit.cli', 'click', 'rich') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_console_script_entry_point_runs(db: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from agentaudit.cli import main; main()", "--db", str(db), "runs", "--json"],
        capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 5
