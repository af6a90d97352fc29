"""Signed checkpoints of the SQLite store: made off the agent's thread (every
interval and at close), signed, written to an external sink, and verified against
that sink: every edit of checkpointed data is caught, a purge is told from a
deletion, and the retention floor and legal holds refuse."""

from __future__ import annotations

import gc
import json
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import agentaudit as aa
from agentaudit._checkpoints import (
    Checkpoint,
    CheckpointBody,
    Ed25519Signer,
    generate_signing_key,
    load_public_key,
    read_checkpoint_file,
    split_note,
    verify_note,
    verify_proof,
)
from agentaudit._keys import Keyring
from agentaudit._merkle import tree_root

RESPONSE = aa.Response(
    text="checking", model="p/m", usage=aa.Usage(3, 2),
    tool_calls=(aa.ToolCall("pay", {"to": "bob", "usd": 10}, "c1"),),
)


def record_run(store: aa.SQLiteStore, output: str = "paid $10 to bob") -> str:
    writer = aa.Auditor(store).start_run("agent", input="pay bob", parent_run_id=None)
    writer.on_step(1, RESPONSE)
    writer.on_tool(RESPONSE.tool_calls[0], "ok")
    writer.close(aa.RunStats(status="succeeded", output=output))
    return writer.run_id


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, str]:
    """A signing key kept apart from the database, and its public key text."""
    (tmp_path / "keys").mkdir()
    private = tmp_path / "keys" / "signing.pem"
    return private, generate_signing_key(private).vkey


def policy(tmp_path: Path, keys: tuple[Path, str], **options: object) -> aa.CheckpointPolicy:
    (tmp_path / "elsewhere").mkdir(exist_ok=True)
    defaults: dict[str, object] = {
        "interval": 0, "signing_key": keys[0], "sink": tmp_path / "elsewhere" / "checkpoints.jsonl",
    }
    return aa.CheckpointPolicy(**{**defaults, **options})


def sink_of(tmp_path: Path) -> Path:
    return tmp_path / "elsewhere" / "checkpoints.jsonl"


def raw(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(db, isolation_level=None)


def verify(db: Path, tmp_path: Path, keys: tuple[Path, str], **options: object):
    with aa.SQLiteStore(db) as store:
        return store.verify_checkpoints(sink_of(tmp_path), public_key=keys[1], **options)


# -- making checkpoints ----------------------------------------------------------------------


def test_a_checkpoint_is_a_signed_tlog_note_in_the_sink_and_the_database(tmp_path, keys):
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db, checkpoints=policy(tmp_path, keys)) as store:
        first = [record_run(store) for _ in range(3)]
        made = store.checkpoint()
        second = record_run(store)
        again = store.checkpoint()
        assert store.checkpoint() is None  # nothing new: no checkpoint
    assert made is not None and again is not None
    text, signed_by = verify_note(made.note, [load_public_key(keys[1])])
    assert signed_by == ["agentaudit"]
    lines = text.split("\n")
    assert lines[0] == "agentaudit" and lines[1] == "3"  # origin, tree size
    body = CheckpointBody.parse(text)
    assert body.root == tree_root([e.leaf() for e in made.entries])
    assert sorted(e.run_id for e in made.entries) == sorted(first)
    assert {e.kind for e in made.entries} == {"sealed"}
    # The second chains to the first and its root covers the whole log.
    body2 = again.body
    assert body2.seq == 2 and body2.prev == body.hash and body2.size == 4
    assert [e.run_id for e in again.entries] == [second]
    assert body2.root == tree_root([e.leaf() for e in (*made.entries, *again.entries)])
    outside, problems = read_checkpoint_file(sink_of(tmp_path))
    assert problems == [] and outside == [made, again]
    assert (sink_of(tmp_path).stat().st_mode & 0o777) == 0o600
    with aa.SQLiteStore(db) as store:
        assert store.checkpoints() == [made, again]


def test_checkpoints_are_made_every_interval_off_the_agents_thread(tmp_path, keys):
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db, checkpoints=policy(tmp_path, keys, interval=0.05, at_close=False)) as store:
        run_id = record_run(store)
        deadline = time.monotonic() + 30
        while not sink_of(tmp_path).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        outside, _ = read_checkpoint_file(sink_of(tmp_path))
        assert [e.run_id for c in outside for e in c.entries] == [run_id]
        assert store._cp_thread is not None and store._cp_thread.name == "agentaudit-checkpointer"


def test_the_last_checkpoint_is_made_at_close(tmp_path, keys):
    db = tmp_path / "a.db"
    store = aa.SQLiteStore(db, checkpoints=policy(tmp_path, keys, interval=3600))
    run_id = record_run(store)
    assert not sink_of(tmp_path).exists()
    store.close()
    outside, _ = read_checkpoint_file(sink_of(tmp_path))
    assert [e.run_id for c in outside for e in c.entries] == [run_id]
    report = verify(db, tmp_path, keys)
    assert report.ok and report.checkpoints == 1 and report.runs == 1, report.findings


def test_a_running_run_is_checkpointed_by_its_head_and_its_events_are_held_to_it(tmp_path, keys):
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db, checkpoints=policy(tmp_path, keys)) as store:
        writer = aa.Auditor(store).start_run("long", input="x", parent_run_id=None)
        writer.on_step(1, RESPONSE)
        made = store.checkpoint()
        then = len(store.get_logs(writer.run_id))
        assert made is not None and [(e.kind, e.events) for e in made.entries] == [("head", then)]
        assert store.checkpoint() is None  # it did not grow
        writer.on_tool(RESPONSE.tool_calls[0], "ok")
        grown = store.checkpoint()
        now = len(store.get_logs(writer.run_id))
        assert grown is not None and [(e.kind, e.events) for e in grown.entries] == [("head", now)]
        with raw(db) as conn:  # an earlier event rewritten while the run still runs
            conn.execute("UPDATE events SET payload = replace(payload, 'bob', 'mallory') WHERE run_id = ?",
                         (writer.run_id,))
        report = store.verify_checkpoints(sink_of(tmp_path), public_key=keys[1])
        assert [f.kind for f in report.problems] == ["edited"]
        assert report.problems[0].run_id == writer.run_id
        writer.close(aa.RunStats(status="succeeded"))


def test_hmac_signed_checkpoints_verify_with_the_keyring_only(tmp_path):
    db = tmp_path / "a.db"
    (tmp_path / "elsewhere").mkdir()
    secret = b"a chain key of more than sixteen bytes"
    keyring = Keyring([secret])
    pol = aa.CheckpointPolicy(interval=0, hmac_key=keyring, sink=sink_of(tmp_path))
    with aa.SQLiteStore(db, checkpoints=pol) as store:
        record_run(store)
        store.checkpoint()
        assert store.verify_checkpoints(sink_of(tmp_path), keys=keyring).ok
        wrong = store.verify_checkpoints(sink_of(tmp_path), keys=Keyring([b"another key of sixteen bytes+"]))
        assert [f.kind for f in wrong.problems] == ["signature"]
        # Rotated: a keyring holding the old key among others still verifies.
        rotated = Keyring([b"the new key, also long enough", secret])
        assert store.verify_checkpoints(sink_of(tmp_path), keys=rotated).ok


def test_a_callable_sink_gets_each_checkpoint_and_a_failing_one_is_retried(tmp_path, keys):
    taken: list[Checkpoint] = []
    failing = [True]

    def sink(checkpoint: Checkpoint) -> None:
        if failing[0]:
            raise OSError("the remote store is down")
        taken.append(checkpoint)

    db = tmp_path / "a.db"
    with aa.SQLiteStore(db, checkpoints=policy(tmp_path, keys, sink=sink)) as store:
        record_run(store)
        first = store.checkpoint()
        assert taken == [] and store.checkpoint_failures == 1
        failing[0] = False
        record_run(store)
        second = store.checkpoint()
        assert taken == [first, second]  # the one refused went first, in order


def test_policy_values_are_checked_where_they_are_given(tmp_path, keys):
    with pytest.raises(ValueError):
        aa.CheckpointPolicy(interval=-1)
    with pytest.raises(TypeError):
        aa.CheckpointPolicy(interval="60")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        aa.CheckpointPolicy(sink=42)
    with pytest.raises(aa.CheckpointError):
        aa.CheckpointPolicy(origin="has space")
    with pytest.raises(aa.CheckpointError):
        aa.CheckpointPolicy(signing_key=tmp_path / "missing.pem")
    with pytest.raises(aa.CheckpointError):
        aa.CheckpointPolicy(sink=tmp_path / "no" / "such" / "dir" / "file")
    with pytest.raises(aa.CheckpointError):
        generate_signing_key(keys[0])  # never overwrites a key
    with pytest.raises(TypeError):
        aa.SQLiteStore(tmp_path / "a.db", checkpoints={"interval": 60})  # type: ignore[arg-type]


