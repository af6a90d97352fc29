"""Helpers for the spool and multi-host tests (tests/server/test_spool*.py, test_netns.py).

- `PgCluster`: a throwaway PostgreSQL cluster the test starts itself (``initdb`` and
  ``pg_ctl`` on a free port, as the ``postgres`` user), so stopping it mid-stream
  never touches the machine's shared server;
- `need_tools`: the tools a test needs; missing ones skip it, or fail it with
  ``CI=true``;
- `ledger` reading: the workers (``spool_worker.py``) append one JSON line per run
  whose ``close`` returned without a fault: what was acknowledged, and so must
  reach the server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_BIN_DIRS = ("/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/14/bin")
WORKER = Path(__file__).with_name("spool_worker.py")


def missing(reason: str) -> None:
    """A test's server or tool is not there: a failure in CI, a skip elsewhere."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def pg_tool(name: str) -> str | None:
    for directory in PG_BIN_DIRS:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def need_tools(*names: str, root: bool = False) -> dict[str, str]:
    found = {}
    for name in names:
        path = pg_tool(name) if name in ("initdb", "pg_ctl", "postgres") else shutil.which(name)
        if path is None:
            missing(f"{name} is not installed")
        found[name] = path  # type: ignore[assignment]
    if root and os.geteuid() != 0:
        missing("this test needs root (network namespaces)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("psycopg is not installed (pip install 'agentaudit[postgres]')")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """A PostgreSQL cluster of its own in a temporary directory, trust auth."""

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None, allow: str = "") -> None:
        tools = need_tools("initdb", "pg_ctl", "runuser")
        self.initdb, self.pg_ctl, self.runuser = tools["initdb"], tools["pg_ctl"], tools["runuser"]
        self.host = host
        self.port = port or free_port()
        self.allow = allow  # an extra network (CIDR) allowed in with trust
        self.dir = Path(tempfile.mkdtemp(prefix="aa-pgcluster-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres?connect_timeout=3"

    def _run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        argv = [self.runuser, "-u", "postgres", "--", *cmd] if self._as_root else list(cmd)
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)

    def init(self) -> None:
        if self._as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        done = self._run(self.initdb, "-D", str(self.data), "--auth=trust", "-U", "postgres", "-N", "-E", "UTF8")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr}")
        if self.allow:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {self.allow} trust\n")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses={self.host} -k {self.data} "
            "-c fsync=off -c max_connections=200 -c shared_buffers=32MB"
        )
        done = self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr} {self.log_text()}")

    def stop(self, mode: str = "immediate") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def log_text(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return ""

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def pg_cluster(**options: Any) -> Iterator[PgCluster]:
    cluster = PgCluster(**options)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll until ``predicate()`` is truthy; fail the test naming ``what`` after
    ``timeout`` seconds (a bound on a hang, not a speed check)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]
