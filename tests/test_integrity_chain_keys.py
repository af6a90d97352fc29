"""The keyed chain: an edit followed by recomputing every hash is caught with a key
and not without one; keys come from the API, AGENTAUDIT_KEY or a key file, and
rotate through a keyring."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import agentaudit as aa
from agentaudit import _chain
from agentaudit._keys import ChainKey, Keyring, keyring_from, load_key_file
from agentaudit._verify import EventRecord, RunRecord, header_hash_of, seal_of, strict_json

SECRET = "correct horse battery staple 1"
OTHER = "a second secret, for rotation"
STEP = aa.Response(text="paying bob", model="p/m", usage=aa.Usage(3, 2))


def record(db: Path, key: object = None) -> str:
    with aa.SQLiteStore(db, key=key) as store:
        writer = aa.Auditor(store).start_run("payments", input="pay bob", parent_run_id=None)
        writer.on_step(1, STEP)
        writer.log_event("payment", {"to": "bob", "usd": 10})
        writer.close(aa.RunStats(output="paid $10 to bob"))
        return writer.run_id


def forge_and_recompute(db: Path, run_id: str) -> None:
    """What an attacker with the file and agentaudit's own code (but no key) does:
    edit the payment and the output, then recompute every hash and the seal."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "UPDATE events SET payload = ? WHERE run_id = ? AND event_type = 'payment'",
        (aa.canonical_json({"to": "mallory", "usd": 10000}), run_id),
    )
    conn.execute("UPDATE runs SET output = 'paid $10000 to mallory' WHERE run_id = ?", (run_id,))
    cursor = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,))
    run = RunRecord.from_mapping(dict(zip([d[0] for d in cursor.description], cursor.fetchone(), strict=True)))
    prev = header_hash_of(run, None)
    cursor = conn.execute("SELECT * FROM events WHERE run_id = ? ORDER BY sequence", (run_id,))
    names = [d[0] for d in cursor.description]
    count = 0
    for row in cursor.fetchall():
        event = EventRecord.from_mapping(dict(zip(names, row, strict=True)))
        commitment = _chain.payload_commitment(
            event.event_type, strict_json(event.payload), _chain.Salts(event.salt)
        )
        digest = _chain.chain_hash_v2(
            None, prev, run_id, event.sequence, event.event_type, event.created_at, commitment
        )
        conn.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?", (prev, digest, event.id))
        prev, count = digest, event.sequence
    conn.execute("UPDATE runs SET seal = ? WHERE run_id = ?", (seal_of(run, None, count, prev), run_id))
    conn.close()


def verify(db: Path, run_id: str, key: object = None) -> aa.VerifyResult:
    with aa.SQLiteStore(db, read_only=True, key=key) as store:
        return store.verify(run_id)


def test_recomputing_after_an_edit_goes_unseen_without_a_key(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    run_id = record(db, key=False)
    forge_and_recompute(db, run_id)
    assert verify(db, run_id).ok  # what the unkeyed chain cannot show (documented)


def test_recomputing_after_an_edit_is_caught_with_a_key(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    run_id = record(db, key=SECRET)
    assert verify(db, run_id, key=SECRET).ok
    forge_and_recompute(db, run_id)
    result = verify(db, run_id, key=SECRET)
    assert not result.ok and result.key_id == ChainKey(SECRET).key_id


def test_stripping_the_key_id_and_recomputing_is_caught(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    run_id = record(db, key=SECRET)
    sqlite3.connect(db, isolation_level=None).execute("UPDATE runs SET key_id = '' WHERE run_id = ?", (run_id,))
    forge_and_recompute(db, run_id)
    result = verify(db, run_id, key=SECRET)
    assert not result.ok and "not keyed" in result.reason
    with aa.SQLiteStore(db, read_only=True) as store:
        assert store.verify(run_id, key=SECRET, require_key=False).ok  # an explicit choice


def test_a_keyed_run_cannot_be_checked_without_its_key(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    run_id = record(db, key=SECRET)
    result = verify(db, run_id, key=False)
    assert not result.ok and "was not given" in result.reason
    assert not verify(db, run_id, key=OTHER).ok


def test_keys_rotate_through_a_keyring(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    old = record(db, key=SECRET)
    new = record(db, key=Keyring([OTHER, SECRET]))  # the first signs
    ring = Keyring([OTHER, SECRET])
    assert verify(db, old, key=ring).ok and verify(db, new, key=ring).ok
    with aa.SQLiteStore(db, read_only=True) as store:
        assert store.get_run(new).key_id == ChainKey(OTHER).key_id  # type: ignore[union-attr]
        assert store.get_run(old).key_id == ChainKey(SECRET).key_id  # type: ignore[union-attr]
    assert not verify(db, old, key=OTHER).ok


def test_the_key_comes_from_the_environment_or_a_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"# the signing key first\n{OTHER}\n\n{SECRET}\n")
    assert list(load_key_file(key_file)) == [ChainKey(OTHER).key_id, ChainKey(SECRET).key_id] or set(
        load_key_file(key_file)
    ) == {ChainKey(OTHER).key_id, ChainKey(SECRET).key_id}
    assert load_key_file(key_file).signing.key_id == ChainKey(OTHER).key_id
    db = tmp_path / "a.db"
    script = (
        "import agentaudit as aa, sys\n"
        "with aa.SQLiteStore(sys.argv[1]) as s:\n"
        "    w = aa.Auditor(s).start_run('env', parent_run_id=None); w.log_event('x', {}); w.close()\n"
        "    print(w.run_id)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTAUDIT_KEY")}
    by_env = subprocess.run(
        [sys.executable, "-c", script, str(db)], env={**env, "AGENTAUDIT_KEY": SECRET},
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    by_file = subprocess.run(
        [sys.executable, "-c", script, str(db)], env={**env, "AGENTAUDIT_KEY_FILE": str(key_file)},
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    with aa.SQLiteStore(db, read_only=True, key=False) as store:
        assert store.get_run(by_env).key_id == ChainKey(SECRET).key_id  # type: ignore[union-attr]
        assert store.get_run(by_file).key_id == ChainKey(OTHER).key_id  # type: ignore[union-attr]
    assert verify(db, by_env, key=SECRET).ok and verify(db, by_file, key=load_key_file(key_file)).ok


def test_bad_keys_are_refused_where_they_are_given(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        aa.SQLiteStore(tmp_path / "a.db", key="short")
    with pytest.raises(TypeError):
        keyring_from(12345)
    with pytest.raises(ValueError, match="holds no key"):
        (tmp_path / "empty").write_text("# nothing\n")
        load_key_file(tmp_path / "empty")
    assert "secret" not in repr(ChainKey(SECRET)) and SECRET not in repr(Keyring([SECRET]))


def test_a_keyed_memory_store_verifies_with_its_key() -> None:
    store = aa.MemoryStore(key=SECRET)
    writer = aa.Auditor(store).start_run("m", parent_run_id=None)
    writer.on_step(1, STEP)
    writer.close()
    assert store.verify(writer.run_id).ok
    assert not store.verify(writer.run_id, key=OTHER).ok
