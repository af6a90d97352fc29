"""Daemon threads that carry ``finish_run`` calls, so ``close`` can stop waiting after
``finish_timeout`` while a hung store's call goes on and still lands if it recovers.

Daemon, not concurrent.futures: its threads are joined at exit, and a hung store
would then hang the interpreter's exit."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["submit"]

_MAX_THREADS = 4
_lock = threading.Lock()
_jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
_threads: list[threading.Thread] = []
_idle = 0


def _work() -> None:
    global _idle
    while True:
        with _lock:
            _idle += 1
        future, fn = _jobs.get()
        with _lock:
            _idle -= 1
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)


def submit(fn: Callable[[], Any]) -> Future[Any]:
    future: Future[Any] = Future()
    with _lock:
        if _idle == 0 and len(_threads) < _MAX_THREADS:
            thread = threading.Thread(target=_work, name="agentaudit-finish", daemon=True)
            _threads.append(thread)
            thread.start()
    _jobs.put((future, fn))
    return future


def _after_fork() -> None:
    global _jobs, _idle, _lock
    _lock = threading.Lock()
    _threads.clear()
    _idle = 0
    _jobs = queue.SimpleQueue()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
