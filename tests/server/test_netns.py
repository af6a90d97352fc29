"""Three hosts, one PostgreSQL, over a real network (issue 14, deliver 6: multi-host).

Each host is a network namespace (``ip netns``) with a host name of its own (a UTS
namespace, ``unshare --uts``), joined by a veth pair to a bridge in the root
namespace; the test starts a PostgreSQL cluster of its own listening on the bridge's
address. Worker processes (``spool_worker.py``) on each host record runs through
``aa.open_store(url, spool=...)``:

- host A works throughout (and its forwarders reap);
- host B's link is cut mid-run (``ip link set ... down``): its agents go on, their
  spools hold everything, and it is shipped once the link is back;
- host C's processes are killed with SIGKILL while each holds a run open: those runs
  become ``abandoned`` once their leases expire, marked by the live hosts' forwarders.

Then every acknowledged run of every host is on the server and verifies. Needs root;
the namespaces, links and cluster are removed even when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import agentaudit as aa
from agentaudit.stores._forwarder import Backlog, read_backlog, target_key
from tests.server.spoolhelp import WORKER, PgCluster, need_tools, read_ledger, wait_for

LEASE_TTL = "2"
# Fleet workers should bound how long a dead connection can hold the forwarder up
# (docs/deployment.md): TCP keepalives and a user timeout, in libpq's own terms.
CONN_OPTIONS = "connect_timeout=3&keepalives_idle=1&keepalives_interval=1&keepalives_count=3&tcp_user_timeout=3000"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done


@dataclass
class Host:
    name: str
    netns: str
    veth: str  # the root namespace's end: setting it down cuts the host off
    address: str
    procs: list[tuple[subprocess.Popen[str], Path, Path]] = field(default_factory=list)

    def spawn(self, url: str, tmp: Path, worker: str, *args: str) -> tuple[subprocess.Popen[str], Path, Path]:
        spool, ledger = tmp / f"{worker}.spool.db", tmp / f"{worker}.ledger"
        command = (
            f"hostname {self.name} && exec {sys.executable} {WORKER} --db '{url}' --spool {spool} "
            f"--ledger {ledger} --name {worker} --lease-ttl {LEASE_TTL} " + " ".join(args)
        )
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c", command],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        entry = (proc, spool, ledger)
        self.procs.append(entry)
        return entry

    def kill(self) -> None:
        for proc, _, _ in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def network(names: list[str]) -> Iterator[tuple[str, list[Host]]]:
    """A bridge with an address in the root namespace and one namespace per host name,
    each linked to it; all removed on the way out, whatever happened."""
    tag = secrets.token_hex(2)
    subnet = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:], 16)}"
    bridge = f"aabr{tag}"
    hosts: list[Host] = []
    try:
        sh("ip", "link", "add", bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{subnet}.1/24", "dev", bridge)
        sh("ip", "link", "set", bridge, "up")
        for i, name in enumerate(names):
            host = Host(name, f"aa-{tag}-{name}", f"aav{tag}{i}", f"{subnet}.{10 + i}")
            hosts.append(host)
            sh("ip", "netns", "add", host.netns)
            sh("ip", "link", "add", host.veth, "type", "veth", "peer", "name", f"aap{tag}{i}")
            sh("ip", "link", "set", f"aap{tag}{i}", "netns", host.netns)
            sh("ip", "link", "set", host.veth, "master", bridge)
            sh("ip", "link", "set", host.veth, "up")
            inside = ["ip", "netns", "exec", host.netns]
            sh(*inside, "ip", "link", "set", "lo", "up")
            sh(*inside, "ip", "addr", "add", f"{host.address}/24", "dev", f"aap{tag}{i}")
            sh(*inside, "ip", "link", "set", f"aap{tag}{i}", "up")
        yield f"{subnet}.1", hosts
    finally:
        for host in hosts:
            host.kill()
            sh("ip", "netns", "delete", host.netns, check=False)  # takes its veth pair along
            sh("ip", "link", "delete", host.veth, check=False)
        sh("ip", "link", "delete", bridge, check=False)


def acked(ledger: Path) -> dict[str, int]:
    return {e["run_id"]: e["events"] for e in read_ledger(ledger) if "run_id" in e}


def held(ledger: Path) -> str | None:
    return next((e["held"] for e in read_ledger(ledger) if "held" in e), None)


def test_three_hosts_one_cut_off_one_killed(tmp_path: Path) -> None:
    need_tools("ip", "unshare", "initdb", "pg_ctl", "runuser", root=True)
    os.chmod(tmp_path, 0o755)
    with network(["host-a", "host-b", "host-c"]) as (server_address, hosts):
        a, b, c = hosts
        cluster = PgCluster(host=server_address, allow=f"{server_address.rsplit('.', 1)[0]}.0/24")
        try:
            cluster.init()
            cluster.start()
            url = cluster.url.replace("connect_timeout=3", CONN_OPTIONS)
            go = tmp_path / "go"
            a_workers = [a.spawn(url, tmp_path, f"a{i}", "--runs", "40", "--pace", "0.01", "--hold",
                                 "--hold-until", str(go), "--drain", "30") for i in range(2)]
            b_workers = [b.spawn(url, tmp_path, f"b{i}", "--runs", "120", "--pace", "0.01", "--drain", "60")
                         for i in range(2)]
            c_workers = [c.spawn(url, tmp_path, f"c{i}", "--runs", "10", "--pace", "0.01", "--hold")
                         for i in range(2)]
            server = aa.open_store(cluster.url)

            # Host B: cut off mid-run; its agents keep recording into their spools.
            wait_for(lambda: all(len(acked(ledger)) >= 10 for _, _, ledger in b_workers), 120,
                     "host B's workers to record their first runs")
            sh("ip", "link", "set", b.veth, "down")
            at_cut = [len(acked(ledger)) for _, _, ledger in b_workers]
            wait_for(lambda: all(len(acked(ledger)) >= n + 30 for (_, _, ledger), n in zip(b_workers, at_cut, strict=False)),
                     120, "host B's agents to keep recording while cut off")
            wait_for(lambda: live_leases(cluster.url, "host-b") == 0, 120,
                     "host B's leases to run out while it is cut off")
            for _, spool, _ in b_workers:  # what B recorded while cut off waits in its spools
                waiting = spool_backlog(spool, url)
                assert waiting.events > 0 and waiting.runs > 0

            # Host C: killed while each worker holds a run open.
            c_held = [wait_for(lambda ledger=ledger: held(ledger), 120, "host C to hold its runs open")
                      for _, _, ledger in c_workers]
            for run_id in c_held:
                wait_for(lambda run_id=run_id: server.get_run(run_id) is not None, 120,
                         "host C's open runs on the server")
            c.kill()

            sh("ip", "link", "set", b.veth, "up")  # host B is back

            # Host C's runs are marked abandoned by the live hosts' forwarders.
            for run_id in c_held:
                wait_for(lambda run_id=run_id: server.get_run(run_id).status is aa.RunStatus.ABANDONED, 120,
                         "host C's open runs to be marked abandoned")
            for proc, _, _ in b_workers:
                out, err = proc.communicate(timeout=300)
                assert proc.returncode == 0, err
                assert json.loads(out.splitlines()[-1]) == {"runs": 0, "events": 0}  # drained
            go.touch()
            for proc, _, _ in a_workers:
                out, err = proc.communicate(timeout=300)
                assert proc.returncode == 0, err
                assert json.loads(out.splitlines()[-1]) == {"runs": 0, "events": 0}

            everything: dict[str, int] = {}
            for _, _, ledger in a_workers + b_workers + c_workers:
                everything.update(acked(ledger))
            assert len(everything) == 2 * 41 + 2 * 120 + 2 * 10
            check_all(server, everything)
            for run_id in c_held:
                run = server.get_run(run_id)
                assert run.host == "host-c" and "lease" in run.error
                assert server.verify(run_id).ok
            hosts_seen = {run.host for run in server.iter_runs()}
            assert hosts_seen == {"host-a", "host-b", "host-c"}
            server.close()
        finally:
            for host in hosts:
                host.kill()
            cluster.destroy()


def spool_backlog(spool: Path, url: str) -> Backlog:
    conn = sqlite3.connect(f"file:{spool}?mode=ro", uri=True, isolation_level=None)
    try:
        return read_backlog(conn, target_key(url))
    finally:
        conn.close()


def live_leases(url: str, host: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM leases WHERE host = %s AND expires_at > now()", (host,)).fetchone()
    return int(row[0]) if row else 0


def check_all(server: Any, runs: dict[str, int]) -> None:
    for run_id, count in runs.items():
        run = server.get_run(run_id)
        assert run is not None, f"acknowledged run {run_id} never reached the server"
        assert run.status is aa.RunStatus.SUCCEEDED, (run_id, run.status, run.error)
        assert [e.sequence for e in server.get_logs(run_id)] == list(range(1, count + 1)), run_id
        result = server.verify(run_id)
        assert result.ok, (run_id, result.reason)
