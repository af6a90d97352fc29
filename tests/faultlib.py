"""Helpers for tests/test_fault_injection.py (issue 11).

Three parts:

- an **agent** (`Agent`) that drives a run the way a hand-written loop does
  (`start_run`, `on_step`, `tool_started` + `tool_finished`, `on_tool`, `log_event`,
  `close`; or `async with auditor.run(...)`, which ends in `aclose`) and keeps a
  ledger of what it was told: which hook returned with a fault counted, which events
  it was acknowledged for (sequence, type, marker), how long `close` took;
- **faults made real**: a tiny tmpfs filled to the last block, a loop-mounted ext4
  image frozen with `fsfreeze`, the file's write lock held by another process, the
  file made immutable (`chattr +i`), and store wrappers that raise now and then or
  crawl;
- the **checks** (`check_runs`): every acknowledged event is in the reopened store,
  every hook whose events are missing counted a fault, every run verifies, every
  finished run is well formed; and the **figures** table the suite prints and
  docs/faults.md reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed

# The faults `close` / `aclose` count when the run's finish did not (yet) land.
CLOSE_KINDS = frozenset({"finish_timeout", "finish_run", "close"})
MODEL = "openai/gpt-4o-mini"


# -- the agent and its ledger ----------------------------------------------------------
@dataclass
class Hook:
    """One hook call as the agent saw it."""

    kind: str
    marker: str
    expected: list[tuple[str, str]]  # (event type, marker) the hook should record
    faulted: bool = False  # the auditor counted a fault during the call
    acked: list[tuple[int, str, str]] = field(default_factory=list)  # (sequence, type, marker)
    seconds: float = 0.0


@dataclass
class RunRecord:
    """One run as the agent saw it."""

    style: str  # "loop" (start_run ... close) or "async" (async with auditor.run)
    run_id: str = ""
    recording: bool = False  # the store took the run's start (the writer is not a no-op)
    start_faulted: bool = False
    hooks: list[Hook] = field(default_factory=list)
    close_seconds: float = 0.0
    close_faults: dict[str, int] = field(default_factory=dict)  # counted during close
    closed: bool = False

    @property
    def close_clean(self) -> bool:
        """`close` returned without a fault: the run and its events are durable."""
        return self.closed and not (set(self.close_faults) & CLOSE_KINDS)

    def acked(self) -> list[tuple[int, str, str]]:
        return [a for h in self.hooks for a in h.acked]


def _types(kind: str, taken: int) -> list[str]:
    """The event types a hook recorded, given how many events the store took."""
    if kind == "on_step":
        return ["step", "resolved_model"][:taken]
    if kind == "tool_started":
        return ["tool_call"][:taken]
    if kind == "tool_finished":  # a call with no recorded start is recorded whole
        return ["tool_result"] if taken == 1 else ["tool_call", "tool_result"][:taken]
    if kind == "on_tool":
        return ["tool_call", "tool_result"][:taken]
    return ["tick"][:taken]


def _expected(kind: str, marker: str) -> list[tuple[str, str]]:
    return {
        "on_step": [("step", marker)],
        "tool_started": [("tool_call", marker)],
        "tool_finished": [("tool_result", marker)],
        "on_tool": [("tool_call", marker), ("tool_result", marker)],
        "log_event": [("tick", marker)],
    }[kind]


def marker_of(event: aa.Event) -> str:
    """The marker the agent put in an event (see `Agent`)."""
    if event.event_type in ("step", "tick"):
        return str(event.payload.get("hook", ""))
    if event.event_type in ("tool_call", "tool_result"):
        return str(event.payload.get("id", ""))
    return ""


class Agent:
    """A hand-written agent loop over one auditor, keeping a ledger.

    Every event it makes carries a marker unique within its run (a step's ``extra``
    ``hook`` key, a tool call's id, a tick's ``hook`` key), so a missing event is found
    by what it was, not only by its sequence. Any exception out of agentaudit lands in
    ``exceptions`` (the promise: none)."""

    def __init__(self, auditor: aa.Auditor, name: str = "fault-agent") -> None:
        self.auditor = auditor
        self.name = name
        self.runs: list[RunRecord] = []
        self.exceptions: list[BaseException] = []
        self._markers = itertools.count(1)

    # -- one hook, in the ledger
    def _hook(self, rec: RunRecord, writer: aa.Writer, kind: str, marker: str, call: Callable[[], None]) -> None:
        faults = self.auditor.faults
        before_total, before_seq = faults.total, writer.events_count
        started = time.monotonic()
        try:
            call()
        except Exception as exc:  # the promise is that this never happens
            self.exceptions.append(exc)
        hook = Hook(kind, marker, _expected(kind, marker), seconds=time.monotonic() - started)
        hook.faulted = faults.total > before_total
        taken = writer.events_count - before_seq
        if writer.enabled and not hook.faulted:
            for n, event_type in enumerate(_types(kind, taken), start=1):
                hook.acked.append((before_seq + n, event_type, "" if event_type == "resolved_model" else marker))
        rec.hooks.append(hook)

    def _marker(self) -> str:
        return f"h{next(self._markers)}"

    def _iteration(self, rec: RunRecord, writer: aa.Writer, i: int) -> None:
        m = self._marker()
        search = aa.ToolCall("search", {"q": f"question {i}"}, self._marker())
        response = aa.Response(
            text=f"step {i}: let me search",
            model=MODEL,
            finish_reason="tool_calls",
            usage=aa.Usage(input_tokens=100 + i, output_tokens=10 + i),
            tool_calls=(search,),
        )
        # The step number the writer would give the next step: a dropped step leaves
        # no hole in the recorded 1..k (what an adapter does, see aa.record_step).
        self._hook(rec, writer, "on_step", m,
                   lambda: writer.on_step(writer.steps_count() + 1, response, extra={"hook": m}))
        self._hook(rec, writer, "tool_started", search.id, lambda: writer.tool_started(search))
        self._hook(rec, writer, "tool_finished", search.id,
                   lambda: writer.tool_finished(search, f"{i} results"))
        calc = aa.ToolCall("calc", {"a": i, "b": 2}, self._marker())
        self._hook(rec, writer, "on_tool", calc.id, lambda: writer.on_tool(calc, str(i + 2), duration_ms=0.5))
        t = self._marker()
        self._hook(rec, writer, "log_event", t, lambda: writer.log_event("tick", {"hook": t, "i": i}))

    def _flood(self, rec: RunRecord, writer: aa.Writer, limit: int = 100_000) -> None:
        """``log_event`` until one is refused (a fault is counted): the store's queue
        is full from here on. Deterministic: where the queue fills is then never
        between a tool's start and its result."""
        faults = self.auditor.faults
        for _ in range(limit if writer.enabled else 0):
            before = faults.total
            t = self._marker()
            self._hook(rec, writer, "log_event", t, lambda t=t: writer.log_event("tick", {"hook": t, "flood": True}))
            if faults.total > before:
                return

    def _open_tools(self, rec: RunRecord, writer: aa.Writer, n: int) -> None:
        for _ in range(n):  # parallel tool calls still running when the run ends
            call = aa.ToolCall("fetch", {"url": "https://example.com"}, self._marker())
            self._hook(rec, writer, "tool_started", call.id, lambda call=call: writer.tool_started(call))

    def _started(self, rec: RunRecord, writer: aa.Writer, faults_before: int) -> None:
        rec.run_id = writer.run_id
        rec.recording = writer.enabled
        rec.start_faulted = self.auditor.faults.total > faults_before

    def loop(
        self,
        steps: int = 3,
        *,
        during: Callable[[int], None] | None = None,
        flood: int | None = None,
        open_tools: int = 0,
        before_close: Callable[[], None] | None = None,
    ) -> RunRecord:
        """One run by a hand-written loop: ``during(i)`` runs before iteration ``i``
        (to inject a fault mid-run), then, at iteration ``flood``, ticks until the
        store refuses one (``flood=0``: just before close); ``open_tools`` tools are
        still running at close; ``before_close()`` runs after they started."""
        rec = RunRecord("loop")
        self.runs.append(rec)
        faults = self.auditor.faults
        try:
            before = faults.total
            writer = self.auditor.start_run(self.name, caller="fault-suite", input="a task", parent_run_id=None)
            self._started(rec, writer, before)
            for i in range(1, steps + 1):
                if during is not None:
                    during(i)
                if flood == i:
                    self._flood(rec, writer)
                self._iteration(rec, writer, i)
            self._open_tools(rec, writer, open_tools)
            if before_close is not None:
                before_close()
            if flood == 0:
                self._flood(rec, writer)
            counts = faults.counts()
            started = time.monotonic()
            writer.close(aa.RunStats(status="succeeded", output=f"done in {steps} steps"))
            rec.close_seconds = time.monotonic() - started
            rec.close_faults = _diff(faults.counts(), counts)
            rec.closed = True
        except Exception as exc:
            self.exceptions.append(exc)
        return rec

    async def arun(
        self,
        steps: int = 3,
        *,
        during: Callable[[int], None] | None = None,
        flood: int | None = None,
        open_tools: int = 0,
    ) -> RunRecord:
        """One run as ``async with auditor.run(...)`` (its exit is ``aclose``)."""
        rec = RunRecord("async")
        self.runs.append(rec)
        faults = self.auditor.faults
        started = counts = None
        try:
            before = faults.total
            async with self.auditor.run(self.name, caller="fault-suite", input="a task", parent_run_id=None) as writer:
                self._started(rec, writer, before)
                for i in range(1, steps + 1):
                    if during is not None:
                        during(i)
                    if flood == i:
                        self._flood(rec, writer)
                    self._iteration(rec, writer, i)
                    await asyncio.sleep(0)
                self._open_tools(rec, writer, open_tools)
                counts = faults.counts()
                started = time.monotonic()
            rec.close_seconds = time.monotonic() - started
            rec.close_faults = _diff(faults.counts(), counts)
            rec.closed = True
        except Exception as exc:
            self.exceptions.append(exc)
        return rec

    def both(self, steps: int = 3, **kw: Any) -> list[RunRecord]:
        """One run of each style, one after the other."""
        return [self.loop(steps, **kw), asyncio.run(self.arun(steps, **kw))]

    # -- figures
    def max_close(self) -> float:
        return max((r.close_seconds for r in self.runs), default=0.0)

    def max_hook(self) -> float:
        return max((h.seconds for r in self.runs for h in r.hooks), default=0.0)

    def acked_count(self) -> int:
        return sum(len(r.acked()) for r in self.runs)


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


# -- the checks -------------------------------------------------------------------------
@dataclass
class Tally:
    """What the checks found, per fault (the figures) and the problems (all must be
    empty)."""

    runs: int = 0
    acked: int = 0
    events_lost: list[str] = field(default_factory=list)  # acknowledged, not in the store
    silent: list[str] = field(default_factory=list)  # not in the store, no fault says so
    verify_failed: list[str] = field(default_factory=list)
    not_well_formed: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # close returned clean, no terminal status
    kept_unacked: int = 0  # events of hooks that counted a fault, found in the store all the same

    def problems(self) -> dict[str, list[str]]:
        return {
            name: value
            for name, value in (
                ("events_lost", self.events_lost),
                ("silent", self.silent),
                ("verify_failed", self.verify_failed),
                ("not_well_formed", self.not_well_formed),
                ("unfinished", self.unfinished),
            )
            if value
        }


def check_runs(
    store: Any, runs: list[RunRecord], *, well_formed: bool = True, finish_lands: bool = False
) -> Tally:
    """Hold ``runs`` (the agent's ledger) against ``store`` (reopened after the fault
    cleared). ``finish_lands``: the fault has cleared, so a finish that `close` gave
    up waiting for (a ``finish_timeout`` fault) must have landed too."""
    tally = Tally()
    for rec in runs:
        if not rec.recording:
            # The run's start was refused: one start_run fault says so, and the run
            # records nothing. Whatever of it the store has must still verify.
            if not rec.start_faulted:
                tally.silent.append(f"{rec.run_id}: not recording, and no start_run fault")
            if rec.run_id and store.get_run(rec.run_id) is not None and not store.verify(rec.run_id).ok:
                tally.verify_failed.append(rec.run_id)
            continue
        tally.runs += 1
        run = store.get_run(rec.run_id)
        acked = rec.acked()
        tally.acked += len(acked)
        if run is None:
            tally.events_lost.append(f"{rec.run_id}: the run itself ({len(acked)} acknowledged events)")
            continue
        events = store.get_logs(rec.run_id)
        by_seq = {e.sequence: e for e in events}
        for seq, event_type, marker in acked:
            got = by_seq.get(seq)
            if got is None or got.event_type != event_type or marker_of(got) != marker:
                tally.events_lost.append(f"{rec.run_id}#{seq} {event_type} {marker}: found {got}")
        present = {(e.event_type, marker_of(e)) for e in events}
        for hook in rec.hooks:
            missing = [x for x in hook.expected if x not in present]
            if missing and not hook.faulted:
                tally.silent.append(f"{rec.run_id}: {hook.kind} {hook.marker} missing {missing}, no fault")
            if hook.faulted:
                tally.kept_unacked += sum(1 for x in hook.expected if x in present)
        result = store.verify(rec.run_id)
        if not result.ok:
            tally.verify_failed.append(f"{rec.run_id}: {result.broken_sequence} {result.reason}")
        timed_out = rec.closed and "finish_timeout" in rec.close_faults and not (
            {"finish_run", "close"} & set(rec.close_faults)
        )
        if (rec.close_clean or (finish_lands and timed_out)) and not run.status.is_terminal:
            why = "close returned clean" if rec.close_clean else "the finish never landed after the fault cleared"
            tally.unfinished.append(f"{rec.run_id}: {why}, status {run.status}")
        if well_formed and run.status.is_terminal:
            try:
                assert_run_well_formed(store, rec.run_id)
            except AssertionError as exc:
                causes = _unpaired_causes(rec, events)
                tally.not_well_formed.append(f"{rec.run_id} ({rec.style}): {exc}; {causes}")
    return tally


