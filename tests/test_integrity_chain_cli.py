"""`agentaudit verify` and `agentaudit erase`, run as the real command: per-run
intact / erased / broken (first broken place), exit status 1 when anything is broken,
every run reported after a malformed one, and never a traceback on a malformed file
(Hypothesis edits every column of every row with values of every type)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentaudit as aa

SECRET = "correct horse battery staple 1"
STEP = aa.Response(
    text="checking", model="p/m", usage=aa.Usage(3, 2), tool_calls=(aa.ToolCall("lookup", {"q": "x"}, "c1"),)
)


def run_cli(db: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTAUDIT_")}
    return subprocess.run(
        [sys.executable, "-m", "agentaudit.cli", "--db", str(db), *args],
        capture_output=True, text=True, env={**base, **(env or {})}, timeout=120,
    )


def record(store: aa.SQLiteStore, output: str = "answer") -> str:
    writer = aa.Auditor(store).start_run("agent", input="question", parent_run_id=None)
    writer.on_step(1, STEP)
    writer.on_tool(STEP.tool_calls[0], "found")
    writer.close(aa.RunStats(output=output))
    return writer.run_id


def three_runs(db: Path, **options: Any) -> list[str]:
    with aa.SQLiteStore(db, **options) as store:
        return [record(store, f"answer {i}") for i in range(3)]


def test_verify_reports_each_run_and_goes_on_past_a_malformed_one(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    malformed, forged, intact = three_runs(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE runs SET status = 'bogus', input_tokens = -1 WHERE run_id = ?", (malformed,))
    conn.execute("UPDATE events SET payload = 'not json' WHERE run_id = ? AND sequence = 2", (malformed,))
    conn.execute(
        "UPDATE runs SET status = 'running', seal = '', finished_at = NULL, output = 'forged' WHERE run_id = ?",
        (forged,),
    )
    conn.close()
    every = run_cli(db, "verify", "--all")
    assert every.returncode == 1 and "Traceback" not in every.stderr
    assert f"BROKEN run {malformed} at sequence 2" in every.stdout
    assert f"BROKEN run {forged}: the run is marked running, yet its row holds a finish" in every.stdout
    assert "verified 3 runs: 1 intact, 2 broken" in every.stdout
    data = {r["run_id"]: r for r in json.loads(run_cli(db, "verify", "--all", "--json").stdout)}
    assert data[intact]["state"] == "intact" and data[forged]["state"] == "broken"
    assert len(data[malformed]["problems"]) >= 3  # status, tokens, the payload: all of them
    one = run_cli(db, "verify", intact)
    assert one.returncode == 0 and f"ok: run {intact}, 4 events, chain intact, row sealed" in one.stdout
    several = run_cli(db, "verify", intact[:12], forged)
    assert several.returncode == 1 and "verified 2 runs: 1 intact, 1 broken" in several.stdout


def test_verify_names_a_deleted_run_whose_events_remain(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    deleted, _, _ = three_runs(db)
    sqlite3.connect(db, isolation_level=None).execute("DELETE FROM runs WHERE run_id = ?", (deleted,))
    every = run_cli(db, "verify", "--all")
    assert every.returncode == 1
    assert f"BROKEN run {deleted}: the run's row is missing, yet 4 of its events remain" in every.stdout
    assert run_cli(db, "verify", deleted).returncode == 1


def test_verify_with_a_key_file_and_from_the_environment(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    keyed = three_runs(db, key=SECRET)[0]
    key_file = tmp_path / "keys"
    key_file.write_text(SECRET + "\n")
    ok = run_cli(db, "verify", keyed, "--key-file", str(key_file))
    assert ok.returncode == 0 and "keyed (" in ok.stdout
    assert run_cli(db, "verify", keyed, env={"AGENTAUDIT_KEY": SECRET}).returncode == 0
    without = run_cli(db, "verify", keyed)
    assert without.returncode == 1 and "that key was not given" in without.stdout
    unkeyed = three_runs(tmp_path / "b.db", key=False)[0]
    refused = run_cli(tmp_path / "b.db", "verify", unkeyed, "--key-file", str(key_file))
    assert refused.returncode == 1 and "not keyed" in refused.stdout
    accepted = run_cli(tmp_path / "b.db", "verify", unkeyed, "--key-file", str(key_file), "--accept-unkeyed")
    assert accepted.returncode == 0
    bad = run_cli(db, "verify", keyed, "--key-file", str(tmp_path / "missing"))
    assert bad.returncode == 2 and "cannot read the key file" in bad.stderr and "Traceback" not in bad.stderr


def test_erase_then_verify_says_erased(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    run_id = three_runs(db)[0]
    erased = run_cli(db, "erase", run_id[:12], "--fields", "input,output,result", "--yes")
    assert erased.returncode == 0, erased.stderr
    assert f"erased 3 values of run {run_id}; verify: erased" in erased.stdout
    one = run_cli(db, "verify", run_id)
    assert one.returncode == 0 and "content erased, the rest intact" in one.stdout
    assert json.loads(run_cli(db, "verify", run_id, "--json").stdout)["state"] == "erased"
    every = run_cli(db, "verify", "--all")
    assert every.returncode == 0 and "verified 3 runs: 2 intact, 0 broken, 1 erased" in every.stdout
    refused = run_cli(db, "erase", run_id, "--fields", "passwords", "--yes")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr


# -- fuzzing: malformed files never make verify raise ---------------------------------

RUN_COLUMNS = [
    "run_id", "name", "caller", "parent_run_id", "status", "started_at", "finished_at", "input",
    "output", "error", "tool_calls", "steps", "input_tokens", "output_tokens", "thinking_tokens",
    "cost_usd", "metadata", "host", "pid", "model", "seal", "key_id", "salt",
]
EVENT_COLUMNS = ["id", "run_id", "sequence", "event_type", "payload", "created_at", "prev_hash", "hash", "salt"]
VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=20),
    st.sampled_from(["running", "succeeded", "{}", "[]", '{"a":1,"a":2}', "2026-01-01", "NaN", "zz" * 16]),
)
EDITS = st.lists(
    st.one_of(
        st.tuples(st.just("runs"), st.sampled_from(RUN_COLUMNS), st.integers(0, 2), VALUES),
        st.tuples(st.just("events"), st.sampled_from(EVENT_COLUMNS), st.integers(0, 11), VALUES),
        st.tuples(st.just("delete"), st.sampled_from(["runs", "events"]), st.integers(0, 11), st.none()),
    ),
    min_size=1,
    max_size=6,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("template") / "a.db"
    three_runs(db, key=SECRET)
    with aa.SQLiteStore(db, key=SECRET) as store:  # a running run too
        writer = aa.Auditor(store).start_run("open", parent_run_id=None)
        writer.on_step(1, STEP)
        store.flush()
    return db


def tampered(template: Path, target: Path, edits: list[tuple[str, str, int, Any]]) -> Path:
    shutil.copy(template, target)
    conn = sqlite3.connect(target, isolation_level=None)
    for table, column, row, value in edits:
        name = "runs" if table == "runs" or (table == "delete" and column == "runs") else "events"
        rowids = [r[0] for r in conn.execute(f"SELECT rowid FROM {name} ORDER BY rowid")]
        if not rowids:
            continue
        rowid = rowids[row % len(rowids)]
        try:
            if table == "delete":
                conn.execute(f"DELETE FROM {name} WHERE rowid = ?", (rowid,))
            else:
                conn.execute(f"UPDATE {name} SET {column} = ? WHERE rowid = ?", (value, rowid))
        except sqlite3.Error:
            pass  # a constraint the schema keeps (NOT NULL, UNIQUE): not a possible file
    conn.close()
    return target


@given(edits=EDITS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_verify_never_raises_on_a_fuzzed_file(template: Path, tmp_path: Path, edits: Any) -> None:
    db = tampered(template, tmp_path / "fuzzed.db", edits)
    with aa.SQLiteStore(db, read_only=True, key=SECRET) as store:
        results = list(store.verify_all())
    for result in results:
        assert result.state in ("intact", "broken", "erased")
        assert result.ok == (result.state != "broken")
        assert result.ok or result.reason


@given(edits=EDITS)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_command_never_prints_a_traceback_on_a_fuzzed_file(template: Path, tmp_path: Path, edits: Any) -> None:
    db = tampered(template, tmp_path / "fuzzed.db", edits)
    result = run_cli(db, "verify", "--all", "--json", env={"AGENTAUDIT_KEY": SECRET})
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    assert isinstance(json.loads(result.stdout), list)


def test_a_corrupted_file_gets_a_message_not_a_traceback(tmp_path: Path, template: Path) -> None:
    db = tmp_path / "a.db"
    data = bytearray(template.read_bytes())
    data[4096 : 4096 + 512] = b"\xff" * 512  # a page of the tables, overwritten
    db.write_bytes(bytes(data))
    result = run_cli(db, "verify", "--all")
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr
