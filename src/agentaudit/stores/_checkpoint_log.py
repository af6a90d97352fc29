"""The checkpoint log kept in a database, written once for every store that keeps one.

Why a module of its own: the SQLite file and the server stores (PostgreSQL, MariaDB)
keep the same tables (``checkpoints``, ``checkpoint_entries``, ``holds``,
``settings``) and must verify exactly alike. What differs is only how a statement
reaches the database (SQLite's ``?`` marks on a connection, the servers' ``%s`` on a
DB-API cursor), how a run's stored content is read, and who serializes the
writers (SQLite's one writer thread; a database lock on a server). So the queries
are written here once, with ``?`` marks, against the small `SQL` interface each
store adapts; the selection of entries, the commit of a checkpoint, the reading
of the stored log, the verification of every covered run, the proofs and the
bundles live here, and each store's mixin (`_sqlite_checkpoints`,
`_server_checkpoints`) does only its own plumbing.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol

from .._checkpoints import (
    PROOF_FORMAT,
    Checkpoint,
    CheckpointBody,
    CheckpointPolicy,
    Entry,
    Finding,
    Sink,
    content_digest,
    hmac_verifiers,
    load_public_key,
    make_checkpoint,
    read_checkpoint_file,
    run_header,
    split_note,
    verify_chain,
)
from .._errors import CheckpointError, RetentionError, RunNotFoundError
from .._merkle import CompactRange, inclusion_proof
from .._model import RunFilter

__all__ = [
    "FLOOR_SETTING",
    "PROOF_FORMAT",
    "CheckpointLog",
    "CheckpointReport",
    "Content",
    "Hold",
    "check_entries",
    "collect_entries",
    "commit_checkpoint",
    "load_checkpoints",
    "removal_entry",
    "resolve_policy",
]

logger = logging.getLogger("agentaudit")

FLOOR_SETTING = "retention_floor_seconds"
_PAGE = 200  # runs whose content verification reads at once
_CHUNK = 500  # run ids per query (SQLite takes at least 999 parameters)

# A run's row (None: no such row) and its events, each a mapping of every column
# the store digests.
RunContent = tuple[dict[str, Any] | None, list[dict[str, Any]]]
Content = Callable[[Sequence[str]], dict[str, RunContent]]


class SQL(Protocol):
    """What the shared queries need of a database: statements with ``?`` marks."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; its rows (none for a statement that returns none)."""
        ...

    def many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per parameter tuple."""
        ...


# -- the log in the tables ----------------------------------------------------------------


def collect_entries(sql: SQL, content: Content, *, provisional: Sequence[str] = (), page: int = 200) -> list[Entry]:
    """The entries the next checkpoint adds: finished runs not yet in the log (with
    their digests), and running runs whose events grew since their last head.

    ``provisional``: statuses besides ``running`` whose row may still change by
    right, taken as heads (their header and events) rather than sealed: on a
    server, a run it marked ``abandoned`` takes its host's real final row when the
    host's spool delivers it."""
    open_statuses = ("running", *provisional)
    marks = ", ".join("?" * len(open_statuses))
    entries: list[Entry] = []
    finished = [row[0] for row in sql.rows(
        f"""SELECT run_id FROM runs r WHERE status NOT IN ({marks}) AND NOT EXISTS
             (SELECT 1 FROM checkpoint_entries c WHERE c.run_id = r.run_id
                AND c.kind IN ('sealed', 'purged'))
           ORDER BY finished_at, run_id""",
        open_statuses,
    )]
    for start in range(0, len(finished), page):
        chunk = finished[start : start + page]
        found = content(chunk)
        for run_id in chunk:
            row, events = found.get(run_id, (None, []))
            if row is not None:
                entries.append(Entry("sealed", run_id, len(events), str(row.get("seal") or ""),
                                     content_digest(row, events)))
    running = sql.rows(
        f"""SELECT r.run_id, (SELECT count(*) FROM events e WHERE e.run_id = r.run_id),
                  (SELECT max(events) FROM checkpoint_entries c
                    WHERE c.run_id = r.run_id AND c.kind = 'head')
           FROM runs r WHERE status IN ({marks}) ORDER BY started_at, run_id""",
        open_statuses,
    )
    grown = [str(run_id) for run_id, count, last in running if last is None or int(count) != int(last)]
    for start in range(0, len(grown), page):
        chunk = grown[start : start + page]
        found = content(chunk)
        for run_id in chunk:
            row, events = found.get(run_id, (None, []))
            if row is not None:
                entries.append(Entry("head", run_id, len(events), "",
                                     content_digest(run_header(row), events)))
    return entries