def _unpaired_causes(rec: RunRecord, events: list[aa.Event]) -> str:
    """Why each ``tool_call`` of a run has no ``tool_result``, from the agent's ledger."""
    open_ids: dict[str, int] = {}
    for e in events:
        if e.event_type in ("tool_call", "tool_result"):
            key = marker_of(e)
            open_ids[key] = open_ids.get(key, 0) + (1 if e.event_type == "tool_call" else -1)
    causes = []
    for key in sorted(k for k, n in open_ids.items() if n > 0):
        hooks = [h for h in rec.hooks if h.marker == key]
        started = any(h.kind == "tool_started" and h.acked for h in hooks)
        if not started and any(h.kind in ("on_tool", "tool_finished") and h.faulted for h in hooks):
            why = "one hook's tool_call kept, its tool_result refused (never given a result)"
        elif rec.close_faults.get("append_log"):
            why = "open at close; its cancelled tool_result refused at close, the finish taken"
        else:
            why = "unexplained"
        causes.append(f"{key}: {why}")
    return "; ".join(causes)


def assert_promises(agent: Agent, tally: Tally, *, finish_timeout: float) -> None:
    """The five promises, for every run the agent made."""
    assert agent.exceptions == [], f"exceptions reached the agent: {agent.exceptions!r}"
    slow = [(r.run_id, round(r.close_seconds, 3)) for r in agent.runs if r.close_seconds > finish_timeout + 1.0]
    assert not slow, f"close took longer than finish_timeout + 1 s ({finish_timeout + 1.0:g} s): {slow}"
    assert tally.problems() == {}, tally.problems()


# -- the figures ------------------------------------------------------------------------
FIGURES: dict[str, dict[str, Any]] = {}


def record_figures(
    fault: str,
    agent: Agent | None,
    tally: Tally | None,
    **extra: Any,
) -> dict[str, Any]:
    row: dict[str, Any] = {}
    if agent is not None:
        row.update(
            runs=len(agent.runs),
            faults=dict(sorted(agent.auditor.faults.counts().items())),
            max_close_s=round(agent.max_close(), 3),
            max_hook_s=round(agent.max_hook(), 3),
            exceptions=len(agent.exceptions),
        )
    if tally is not None:
        row.update(
            acked=tally.acked,
            events_lost=len(tally.events_lost),
            verify_failed=len(tally.verify_failed),
            not_well_formed=len(tally.not_well_formed),
            silent=len(tally.silent),
            kept_unacked=tally.kept_unacked,
        )
    row.update(extra)
    FIGURES[fault] = row
    return row


def figures_table() -> str:
    lines = ["fault | runs | faults counted | max close s | max hook s | acked | lost | verify failed | not well formed | silent | more",
             "--- | --- | --- | --- | --- | --- | --- | --- | --- | --- | ---"]
    keys = ("runs", "faults", "max_close_s", "max_hook_s", "acked", "events_lost", "verify_failed",
            "not_well_formed", "silent")
    for fault, row in FIGURES.items():
        cells = [_cell(row.get(k, "")) for k in keys]
        more = ", ".join(f"{k}={_cell(v)}" for k, v in row.items() if k not in (*keys, "exceptions"))
        lines.append(" | ".join([fault, *cells, more]))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}:{v}" for k, v in value.items()) or "0"
    return str(value)


