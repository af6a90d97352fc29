"""Signed checkpoints, proofs, bundles, legal holds, the retention floor and erasure on a
server (``--db postgresql://…``, ``mysql://…``), through the real `agentaudit` command in
a subprocess, as on a SQLite file: tampering done by SQL on the server is found, a
bundle exported from the server verifies with no database, and two processes making
checkpoints at once keep one chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import agentaudit as aa

from .conftest import admin_sql

RESPONSE = aa.Response(
    text="checking", model="p/m", usage=aa.Usage(3, 2),
    tool_calls=(aa.ToolCall("pay", {"to": "bob", "usd": 10}, "c1"),),
)


def agentaudit(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AGENTAUDIT_")}
    environ.update({"NO_COLOR": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "agentaudit.cli", *args], cwd=cwd, env=environ,
        capture_output=True, text=True, timeout=120,
    )


def record_run(store: Any, name: str = "agent") -> str:
    writer = aa.Auditor(store).start_run(name, input="pay bob")
    writer.on_step(1, RESPONSE)
    writer.on_tool(RESPONSE.tool_calls[0], "ok")
    writer.close(aa.RunStats(status="succeeded", output="paid $10 to bob"))
    return writer.run_id


def record(url: str, count: int = 2, name: str = "agent") -> list[str]:
    with aa.open_store(url, checkpoints=False) as store:
        runs = [record_run(store, f"{name}-{i}") for i in range(count)]
        store.flush()
    return runs


def signing_key(where: Path) -> str:
    made = agentaudit("signing-key", "signing.pem", cwd=where)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def checkpoint(url: str, where: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return agentaudit("--db", url, "checkpoint", "--signing-key", "signing.pem", "--sink", "checkpoints.jsonl",
                      *extra, cwd=where)


def verify_checkpoints(url: str, where: Path, public: str) -> tuple[int, dict[str, Any]]:
    done = agentaudit("--db", url, "verify", "--checkpoints", "checkpoints.jsonl", "--public-key", public,
                      "--json", cwd=where)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def problems(report: dict[str, Any]) -> list[tuple[str, str | None]]:
    return sorted((f["kind"], f["run_id"]) for f in report["findings"] if f["problem"])


def test_checkpoint_prove_and_a_bundle_that_verifies_offline(server_url: str, tmp_path: Path) -> None:
    public = signing_key(tmp_path)
    record(server_url)
    made = checkpoint(server_url, tmp_path)
    assert made.returncode == 0, made.stderr
    assert "checkpoint 1: 2 new entries, 2 in all" in made.stdout
    again = checkpoint(server_url, tmp_path)
    assert again.returncode == 0 and "nothing new" in again.stdout
    late = record(server_url, 1, "late")[0]
    second = checkpoint(server_url, tmp_path)
    assert "checkpoint 2: 1 new entries, 3 in all" in second.stdout, second.stdout + second.stderr
    status, report = verify_checkpoints(server_url, tmp_path, public)
    assert status == 0 and report["ok"] and report["runs"] == 3 and report["checkpoints"] == 2, report

    proved = agentaudit("--db", server_url, "prove", late[:10], "-o", "proof.json", cwd=tmp_path)
    assert proved.returncode == 0, proved.stderr
    exported = agentaudit("--db", server_url, "export", "--bundle", "audit.zip", "--signing-key", "signing.pem",
                          cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "bundled 3 runs" in exported.stderr
    # the auditor: the files and the public key, no database
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    for name in ("proof.json", "audit.zip"):
        (auditor / name).write_bytes((tmp_path / name).read_bytes())
    proof = agentaudit("verify", "--proof", "proof.json", "--public-key", public, cwd=auditor)
    assert proof.returncode == 0 and f"ok: run {late}" in proof.stdout, proof.stdout + proof.stderr
    bundle = agentaudit("verify", "--bundle", "audit.zip", "--public-key", public, "--json", cwd=auditor)
    assert bundle.returncode == 0, bundle.stdout + bundle.stderr
    checked = json.loads(bundle.stdout)
    assert checked["ok"] and checked["runs"] == 3 and checked["events"] > 0, checked
    # one byte of it changed: the offline check fails
    data = bytearray((auditor / "audit.zip").read_bytes())
    at = data.index(b"paid $10 to bob")
    data[at + 6] = ord("9")
    (auditor / "forged.zip").write_bytes(bytes(data))
    forged = agentaudit("verify", "--bundle", "forged.zip", "--public-key", public, cwd=auditor)
    assert forged.returncode == 1 and "FAILED" in forged.stdout


def test_edits_and_deletions_by_sql_on_the_server_are_found(server_url: str, tmp_path: Path) -> None:
    public = signing_key(tmp_path)
    edited, deleted, kept = record(server_url, 3)
    assert checkpoint(server_url, tmp_path).returncode == 0
    status, report = verify_checkpoints(server_url, tmp_path, public)
    assert status == 0 and report["ok"], report
    # someone with the database's password: an output rewritten, a run and its events removed
    admin_sql(server_url, "UPDATE runs SET output = 'paid $10000 to mallory' WHERE run_id = %s", (edited,))
    admin_sql(server_url, "DELETE FROM events WHERE run_id = %s", (deleted,))
    admin_sql(server_url, "DELETE FROM runs WHERE run_id = %s", (deleted,))
    status, report = verify_checkpoints(server_url, tmp_path, public)
    assert status == 1 and not report["ok"]
    assert problems(report) == sorted([("edited", edited), ("deleted", deleted)]), report
    text = agentaudit("--db", server_url, "verify", "--checkpoints", "checkpoints.jsonl", "--public-key", public,
                      cwd=tmp_path)
    assert f"DELETED: run {deleted} is in checkpoint 1 but no longer in the database" in text.stdout
    assert kept not in text.stdout
    # the stored checkpoint rewritten to match: the external file still holds the signed one
    admin_sql(server_url, "UPDATE checkpoints SET note = replace(note, 'agentaudit-checkpoint 1', "
              "'agentaudit-checkpoint 1 ') WHERE seq = 1")
    status, report = verify_checkpoints(server_url, tmp_path, public)
    assert status == 1 and ("checkpoint-altered", None) in problems(report), report


def test_holds_refuse_purge_delete_and_erase_and_purges_are_on_the_record(server_url: str, tmp_path: Path) -> None:
    public = signing_key(tmp_path)
    held, other = record(server_url)
    env = {"AGENTAUDIT_SIGNING_KEY": "signing.pem", "AGENTAUDIT_CHECKPOINT_SINK": "checkpoints.jsonl"}
    assert checkpoint(server_url, tmp_path).returncode == 0
    put = agentaudit("--db", server_url, "hold", held[:10], "--reason", "case 17", cwd=tmp_path, env=env)
    assert put.returncode == 0 and "1 run under hold" in put.stdout, put.stdout + put.stderr
    listed = agentaudit("--db", server_url, "hold", "--list", cwd=tmp_path)
    assert held in listed.stdout and "case 17" in listed.stdout
    for command in (("delete", held, "--yes"), ("erase", held, "--yes")):
        refused = agentaudit("--db", server_url, *command, cwd=tmp_path, env=env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "legal hold" in refused.stderr and "Traceback" not in refused.stderr
    purged = agentaudit("--db", server_url, "purge", "--before", "0s", "--yes", cwd=tmp_path, env=env)
    assert purged.returncode == 0 and "deleted 1 run" in purged.stdout, purged.stdout + purged.stderr
    assert admin_sql(server_url, "SELECT run_id FROM runs") == [(held,)]
    assert admin_sql(server_url, "SELECT kind, run_id FROM checkpoint_entries WHERE kind = 'purged'") == [
        ("purged", other)
    ]
    status, report = verify_checkpoints(server_url, tmp_path, public)
    assert status == 0 and report["ok"], report
    assert [(f["kind"], f["run_id"]) for f in report["findings"]] == [("purged", other)]
    released = agentaudit("--db", server_url, "release", held, cwd=tmp_path, env=env)
    assert "1 run released" in released.stdout
    assert agentaudit("--db", server_url, "hold", "--list", cwd=tmp_path).stdout == ""
    gone = agentaudit("--db", server_url, "delete", held, "--yes", cwd=tmp_path, env=env)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    status, report = verify_checkpoints(server_url, tmp_path, public)
    assert status == 0 and sorted((f["kind"], f["run_id"]) for f in report["findings"]) == sorted(
        [("purged", other), ("purged", held)]
    ), report


def test_the_retention_floor_refuses_purge_and_delete(server_url: str, tmp_path: Path) -> None:
    (run,) = record(server_url, 1)
    none = agentaudit("--db", server_url, "retention", cwd=tmp_path)
    assert none.returncode == 0 and "no retention floor" in none.stdout
    set_ = agentaudit("--db", server_url, "retention", "--floor", "180d", cwd=tmp_path)
    assert set_.returncode == 0 and "180 days" in set_.stdout
    shown = agentaudit("--db", server_url, "retention", cwd=tmp_path)
    assert "retention floor: 180 days" in shown.stdout
    inside = agentaudit("--db", server_url, "purge", "--before", "0s", "--yes", cwd=tmp_path)
    assert inside.returncode == 2 and "retention floor is 180 days" in inside.stderr, inside.stderr
    young = agentaudit("--db", server_url, "delete", run, "--yes", cwd=tmp_path)
    assert young.returncode == 2 and "within the retention floor of 180 days" in young.stderr, young.stderr
    assert admin_sql(server_url, "SELECT run_id FROM runs") == [(run,)]
    removed = agentaudit("--db", server_url, "retention", "--no-floor", cwd=tmp_path)
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert agentaudit("--db", server_url, "delete", run, "--yes", cwd=tmp_path).returncode == 0
    assert admin_sql(server_url, "SELECT run_id FROM runs") == []


def test_erase_keeps_the_chain_and_the_checkpoint(server_url: str, tmp_path: Path) -> None:
    public = signing_key(tmp_path)
    run, other = record(server_url)
    assert checkpoint(server_url, tmp_path).returncode == 0
    assert agentaudit("--db", server_url, "prove", run, "-o", "proof.json", cwd=tmp_path).returncode == 0
    erased = agentaudit("--db", server_url, "erase", run[:10], "--yes", cwd=tmp_path)
    assert erased.returncode == 0, erased.stdout + erased.stderr
    assert f"run {run}; verify: erased" in erased.stdout
    stored = admin_sql(server_url, "SELECT input, output FROM runs WHERE run_id = %s", (run,))
    assert stored == [("[erased]", "[erased]")]
    payloads = [row[0] for row in admin_sql(server_url, "SELECT payload FROM events WHERE run_id = %s", (run,))]
    assert payloads and not any("bob" in payload for payload in payloads), payloads
    verified = agentaudit("--db", server_url, "verify", "--all", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout
    assert f"erased: run {run}" in verified.stdout and other not in verified.stdout
    assert "verified 2 runs: 1 intact, 0 broken, 1 erased" in verified.stdout
    status, report = verify_checkpoints(server_url, tmp_path, public)
    assert status == 0 and report["ok"], report
    assert [(f["kind"], f["run_id"]) for f in report["findings"]] == [("erased", run)]
    # the proof made before the erasure still verifies: the checkpoint is unchanged
    proof = agentaudit("verify", "--proof", "proof.json", "--public-key", public, cwd=tmp_path)
    assert proof.returncode == 0, proof.stdout + proof.stderr
    # an erased run is still covered by later checkpoints; nothing new to take
    assert "nothing new" in checkpoint(server_url, tmp_path).stdout
    running = aa.open_store(server_url, checkpoints=False)
    try:
        open_run = aa.Auditor(running).start_run("still going")
        running.flush()
        refused = agentaudit("--db", server_url, "erase", open_run.run_id, "--yes", cwd=tmp_path)
        assert refused.returncode == 2 and "still running" in refused.stderr, refused.stderr
        open_run.close(aa.RunStats(status="succeeded"))
    finally:
        running.close()


def test_runs_forwarded_from_a_spool_are_covered_by_the_next_checkpoint(server_url: str, tmp_path: Path) -> None:
    public = signing_key(tmp_path)
    store = aa.open_store(server_url, spool=str(tmp_path / "spool.db"))
    try:
        forwarded = record_run(store, "fleet-worker")
    finally:
        store.close()  # ships what the spool holds
    assert admin_sql(server_url, "SELECT run_id FROM runs") == [(forwarded,)]
    made = checkpoint(server_url, tmp_path)
    assert "checkpoint 1: 1 new entries" in made.stdout, made.stdout + made.stderr
    status, report = verify_checkpoints(server_url, tmp_path, public)
    assert status == 0 and report["runs"] == 1, report
    proof = agentaudit("--db", server_url, "prove", forwarded, cwd=tmp_path)
    assert json.loads(proof.stdout)["entry"][:2] == ["sealed", forwarded]


def test_two_checkpointing_processes_keep_one_chain(server_url: str, tmp_path: Path) -> None:
    """Two processes run `agentaudit checkpoint` over and over while a third records
    runs: every checkpoint number is made once, each chains to the one before, and
    every run is taken once."""
    public = signing_key(tmp_path)
    loop = (
        "import subprocess, sys\n"
        "for _ in range(6):\n"
        "    done = subprocess.run([sys.executable, '-m', 'agentaudit.cli', '--db', sys.argv[1], 'checkpoint',\n"
        "                          '--signing-key', 'signing.pem', '--sink', 'checkpoints.jsonl'],\n"
        "                         capture_output=True, text=True)\n"
        "    print(done.returncode, done.stdout.strip(), done.stderr.strip(), flush=True)\n"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AGENTAUDIT_")}
    runs = record(server_url, 3)
    makers = [
        subprocess.Popen([sys.executable, "-c", loop, server_url], cwd=tmp_path, env=environ,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    with aa.open_store(server_url, checkpoints=False) as store:
        while any(maker.poll() is None for maker in makers):
            runs.append(record_run(store, "meanwhile"))
            store.flush()
    outputs = [maker.communicate(timeout=120)[0] for maker in makers]
    lines = [line for output in outputs for line in output.splitlines()]
    assert len(lines) == 12 and all(line.startswith("0 ") for line in lines), outputs
    made = sorted(int(line.split()[2].rstrip(":")) for line in lines if line.split()[1] == "checkpoint")
    runs += record(server_url, 1, "last")
    final = checkpoint(server_url, tmp_path)
    assert final.returncode == 0 and "checkpoint" in final.stdout
    made.append(int(final.stdout.split()[1].rstrip(":")))
    assert made == list(range(1, len(made) + 1)), outputs  # each number made once, none skipped
    stored = admin_sql(server_url, "SELECT seq FROM checkpoints ORDER BY seq")
    assert [int(row[0]) for row in stored] == made
    taken = admin_sql(server_url, "SELECT run_id FROM checkpoint_entries WHERE kind = 'sealed'")
    assert sorted(str(row[0]) for row in taken) == sorted(runs)  # every run once
    status, report = verify_checkpoints(server_url, tmp_path, public)
    assert status == 0 and report["ok"] and report["checkpoints"] == len(made), report
    assert report["runs"] == len(runs)


def test_a_store_with_a_policy_makes_its_closing_checkpoint_into_the_one_chain(
    server_url: str, tmp_path: Path
) -> None:
    """Each process of a fleet given a policy checkpoints at close (and every
    ``interval`` seconds); the checkpoints of all of them form one chain."""
    public = signing_key(tmp_path)
    policy = aa.CheckpointPolicy(interval=0, signing_key=tmp_path / "signing.pem",
                                 sink=tmp_path / "checkpoints.jsonl")
    first = aa.open_store(server_url, checkpoints=policy)
    second = aa.open_store(server_url, checkpoints=policy)
    runs = [record_run(first, "a"), record_run(second, "b")]
    first.close()
    runs.append(record_run(second, "c"))
    second.close()
    sink = [json.loads(line) for line in (tmp_path / "checkpoints.jsonl").read_text().splitlines()]
    assert [record["seq"] for record in sink] == [1, 2]
    assert sorted(entry[1] for record in sink for entry in record["entries"]) == sorted(runs)
    status, report = verify_checkpoints(server_url, tmp_path, public)
    assert status == 0 and report["checkpoints"] == 2 and report["runs"] == 3, report


def test_a_run_the_server_abandoned_is_a_head_until_its_host_delivers_the_real_end(
    server_url: str, tmp_path: Path
) -> None:
    """The server marks a silent host's run abandoned; the host was cut off, not dead,
    and its spool later delivers the run's real final row, which replaces the
    abandoned one by right. A checkpoint in between took the run as a head (its
    header and events), so the replacement is no edit; the next takes it sealed."""
    from datetime import datetime, timedelta, timezone

    public = signing_key(tmp_path)
    with aa.SQLiteStore(tmp_path / "host.db", checkpoints=False) as host:
        writer = aa.Auditor(host).start_run("cut off", input="pay bob")
        writer.on_step(1, RESPONSE)
        host.flush()
        run_id = writer.run_id
        with aa.open_store(server_url, checkpoints=False) as server:
            server.import_records([host.get_run(run_id)], host.get_logs(run_id), {})
            later = datetime.now(timezone.utc) + timedelta(hours=1)
            assert server.reap(timedelta(minutes=5), now=later) == [run_id]
            assert checkpoint(server_url, tmp_path).returncode == 0
            writer.on_tool(RESPONSE.tool_calls[0], "ok")
            writer.close(aa.RunStats(status="succeeded", output="paid $10 to bob"))
            row, _ = host.run_rows(run_id)
            assert row is not None
            server.import_records([host.get_run(run_id)], host.get_logs(run_id), {run_id: str(row["seal"])})
            assert server.get_run(run_id).status is aa.RunStatus.SUCCEEDED
            assert server.verify(run_id).ok
    kinds = admin_sql(server_url, "SELECT kind FROM checkpoint_entries WHERE run_id = %s ORDER BY idx", (run_id,))
    assert [str(kind) for (kind,) in kinds] == ["head"]
    status, report = verify_checkpoints(server_url, tmp_path, public)
    assert status == 0 and report["ok"], report  # the real end is no edit
    made = checkpoint(server_url, tmp_path)
    assert "checkpoint 2: 1 new entries" in made.stdout, made.stdout + made.stderr
    kinds = admin_sql(server_url, "SELECT kind FROM checkpoint_entries WHERE run_id = %s ORDER BY idx", (run_id,))
    assert [str(kind) for (kind,) in kinds] == ["head", "sealed"]
    status, report = verify_checkpoints(server_url, tmp_path, public)
    assert status == 0 and report["ok"] and report["runs"] == 1, report
