"""Run ids that tell runs apart (issue 13, item 7).

langchain-core 1.x gives UUIDv7 run ids, which start with the time in milliseconds:
runs started in the same hour share their first 8 characters, runs started in the
same millisecond share 13. The real `agentaudit` command must show each run by an id
that no other run shares, take that id (or any unique prefix, with or without
dashes, in any case) back in `show`, `runs --parent`, `tail --run`, `verify` and
`delete`, and name the candidates when a prefix is ambiguous.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path

import pytest

import agentaudit as aa
from agentaudit.stores.sqlite import SQLiteStore
from tests.test_cli import record_agent_run
from tests.test_cli_readonly import agentaudit


def uuid7(ms: int) -> str:
    """A UUIDv7 (RFC 9562) for the millisecond ``ms``: 48 bits of time, then random."""
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


@pytest.fixture
def v7_db(tmp_path: Path) -> tuple[Path, list[str]]:
    """Eight runs: five started in one millisecond, three others in the same minute
    (the 65.5 s that share a UUIDv7's first 8 characters)."""
    path = tmp_path / "v7.db"
    minute = int(time.time() * 1000) & ~0xFFFF
    ids = [uuid7(minute + 50_000) for _ in range(5)] + [uuid7(minute + k * 10_000) for k in (1, 2, 3)]
    with SQLiteStore(path) as store:
        auditor = aa.Auditor(store, strict=True)
        parent = record_agent_run(auditor)  # an ordinary id, for --parent below
        for i, run_id in enumerate(ids):
            w = auditor.start_run(f"agent-{i}", run_id=run_id, parent_run_id=parent if i == 0 else None)
            w.log_event("note", {"i": i})
            w.close()
    return path, ids


def shown_ids(output: str) -> list[str]:
    """The id column of a `runs` table."""
    return [line.split()[0] for line in output.splitlines()[2:] if line.strip() and not line.startswith(" ─")]


def test_runs_shows_ids_that_tell_runs_apart_and_show_takes_them(v7_db: tuple[Path, list[str]]) -> None:
    db, ids = v7_db
    assert len({run_id[:8] for run_id in ids}) == 1  # what broke: one 8-character id for all
    shown = shown_ids(agentaudit(db, "runs").stdout)
    assert len(shown) == 9 and len(set(shown)) == 9
    full = {run["run_id"] for run in json.loads(agentaudit(db, "runs", "--json").stdout)}
    for short in shown:
        assert len(short) >= 8 and not short.endswith("-")
        assert [run_id for run_id in full if run_id.startswith(short)] != []
        one = agentaudit(db, "show", short, "--json")
        assert json.loads(one.stdout)["run"]["run_id"].startswith(short)
    # Runs seconds apart need a character or two more; the five of one millisecond, 14+.
    same_ms = [s for s in shown if any(ids[i].startswith(s) for i in range(5))]
    assert all(len(s) > 13 for s in same_ms)


def test_tail_shows_the_same_distinct_ids(v7_db: tuple[Path, list[str]]) -> None:
    db, ids = v7_db
    lines = agentaudit(db, "tail", "-n", "100", "--type", "note").stdout.splitlines()
    shown = [line.split()[2] for line in lines]
    assert len(set(shown)) == 8
    for short in shown:
        assert sum(run_id.startswith(short) for run_id in ids) == 1


@pytest.mark.parametrize("form", ["dashed", "undashed", "upper", "upper-undashed"])
def test_a_prefix_with_or_without_dashes_in_any_case(v7_db: tuple[Path, list[str]], form: str) -> None:
    db, ids = v7_db
    target = ids[2]
    prefix = target[:23]  # past the shared millisecond, into the random part
    typed = {
        "dashed": prefix,
        "undashed": prefix.replace("-", ""),
        "upper": prefix.upper(),
        "upper-undashed": prefix.replace("-", "").upper(),
    }[form]
    assert json.loads(agentaudit(db, "show", typed, "--json").stdout)["run"]["run_id"] == target
    verified = agentaudit(db, "verify", typed)
    assert f"ok: run {target}" in verified.stdout
    tail = agentaudit(db, "tail", "--run", typed, "--json").stdout.splitlines()
    assert {json.loads(line)["run_id"] for line in tail} == {target}


def test_ids_stored_undashed_take_a_dashed_prefix(tmp_path: Path) -> None:
    db = tmp_path / "hex.db"
    with SQLiteStore(db) as store:
        run_id = record_agent_run(aa.Auditor(store, strict=True))  # uuid4().hex: 32 digits
    dashed = str(uuid.UUID(run_id))[:13].upper()
    assert json.loads(agentaudit(db, "show", dashed, "--json").stdout)["run"]["run_id"] == run_id


def test_runs_parent_takes_a_prefix(v7_db: tuple[Path, list[str]]) -> None:
    db, ids = v7_db
    parent = next(r for r in json.loads(agentaudit(db, "runs", "--json").stdout) if r["name"] == "research-agent")
    children = json.loads(agentaudit(db, "runs", "--json", "--parent", parent["run_id"][:6].upper()).stdout)
    assert [c["run_id"] for c in children] == [ids[0]]


def test_an_ambiguous_prefix_names_the_candidates(v7_db: tuple[Path, list[str]]) -> None:
    db, ids = v7_db
    result = agentaudit(db, "show", ids[0][:8].replace("-", ""), expect=2)
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "is ambiguous; it matches" in result.stderr
    for i, run_id in enumerate(ids):
        assert f"{run_id} (agent-{i})" in result.stderr
    missing = agentaudit(db, "show", "ffffffff", expect=2)
    assert re.fullmatch(r"agentaudit: no run 'ffffffff' in .*\n", missing.stderr)