# -- store wrappers ---------------------------------------------------------------------
class FlakyStore:
    """A store whose event writes fail now and then: each raises a fresh
    ``OSError(EIO)`` with probability ``p`` (a seeded random pattern, so the same
    writes fail on every run of the suite), over a MemoryStore. Without
    ``append_events`` the Writer hands events over one by one (see
    `BatchFlakyStore`)."""

    def __init__(self, p: float = 0.3, *, seed: int = 11) -> None:
        self.inner = aa.MemoryStore()
        self.p = p
        self.rng = random.Random(seed)
        self.calls = 0
        self.raised = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.rng.random() < self.p:
            self.raised += 1
            raise OSError(errno.EIO, "flaky disk")

    def start_run(self, run: aa.Run) -> None:
        self.inner.start_run(run)

    def append_log(self, event: aa.Event) -> None:
        self._maybe_fail()
        self.inner.append_log(event)

    def finish_run(self, run_id: str, stats: aa.RunStats, finished_at: Any) -> None:
        self.inner.finish_run(run_id, stats, finished_at)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class BatchFlakyStore(FlakyStore):
    """`FlakyStore` with ``append_events`` (all or none), as the SQLite store has.
    (The Writer uses it only when the class defining it defines ``append_log`` too.)"""

    def append_log(self, event: aa.Event) -> None:
        self.append_events([event])

    def append_events(self, events: Any) -> None:
        self._maybe_fail()
        self.inner.append_events(events)


class SlowStore:
    """A store that crawls: every event write sleeps ``append_delay``, the finish
    ``finish_delay`` (then lands)."""

    def __init__(self, *, append_delay: float, finish_delay: float) -> None:
        self.inner = aa.MemoryStore()
        self.append_delay = append_delay
        self.finish_delay = finish_delay
        self.finishes_landed = 0

    def start_run(self, run: aa.Run) -> None:
        time.sleep(self.append_delay)
        self.inner.start_run(run)

    def append_log(self, event: aa.Event) -> None:
        time.sleep(self.append_delay)
        self.inner.append_log(event)

    def finish_run(self, run_id: str, stats: aa.RunStats, finished_at: Any) -> None:
        time.sleep(self.finish_delay)
        self.inner.finish_run(run_id, stats, finished_at)
        self.finishes_landed += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.01) -> float | None:
    """Seconds until ``predicate()`` held, or None after ``timeout``."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(step)


# -- real faults ------------------------------------------------------------------------
def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True)


@contextlib.contextmanager
def tmpfs(directory: Path, size: str = "512k") -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted on ``directory`` (root only)."""
    directory.mkdir(parents=True, exist_ok=True)
    run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory))
    try:
        yield directory
    finally:
        _unmount(directory)


