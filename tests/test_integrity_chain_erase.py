"""Erasure that keeps the proof: `erase` removes a finished run's content from the
file (checked on the raw bytes, write-ahead log included) while every hash and the
seal still verify, reported as erased, not broken."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import agentaudit as aa

SECRET = "correct horse battery staple 1"
# Distinctive words, so a leftover copy anywhere in the file's bytes (a page, a free
# page, the search index, the log) is found.
INPUT = "Quaxinput patient Zorblatt"
STEP_TEXT = "Quaxnarration diagnosis Vrennick"
ARGS = {"patient": "Quaxargs Plimsoll"}
RESULT = "Quaxresult positive Thrumwell"
OUTPUT = "Quaxoutput treated Gallowglass"
SECRETS = ("Zorblatt", "Vrennick", "Plimsoll", "Thrumwell", "Gallowglass")


def record(store: aa.SQLiteStore) -> str:
    writer = aa.Auditor(store).start_run("clinic", input=INPUT, parent_run_id=None)
    call = aa.ToolCall("lookup", ARGS, "c1")
    writer.on_step(1, aa.Response(text=STEP_TEXT, model="p/m", usage=aa.Usage(7, 5), tool_calls=(call,)))
    writer.on_tool(call, RESULT)
    writer.log_event("note", {"about": "kept"})
    writer.close(aa.RunStats(output=OUTPUT))
    return writer.run_id


def file_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


@pytest.mark.parametrize("key", [None, SECRET], ids=["unkeyed", "keyed"])
def test_erased_content_is_gone_from_the_file_and_the_chain_still_verifies(tmp_path: Path, key: object) -> None:
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db, key=key if key else False) as store:
        run_id = record(store)
        kept = record(store)  # another run with the same content: untouched
        assert store.verify(run_id).state == "intact"
        assert all(word.encode() in file_bytes(db) for word in SECRETS)
        # input, output, error, step text (and the tools it asked for), args, result, custom payload
        assert store.erase(run_id) >= 7
        result = store.verify(run_id)
        assert result.ok and result.state == "erased", result.problems
        assert store.verify(kept).state == "intact"
        run = store.get_run(run_id)
        assert run is not None and run.input == run.output == "[erased]"
        assert run.input_tokens == 7 and run.status is aa.RunStatus.SUCCEEDED
        events = store.get_logs(run_id)
        assert events[0].payload["text"] == "[erased]" and events[0].payload["in_tokens"] == 7
        assert events[2].payload["name"] == "lookup" and events[2].payload["args"] == "[erased]"
        store.delete_run(kept)
        store.erase(run_id)  # a second erase finds nothing left: still verifies
        assert store.verify(run_id).state == "erased"
    raw = file_bytes(db)
    for word in SECRETS:
        assert word.encode() not in raw and word.lower().encode() not in raw, word


def test_erase_some_fields_only(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db) as store:
        run_id = record(store)
        assert store.erase(run_id, fields=["result", "input"]) == 2
        assert store.verify(run_id).state == "erased"
        run = store.get_run(run_id)
        assert run is not None and run.input == "[erased]" and run.output == OUTPUT
        results = store.get_logs(run_id, event_types=["tool_result"])
        assert results[0].payload["result"] == "[erased]"
        assert store.get_logs(run_id, event_types=["step"])[0].payload["text"] == STEP_TEXT
        with pytest.raises(ValueError, match="erase fields"):
            store.erase(run_id, fields=["passwords"])


def test_erase_refuses_a_running_run_and_an_unknown_one(tmp_path: Path) -> None:
    with aa.SQLiteStore(tmp_path / "a.db") as store:
        writer = aa.Auditor(store).start_run("busy", parent_run_id=None)
        writer.on_step(1, aa.Response(text="x"))
        with pytest.raises(aa.StoreError, match="still running"):
            store.erase(writer.run_id)
        with pytest.raises(aa.RunNotFoundError):
            store.erase("nope")
        writer.close()


def test_a_forged_erasure_and_an_edit_after_erasure_are_broken(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    with aa.SQLiteStore(db) as store:
        forged, erased = record(store), record(store)
        store.erase(erased)
    conn = sqlite3.connect(db, isolation_level=None)
    # Blanking content by hand (no digest kept in place of its salt) breaks the chain.
    conn.execute("UPDATE runs SET output = '[erased]' WHERE run_id = ?", (forged,))
    # What erasure leaves in clear is still covered: the step's token count.
    conn.execute(
        "UPDATE events SET payload = replace(payload, '\"in_tokens\":7', '\"in_tokens\":1') "
        "WHERE run_id = ? AND event_type = 'step'",
        (erased,),
    )
    conn.close()
    with aa.SQLiteStore(db, read_only=True) as store:
        assert store.verify(forged).state == "broken"
        result = store.verify(erased)
        assert result.state == "broken" and result.broken_sequence == 1


def test_the_memory_store_erases_the_same_way() -> None:
    store = aa.MemoryStore(key=SECRET)
    run_id = record(store)  # type: ignore[arg-type]
    assert store.erase(run_id, fields=["text", "output"]) >= 2  # the step's content, the output
    result = store.verify(run_id)
    assert result.ok and result.state == "erased"
    run = store.get_run(run_id)
    assert run is not None and run.output == "[erased]" and run.input == INPUT
    step = store.get_logs(run_id, event_types=["step"])[0]
    assert step.payload["text"] == "[erased]" and step.payload["in_tokens"] == 7
