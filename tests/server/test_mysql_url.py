"""A mysql:// URL's connection parameters: the timeouts that bound a hung network.

A network cut that sends no reset (a pulled link, a firewall dropping packets)
leaves a read waiting for the kernel's retransmissions, for minutes. A fleet bounds
it with ``read_timeout``/``write_timeout`` in the URL, as PostgreSQL URLs do with
libpq's keepalive parameters. Here the cut is a TCP relay between the store and the
real MariaDB that stops passing bytes while keeping both sockets open.
"""

from __future__ import annotations

import select
import socket
import threading
import urllib.parse
from typing import Any

import pytest

import agentaudit as aa


class Relay:
    """Passes bytes between a client and ``target`` until ``cut()``; after that it
    keeps every socket open and passes nothing, as a black-holed link does."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.passing = threading.Event()
        self.passing.set()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self.passing.clear()

    def close(self) -> None:
        self.closed.set()
        for sock in self.sockets:
            sock.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        while not self.closed.is_set():
            try:
                ready, _, _ = select.select([a, b], [], [], 0.1)
                if not self.passing.is_set():
                    continue  # hold the bytes: nobody hears anything
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peer[sock].sendall(data)
            except (OSError, ValueError):
                return


def _through(relay: Relay, url: str, query: str) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = f"{parts.username or 'root'}@127.0.0.1:{relay.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def test_read_timeout_in_the_url_bounds_a_read_on_a_cut_link(mysql_url: str) -> None:
    parts = urllib.parse.urlsplit(mysql_url)
    relay = Relay((parts.hostname or "127.0.0.1", parts.port or 3306))
    store = aa.open_store(_through(relay, mysql_url, "read_timeout=1&write_timeout=1"))
    try:
        assert store.count_runs() == 0  # the link works
        relay.cut()
        outcome: list[Any] = []

        def read() -> None:
            try:
                outcome.append(store.count_runs())
            except Exception as exc:
                outcome.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(60)  # a bound on a hang; without the timeout the read waits for minutes
        assert not reader.is_alive(), "the read on a cut link was not bounded by read_timeout"
        assert isinstance(outcome[0], aa.StoreError)
    finally:
        relay.close()
        store.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("read_timeout=0", "read_timeout"),
        ("write_timeout=soon", "write_timeout"),
        ("connect_timeout=-1", "connect_timeout"),
        ("sslmode=require", "takes the parameters"),
    ],
)
def test_bad_url_parameters_are_refused_before_connecting(query: str, message: str) -> None:
    # port 1: nothing listens, so only the URL check can answer
    with pytest.raises(ValueError, match=message):
        aa.open_store(f"mysql://root@127.0.0.1:1/test?{query}")
