"""The crash window of SQLiteStore: what a process killed with SIGKILL loses.

A child process appends events to a SQLiteStore (batched) at a given pace and
notes, in a shared memory map, the wall time at which each append_log returned.
The parent kills it with SIGKILL at a random moment, then opens the file and
compares: events acknowledged (append returned) but not in the file are lost. The
window is the age, at the kill, of the oldest lost event: how far back an
acknowledged event can be and still be lost.

A commit in WAL mode survives the death of the process (the OS has the pages); only
a power cut or kernel crash can also take the last commits since a checkpoint, which
is what ``durability="sync"`` (synchronous=FULL, commit per event) is for.

    .venv/bin/python bench/bench_sqlite_crash_window.py [--trials 8]
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SLOTS = 400_000  # shared map: one double per sequence (0 = not yet acknowledged)

CHILD = textwrap.dedent(
    """
    import mmap, struct, sys, time
    from datetime import datetime, timezone
    import agentaudit as aa
    from agentaudit.stores.sqlite import SQLiteStore

    path, shared, burst, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    slots, commit_delay = int(sys.argv[5]), float(sys.argv[6])
    with open(shared, "r+b") as fh:
        acks = mmap.mmap(fh.fileno(), 0)
    store = SQLiteStore(path, commit_delay=commit_delay)
    store.start_run(aa.Run(run_id="victim", name="crash", started_at=datetime.now(timezone.utc)))
    payload = {"iter": 0, "text": "narration " * 20, "in_tokens": 100, "out_tokens": 20}
    seq = 0
    while seq < slots - burst - 1:
        for _ in range(burst):
            seq += 1
            store.append_log(aa.Event("victim", seq, "step", payload, datetime.now(timezone.utc)))
            struct.pack_into("d", acks, seq * 8, time.time())
        if pause:
            time.sleep(pause)
    """
)

PACES = [
    # (label, events per burst, pause between bursts in seconds)
    ("agent pace: 3 events every 50 ms", 3, 0.050),
    ("busy: 1 event every 1 ms", 1, 0.001),
    ("heavy: 20 events every 1 ms", 20, 0.001),
    ("flood: appends back to back", 1000, 0.0),
]


def trial(directory: Path, burst: int, pause: float, commit_delay: float) -> tuple[int, float]:
    """(events lost, window in ms) of one SIGKILL."""
    db = directory / "victim.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shared = directory / "acks.bin"
    shared.write_bytes(b"\0" * SLOTS * 8)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(shared), str(burst), str(pause), str(SLOTS), str(commit_delay)])
    with open(shared, "r+b") as fh:
        acks = mmap.mmap(fh.fileno(), 0)
    deadline = time.time() + 20
    while struct.unpack_from("d", acks, 8)[0] == 0.0:  # wait for the first event
        if time.time() > deadline or child.poll() is not None:
            raise RuntimeError("the child did not start appending")
        time.sleep(0.01)
    time.sleep(random.uniform(0.3, 0.8))
    child.send_signal(signal.SIGKILL)
    killed_at = time.time()
    child.wait()
    acked = 0
    while acked + 1 < SLOTS and struct.unpack_from("d", acks, (acked + 1) * 8)[0] != 0.0:
        acked += 1
    conn = sqlite3.connect(db)
    committed = conn.execute("SELECT coalesce(max(sequence), 0) FROM events").fetchone()[0]
    count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    assert count == committed, "committed events must be a gap-free prefix"
    lost = max(0, acked - committed)
    if lost == 0:
        return 0, 0.0
    oldest_lost = struct.unpack_from("d", acks, (committed + 1) * 8)[0]
    return lost, (killed_at - oldest_lost) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--commit-delay", type=float, nargs="+", default=[0.02, 0.0],
                        help="SQLiteStore(commit_delay=...) values to measure, in seconds")
    args = parser.parse_args()
    for commit_delay in args.commit_delay:
        measure(args.trials, commit_delay)
    return 0


def measure(trials: int, commit_delay: float) -> None:
    print(f"SQLiteStore crash window (batched, commit_delay={commit_delay * 1000:g} ms, SIGKILL), "
          f"{trials} kills per pace, SQLite {sqlite3.sqlite_version}")
    print(f"  {'pace':<36} {'lost events (median / max)':>28} {'window ms (median / max)':>26}")
    with tempfile.TemporaryDirectory(prefix="aa-crash-") as tmp:
        for label, burst, pause in PACES:
            results = [trial(Path(tmp), burst, pause, commit_delay) for _ in range(trials)]
            lost = [r[0] for r in results]
            window = [r[1] for r in results]
            print(f"  {label:<36} {statistics.median(lost):>14.0f} / {max(lost):<11} "
                  f"{statistics.median(window):>12.1f} / {max(window):<.1f}")


if __name__ == "__main__":
    if not hasattr(signal, "SIGKILL"):
        raise SystemExit("needs POSIX signals")
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    raise SystemExit(main())
