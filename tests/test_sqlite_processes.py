"""Real processes on one SQLite file: several writing at once, and one killed with
SIGKILL in the middle of a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import agentaudit as aa
from agentaudit.stores.sqlite import SQLiteStore

WORKER = textwrap.dedent(
    """
    import os, sys, time
    import agentaudit as aa
    from agentaudit.stores.sqlite import SQLiteStore

    path, go, index, durability = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    store = SQLiteStore(path, durability=durability)
    auditor = aa.Auditor(store, strict=True)  # strict: any fault would raise here
    while not os.path.exists(go):  # start together, to contend for the lock
        time.sleep(0.005)
    w = auditor.start_run("worker", caller=f"process-{index}")
    for i in range(2000):
        w.log_event("tick", {"process": index, "i": i})
    w.close()
    store.close()
    print(w.run_id, auditor.faults.total)
    """
)

VICTIM = textwrap.dedent(
    """
    import sys, time
    import agentaudit as aa
    from agentaudit.stores.sqlite import SQLiteStore

    store = SQLiteStore(sys.argv[1])
    w = aa.Auditor(store).start_run("victim", caller="crash-test")
    for i in range(300):
        w.log_event("tick", {"i": i})
    store.flush()
    print(w.run_id, flush=True)  # 300 events are committed now
    i = 300
    while True:  # an agent at work, until SIGKILL
        for _ in range(5):
            w.log_event("tick", {"i": i})
            i += 1
        time.sleep(0.001)
    """
)


def test_four_processes_write_one_file_at_once(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    go = tmp_path / "go"
    modes = ["batched", "batched", "sync", "sync"]  # sync mode takes the lock per event
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(db), str(go), str(index), mode],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for index, mode in enumerate(modes)
    ]
    time.sleep(0.3)
    go.touch()
    outputs = [worker.communicate(timeout=60) for worker in workers]
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert "locked" not in err and "Traceback" not in err
    reported = [out.split() for out, _err in outputs]
    assert [faults for _run, faults in reported] == ["0"] * 4

    with SQLiteStore(db) as store:
        for index, (run_id, _faults) in enumerate(reported):
            run = store.get_run(run_id)
            assert run is not None and run.status is aa.RunStatus.SUCCEEDED
            assert run.caller == f"process-{index}"
            events = store.get_logs(run_id)
            assert [e.sequence for e in events] == list(range(1, 2001))
            assert [e.payload["i"] for e in events] == list(range(2000))
            assert store.verify(run_id).ok


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_a_killed_process_keeps_its_committed_events_and_its_run_is_abandoned(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM, str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    run_id = victim.stdout.readline().strip()  # type: ignore[union-attr]
    assert run_id, victim.stderr.read()  # type: ignore[union-attr]
    time.sleep(0.3)  # mid-run: events still being appended
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    assert victim.returncode == -signal.SIGKILL

    with SQLiteStore(db) as store:  # the next open, on the same host
        assert run_id in store.recovered
        run = store.get_run(run_id)
        assert run is not None and run.status is aa.RunStatus.ABANDONED
        assert f"process {victim.pid}" in run.error
        events = store.get_logs(run_id)
        assert len(events) > 300  # what was flushed, and more committed after it
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert [e.payload["i"] for e in events] == list(range(len(events)))
        assert store.verify(run_id).ok
        assert run.finished_at == events[-1].created_at
