"""The server going away under a writing store (no spool): the agent's calls never
wait, the bounded queue holds what fits and refuses the rest at once (counted), and
once the server is back every event the store took lands, once, and verifies.

Two ways away, each on PostgreSQL and MariaDB: a TCP proxy the test cuts and restores
(the shared servers keep running: a network cut), and a throwaway server of the
test's own killed (SIGKILL / ``pg_ctl -m immediate``: a crash, with a batch possibly
in flight) and started again.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
from collections.abc import Iterator

import pytest

import agentaudit as aa
from tests.server.spoolhelp import SERVERS, Cluster, server_cluster, wait_for


class Proxy:
    """A TCP forwarder to ``upstream``; `cut` drops every connection and refuses new
    ones, `restore` accepts again (on the same port)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept
            except OSError:
                pass
            listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def proxied(server_url: str) -> Iterator[tuple[str, Proxy]]:
    parts = urllib.parse.urlsplit(server_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{proxy.port}"
    yield urllib.parse.urlunsplit(parts._replace(netloc=netloc)), proxy
    proxy.cut()


def test_an_outage_holds_what_fits_and_loses_nothing_taken(proxied: tuple[str, Proxy]) -> None:
    url, proxy = proxied
    store = aa.open_store(url, max_queue=40)
    auditor = aa.Auditor(store)  # not strict: as in production, faults are counted
    try:
        with auditor.run("before") as before:
            before.log_event("custom", {"n": 0})
        proxy.cut()
        during = auditor.start_run("during")
        for i in range(200):  # far more than the queue holds while the server is away
            during.log_event("tick", {"i": i})
        assert store.dropped > 0, "a full queue must refuse, not wait"
        assert store.backlog() > 0
        taken = store.backlog()
        proxy.restore()
        during.close()
        events = store.get_logs(during.run_id)
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert len(events) >= taken - 2  # the start and the finish are items too
        assert store.verify(during.run_id).ok and store.verify(before.run_id).ok
        assert store.get_run(during.run_id).status is aa.RunStatus.SUCCEEDED
        assert auditor.faults  # the refused events were counted, never raised
    finally:
        store.close()


@pytest.fixture(params=SERVERS)
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with server_cluster(request.param) as started:
        yield started


def test_a_server_crash_mid_stream_loses_nothing_taken(cluster: Cluster) -> None:
    store = aa.open_store(cluster.url, max_queue=200)
    auditor = aa.Auditor(store)  # not strict: faults are counted
    stop = threading.Event()
    try:
        with auditor.run("before") as before:
            before.log_event("custom", {"n": 0})
        during = auditor.start_run("during")

        def agent() -> None:
            i = 0
            while not stop.is_set():
                during.log_event("tick", {"i": i})
                i += 1
                stop.wait(0.001)

        thread = threading.Thread(target=agent)
        thread.start()
        try:
            wait_for(lambda: len(store.get_logs(during.run_id)) >= 50, 60, "events committed before the crash")
            cluster.stop("immediate")  # the server dies with the writer's batch possibly in flight
            wait_for(lambda: store.dropped > 0, 60, "the full queue to refuse while the server is down")
            assert store.backlog() > 0
            at_restart = during.events_count
            cluster.start()
            wait_for(lambda: during.events_count >= at_restart + 100, 60, "the store to take events again")
        finally:
            stop.set()
            thread.join()
        wait_for(lambda: store.backlog() == 0, 120, "the queue to drain after the restart")
        during.close()
        events = store.get_logs(during.run_id)
        # every event the store took, once: no gap, no duplicate (the in-flight batch was
        # written again "unless present")
        assert [e.sequence for e in events] == list(range(1, during.events_count + 1))
        assert store.verify(during.run_id).ok and store.verify(before.run_id).ok
        assert store.get_run(during.run_id).status is aa.RunStatus.SUCCEEDED
        assert auditor.faults  # the refused events were counted, never raised
    finally:
        store.close()


def test_a_session_idle_inside_a_transaction_is_ended_and_frees_the_others(server_url: str) -> None:
    # A writer cut off mid-transaction (a pulled link sends no reset; a frozen
    # process) leaves its session idle inside the transaction, holding its locks: on
    # the rollup cells every writer updates, that stalls the whole fleet's ingest.
    # The store's sessions are ended by the server after IDLE_IN_TRANSACTION_TIMEOUT
    # seconds idle in a transaction; here one of them holds a running run's row.
    store = aa.open_store(server_url)
    auditor = aa.Auditor(store)
    writer = auditor.start_run("held-by-a-silent-session", parent_run_id=None)
    writer.log_event("tick", {"k": 1})
    store.flush()
    silent = store.dialect.connect()  # a session as the store makes them
    cur = silent.cursor()
    cur.execute("BEGIN")
    cur.execute("SELECT run_id FROM runs WHERE run_id = %s FOR UPDATE", (writer.run_id,))
    assert cur.fetchall()
    # ... and says nothing more. The finish waits on that row lock until the server
    # ends the silent session; then it lands (retried if it timed out meanwhile).
    writer.close("succeeded")  # returns at the Auditor's finish_timeout (a counted fault)
    finished = wait_for(
        lambda: store.get_run(writer.run_id).status is aa.RunStatus.SUCCEEDED, 180,
        "the finish to land once the silent session is ended",
    )
    assert finished and store.verify(writer.run_id).ok
    try:  # its session is gone
        cur.execute("SELECT 1")
        cur.fetchall()
    except Exception as exc:
        assert store.dialect.is_disconnect(exc), exc
    else:
        pytest.fail("the silent session is still there")
    store.close()