def test_a_public_key_is_read_from_text_a_file_or_pem(tmp_path, keys):
    from cryptography.hazmat.primitives import serialization

    verifier = load_public_key(keys[1])
    (tmp_path / "pub.txt").write_text(keys[1] + "\n")
    assert load_public_key(tmp_path / "pub.txt").vkey == verifier.vkey
    signer = Ed25519Signer("agentaudit", serialization.load_pem_private_key(keys[0].read_bytes(), None))
    pem = signer._key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "pub.pem").write_bytes(pem)
    assert load_public_key(tmp_path / "pub.pem").vkey == verifier.vkey
    name, key_hash, material = keys[1].split("+", 2)
    for bad in ("nonsense", f"{name}+00000000+{material}", f"{name}+{key_hash}+AAAA"):
        with pytest.raises(aa.CheckpointError):
            load_public_key(bad)


# -- verification against the external checkpoints: the tamper matrix -------------------------


@pytest.fixture
def checkpointed(tmp_path: Path, keys: tuple[Path, str]) -> tuple[Path, list[str]]:
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db, checkpoints=policy(tmp_path, keys)) as store:
        runs = [record_run(store), record_run(store)]
        store.checkpoint()
        runs.append(record_run(store))
    report = verify(db, tmp_path, keys)
    assert report.ok and report.checkpoints == 2 and report.runs == 3, report.findings
    return db, runs


def _columns(db: Path, table: str) -> list[str]:
    with raw(db) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


_CHANGE = (
    "CASE WHEN typeof({c}) = 'integer' THEN {c} + 1000 WHEN typeof({c}) = 'real' THEN {c} + 1.5 "
    "WHEN typeof({c}) = 'null' THEN 'x' ELSE {c} || 'x' END"
)


def _edit_matrix() -> list[tuple[str, str]]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "schema.db"
        aa.SQLiteStore(db).close()
        return [(t, c) for t in ("runs", "events") for c in _columns(db, t)]


@pytest.mark.parametrize(("table", "column"), _edit_matrix())
def test_every_column_edit_of_a_checkpointed_run_is_caught(tmp_path, keys, checkpointed, table, column):
    db, runs = checkpointed
    victim = runs[0]
    with raw(db) as conn:
        where = "run_id = ?" if table == "runs" else "run_id = ? AND sequence = 2"
        changed = conn.execute(f"UPDATE {table} SET {column} = {_CHANGE.format(c=column)} WHERE {where}",
                               (victim,)).rowcount
    assert changed == 1
    report = verify(db, tmp_path, keys)
    assert not report.ok
    kinds = {f.kind for f in report.problems}
    if (table, column) == ("runs", "run_id"):
        assert "deleted" in kinds  # the run is no longer where the checkpoint put it
    else:
        assert [(f.kind, f.run_id) for f in report.problems] == [("edited", victim)]


@pytest.mark.parametrize(
    "attack",
    [
        "DELETE FROM runs WHERE run_id = :victim",
        "DELETE FROM events WHERE run_id = :victim",
        "DELETE FROM events WHERE run_id = :victim AND sequence = (SELECT max(sequence) FROM events WHERE run_id = :victim)",
        "DELETE FROM events WHERE run_id = :victim AND sequence = 1",
        "UPDATE events SET sequence = 10 - sequence WHERE run_id = :victim",
        "UPDATE runs SET status = 'running', seal = '' WHERE run_id = :victim",
        "DELETE FROM checkpoints WHERE seq = 1",
        "DELETE FROM checkpoints",
        "DELETE FROM checkpoint_entries WHERE idx = 0",
        "UPDATE checkpoint_entries SET digest = (CASE WHEN digest LIKE 'f%' THEN 'e' ELSE 'f' END)"
        " || substr(digest, 2) WHERE idx = 1",
        "UPDATE checkpoints SET note = replace(note, 'agentaudit-checkpoint 2', 'agentaudit-checkpoint 3')",
    ],
    ids=["delete run", "delete its events", "cut the last event", "delete the first event",
         "reorder events", "reopen the run", "delete a checkpoint row", "delete every checkpoint",
         "delete an entry", "edit an entry", "renumber a checkpoint"],
)
def test_deletions_and_checkpoint_table_edits_are_caught(tmp_path, keys, checkpointed, attack):
    db, runs = checkpointed
    with raw(db) as conn:
        conn.execute(attack, {"victim": runs[0]})
    report = verify(db, tmp_path, keys)
    assert not report.ok, attack


