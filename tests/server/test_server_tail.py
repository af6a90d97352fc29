"""``agentaudit tail -f`` on a server: an event whose transaction commits late (behind
positions already shown) is shown once, when it commits. The real command in a
subprocess, against PostgreSQL and MariaDB; the late transaction is held open on a
connection of the test's own while later events commit."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import urllib.parse
from typing import Any

import agentaudit as aa
from agentaudit.stores._follow import Follower


def _connect(url: str) -> Any:
    """A plain connection (not autocommit): what it inserts waits for its commit."""
    if url.startswith("postgresql"):
        import psycopg

        return psycopg.connect(url)
    import pymysql

    parts = urllib.parse.urlsplit(url)
    return pymysql.connect(
        host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
        password=parts.password or "", database=parts.path.lstrip("/"), autocommit=False,
    )


def _hold_a_late_event(url: str, like: int, run_id: str, sequence: int = 1000) -> Any:
    """Insert, on a connection of its own and without committing, an event of ``run_id``
    (a copy of the row at position ``like``, typed ``late``); returns the connection."""
    conn = _connect(url)
    cur = conn.cursor()
    cur.execute("SELECT * FROM events WHERE id = %s", (like,))
    names = [column[0] for column in cur.description]
    row = dict(zip(names, cur.fetchone(), strict=True))
    del row["id"]
    row.update(run_id=run_id, sequence=sequence, event_type="late", payload=f'{{"held":{sequence}}}')
    cur.execute(
        f"INSERT INTO events ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})", tuple(row.values())
    )
    return conn


def _record(store: Any, name: str, count: int) -> tuple[str, list[int]]:
    """A finished run of ``count`` ``tick`` events; its id and its events' positions."""
    with aa.Auditor(store, strict=True).run(name) as writer:
        for i in range(count):
            writer.log_event("tick", {"run": name, "i": i})
    positions = [p for p, event in store.recent_events(count, run_id=writer.run_id)]
    return writer.run_id, positions


def test_tail_follow_shows_a_late_commit_once(server_url: str) -> None:
    store = aa.open_store(server_url)
    follower: subprocess.Popen[str] | None = None
    try:
        first, [like, *_] = _record(store, "first", 2)
        held = _hold_a_late_event(server_url, like, first)  # takes a position now ...
        try:
            _, later = _record(store, "later", 3)  # ... these commit after it, above it
            follower = subprocess.Popen(
                [sys.executable, "-m", "agentaudit.cli", "--db", server_url, "tail", "-f", "-n", "1",
                 "--interval", "0.1", "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            lines: queue.Queue[str] = queue.Queue()
            threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout],  # type: ignore[union-attr]
                             daemon=True).start()
            shown = [json.loads(lines.get(timeout=60))]  # the newest event: the follower is in place
            assert shown[0]["position"] == later[-1]
            held.commit()  # ... and lands behind a position already shown
        finally:
            held.close()
        _, after = _record(store, "after", 2)
        # everything up to the last event recorded after the commit (a bound on a hang)
        while shown[-1]["position"] != after[-1]:
            shown.append(json.loads(lines.get(timeout=60)))
        _, closing = _record(store, "closing", 1)  # another round: a late event shown again would be here
        while shown[-1]["position"] != closing[-1]:
            shown.append(json.loads(lines.get(timeout=60)))
    finally:
        if follower is not None:
            follower.terminate()
            follower.wait(10)
        store.close()
    late = [event for event in shown if event["event_type"] == "late"]
    assert len(late) == 1, shown
    assert late[0]["run_id"] == first and late[0]["payload"] == {"held": 1000}
    assert late[0]["position"] < later[0]
    assert [e["position"] for e in shown if e["event_type"] == "tick"] == [later[-1], *after, *closing]


def test_follower_watches_its_holes_until_they_fill_and_for_their_window_only(server_url: str) -> None:
    """The store's side, with the follower's clock in the test's hands: two late
    transactions in one hole, committed in the opposite order, are each shown once,
    when they commit (under the run and type filters); a hole is given up `late`
    seconds after it was first seen."""
    store = aa.open_store(server_url)
    now = [0.0]
    try:
        first, [like, *_] = _record(store, "first", 2)
        held = [_hold_a_late_event(server_url, like, first, sequence) for sequence in (1000, 1001)]
        try:
            _, later = _record(store, "later", 3)
            start = store.last_event_position()
            following = Follower(store, start, run_id=first, late=30, clock=lambda: now[0])
            other = Follower(store, start, event_types=["tick"], late=30, clock=lambda: now[0])
            gone = Follower(store, start, late=30, clock=lambda: now[0])
            [(low, high)] = [hole for hole in following.holes if hole[1] < later[0]]
            assert high - low == 1 and following.holes == other.holes == gone.holes
            assert following.poll() == [] and other.poll() == [] and gone.poll() == []
            held[1].commit()  # the second one first
            now[0] = 10.0
            [(position, event)] = following.poll()
            assert (position, event.run_id, event.payload) == (high, first, {"held": 1001})
            assert (low, low) in following.holes and all(hole[1] != high for hole in following.holes)
            held[0].commit()
        finally:
            for conn in held:
                conn.close()
        now[0] = 29.0
        [(position, event)] = following.poll()
        assert (position, event.event_type, event.payload) == (low, "late", {"held": 1000})
        assert following.poll() == []  # once
        assert other.poll() == []  # filtered out by type; its holes are filled all the same
        assert other.holes == following.holes
        now[0] = 31.0  # past the window: the hole is no longer watched
        assert gone.poll() == [] and gone.holes == []
    finally:
        store.close()
