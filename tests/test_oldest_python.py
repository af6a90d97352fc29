"""The core on the oldest Python it claims (``requires-python = ">=3.10"``), under a disk
fault: the writer thread's error handling is the code most likely to lean on a newer
``sqlite3`` (Python 3.10's has no ``sqlite_errorcode`` and no ``SQLITE_*`` result-code
names), and it only runs when a disk fails. The core is standard library only, so the
scenario runs straight from ``src`` under that interpreter, as root (``chattr +i`` on
a loop-mounted ext4 image, as ``test_fault_injection.test_immutable_file`` does).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _oldest_python() -> str | None:
    found = os.environ.get("AGENTAUDIT_OLDEST_PYTHON") or shutil.which("python3.10")
    if found and subprocess.run([found, "-c", "pass"], capture_output=True).returncode == 0:
        return found
    # pyenv keeps versions it does not put on PATH
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10.*/bin/python")))
    return candidates[-1] if candidates else None


SCENARIO = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    sys.path[:0] = [sys.argv[1], sys.argv[2]]
    import agentaudit as aa
    from tests import faultlib as fl

    tmp = Path(sys.argv[3])
    with fl.loop_ext4(tmp / "disk", tmp / "disk.img") as disk:
        path = disk / "audit.db"
        store = aa.SQLiteStore(path, max_queue=20, queue_timeout=0.2)
        auditor = aa.Auditor(store, finish_timeout=1.0)
        agent = fl.Agent(auditor)
        agent.both(2)
        lock = fl.Immutable(path, Path(f"{path}-wal"))
        with lock:
            agent.loop(3, during=lambda i: lock.apply() if i == 2 else None, flood=2)
        store.flush(timeout=10)
        agent.both(2)  # after the fault: recorded in full
        store.close()
        with aa.SQLiteStore(path) as again:
            tally = fl.check_runs(again, agent.runs, finish_lands=True)
            later = [again.get_run(r.run_id) for r in agent.runs[-4:]]
    print(json.dumps({
        "version": list(sys.version_info[:2]),
        "problems": tally.problems(),
        "exceptions": [repr(e) for e in agent.exceptions],
        "later": [r.status.value if r else None for r in later],
        "faults": auditor.faults.counts(),
    }))
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a loop ext4 image and uses chattr: root only")
def test_a_disk_fault_on_the_oldest_supported_python(tmp_path: Path) -> None:
    python = _oldest_python()
    if python is None:
        message = "no Python 3.10 found (set AGENTAUDIT_OLDEST_PYTHON)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [python, "-c", SCENARIO, str(ROOT / "src"), str(ROOT), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["version"] == [3, 10]
    # The writer met the refused writes (the queue refused some: counted), recovered,
    # and the runs after the fault landed whole.
    assert report["faults"], "the immutable file refused nothing: the fault did not strike"
    assert report["problems"] == {} and report["exceptions"] == []
    assert report["later"] == ["succeeded"] * 4
    # No traceback from the writer thread (an AttributeError there was the 3.10 defect).
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    assert sys.version_info >= (3, 10)