def test_a_rewritten_and_re_signed_checkpoint_table_is_caught(tmp_path, keys, checkpointed):
    # The attacker edits a run, then rebuilds the whole checkpoint log over the
    # edited data and signs it with a key of their own: the external file and the
    # public key both still tell.
    db, runs = checkpointed
    with raw(db) as conn:
        conn.execute("UPDATE runs SET output = 'paid $10000 to mallory' WHERE run_id = ?", (runs[0],))
        conn.execute("DELETE FROM checkpoints")
        conn.execute("DELETE FROM checkpoint_entries")
    forger = tmp_path / "forger.pem"
    generate_signing_key(forger)
    forged = aa.CheckpointPolicy(interval=0, signing_key=forger)
    with aa.SQLiteStore(db, checkpoints=forged) as store:
        assert store.checkpoint() is not None
        assert store.verify_checkpoints().ok  # consistent with itself, unsigned check
        alone = store.verify_checkpoints(public_key=keys[1])
        assert [f.kind for f in alone.problems] == ["signature"]
    report = verify(db, tmp_path, keys)
    kinds = {f.kind for f in report.problems}
    assert {"checkpoint-altered", "edited"} <= kinds


def test_an_edit_of_the_external_file_is_caught(tmp_path, keys, checkpointed):
    db, runs = checkpointed
    text = sink_of(tmp_path).read_text()
    other = runs[0][:-1] + ("1" if runs[0].endswith("0") else "0")
    sink_of(tmp_path).write_text(text.replace(runs[0], other, 1))
    report = verify(db, tmp_path, keys)
    assert {"root", "checkpoint-altered"} & {f.kind for f in report.problems}


def test_without_the_public_key_only_hashes_are_checked_and_it_says_so(tmp_path, keys, checkpointed):
    db, _ = checkpointed
    with aa.SQLiteStore(db) as store:
        report = store.verify_checkpoints(sink_of(tmp_path))
    assert report.ok and [f.kind for f in report.findings] == ["unsigned"]


# -- purge, delete, the floor and holds ------------------------------------------------------


def test_a_purge_is_told_from_a_deletion(tmp_path, keys, checkpointed):
    db, runs = checkpointed
    with aa.SQLiteStore(db, checkpoints=policy(tmp_path, keys)) as store:
        assert store.delete_run(runs[0])
        assert store.purge(datetime.now(timezone.utc) + timedelta(seconds=1)) == 2
    report = verify(db, tmp_path, keys)
    assert report.ok, report.problems
    assert sorted(f.run_id for f in report.of_kind("purged")) == sorted(runs)
    # The purge checkpoint is in the external file too: a third party sees it.
    outside, _ = read_checkpoint_file(sink_of(tmp_path))
    assert {e.run_id for c in outside for e in c.entries if e.kind == "purged"} == set(runs)

    # A deletion that went around agentaudit is reported as one.
    db2 = tmp_path / "b.db"
    with aa.SQLiteStore(db2, checkpoints=policy(tmp_path, keys, sink=tmp_path / "elsewhere" / "b.jsonl")) as store:
        victim = record_run(store)
        store.checkpoint()
    with raw(db2) as conn:
        conn.execute("DELETE FROM events WHERE run_id = ?", (victim,))
        conn.execute("DELETE FROM runs WHERE run_id = ?", (victim,))
    with aa.SQLiteStore(db2) as store:
        report = store.verify_checkpoints(tmp_path / "elsewhere" / "b.jsonl", public_key=keys[1])
    assert [(f.kind, f.run_id) for f in report.problems] == [("deleted", victim)]