def checkpoint_tip(sql: SQL) -> tuple[int, str, CompactRange]:
    """(number, body hash, compact range) of the newest stored checkpoint."""
    rows = sql.rows("SELECT seq, note, size, frontier FROM checkpoints ORDER BY seq DESC LIMIT 1")
    if not rows:
        return 0, "", CompactRange()
    seq, note, size, frontier = rows[0]
    body = CheckpointBody.parse(split_note(str(note))[0])
    return int(seq), body.hash, CompactRange(int(size), [bytes.fromhex(h) for h in json.loads(frontier)])


def commit_checkpoint(
    sql: SQL, entries: Sequence[Entry], policy: CheckpointPolicy, now: datetime | None = None
) -> Checkpoint | None:
    """Append ``entries`` to the log and store the signed checkpoint over it, in the
    open transaction (its writer must be the only one: the caller serializes).
    Sealed entries of runs another checkpoint took meanwhile, or whose seal changed
    since they were read, are left to the next one."""
    sealed = [entry.run_id for entry in entries if entry.kind == "sealed"]
    seals: dict[str, str] = {}
    taken: set[str] = set()
    for start in range(0, len(sealed), _CHUNK):  # a page of runs per query: few round trips
        chunk = sealed[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        seals.update((str(run_id), str(seal or "")) for run_id, seal in sql.rows(
            f"SELECT run_id, seal FROM runs WHERE run_id IN ({marks})", chunk))
        taken.update(str(row[0]) for row in sql.rows(
            f"SELECT DISTINCT run_id FROM checkpoint_entries WHERE run_id IN ({marks}) "
            "AND kind IN ('sealed', 'purged')", chunk))
    kept = [
        entry for entry in entries
        if entry.kind != "sealed"
        or (seals.get(entry.run_id) == entry.seal and entry.run_id not in taken)
    ]
    if not kept:
        return None
    seq, prev, frontier = checkpoint_tip(sql)
    checkpoint = make_checkpoint(
        origin=policy.origin, seq=seq + 1, prev=prev, frontier=frontier, entries=kept,
        signers=policy.signers, now=now,
    )
    body = checkpoint.body
    sql.many(
        "INSERT INTO checkpoint_entries (idx, seq, kind, run_id, events, seal, digest) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(checkpoint.first + i, body.seq, e.kind, e.run_id, e.events, e.seal, e.digest) for i, e in enumerate(kept)],
    )
    sql.rows(
        "INSERT INTO checkpoints (seq, created_at, first_entry, size, note, frontier) VALUES (?, ?, ?, ?, ?, ?)",
        (body.seq, body.time, checkpoint.first, body.size, checkpoint.note,
         json.dumps([n.hex() for n in frontier.nodes])),
    )
    return checkpoint


def load_checkpoints(
    sql: SQL, *, after: int = 0, errors: tuple[type[BaseException], ...] = (Exception,)
) -> tuple[list[Checkpoint], list[Finding]]:
    """The stored checkpoints after number ``after``, with their entries, and what
    in the tables could not be read (a malformed row is a finding, not an error;
    so is a failure in ``errors`` to read the tables at all)."""
    findings: list[Finding] = []
    found: list[Checkpoint] = []
    try:
        rows = sql.rows("SELECT seq, first_entry, note FROM checkpoints WHERE seq > ? ORDER BY seq", (after,))
        entry_rows = sql.rows(
            "SELECT idx, seq, kind, run_id, events, seal, digest FROM checkpoint_entries "
            "WHERE seq > ? ORDER BY idx", (after,)
        )
    except errors as exc:
        return [], [Finding("checkpoint-altered", f"the checkpoint tables cannot be read: {exc}")]
    by_seq: dict[Any, list[Any]] = {}
    for row in entry_rows:
        by_seq.setdefault(row[1], []).append(row)
    for seq, first, note in rows:
        try:
            entries = []
            for expected, row in enumerate(by_seq.get(seq, []), start=int(first)):
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


def removal_entry(run_id: str, row: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> Entry:
    """The ``purged`` entry that records the removal of a run with this content."""
    return Entry("purged", run_id, len(events), str(row.get("seal") or ""), content_digest(row, events))


def check_removal(
    run_id: str, row: Mapping[str, Any], *, held: bool, floor: timedelta | None, what: str
) -> None:
    """Refuse (`RetentionError`) to remove a run under legal hold, or one that
    started within the retention ``floor``."""
    if held:
        raise RetentionError(f"{what} refused: run {run_id} is under legal hold "
                             "(`agentaudit release` lifts it)")
    if floor is None:
        return
    limit = datetime.now(timezone.utc) - floor
    started = str(row.get("started_at"))
    try:
        young = datetime.fromisoformat(started) > limit
    except ValueError:
        young = started > limit.isoformat(timespec="microseconds")
    if young:
        raise RetentionError(
            f"{what} refused: run {run_id} started at {started[:19]} UTC, "
            f"within the retention floor of {days(floor)}"
        )


def check_floor(floor: timedelta | None, before: datetime) -> None:
    """Refuse a purge whose cutoff lies inside the retention floor."""
    if floor is None:
        return
    limit = datetime.now(timezone.utc) - floor
    if before > limit:
        raise RetentionError(
            f"purge refused: the retention floor is {days(floor)}, so runs started after "
            f"{limit.isoformat(timespec='seconds')[:19]} UTC may not be purged; give a cutoff "
            "at or before that"
        )


def floor_of(value: Any) -> timedelta | None:
    """The retention floor stored in ``settings`` (None: none)."""
    return None if value is None else timedelta(seconds=float(value))


def days(floor: timedelta) -> str:
    count = floor.total_seconds() / 86400
    return f"{count:g} days" if count >= 1 else f"{floor.total_seconds():g} s"


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
    content: Callable[[str], RunContent],
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


def resolve_policy(policy: CheckpointPolicy | bool | None, *, read_only: bool) -> CheckpointPolicy | None:
    """The store's checkpoint policy from its ``checkpoints`` argument (None: from the
    environment). Called before the store opens anything, so a bad argument leaves no
    file, connection, thread or exit hook behind."""
    if policy is None and not read_only:
        return CheckpointPolicy.from_environment()
    if policy is None or policy is False:
        return None
    if not isinstance(policy, CheckpointPolicy):
        raise TypeError(f"checkpoints takes an aa.CheckpointPolicy, got {type(policy).__name__}")
    return policy


def export_pending(pending: Sequence[Checkpoint], sink: Sink, on_failure: Callable[[], None]) -> list[int]:
    """Hand ``pending`` to the sink in order, stopping at the first it refuses (kept,
    retried next time); the numbers it took."""
    done = []
    for checkpoint in pending:
        try:
            sink(checkpoint)
        except Exception as exc:
            on_failure()
            logger.error("agentaudit: the checkpoint sink %r refused checkpoint %d: %s (kept, "
                         "retried with the next one)", sink, checkpoint.seq, exc)
            break
        done.append(checkpoint.seq)
    return done


# -- what every store with a checkpoint log offers ----------------------------------------


class CheckpointLog(abc.ABC):
    """Verification, proofs and bundles over a store's checkpoint log (mixed into
    `SQLiteStore` and `ServerStore` through their own mixins, which provide
    `_load`, `run_rows`, `checkpoint` and the hold and retention methods)."""

    checkpoint_policy: CheckpointPolicy | None
    checkpoint_failures: int
    _closed: bool

    @abc.abstractmethod
    def _log_name(self) -> str:
        """The database's name in messages (a path, a redacted URL)."""

    @abc.abstractmethod
    def _load(self, after: int = 0) -> tuple[list[Checkpoint], list[Finding]]:
        """The stored checkpoints after ``after``, and what is wrong with them."""

    @abc.abstractmethod
    def run_rows(self, run_id: str) -> RunContent:
        """The run's row and its events, every column as stored (None: no such run)."""

    def _run_contents(self, run_ids: Sequence[str]) -> dict[str, RunContent]:
        """`run_rows` of several runs (a store reads them in fewer round trips)."""
        return {run_id: self.run_rows(run_id) for run_id in run_ids}

    @abc.abstractmethod
    def checkpoint(self, *, timeout: float | None = None) -> Checkpoint | None:
        """Commit a checkpoint of what is new; None when nothing is."""

    if TYPE_CHECKING:  # the stores' own methods, which the log's methods call

        def verify(self, run_id: str) -> Any: ...

        def iter_runs(self, filter: RunFilter | None = None) -> Any: ...

    def _policy(self) -> CheckpointPolicy:
        return self.checkpoint_policy or CheckpointPolicy()

    def checkpoints(self) -> list[Checkpoint]:
        """The checkpoints stored in the database, oldest first."""
        return self._load()[0]

    def _start_checkpointer(self, policy: CheckpointPolicy | None, read_only: bool) -> None:
        """The checkpointer thread, when the policy has an interval (None otherwise)."""
        self._cp_stop = threading.Event()
        self._cp_thread: threading.Thread | None = None
        if policy is not None and policy.interval > 0 and not read_only:
            # The thread holds the store weakly: a store dropped without close still
            # ends, and so does this thread.
            thread = threading.Thread(
                target=_checkpoint_loop, args=(weakref.ref(self), self._cp_stop, policy.interval),
                name="agentaudit-checkpointer", daemon=True,
            )
            self._cp_thread = thread
            thread.start()

    def _stop_checkpoint_thread(self, timeout: float, *, read_only: bool) -> None:
        """At close: stop the thread, then make the last checkpoint (bounded)."""
        stop = getattr(self, "_cp_stop", None)
        if stop is None:
            return  # the store failed to open before it set checkpointing up
        stop.set()
        thread = self._cp_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        policy = self.checkpoint_policy
        if policy is not None and policy.at_close and not read_only:
            try:
                self.checkpoint(timeout=timeout)
            except Exception as exc:
                self.checkpoint_failures += 1
                logger.error("agentaudit: the closing checkpoint of %s failed: %s", self._log_name(), exc)

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

        def erased(run_id: str) -> bool:
            try:
                return getattr(self.verify(run_id), "state", "") == "erased"
            except Exception:
                return False

        # the covered runs' content, read a page ahead in the order they are checked
        order = list(dict.fromkeys(entry.run_id for _, entry in log))
        position = {run_id: at for at, run_id in enumerate(order)}
        page: dict[str, RunContent] = {}

        def content(run_id: str) -> RunContent:
            if run_id not in page:
                page.clear()
                at = position[run_id]
                page.update(self._run_contents(order[at : at + _PAGE]))
            return page[run_id]

        runs, run_findings = check_entries(log, content, erased)
        findings.extend(run_findings)
        if not verifiers:
            findings.append(Finding("unsigned", "no key was given: only the hashes were checked, "
                                    "which anyone who can write the database can recompute", problem=False))
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
                f"run {run_id!r} is in no checkpoint of {self._log_name()} yet (checkpoints are made every "
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


def _checkpoint_loop(ref: weakref.ref[CheckpointLog], stop: threading.Event, interval: float) -> None:
    """The checkpointer thread: a checkpoint every ``interval`` seconds."""
    while not stop.wait(interval):
        store = ref()
        if store is None or store._closed:
            return
        try:
            store.checkpoint()
        except Exception as exc:  # a full disk, a server away, a closing store: logged, tried again
            if stop.is_set():
                return
            store.checkpoint_failures += 1
            logger.warning("agentaudit: checkpoint of %s failed: %s", store._log_name(), exc)
        del store
