"""Helpers for the spool and multi-host tests (tests/server/test_spool*.py, test_netns.py).

- `PgCluster`: a throwaway PostgreSQL cluster the test starts itself (``initdb`` and
  ``pg_ctl`` on a free port, as the ``postgres`` user), so stopping it mid-stream
  never touches the machine's shared server;
- `MariaCluster`: the same for MariaDB (``mariadb-install-db``, then ``mariadbd`` on
  a free port, as a child of the test); `server_cluster` starts either by name, so
  the outage and kill scenarios run against both servers;
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
import signal
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


def need_tools(*names: str, root: bool = False, driver: str = "psycopg") -> dict[str, str]:
    found = {}
    for name in names:
        path = pg_tool(name) if name in ("initdb", "pg_ctl", "postgres") else shutil.which(name)
        if path is None:
            missing(f"{name} is not installed")
        found[name] = path  # type: ignore[assignment]
    if root and os.geteuid() != 0:
        missing("this test needs root (network namespaces)")
    try:
        __import__(driver)
    except ImportError:
        extra = "postgres" if driver == "psycopg" else "mysql"
        missing(f"{driver} is not installed (pip install 'agentaudit[{extra}]')")
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


MARIADB_DAEMONS = ("/usr/sbin/mariadbd", "/usr/sbin/mysqld", "/usr/libexec/mariadbd")


class MariaCluster:
    """A MariaDB server of its own in a temporary directory (root, no password,
    reached over TCP on a free port), with a database ``test``: the same interface
    as `PgCluster`. ``stop("immediate")`` kills it (SIGKILL: a crash, recovered at
    the next start); ``stop("fast")`` shuts it down (SIGTERM)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        tools = need_tools("mariadb-install-db", driver="pymysql")
        self.install_db = tools["mariadb-install-db"]
        daemon = next((path for path in MARIADB_DAEMONS if os.access(path, os.X_OK)), None)
        daemon = daemon or shutil.which("mariadbd")
        if daemon is None:
            missing("mariadbd is not installed")
        self.daemon: str = daemon  # type: ignore[assignment]
        self.host = host
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="aa-mariacluster-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        # mariadbd refuses to run as root unless told to
        self._user = ["--user=root"] if os.geteuid() == 0 else []
        # Small, and no native AIO: io_uring/AIO limits are shared with every other
        # database on the machine (bootstraps failed now and then on a busy one).
        self._innodb = ["--innodb-use-native-aio=0", "--innodb-buffer-pool-size=32M"]

    @property
    def url(self) -> str:
        return f"mysql://root@{self.host}:{self.port}/test"

    def init(self) -> None:
        done = subprocess.run(
            [self.install_db, "--no-defaults", f"--datadir={self.data}", *self._user,
             "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve",
             *self._innodb],
            capture_output=True, text=True, timeout=300, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed ({done.returncode}):\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}")

    def start(self) -> None:
        # innodb_flush_log_at_trx_commit=2: a commit survives the server process being
        # killed (not the machine crashing), as PgCluster's fsync=off does.
        argv = [
            self.daemon, "--no-defaults", f"--datadir={self.data}", f"--socket={self.dir / 'sock'}",
            f"--pid-file={self.dir / 'server.pid'}", f"--port={self.port}", f"--bind-address={self.host}",
            f"--log-error={self.log}", *self._user, *self._innodb, "--skip-name-resolve", "--skip-log-bin",
            "--max-connections=200", "--innodb-flush-log-at-trx-commit=2",
        ]
        with open(self.dir / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        import pymysql

        deadline = time.monotonic() + 120
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self._proc.returncode}: {self.log_text()}")
            try:
                conn = pymysql.connect(host=self.host, port=self.port, user="root", password="",
                                       autocommit=True, connect_timeout=2)
                break
            except pymysql.Error:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd did not accept connections in 120 s: {self.log_text()}") from None
                time.sleep(0.1)
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE DATABASE IF NOT EXISTS test CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        finally:
            conn.close()

    def stop(self, mode: str = "immediate") -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if mode == "immediate" else signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_text(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return ""

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


Cluster = PgCluster | MariaCluster
SERVERS = ("postgresql", "mariadb")


@contextlib.contextmanager
def server_cluster(server: str) -> Iterator[Cluster]:
    """A started throwaway server: ``"postgresql"`` or ``"mariadb"``."""
    cluster: Cluster = PgCluster() if server == "postgresql" else MariaCluster()
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
