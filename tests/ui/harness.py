"""What the viewer's tests and the screenshot script share: recording the test runs
(seed_store.py, in its own process), serving them with the real `agentaudit ui`
command, and launching Debian's Chromium through Playwright."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
AGENTAUDIT = str(Path(sys.executable).with_name("agentaudit"))


def seed(db: Path) -> dict[str, str]:
    """Record the finished test runs into ``db``; their ids by role."""
    out = subprocess.run([sys.executable, str(HERE / "seed_store.py"), "seed", str(db)],
                         capture_output=True, text=True, check=True, timeout=300)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


class LiveRun:
    """A process holding one run open; `step` and `close` record into it."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "seed_store.py"), "live", str(db)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.run_id = json.loads(self.proc.stdout.readline())["live"]

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"  # recorded and committed

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(30)


class Viewer:
    """`agentaudit ui` serving ``db`` on a free loopback port, as a user starts it."""

    def __init__(self, db: Path, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([AGENTAUDIT, "ui", "--db", str(db), "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if " at " not in line:
            self.proc.kill()
            raise RuntimeError(f"agentaudit ui did not start: {line!r} {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
        self.url = line.rsplit(" at ", 1)[1].strip().rstrip("/")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=["--no-sandbox", "--disable-background-networking"],
    )