@contextlib.contextmanager
def loop_ext4(directory: Path, image: Path, size: str = "20M") -> Iterator[Path]:
    """A loop-mounted ext4 image on ``directory`` (root only)."""
    directory.mkdir(parents=True, exist_ok=True)
    run("truncate", "-s", size, str(image))
    run("mkfs.ext4", "-q", "-F", str(image))
    run("mount", "-o", "loop", str(image), str(directory))
    try:
        yield directory
    finally:
        subprocess.run(["fsfreeze", "--unfreeze", str(directory)], capture_output=True)
        _unmount(directory)
        image.unlink(missing_ok=True)


_FREEZE_WORKS: list[bool] = []


def freeze_available(scratch: Path) -> bool:
    """Whether this machine can loop-mount an ext4 image and ``fsfreeze`` it (root,
    loop devices, util-linux): probed once, on a small image under ``scratch``."""
    if not _FREEZE_WORKS:
        tools = ("mount", "umount", "mkfs.ext4", "fsfreeze", "truncate")
        works = os.geteuid() == 0 and all(shutil.which(t) for t in tools)
        if works:
            try:
                scratch.mkdir(parents=True, exist_ok=True)
                with loop_ext4(scratch / "mnt", scratch / "probe.img", "8M") as mounted:
                    run("fsfreeze", "--freeze", str(mounted))
                    run("fsfreeze", "--unfreeze", str(mounted))
            except (OSError, subprocess.CalledProcessError):
                works = False
        _FREEZE_WORKS.append(works)
    return _FREEZE_WORKS[0]


def _unmount(directory: Path) -> None:
    if subprocess.run(["umount", str(directory)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a filler file until the filesystem is full (ENOSPC); return it."""
    filler = directory / "filler"
    block = b"\0" * 4096
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        with contextlib.suppress(OSError):  # the last bytes of a partial block
            while True:
                f.write(b"\0")
    return filler


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


class Frozen:
    """``fsfreeze --freeze`` on a mount point until `thaw` (or the ``with`` ends)."""

    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint
        self.frozen = False

    def freeze(self) -> None:
        run("fsfreeze", "--freeze", str(self.mountpoint))
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            run("fsfreeze", "--unfreeze", str(self.mountpoint))
            self.frozen = False

    def __enter__(self) -> Frozen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.thaw()


class Immutable:
    """``chattr +i`` on files of an ext4 mount until `restore`: the kernel refuses
    every write to them (EPERM), as it does on a read-only mount (EROFS), with no
    need to close the file first (a remount ro refuses while it is open for
    writing). The ``-shm`` file is left alone: SQLite maps it, and a refused write to
    a mapped page is a SIGBUS, not an error."""

    def __init__(self, *paths: Path) -> None:
        self.paths = [p for p in paths if p.exists()]
        self.on = False

    def apply(self) -> None:
        run("chattr", "+i", *map(str, self.paths))
        self.on = True

    def restore(self) -> None:
        if self.on:
            run("chattr", "-i", *map(str, self.paths))
            self.on = False

    def __enter__(self) -> Immutable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""


class LockHolder:
    """Another process holding the SQLite file's write lock (``BEGIN EXCLUSIVE``)
    from `hold` until `release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[str] | None = None
        self.held_for = 0.0
        self._since = 0.0

    def hold(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LOCKER, str(self.path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "locked", (line, self.proc.stderr.read() if self.proc.stderr else "")
        self._since = time.monotonic()

    def release(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        out, err = proc.communicate("go\n", timeout=20)
        self.held_for = time.monotonic() - self._since
        assert proc.returncode == 0 and "released" in out, err

    def __enter__(self) -> LockHolder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class Timer:
    """Calls ``fn`` after ``delay`` seconds on a thread (joined by `join`)."""

    def __init__(self, delay: float, fn: Callable[[], None]) -> None:
        self._thread = threading.Timer(delay, fn)
        self._thread.daemon = True
        self._thread.start()

    def join(self) -> None:
        self._thread.join()
