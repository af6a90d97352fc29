"""Checkpoints, legal holds and the retention floor of the SQLite store.

Why a part of its own: the store's writing stays on its one writer thread, and a
checkpoint must never hold that thread up for long. So a checkpoint is made in two
halves: the new entries (finished runs not yet in the log, running runs that grew)
and their content digests are read on the checkpointer's own thread, from a read
snapshot; then one short maintenance item on the writer thread re-checks them,
appends them to the log, signs the note and stores it. The sink is written after
the commit, on the checkpointer's thread, so a slow or failing sink never touches a
commit; a checkpoint the sink did not take stays marked and is written next time.

A purge or delete through the store records what it removes as ``purged`` entries
of a checkpoint made in the same transaction: a purge is on the record, a deletion
by other means is not. Held runs and runs younger than the retention floor are
refused with `RetentionError`, before anything is deleted.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from .._checkpoints import (
    PROOF_FORMAT,
    Checkpoint,
    CheckpointBody,
    CheckpointPolicy,
    Entry,
    Finding,
    content_digest,
    hmac_verifiers,
    load_public_key,
    make_checkpoint,
    read_checkpoint_file,
    run_header,
    split_note,
    verify_chain,
)
from .._errors import CheckpointError, RetentionError, RunNotFoundError, StoreError
from .._merkle import CompactRange, inclusion_proof
from .._model import RunFilter

if TYPE_CHECKING:
    from ._sqlite_writer import SQLiteWriter

__all__ = ["PROOF_FORMAT", "CheckpointReport", "Hold", "SQLiteCheckpoints", "check_entries", "run_content"]

logger = logging.getLogger("agentaudit")

_FLOOR = "retention_floor_seconds"


# -- reading content ---------------------------------------------------------------------


def _rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def run_content(conn: sqlite3.Connection, run_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The run's row and its events, every column as stored (None: no row)."""
    runs = _rows(conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)))
    events = _rows(conn.execute("SELECT * FROM events WHERE run_id = ? ORDER BY sequence, id", (run_id,)))
    return (runs[0] if runs else None), events


def _collect(conn: sqlite3.Connection) -> list[Entry]:
    """The entries the next checkpoint adds: finished runs not yet in the log (with
    their digests), and running runs whose events grew since their last head."""
    entries: list[Entry] = []
    finished = conn.execute(
        """SELECT run_id FROM runs r WHERE status != 'running' AND NOT EXISTS
             (SELECT 1 FROM checkpoint_entries c WHERE c.run_id = r.run_id
                AND c.kind IN ('sealed', 'purged'))
           ORDER BY finished_at, run_id"""
    ).fetchall()
    for (run_id,) in finished:
        row, events = run_content(conn, run_id)
        if row is not None:
            entries.append(Entry("sealed", run_id, len(events), str(row.get("seal") or ""),
                                 content_digest(row, events)))
    running = conn.execute(
        """SELECT r.run_id, (SELECT count(*) FROM events e WHERE e.run_id = r.run_id),
                  (SELECT max(events) FROM checkpoint_entries c
                    WHERE c.run_id = r.run_id AND c.kind = 'head')
           FROM runs r WHERE status = 'running' AND status != 'succeeded' ORDER BY started_at"""
    ).fetchall()
    for run_id, count, last in running:
        if last is None or count != last:  # new, or grown since its last head
            row, events = run_content(conn, run_id)
            if row is not None:
                entries.append(Entry("head", run_id, len(events), "",
                                     content_digest(run_header(row), events)))
    return entries


