"""The real `agentaudit` command, in a subprocess: signing keys, checkpoints,
`verify --checkpoints`, `prove` and `verify --proof`, holds, the retention floor,
and purge told from deletion."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import agentaudit as aa

RESPONSE = aa.Response(
    text="checking", model="p/m", usage=aa.Usage(3, 2),
    tool_calls=(aa.ToolCall("pay", {"to": "bob", "usd": 10}, "c1"),),
)


def agentaudit(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AGENTAUDIT_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agentaudit.cli", *args], cwd=cwd, env=environ,
        capture_output=True, text=True, timeout=120,
    )


def record_run(store: aa.SQLiteStore, name: str = "agent") -> str:
    writer = aa.Auditor(store).start_run(name, input="pay bob", parent_run_id=None)
    writer.on_step(1, RESPONSE)
    writer.on_tool(RESPONSE.tool_calls[0], "ok")
    writer.close(aa.RunStats(status="succeeded", output="paid $10 to bob"))
    return writer.run_id


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, str, list[str]]:
    """A key made with the command, a database written by an application with
    checkpoints to a file elsewhere, and the public key text."""
    made = agentaudit("signing-key", "signing.pem", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    public = made.stdout.strip()
    assert public.startswith("agentaudit+")
    assert (tmp_path / "signing.pem").stat().st_mode & 0o777 == 0o600
    (tmp_path / "public.txt").write_text(public + "\n")
    policy = aa.CheckpointPolicy(interval=0, signing_key=tmp_path / "signing.pem",
                                 sink=tmp_path / "checkpoints.jsonl")
    with aa.SQLiteStore(tmp_path / "a.db", checkpoints=policy) as store:
        runs = [record_run(store), record_run(store, "other")]
    return tmp_path, public, runs


def test_verify_against_external_checkpoints_passes_then_names_an_edit(setup):
    where, public, runs = setup
    ok = agentaudit("--db", "a.db", "verify", "--checkpoints", "checkpoints.jsonl", "--public-key", public, cwd=where)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok: 1 checkpoints, 2 entries, 2 runs" in ok.stdout
    with sqlite3.connect(where / "a.db") as conn:
        conn.execute("UPDATE runs SET output = 'paid $10000 to mallory' WHERE run_id = ?", (runs[0],))
    bad = agentaudit("--db", "a.db", "verify", "--checkpoints", "checkpoints.jsonl",
                     "--public-key", "public.txt", "--json", cwd=where)
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert not report["ok"]
    assert [(f["kind"], f["run_id"]) for f in report["findings"] if f["problem"]] == [("edited", runs[0])]


def test_the_checkpoint_command_signs_and_appends_to_the_sink(setup):
    where, public, _ = setup
    with aa.SQLiteStore(where / "a.db", checkpoints=False) as store:
        late = record_run(store)
    made = agentaudit("--db", "a.db", "checkpoint", "--signing-key", "signing.pem",
                      "--sink", "checkpoints.jsonl", cwd=where)
    assert made.returncode == 0, made.stderr
    assert "checkpoint 2: 1 new entries, 3 in all" in made.stdout
    again = agentaudit("--db", "a.db", "checkpoint", "--signing-key", "signing.pem", cwd=where)
    assert "nothing new" in again.stdout
    ok = agentaudit("--db", "a.db", "verify", "--checkpoints", "checkpoints.jsonl", "--public-key", public,
                    "--json", cwd=where)
    assert ok.returncode == 0 and json.loads(ok.stdout)["runs"] == 3
    proof = agentaudit("--db", "a.db", "prove", late[:8], cwd=where)
    assert json.loads(proof.stdout)["run_id"] == late


def test_prove_prints_a_proof_that_verifies_without_the_database(setup):
    where, public, runs = setup
    made = agentaudit("--db", "a.db", "prove", runs[1], "-o", "proof.json", cwd=where)
    assert made.returncode == 0, made.stderr
    elsewhere = where / "auditor"
    elsewhere.mkdir()
    (elsewhere / "proof.json").write_bytes((where / "proof.json").read_bytes())
    ok = agentaudit("verify", "--proof", "proof.json", "--public-key", public, cwd=elsewhere)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"ok: run {runs[1]}" in ok.stdout
    proof = json.loads((elsewhere / "proof.json").read_text())
    proof["entry"][4] = "f" * 64  # claims other content
    (elsewhere / "forged.json").write_text(json.dumps(proof))
    bad = agentaudit("verify", "--proof", "forged.json", "--public-key", public, cwd=elsewhere)
    assert bad.returncode == 1 and "INVALID proof" in bad.stdout
    missing_key = agentaudit("verify", "--proof", "proof.json", cwd=elsewhere)
    assert missing_key.returncode == 2 and "--public-key" in missing_key.stderr
    unknown = agentaudit("--db", "a.db", "prove", "zzzz", cwd=where)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr


def test_holds_the_floor_and_a_recorded_purge_through_the_command(setup):
    where, public, runs = setup
    env = {"AGENTAUDIT_SIGNING_KEY": "signing.pem", "AGENTAUDIT_CHECKPOINT_SINK": "checkpoints.jsonl"}
    held = agentaudit("--db", "a.db", "hold", runs[0], "--reason", "case 17", cwd=where, env=env)
    assert held.returncode == 0 and "1 run under hold" in held.stdout
    listed = agentaudit("--db", "a.db", "hold", "--list", cwd=where)
    assert runs[0] in listed.stdout and "case 17" in listed.stdout
    refused = agentaudit("--db", "a.db", "delete", runs[0], "--yes", cwd=where, env=env)
    assert refused.returncode == 2 and "legal hold" in refused.stderr and "Traceback" not in refused.stderr
    floor = agentaudit("--db", "a.db", "retention", "--floor", "180d", cwd=where, env=env)
    assert floor.returncode == 0 and "180 days" in floor.stdout
    inside = agentaudit("--db", "a.db", "purge", "--before", "0s", "--yes", cwd=where, env=env)
    assert inside.returncode == 2 and "retention floor is 180 days" in inside.stderr
    agentaudit("--db", "a.db", "retention", "--no-floor", cwd=where, env=env)
    purged = agentaudit("--db", "a.db", "purge", "--before", "0s", "--yes", cwd=where, env=env)
    assert purged.returncode == 0 and "deleted 1 run" in purged.stdout  # the held one stays
    report = agentaudit("--db", "a.db", "verify", "--checkpoints", "checkpoints.jsonl", "--public-key", public,
                        "--json", cwd=where)
    data = json.loads(report.stdout)
    assert report.returncode == 0 and data["ok"], data
    assert [(f["kind"], f["run_id"]) for f in data["findings"]] == [("purged", runs[1])]
    released = agentaudit("--db", "a.db", "release", runs[0], cwd=where, env=env)
    assert "1 run released" in released.stdout
    # Deleted by hand, not through agentaudit: a deletion, and the command says so.
    with sqlite3.connect(where / "a.db") as conn:
        conn.execute("DELETE FROM runs WHERE run_id = ?", (runs[0],))
    deleted = agentaudit("--db", "a.db", "verify", "--checkpoints", "checkpoints.jsonl", "--public-key", public,
                         cwd=where)
    assert deleted.returncode == 1
    assert f"DELETED: run {runs[0]} is in checkpoint 1 but no longer in the database" in deleted.stdout


def test_usage_errors_are_one_line(setup):
    where, public, _ = setup
    both = agentaudit("--db", "a.db", "verify", "--all", "--checkpoints", "checkpoints.jsonl",
                      "--public-key", public, cwd=where)
    assert both.returncode == 2 and "on its own" in both.stderr
    alone = agentaudit("--db", "a.db", "verify", "--all", "--public-key", public, cwd=where)
    assert alone.returncode == 2 and "--public-key goes with" in alone.stderr
    missing = agentaudit("--db", "a.db", "verify", "--checkpoints", "nope.jsonl", "--public-key", public, cwd=where)
    assert missing.returncode == 2 and "no checkpoint file" in missing.stderr
    bad_key = agentaudit("--db", "a.db", "verify", "--checkpoints", "checkpoints.jsonl",
                         "--public-key", "garbage", cwd=where)
    assert bad_key.returncode == 2 and "Traceback" not in bad_key.stderr
    exists = agentaudit("signing-key", "signing.pem", cwd=where)
    assert exists.returncode == 2 and "not overwriting" in exists.stderr


def test_hmac_signed_checkpoints_verify_with_the_key_file(tmp_path):
    secret = "a chain key of more than sixteen bytes"
    (tmp_path / "keys.txt").write_text(secret + "\n")
    policy = aa.CheckpointPolicy(interval=0, hmac_key=secret, sink=tmp_path / "checkpoints.jsonl")
    with aa.SQLiteStore(tmp_path / "a.db", checkpoints=policy) as store:
        record_run(store)
    ok = agentaudit("--db", "a.db", "verify", "--checkpoints", "checkpoints.jsonl", "--key-file", "keys.txt",
                    "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["signed_by"] == ["agentaudit"]
    (tmp_path / "wrong.txt").write_text("another secret, also long enough\n")
    bad = agentaudit("--db", "a.db", "verify", "--checkpoints", "checkpoints.jsonl", "--key-file", "wrong.txt",
                     cwd=tmp_path)
    assert bad.returncode == 1 and "SIGNATURE" in bad.stdout
