"""Offline bundles: exported with `agentaudit export --bundle`, checked with
`agentaudit verify --bundle` and no database; one altered byte anywhere fails."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import agentaudit as aa
from agentaudit._bundle import BUNDLE_FORMAT, build_bundle, verify_bundle
from agentaudit._checkpoints import generate_signing_key, load_public_key, load_signing_key

RESPONSE = aa.Response(
    text="checking", model="p/m", usage=aa.Usage(3, 2),
    tool_calls=(aa.ToolCall("pay", {"to": "bob", "usd": 10}, "c1"),),
)


def agentaudit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AGENTAUDIT_")}
    return subprocess.run([sys.executable, "-m", "agentaudit.cli", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=120)


def record_run(store: aa.SQLiteStore, name: str) -> str:
    writer = aa.Auditor(store).start_run(name, input="pay bob", parent_run_id=None)
    writer.on_step(1, RESPONSE)
    writer.on_tool(RESPONSE.tool_calls[0], "ok")
    writer.close(aa.RunStats(status="succeeded", output="paid $10 to bob"))
    return writer.run_id


@pytest.fixture
def db(tmp_path: Path) -> tuple[Path, Path, str, dict[str, str]]:
    key = tmp_path / "signing.pem"
    public = generate_signing_key(key).vkey
    path = tmp_path / "a.db"
    with aa.SQLiteStore(path, checkpoints=aa.CheckpointPolicy(interval=0, signing_key=key)) as store:
        runs = {"pay": record_run(store, "pay"), "refund": record_run(store, "refund")}
        record_run(store, "pay")
    return path, key, public, runs


def bundle_of(db: Path, key: Path, out: Path, **filter_fields: object) -> dict[str, object]:
    policy = aa.CheckpointPolicy(interval=0, at_close=False, signing_key=key)
    with aa.SQLiteStore(db, checkpoints=policy) as store:
        store.checkpoint()
        return store.export_bundle(out, aa.RunFilter(**filter_fields) if filter_fields else None)


def test_a_bundle_holds_the_runs_events_proofs_and_a_signed_manifest(tmp_path, db):
    path, key, public, runs = db
    summary = bundle_of(path, key, tmp_path / "b.zip")
    assert summary["runs"] == 3 and summary["left_out"] == []
    with zipfile.ZipFile(tmp_path / "b.zip") as archive:
        assert archive.namelist() == ["manifest.json", "manifest.sig", "runs.jsonl", "events.jsonl",
                                      "checkpoints.jsonl", "proofs.jsonl"]
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["format"] == BUNDLE_FORMAT and manifest["runs"] == 3
        for name, part in manifest["files"].items():
            data = archive.read(name)
            assert part == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        events = [json.loads(line) for line in archive.read("events.jsonl").splitlines()]
        with aa.SQLiteStore(path) as store:
            assert len(events) == sum(len(store.get_logs(r)) for r in runs.values()) + len(
                store.get_logs(next(r.run_id for r in store.list_runs() if r.run_id not in runs.values()))
            )
    report = verify_bundle(tmp_path / "b.zip", [load_public_key(public)])
    assert report.ok, report.findings
    assert report.runs == 3 and report.events == len(events) and report.signed_by == ("agentaudit",)
    assert (tmp_path / "b.zip").stat().st_mode & 0o777 == 0o600


def test_one_altered_byte_anywhere_fails(tmp_path, db):
    path, key, public, _runs = db
    bundle_of(path, key, tmp_path / "b.zip", name="refund")
    data = (tmp_path / "b.zip").read_bytes()
    verifiers = [load_public_key(public)]
    assert verify_bundle(data, verifiers).ok
    passed = [i for i in range(len(data))
              if verify_bundle(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:], verifiers).ok]
    assert passed == []
    assert not verify_bundle(data[:-1], verifiers).ok
    assert not verify_bundle(data + b"\x00", verifiers).ok


def test_an_insider_with_the_key_cannot_change_what_a_checkpoint_took(tmp_path, db):
    # Re-signing an edited bundle with the right key still fails: each run is held
    # to the digest its signed checkpoint recorded.
    path, key, public, runs = db
    bundle_of(path, key, tmp_path / "b.zip")
    with zipfile.ZipFile(tmp_path / "b.zip") as archive:
        rows = [json.loads(line) for line in archive.read("runs.jsonl").splitlines()]
        events = [json.loads(line) for line in archive.read("events.jsonl").splitlines()]
        proofs = {p["run_id"]: p for p in map(json.loads, archive.read("proofs.jsonl").splitlines())}
    for row in rows:
        if row["run_id"] == runs["pay"]:
            row["output"] = "paid $10000 to mallory"
    grouped = [(row, [e for e in events if e["run_id"] == row["run_id"]]) for row in rows]
    forged = build_bundle(grouped, proofs, [load_signing_key(key)], origin="agentaudit")
    report = verify_bundle(forged, [load_public_key(public)])
    assert [(f.kind, f.run_id) for f in report.problems] == [("edited", runs["pay"])]
    # And a bundle signed by another key is refused outright.
    other = tmp_path / "other.pem"
    generate_signing_key(other)
    stranger = build_bundle(grouped, proofs, [load_signing_key(other)], origin="agentaudit")
    assert [f.kind for f in verify_bundle(stranger, [load_public_key(public)]).problems] == ["signature"]


def test_not_a_bundle_is_a_finding_not_a_crash(tmp_path, db):
    _, _, public, _ = db
    verifiers = [load_public_key(public)]
    for data in (b"", b"PK\x03\x04 nonsense", b"{}"):
        assert not verify_bundle(data, verifiers).ok
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("manifest.json", "{}")
    assert not verify_bundle(out.getvalue(), verifiers).ok
    with pytest.raises(aa.CheckpointError):
        verify_bundle(tmp_path / "missing.zip", verifiers)
    with pytest.raises(aa.CheckpointError):
        verify_bundle(b"", [])


def test_a_running_run_is_bundled_with_what_its_head_covers(tmp_path, db):
    path, key, public, _ = db
    policy = aa.CheckpointPolicy(interval=0, at_close=False, signing_key=key)
    with aa.SQLiteStore(path, checkpoints=policy) as store:
        writer = aa.Auditor(store).start_run("long", input="x", parent_run_id=None)
        writer.on_step(1, RESPONSE)
        store.checkpoint()
        writer.on_tool(RESPONSE.tool_calls[0], "ok")  # after the checkpoint
        store.flush()
        store.export_bundle(tmp_path / "b.zip", aa.RunFilter(name="long"))
        writer.close(aa.RunStats(status="succeeded"))
    report = verify_bundle(tmp_path / "b.zip", [load_public_key(public)])
    assert report.ok
    assert [f.kind for f in report.findings] == ["uncovered"]


def test_export_and_verify_a_bundle_with_the_command(tmp_path, db):
    path, key, public, _runs = db
    made = agentaudit("--db", str(path), "export", "--bundle", "b.zip", "--signing-key", str(key),
                      "--name", "pay", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "bundled 2 runs" in made.stderr
    auditor = tmp_path / "auditor"  # no database here
    auditor.mkdir()
    (auditor / "b.zip").write_bytes((tmp_path / "b.zip").read_bytes())
    ok = agentaudit("verify", "--bundle", "b.zip", "--public-key", public, cwd=auditor)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok: bundle of 2 runs" in ok.stdout and not (auditor / "agentaudit.db").exists()
    data = bytearray((auditor / "b.zip").read_bytes())
    at = data.index(b"paid $10 to bob")
    data[at + 6] ^= 0x01
    (auditor / "altered.zip").write_bytes(bytes(data))
    bad = agentaudit("verify", "--bundle", "altered.zip", "--public-key", public, "--json", cwd=auditor)
    assert bad.returncode == 1 and json.loads(bad.stdout)["ok"] is False
    unsigned = agentaudit("--db", str(path), "export", "--bundle", "c.zip", cwd=tmp_path)
    assert unsigned.returncode == 2 and "--signing-key" in unsigned.stderr