def test_a_forged_purge_record_without_the_key_is_caught(tmp_path, keys, checkpointed):
    # Deleting a run and making the store record a purge with no signing key: the
    # purge checkpoint is unsigned, so against the public key it does not count.
    db, runs = checkpointed
    with aa.SQLiteStore(db) as store:
        store.delete_run(runs[0])
    report = verify(db, tmp_path, keys)
    assert not report.ok
    assert "signature" in {f.kind for f in report.problems}


def test_the_retention_floor_refuses_a_purge_inside_it_and_deletes_nothing(tmp_path, keys):
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db, checkpoints=policy(tmp_path, keys)) as store:
        run_id = record_run(store)
        store.set_retention_floor(timedelta(days=180))
        assert store.retention_floor == timedelta(days=180)
        with pytest.raises(aa.RetentionError, match="retention floor is 180 days"):
            store.purge(datetime.now(timezone.utc))
        with pytest.raises(aa.RetentionError, match="within the retention floor"):
            store.delete_run(run_id)
        assert store.get_run(run_id) is not None
        # A cutoff older than the floor is fine (and finds nothing here).
        assert store.purge(datetime.now(timezone.utc) - timedelta(days=181)) == 0
        store.set_retention_floor(None)
        assert store.retention_floor is None
        assert store.delete_run(run_id)
        with pytest.raises(ValueError):
            store.set_retention_floor(timedelta(0))


def test_held_runs_are_never_purged_deleted_or_erased(tmp_path, keys):
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db, checkpoints=policy(tmp_path, keys)) as store:
        held, other = record_run(store), record_run(store)
        assert store.hold([held], reason="litigation 2026-17") == [held]
        assert [(h.run_id, h.reason) for h in store.holds()] == [(held, "litigation 2026-17")]
        with pytest.raises(aa.RetentionError, match="legal hold"):
            store.delete_run(held)
        assert store.purge(datetime.now(timezone.utc) + timedelta(seconds=1)) == 1  # the other one
        assert store.get_run(held) is not None and store.get_run(other) is None
        with pytest.raises(aa.RetentionError, match="legal hold"):
            store.erase(held)  # a privacy erase waits for the hold to be lifted
        assert store.verify(held).state == "intact"
        assert store.release([held]) == [held]
        assert store.release([held]) == []
        assert store.erase(held) > 0
        assert store.delete_run(held)
        with pytest.raises(aa.RunNotFoundError):
            store.hold(["no-such-run"])


def test_holds_by_filter(tmp_path, keys):
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db) as store:
        a = aa.Auditor(store).start_run("alpha", input="", parent_run_id=None)
        a.close(aa.RunStats(status="succeeded"))
        b = aa.Auditor(store).start_run("beta", input="", parent_run_id=None)
        b.close(aa.RunStats(status="succeeded"))
        assert store.hold(filter=aa.RunFilter(name="alpha")) == [a.run_id]
        assert store.purge(datetime.now(timezone.utc) + timedelta(seconds=1)) == 1
        assert store.release(filter=aa.RunFilter(name="alpha")) == [a.run_id]


# -- proofs ------------------------------------------------------------------------------------


def test_an_inclusion_proof_checks_with_the_public_key_alone(tmp_path, keys, checkpointed):
    db, runs = checkpointed
    with aa.SQLiteStore(db) as store:
        proof = store.prove(runs[1])
        with pytest.raises(aa.RunNotFoundError):
            store.prove("no-such-run")
    text = json.dumps(proof)
    proven = verify_proof(text, [load_public_key(keys[1])])
    assert proven.entry.run_id == runs[1] and proven.body.size == 3
    for field, value in (("index", (proof["index"] + 1) % 3), ("run_id", runs[0]),
                         ("path", list(reversed(proof["path"]))), ("tree_size", 2)):
        with pytest.raises(aa.CheckpointError):
            verify_proof({**proof, field: value}, [load_public_key(keys[1])])
    entry = list(proof["entry"])
    entry[4] = "0" * 64
    with pytest.raises(aa.CheckpointError):
        verify_proof({**proof, "entry": entry}, [load_public_key(keys[1])])
    other = tmp_path / "other.pem"
    with pytest.raises(aa.CheckpointError):
        verify_proof(proof, [generate_signing_key(other)])
    body, signatures = split_note(proof["checkpoint"])
    assert signatures and body.startswith("agentaudit\n3\n")