def _tip(conn: sqlite3.Connection) -> tuple[int, str, CompactRange]:
    """(number, body hash, compact range) of the newest stored checkpoint."""
    row = conn.execute("SELECT seq, note, size, frontier FROM checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
    if row is None:
        return 0, "", CompactRange()
    seq, note, size, frontier = row
    body = CheckpointBody.parse(split_note(note)[0])
    return seq, body.hash, CompactRange(size, [bytes.fromhex(h) for h in json.loads(frontier)])


def commit_checkpoint(
    conn: sqlite3.Connection, entries: Sequence[Entry], policy: CheckpointPolicy, now: datetime | None = None
) -> Checkpoint | None:
    """Append ``entries`` to the log and store the signed checkpoint over it, in the
    open transaction. Sealed entries of runs another checkpoint took meanwhile, or
    whose seal changed since they were read, are left to the next one."""
    kept = []
    for entry in entries:
        if entry.kind == "sealed":
            row = conn.execute("SELECT seal FROM runs WHERE run_id = ?", (entry.run_id,)).fetchone()
            taken = conn.execute(
                "SELECT 1 FROM checkpoint_entries WHERE run_id = ? AND kind IN ('sealed', 'purged')",
                (entry.run_id,),
            ).fetchone()
            if row is None or (row[0] or "") != entry.seal or taken:
                continue
        kept.append(entry)
    if not kept:
        return None
    seq, prev, frontier = _tip(conn)
    checkpoint = make_checkpoint(
        origin=policy.origin, seq=seq + 1, prev=prev, frontier=frontier, entries=kept,
        signers=policy.signers, now=now,
    )
    body = checkpoint.body
    conn.executemany(
        "INSERT INTO checkpoint_entries (idx, seq, kind, run_id, events, seal, digest) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(checkpoint.first + i, body.seq, e.kind, e.run_id, e.events, e.seal, e.digest) for i, e in enumerate(kept)],
    )
    conn.execute(
        "INSERT INTO checkpoints (seq, created_at, first_entry, size, note, frontier) VALUES (?, ?, ?, ?, ?, ?)",
        (body.seq, body.time, checkpoint.first, body.size, checkpoint.note,
         json.dumps([n.hex() for n in frontier.nodes])),
    )
    return checkpoint


def load_checkpoints(conn: sqlite3.Connection, *, after: int = 0) -> tuple[list[Checkpoint], list[Finding]]:
    """The stored checkpoints after number ``after``, with their entries, and what
    in the tables could not be read (a malformed row is a finding, not an error)."""
    findings: list[Finding] = []
    found: list[Checkpoint] = []
    try:
        rows = conn.execute(
            "SELECT seq, first_entry, note FROM checkpoints WHERE seq > ? ORDER BY seq", (after,)
        ).fetchall()
        entry_rows = conn.execute(
            "SELECT idx, seq, kind, run_id, events, seal, digest FROM checkpoint_entries "
            "WHERE seq > ? ORDER BY idx", (after,)
        ).fetchall()
    except sqlite3.Error as exc:
        return [], [Finding("checkpoint-altered", f"the checkpoint tables cannot be read: {exc}")]
    by_seq: dict[Any, list[Any]] = {}
    for row in entry_rows:
        by_seq.setdefault(row[1], []).append(row)
    for seq, first, note in rows:
        try:
            entries = []
            for expected, row in enumerate(by_seq.get(seq, []), start=first):
                if row[0] != expected:
                    raise CheckpointError(f"leaf {expected} is missing")
                entries.append(Entry(*row[2:]))
            made = Checkpoint(str(note), int(first), tuple(entries))
            if made.body.seq != seq:
                raise CheckpointError(f"its note says it is checkpoint {made.body.seq}")
            found.append(made)
        except (CheckpointError, TypeError, ValueError) as exc:
            findings.append(Finding("checkpoint-altered", f"stored checkpoint {seq!r} is malformed: {exc}",
                                    checkpoint=seq if isinstance(seq, int) else None))
            break
    return found, findings


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointReport:
    """What verification against checkpoints found. ``ok`` when nothing in it is
    a problem (purged and erased runs are facts, not problems)."""

    checkpoints: int
    entries: int
    runs: int
    findings: tuple[Finding, ...]
    external: bool
    signed_by: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(f.problem for f in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.problem]

    def of_kind(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checkpoints": self.checkpoints, "entries": self.entries,
                "runs": self.runs, "external": self.external, "signed_by": list(self.signed_by),
                "findings": [f.to_json() for f in self.findings]}


@dataclass(frozen=True)
class Hold:
    run_id: str
    reason: str
    held_at: str


def check_entries(
    log: Sequence[tuple[int, Entry]],
    content: Callable[[str], tuple[dict[str, Any] | None, list[dict[str, Any]]]],
    erased: Callable[[str], bool],
) -> tuple[int, list[Finding]]:
    """Every checkpointed run against its stored content: still there (or purged on
    the record), and the same as when each checkpoint took it."""
    purged = {e.run_id: seq for seq, e in log if e.kind == "purged"}
    by_run: dict[str, list[tuple[int, Entry]]] = {}
    for seq, entry in log:
        by_run.setdefault(entry.run_id, []).append((seq, entry))
    findings: list[Finding] = []
    for run_id, taken in by_run.items():
        if run_id in purged:
            findings.append(Finding("purged", f"run {run_id} was purged (recorded in checkpoint "
                                    f"{purged[run_id]})", run_id, purged[run_id], problem=False))
            continue
        row, events = content(run_id)
        first_seq = taken[0][0]
        if row is None:
            findings.append(Finding(
                "deleted", f"run {run_id} is in checkpoint {first_seq} but no longer in the database, "
                "and no purge of it is recorded", run_id, first_seq,
            ))
            continue
        for seq, entry in taken:
            if entry.kind == "sealed":
                same = content_digest(row, events) == entry.digest
            else:
                same = len(events) >= entry.events and (
                    content_digest(run_header(row), events[: entry.events]) == entry.digest
                )
            if not same:
                if erased(run_id):
                    findings.append(Finding("erased", f"run {run_id} had content erased after checkpoint "
                                            f"{seq} took it", run_id, seq, problem=False))
                else:
                    what = "row or events" if entry.kind == "sealed" else f"header or first {entry.events} events"
                    findings.append(Finding(
                        "edited", f"run {run_id}'s {what} differ from what checkpoint {seq} signed",
                        run_id, seq,
                    ))
                break
    return len(by_run), findings


# -- the store's part ---------------------------------------------------------------------


def resolve_policy(policy: CheckpointPolicy | bool | None, *, read_only: bool) -> CheckpointPolicy | None:
    """The store's checkpoint policy from its ``checkpoints`` argument (None: from the
    environment). Called before the store opens anything, so a bad argument leaves no
    file, thread or exit hook behind."""
    if policy is None and not read_only:
        return CheckpointPolicy.from_environment()
    if policy is None or policy is False:
        return None
    if not isinstance(policy, CheckpointPolicy):
        raise TypeError(f"checkpoints takes an aa.CheckpointPolicy, got {type(policy).__name__}")
    return policy


class SQLiteCheckpoints:
    """Checkpoints, holds and retention for `SQLiteStore` (mixed in; the store
    provides the connection plumbing)."""

    path: str
    read_only: bool
    close_timeout: float
    _closed: bool

    if TYPE_CHECKING:
        def _live_writer(self) -> SQLiteWriter: ...
        def _call(self, fn: Any, what: str) -> Any: ...
        def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]: ...
        def _connect(self) -> sqlite3.Connection: ...
        def flush(self, timeout: float | None = None) -> None: ...
        def iter_runs(self, filter: RunFilter | None = None) -> Any: ...
        def verify(self, run_id: str) -> Any: ...

    def _init_checkpoints(self, policy: CheckpointPolicy | None) -> None:
        """Set up checkpointing with a policy `resolve_policy` already checked."""
        self.checkpoint_policy = policy
        self.checkpoint_failures = 0  # checkpoints or sink writes that failed (each logged)
        self._cp_lock = threading.Lock()
        self._cp_conn: sqlite3.Connection | None = None
        self._cp_stop = threading.Event()
        self._cp_thread: threading.Thread | None = None
        if policy is not None and policy.interval > 0 and not self.read_only:
            # The thread holds the store weakly: a store dropped without close still
            # ends (its writer's finalizer runs), and so does this thread.
            thread = threading.Thread(
                target=_checkpoint_loop, args=(weakref.ref(self), self._cp_stop, policy.interval),
                name="agentaudit-checkpointer", daemon=True,
            )
            self._cp_thread = thread
            thread.start()

    def _policy(self) -> CheckpointPolicy:
        return self.checkpoint_policy or CheckpointPolicy()

    def _snapshot_entries(self) -> list[Entry]:
        with self._cp_lock:
            conn = self._cp_conn
            if conn is None:
                conn = self._cp_conn = self._connect()
            conn.execute("BEGIN")
            try:
                return _collect(conn)
            finally:
                conn.execute("COMMIT")

    def checkpoint(self, *, timeout: float | None = None) -> Checkpoint | None:
        """Make a checkpoint now (None when nothing changed since the last), then
        hand every checkpoint the sink has not taken yet to the sink. The
        checkpointer thread calls this every ``interval`` seconds."""
        self.flush(timeout)
        entries = self._snapshot_entries()
        policy = self._policy()
        made: Checkpoint | None = None
        if entries:
            future: Future[Any] = Future()
            from ._sqlite_writer import Maintenance

            self._live_writer().submit(
                Maintenance(lambda conn: commit_checkpoint(conn, entries, policy), future), bounded=False
            )
            try:
                made = future.result(timeout)
            except FutureTimeout:
                raise StoreError(f"the checkpoint of {self.path} was not committed within {timeout:g} s") from None
        self._export(policy)
        return made

    def _export(self, policy: CheckpointPolicy) -> None:
        sink = policy.write_sink
        if sink is None:
            return
        rows = self._query("SELECT seq FROM checkpoints WHERE exported = 0 ORDER BY seq")
        if not rows:
            return
        pending, _ = self._load(after=rows[0][0] - 1)
        done = []
        for checkpoint in pending:
            try:
                sink(checkpoint)
            except Exception as exc:
                self.checkpoint_failures += 1
                logger.error("agentaudit: the checkpoint sink %r refused checkpoint %d: %s (kept, "
                             "retried with the next one)", sink, checkpoint.seq, exc)
                break
            done.append(checkpoint.seq)
        if done:
            self._call(
                lambda conn: conn.executemany("UPDATE checkpoints SET exported = 1 WHERE seq = ?",
                                              [(s,) for s in done]),
                "checkpoint export mark",
            )

    def _load(self, after: int = 0) -> tuple[list[Checkpoint], list[Finding]]:
        with self._cp_lock:
            conn = self._cp_conn
            if conn is None:
                conn = self._cp_conn = self._connect()
            if not self._has_tables(conn):
                return [], []
            conn.execute("BEGIN")
            try:
                return load_checkpoints(conn, after=after)
            finally:
                conn.execute("COMMIT")

    @staticmethod
    def _has_tables(conn: sqlite3.Connection) -> bool:
        return conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'checkpoints'"
        ).fetchone() is not None

    def checkpoints(self) -> list[Checkpoint]:
        """The checkpoints stored in the database, oldest first."""
        return self._load()[0]

    def _stop_checkpointer(self, timeout: float) -> None:
        """At close: stop the thread, then make the last checkpoint (bounded)."""
        self._cp_stop.set()
        thread = self._cp_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        policy = self.checkpoint_policy
        if policy is not None and policy.at_close and not self.read_only:
            try:
                self.checkpoint(timeout=timeout)
            except Exception as exc:
                self.checkpoint_failures += 1
                logger.error("agentaudit: the closing checkpoint of %s failed: %s", self.path, exc)
        with self._cp_lock:
            if self._cp_conn is not None:
                try:
                    self._cp_conn.close()
                except sqlite3.Error:
                    pass
                self._cp_conn = None

    def _forget_checkpointer_after_fork(self) -> None:
        # The thread and the connection are the parent's: the child makes only the
        # closing checkpoint (and those it is asked for).
        self._cp_thread = None
        self._cp_conn = None
        self._cp_lock = threading.Lock()

    # -- verification -------------------------------------------------------------------

    def verify_checkpoints(
        self,
        external: str | os.PathLike[str] | Sequence[Checkpoint] | None = None,
        *,
        public_key: Any = None,
        keys: Any = None,
    ) -> CheckpointReport:
        """Check the checkpoints and every run they cover.

        ``external``: the sink's file (or its checkpoints): the trusted history;
        every checkpoint in it must also be in the database unaltered, and the
        database's later ones must continue it. Without it, the database's own
        checkpoints are checked (a rewrite of the whole table by someone holding no
        key shows; the loss of the newest checkpoints does not). ``public_key``:
        the Ed25519 key (`load_public_key` input or an `Ed25519Verifier`), or a
        list of them (across a key rotation, each checkpoint signed by one);
        ``keys``: the chain key or keyring, for HMAC-signed checkpoints. With
        neither, only the hashes are checked. Never raises on a malformed file."""
        verifiers: list[Any] = []
        origin = self._policy().origin
        public_keys = public_key if isinstance(public_key, (list, tuple)) else [public_key]
        for key in public_keys:
            if key is None:
                continue
            verifier = key if hasattr(key, "key_hash") else load_public_key(key)
            verifiers.append(verifier)
            origin = verifier.name
        if keys is not None:
            verifiers.extend(hmac_verifiers(origin, keys))
        findings: list[Finding] = []
        stored, stored_problems = self._load()
        findings.extend(stored_problems)
        chain: list[Checkpoint]
        if external is not None:
            if isinstance(external, (str, os.PathLike)):
                outside, problems = read_checkpoint_file(external)
                findings.extend(Finding("malformed", f"checkpoint file {p}") for p in problems)
            else:
                outside = list(external)
            by_seq = {c.seq: c for c in stored}
            for checkpoint in outside:
                mine = by_seq.get(checkpoint.seq)
                if mine is None:
                    findings.append(Finding("checkpoint-deleted", f"checkpoint {checkpoint.seq} is in the "
                                            "external file but not in the database", checkpoint=checkpoint.seq))
                elif mine != checkpoint:
                    findings.append(Finding("checkpoint-altered", f"checkpoint {checkpoint.seq} in the "
                                            "database differs from the external file", checkpoint=checkpoint.seq))
            last = outside[-1].seq if outside else 0
            chain = [*outside, *(c for c in stored if c.seq > last)]
        else:
            chain = stored
        entries, chain_findings = verify_chain(chain, verifiers)
        findings.extend(chain_findings)
        log: list[tuple[int, Entry]] = []
        index = 0
        for checkpoint in chain:
            for entry in checkpoint.entries:
                if index >= len(entries):
                    break
                log.append((checkpoint.seq, entry))
                index += 1
        verified = sum(1 for c in chain if c.first + len(c.entries) <= len(entries))

        def content(run_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
            with self._cp_lock:
                conn = self._cp_conn
                if conn is None:
                    conn = self._cp_conn = self._connect()
                return run_content(conn, run_id)

        def erased(run_id: str) -> bool:
            try:
                return getattr(self.verify(run_id), "state", "") == "erased"
            except Exception:
                return False

        runs, run_findings = check_entries(log, content, erased)
        findings.extend(run_findings)
        if not verifiers:
            findings.append(Finding("unsigned", "no key was given: only the hashes were checked, "
                                    "which anyone who can write the file can recompute", problem=False))
        names = sorted({v.name for v in verifiers})
        return CheckpointReport(verified, len(entries), runs, tuple(findings), external is not None, tuple(names))

    def prove(self, run_id: str) -> dict[str, Any]:
        """An inclusion proof of the run's newest entry in the newest checkpoint,
        as JSON-ready data; `agentaudit._checkpoints.verify_proof` checks it with
        nothing but the public key. Raises RunNotFoundError when no checkpoint
        covers the run yet."""
        proofs = self.prove_many([run_id])
        if run_id not in proofs:
            raise RunNotFoundError(
                f"run {run_id!r} is in no checkpoint of {self.path} yet (checkpoints are made every "
                f"{self._policy().interval:g} s and at close; `agentaudit checkpoint` makes one now)"
            )
        return proofs[run_id]

    def prove_many(self, run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """`prove` for each of ``run_ids`` that a checkpoint covers (the log's
        leaves are read once)."""
        stored, problems = self._load()
        if problems:
            raise CheckpointError(problems[0].detail)
        if not stored:
            return {}
        entries = [e for c in stored for e in c.entries]
        newest: dict[str, int] = {}
        for index, entry in enumerate(entries):
            newest[entry.run_id] = index
        leaves = [e.leaf() for e in entries]
        note = stored[-1].note
        cache: dict[tuple[int, int], bytes] = {}
        proofs = {}
        for run_id in run_ids:
            found = newest.get(run_id)
            if found is None:
                continue
            index = found
            proofs[run_id] = {
                "format": PROOF_FORMAT,
                "run_id": run_id,
                "entry": entries[index].to_json(),
                "index": index,
                "tree_size": len(entries),
                "path": [node.hex() for node in inclusion_proof(leaves, index, cache=cache)],
                "checkpoint": note,
            }
        return proofs

    def run_rows(self, run_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The run's row and its events, every column as stored (None: no such run)."""
        with self._cp_lock:
            conn = self._cp_conn
            if conn is None:
                conn = self._cp_conn = self._connect()
            conn.execute("BEGIN")
            try:
                return run_content(conn, run_id)
            finally:
                conn.execute("COMMIT")

    def export_bundle(
        self, path: str | os.PathLike[str], filter: RunFilter | None = None, *,
        selection: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write an offline bundle (see `agentaudit._bundle`) of the runs ``filter``
        matches, with a proof of each in the newest checkpoint, signed by the
        policy's keys. Runs no checkpoint covers yet are left out and named in
        the returned summary (make a checkpoint first to include them)."""
        from .._bundle import build_bundle, write_bundle

        policy = self._policy()
        ids = [run.run_id for run in self.iter_runs(filter)]
        proofs = self.prove_many(ids)
        runs = []
        for run_id in ids:
            if run_id in proofs:
                row, events = self.run_rows(run_id)
                if row is not None:
                    runs.append((row, events))
        data = build_bundle(runs, proofs, policy.signers, origin=policy.origin, selection=selection)
        write_bundle(path, data)
        return {"runs": len(runs), "left_out": [r for r in ids if r not in proofs], "bytes": len(data)}

    # -- holds and retention --------------------------------------------------------------

    def _ids(self, run_ids: Iterable[str], filter: RunFilter | None) -> list[str]:
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        for run_id in ids:
            if not isinstance(run_id, str) or not self._query("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)):
                raise RunNotFoundError(f"no run {run_id!r} in {self.path}")
        if filter is not None:
            ids.extend(run.run_id for run in self.iter_runs(filter))
        return list(dict.fromkeys(ids))

    def hold(self, run_ids: Iterable[str] = (), *, filter: RunFilter | None = None, reason: str = "") -> list[str]:
        """Put runs (by id, and/or every run ``filter`` matches) under legal hold:
        purge and delete refuse them until released. Returns the ids held."""
        if not isinstance(reason, str):
            raise TypeError(f"reason is text, got {type(reason).__name__}")
        ids = self._ids(run_ids, filter)
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        self._call(
            lambda conn: conn.executemany(
                "INSERT INTO holds (run_id, reason, held_at) VALUES (?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET reason = excluded.reason",
                [(run_id, reason, now) for run_id in ids],
            ),
            "hold",
        )
        return ids

    def release(self, run_ids: Iterable[str] = (), *, filter: RunFilter | None = None) -> list[str]:
        """Lift the legal hold of runs; returns the ids that were held."""
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        if filter is not None:
            ids.extend(run.run_id for run in self.iter_runs(filter))
        ids = list(dict.fromkeys(ids))

        def release(conn: sqlite3.Connection) -> list[str]:
            released = []
            for run_id in ids:
                if conn.execute("DELETE FROM holds WHERE run_id = ?", (run_id,)).rowcount:
                    released.append(run_id)
            return released

        return list(self._call(release, "release"))

    def holds(self) -> list[Hold]:
        """Every run under legal hold."""
        return [Hold(*row) for row in self._query("SELECT run_id, reason, held_at FROM holds ORDER BY held_at, run_id")]

    @property
    def retention_floor(self) -> timedelta | None:
        """The youngest a run may be and still be purged or deleted (None: no floor)."""
        rows = self._query("SELECT value FROM settings WHERE name = ?", (_FLOOR,))
        return timedelta(seconds=float(rows[0][0])) if rows else None

    def set_retention_floor(self, floor: timedelta | None) -> None:
        """Set (or, with None, remove) the retention floor, kept in the database so
        every process and the command line honour it. EU AI Act Art. 19/26: at
        least six months for most deployers' logs."""
        if floor is not None and (not isinstance(floor, timedelta) or floor <= timedelta(0)):
            raise ValueError(f"the retention floor is a positive timedelta or None, got {floor!r}")
        if floor is None:
            self._call(lambda conn: conn.execute("DELETE FROM settings WHERE name = ?", (_FLOOR,)), "floor")
        else:
            seconds = str(floor.total_seconds())
            self._call(
                lambda conn: conn.execute(
                    "INSERT INTO settings (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (_FLOOR, seconds),
                ),
                "floor",
            )

    @staticmethod
    def _floor(conn: sqlite3.Connection) -> timedelta | None:
        row = conn.execute("SELECT value FROM settings WHERE name = ?", (_FLOOR,)).fetchone()
        return timedelta(seconds=float(row[0])) if row else None

    def _check_floor(self, conn: sqlite3.Connection, before: datetime) -> None:
        """Refuse a purge whose cutoff lies inside the retention floor."""
        floor = self._floor(conn)
        if floor is None:
            return
        limit = datetime.now(timezone.utc) - floor
        if before > limit:
            raise RetentionError(
                f"purge refused: the retention floor is {_days(floor)}, so runs started after "
                f"{limit.isoformat(timespec='seconds')[:19]} UTC may not be purged; give a cutoff "
                "at or before that"
            )

    def _remove_recorded(self, conn: sqlite3.Connection, run_ids: Sequence[str], *, what: str) -> int:
        """Delete ``run_ids`` with their events, refusing held runs and runs younger
        than the floor (nothing is deleted then), and record each as a ``purged``
        entry of a checkpoint made in the same transaction. On the writer thread."""
        floor = self._floor(conn)
        limit = (
            (datetime.now(timezone.utc) - floor).isoformat(timespec="microseconds") if floor else None
        )
        entries = []
        for run_id in run_ids:
            if conn.execute("SELECT 1 FROM holds WHERE run_id = ?", (run_id,)).fetchone():
                raise RetentionError(f"{what} refused: run {run_id} is under legal hold "
                                     "(`agentaudit release` lifts it)")
            row, events = run_content(conn, run_id)
            if row is None:
                continue
            if limit is not None and floor is not None and str(row.get("started_at")) > limit:
                raise RetentionError(
                    f"{what} refused: run {run_id} started at {str(row.get('started_at'))[:19]} UTC, "
                    f"within the retention floor of {_days(floor)}"
                )
            entries.append(Entry("purged", run_id, len(events), str(row.get("seal") or ""),
                                 content_digest(row, events)))
        for entry in entries:
            conn.execute("DELETE FROM events WHERE run_id = ?", (entry.run_id,))
            conn.execute("DELETE FROM runs WHERE run_id = ?", (entry.run_id,))
        if entries:
            commit_checkpoint(conn, entries, self._policy())
        return len(entries)

    def _after_removal(self) -> None:
        """Hand the removal's checkpoint to the sink (the caller may wait on it)."""
        try:
            self._export(self._policy())
        except Exception as exc:
            self.checkpoint_failures += 1
            logger.error("agentaudit: writing the purge checkpoint of %s to its sink failed: %s", self.path, exc)


def _checkpoint_loop(ref: weakref.ref[SQLiteCheckpoints], stop: threading.Event, interval: float) -> None:
    """The checkpointer thread: a checkpoint every ``interval`` seconds."""
    while not stop.wait(interval):
        store = ref()
        if store is None or store._closed:
            return
        try:
            store.checkpoint()
        except Exception as exc:  # a full disk, a closing store: logged, tried again
            if stop.is_set():
                return
            store.checkpoint_failures += 1
            logger.warning("agentaudit: checkpoint of %s failed: %s", store.path, exc)
        del store


def _days(floor: timedelta) -> str:
    days = floor.total_seconds() / 86400
    return f"{days:g} days" if days >= 1 else f"{floor.total_seconds():g} s"