def test_a_key_rotation_verifies_with_both_public_keys(tmp_path, keys):
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db, checkpoints=policy(tmp_path, keys)) as store:
        record_run(store)
    new_key = tmp_path / "keys" / "new.pem"
    new_public = generate_signing_key(new_key).vkey
    with aa.SQLiteStore(db, checkpoints=policy(tmp_path, keys, signing_key=new_key)) as store:
        record_run(store)
    with aa.SQLiteStore(db) as store:
        both = store.verify_checkpoints(sink_of(tmp_path), public_key=[keys[1], new_public])
        assert both.ok and both.checkpoints == 2, both.findings
        only_new = store.verify_checkpoints(sink_of(tmp_path), public_key=new_public)
        assert [f.kind for f in only_new.problems] == ["signature"]


def test_content_erased_after_a_checkpoint_is_reported_as_erased_not_edited(tmp_path, keys, checkpointed):
    db, runs = checkpointed
    with aa.SQLiteStore(db) as store:
        assert store.erase(runs[0]) > 0
    report = verify(db, tmp_path, keys)
    assert report.ok, report.problems
    assert [f.run_id for f in report.of_kind("erased")] == [runs[0]]
    # An edit made to look like an erasure is still an edit.
    with raw(db) as conn:
        conn.execute("UPDATE runs SET output = 'paid $10000 to mallory' WHERE run_id = ?", (runs[1],))
    assert [(f.kind, f.run_id) for f in verify(db, tmp_path, keys).problems] == [("edited", runs[1])]


def test_the_header_of_a_running_run_with_no_event_yet_is_held_to_its_head(tmp_path, keys):
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db, checkpoints=policy(tmp_path, keys)) as store:
        writer = aa.Auditor(store).start_run("waiting", input="pay bob $10", parent_run_id=None)
        store.flush()
        made = store.checkpoint()
        assert made is not None and [(e.kind, e.events) for e in made.entries] == [("head", 0)]
        assert store.verify_checkpoints(sink_of(tmp_path), public_key=keys[1]).ok
        with raw(db) as conn:
            conn.execute("UPDATE runs SET input = 'pay mallory $10000' WHERE run_id = ?", (writer.run_id,))
        report = store.verify_checkpoints(sink_of(tmp_path), public_key=keys[1])
        assert [(f.kind, f.run_id) for f in report.problems] == [("edited", writer.run_id)]
        writer.close(aa.RunStats(status="succeeded"))


@pytest.mark.parametrize(
    "garbage",
    ["UPDATE checkpoints SET note = 'not a note'", "UPDATE checkpoints SET first_entry = 'x'",
     "UPDATE checkpoint_entries SET events = 'many'", "UPDATE checkpoint_entries SET kind = 'other'",
     "DROP TABLE checkpoint_entries"],
)
def test_a_malformed_checkpoint_table_is_reported_never_raised(tmp_path, keys, checkpointed, garbage):
    db, _ = checkpointed
    with raw(db) as conn:
        conn.execute(garbage)
    report = verify(db, tmp_path, keys)
    assert not report.ok
    assert {"checkpoint-altered", "checkpoint-deleted"} & {f.kind for f in report.problems}


def test_a_refused_checkpoint_policy_leaves_nothing_open(tmp_path):
    """The policy is checked before the store opens anything: a refused argument leaves
    no file, no writer thread and no exit hook (it used to start the writer first, and
    the interpreter's exit then failed to flush the half-built store)."""
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(TypeError):
        aa.SQLiteStore(tmp_path / "a.db", checkpoints={"interval": 60})  # type: ignore[arg-type]
    gc.collect()
    assert not (tmp_path / "a.db").exists()
    assert [t.name for t in threading.enumerate() if t.ident not in before] == []
    done = subprocess.run(
        [sys.executable, "-c",
         "import agentaudit as aa, sys\n"
         "try:\n"
         f"    aa.SQLiteStore({str(tmp_path / 'b.db')!r}, checkpoints=42)\n"
         "except TypeError:\n"
         "    sys.exit(0)\n"
         "sys.exit(3)\n"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
