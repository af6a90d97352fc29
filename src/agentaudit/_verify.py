"""Verification of a run, as one pure function over named records.

Why one function: SQLite, the memory store and the server stores must verify the
same way, so each store only fetches a run's row and its events as `RunRecord` and
`EventRecord` (the values as stored, untyped: a tampered file may hold anything in
any column) and calls `verify_run`. It never raises on what it is given: every
malformed value is a problem it reports, and it goes on to find the others.

What it checks (see `_chain` for the formulas):

- the run's header against the hash its chain started from (chain v2), so a header
  edited after the start shows even while the run is still running;
- each event: numbering 1..n, its run id, its link to the previous hash, its hash
  recomputed over the payload text as stored, which must be canonical JSON (a
  duplicate key, say, or a re-encoding is refused); ``events.id`` must rise with the
  sequence (it is otherwise only an order key across runs);
- a running run: no seal and no finish on its row (a finished run reset to running
  and edited shows here); a finished run: its seal, over the final fields, the
  number of events and the last hash (so events cut from the end show);
- ``runs.model`` against the run's first ``resolved_model`` event;
- with a keyring: keyed runs with their key; ``require_key`` refuses unkeyed runs.

A run whose content was erased (`erase`) verifies as ``erased``: the chain holds
salted digests of the removed content.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from . import _chain, payloads
from ._keys import ChainKey
from ._model import Event, Run, RunStatus, VerifyResult
from ._serialize import canonical_json, clean_str, safe_text

__all__ = [
    "EventRecord",
    "RunRecord",
    "event_record",
    "header_hash_of",
    "record_of_run",
    "seal_of",
    "verify_chain",
    "verify_run",
]

_STATUSES = frozenset(s.value for s in RunStatus)
_COUNTS = ("tool_calls", "steps", "input_tokens", "output_tokens", "thinking_tokens")
_MAX_PROBLEMS = 50
_V1_PREFIX = "agentaudit run seal v1\n"


class RunRecord(NamedTuple):
    """A run's row as stored (column order of the SQLite ``runs`` table). ``model``
    and ``seal`` are None for a store that keeps neither (the memory store)."""

    run_id: Any
    name: Any
    caller: Any
    parent_run_id: Any
    status: Any
    started_at: Any
    finished_at: Any
    input: Any
    output: Any
    error: Any
    tool_calls: Any
    steps: Any
    input_tokens: Any
    output_tokens: Any
    thinking_tokens: Any
    cost_usd: Any
    metadata: Any
    host: Any
    pid: Any
    key_id: Any = ""
    salt: Any = ""
    model: Any = None
    seal: Any = None

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> RunRecord:
        return cls(**{name: row.get(name, cls._field_defaults.get(name)) for name in cls._fields})


class EventRecord(NamedTuple):
    """An event as stored; ``id`` is the store's order key across runs, if any."""

    run_id: Any
    sequence: Any
    event_type: Any
    payload: Any
    created_at: Any
    prev_hash: Any
    hash: Any
    salt: Any = ""
    id: Any = None

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> EventRecord:
        return cls(**{name: row.get(name, cls._field_defaults.get(name)) for name in cls._fields})


def record_of_run(run: Run, *, model: str | None = None, seal: str | None = None) -> RunRecord:
    """``run`` in its stored form (the one text form every store writes and hashes)."""
    return RunRecord(
        clean_str(run.run_id),
        clean_str(run.name),
        clean_str(run.caller or ""),
        clean_str(run.parent_run_id) if run.parent_run_id else None,
        run.status.value,
        _chain.utc_text(run.started_at),
        _chain.utc_text(run.finished_at) if run.finished_at is not None else None,
        safe_text(run.input),
        safe_text(run.output),
        safe_text(run.error),
        run.tool_calls,
        run.steps,
        run.input_tokens,
        run.output_tokens,
        run.thinking_tokens,
        run.cost_usd,
        canonical_json(run.metadata or {}),
        clean_str(run.host or ""),
        run.pid,
        run.key_id,
        run.salt,
        model,
        seal,
    )


def event_record(event: Event, id: int | None = None) -> EventRecord:
    return EventRecord(
        event.run_id,
        event.sequence,
        event.event_type,
        # What a reader sees (the payload), not the text it was sealed with: an event
        # edited in memory must not verify.
        canonical_json(event.payload),
        _chain.format_time(event.created_at),
        event.prev_hash,
        event.hash,
        event.salt,
        id,
    )


# -- the formulas over records (sealing uses these too) -----------------------------


def header_hash_of(run: RunRecord, key: ChainKey | None) -> str:
    """Where a chain v2 run's chain starts; "" for a v1 run. Raises on malformed
    values (`verify_run` reports them)."""
    if not run.salt:
        return ""
    return _chain.header_hash(
        key, _chain.Salts(run.salt), run_id=_text(run.run_id), name=_text(run.name),
        caller=_text(run.caller), parent_run_id=_text_or_none(run.parent_run_id),
        started_at=_text(run.started_at), input=_text(run.input), metadata=_text(run.metadata),
        host=_text(run.host), pid=_int(run.pid), key_id=_text(run.key_id),
    )


def seal_of(run: RunRecord, key: ChainKey | None, events: int, last_hash: str) -> str:
    """The seal of ``run`` as it stands (a finished run), with ``events`` events
    ending at ``last_hash``. Raises on malformed values."""
    if not run.salt:
        text = _V1_PREFIX + canonical_json([list(run[:19]), events, last_hash])
        return _chain._mac(None, text.encode("utf-8", "surrogatepass"))
    return _chain.run_seal_v2(
        key, _chain.Salts(run.salt), header=header_hash_of(run, key), status=_text(run.status),
        finished_at=_text_or_none(run.finished_at), output=_text(run.output),
        error=_text(run.error), tool_calls=_int(run.tool_calls), steps=_int(run.steps),
        input_tokens=_int(run.input_tokens), output_tokens=_int(run.output_tokens),
        thinking_tokens=_int(run.thinking_tokens), cost_usd=_cost(run.cost_usd),
        events=events, last_hash=last_hash,
    )


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, found {type(value).__name__} {value!r:.40}")
    return value


def _text_or_none(value: Any) -> str | None:
    return None if value is None else _text(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a count, found {value!r:.40}")
    return value


def _cost(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"expected a cost, found {value!r:.40}")
    return value


def _time(value: Any) -> datetime:
    moment = datetime.fromisoformat(_text(value))
    if moment.tzinfo is None:
        raise ValueError(f"a time without its UTC offset: {value!r:.40}")
    return moment


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: Any) -> Any:
    """``text`` parsed, refusing duplicate keys and NaN, and refusing any text that
    is not the value's canonical form (what the chain hashed is the stored text)."""
    value = json.loads(_text(text), object_pairs_hook=_no_duplicates, parse_constant=_parse_constant)
    if canonical_json(value) != text:
        raise ValueError("not in canonical form (re-encoded or edited)")
    return value


# -- verification ----------------------------------------------------------------------


class _Problems:
    def __init__(self) -> None:
        self.row: list[str] = []
        self.events: list[tuple[int, str]] = []

    def add_row(self, text: str) -> None:
        if len(self.row) + len(self.events) < _MAX_PROBLEMS:
            self.row.append(text)

    def add_event(self, sequence: int, text: str) -> None:
        if len(self.row) + len(self.events) < _MAX_PROBLEMS:
            self.events.append((sequence, text))

    def __bool__(self) -> bool:
        return bool(self.row or self.events)


class _Chain(NamedTuple):
    events: int
    last_hash: str
    first_prev: str | None  # event 1's stored link, when event 1 verified on its own
    model: str  # the first resolved_model event's model
    erased: bool


def _check_chain(
    run_id: str, events: Iterable[EventRecord], key: ChainKey | None, *, v2: bool,
    can_hash: bool, problems: _Problems,
) -> _Chain:
    """Walk the events in sequence order, reporting every problem."""
    prev: Any = None  # event 1's link is checked against the header by the caller
    expected = 1
    count = 0
    last_id: Any = None
    first_prev: str | None = None
    model: str | None = None
    erased = False
    for event in events:
        count += 1
        seq = event.sequence
        where = seq if isinstance(seq, int) and not isinstance(seq, bool) else expected
        if seq != expected:
            problems.add_event(expected, f"sequence {expected} is missing (found {seq!r:.40})")
            if isinstance(seq, int) and not isinstance(seq, bool) and seq > expected:
                expected = seq
        expected += 1
        if event.run_id != run_id:
            problems.add_event(where, "event belongs to another run")
        if event.id is not None:
            if last_id is not None and not (
                isinstance(event.id, int) and isinstance(last_id, int) and event.id > last_id
            ):
                problems.add_event(where, "events.id does not rise with the sequence (events renumbered or reordered)")
            last_id = event.id
        payload: Any = None
        try:
            payload = strict_json(event.payload)
            if not isinstance(payload, dict):
                raise ValueError("not a JSON object")
        except (ValueError, RecursionError) as exc:
            payload = None
            problems.add_event(where, f"payload is malformed: {exc}")
        try:
            _time(event.created_at)
        except ValueError as exc:
            problems.add_event(where, f"created_at is malformed: {exc}")
        if prev is not None and event.prev_hash != prev:
            problems.add_event(where, "prev_hash does not match the previous event's hash")
        if payload is not None and model is None and event.event_type == payloads.RESOLVED_MODEL:
            found = payload.get(payloads.MODEL)
            model = found if isinstance(found, str) else ""
        hash_ok = False
        if payload is not None and can_hash:
            try:
                if v2:
                    salts = _chain.Salts(event.salt)
                    for name in _chain.content_keys(_text(event.event_type), payload):
                        if salts.erased(name):
                            erased = True
                            if payload[name] != _chain.ERASED:
                                raise ValueError(f"{name!r} is marked erased but holds content")
                    commitment = _chain.payload_commitment(event.event_type, payload, salts)
                    actual = _chain.chain_hash_v2(
                        key, _text(event.prev_hash), run_id, _int(seq), event.event_type,
                        _text(event.created_at), commitment,
                    )
                else:
                    if event.salt:
                        raise ValueError("a salt on an event of an unsalted (v1) run")
                    actual = _chain.chain_hash(
                        _text(event.prev_hash), run_id, _int(seq), _text(event.event_type),
                        _text(event.created_at), event.payload,
                    )
            except (ValueError, KeyError, TypeError) as exc:
                problems.add_event(where, f"event is malformed: {exc}")
            else:
                if actual != event.hash:
                    problems.add_event(where, "hash does not match the event's content")
                else:
                    hash_ok = True
        if count == 1 and hash_ok:
            first_prev = event.prev_hash
        prev = event.hash
    last = prev if isinstance(prev, str) else ""
    return _Chain(count, last, first_prev, model or "", erased)


def verify_chain(run_id: str, events: Sequence[EventRecord]) -> VerifyResult:
    """Check events alone (unkeyed; no header, no seal): numbering, links, hashes.
    The first event must link to "" (chain v1) or carry a salt (v2)."""
    problems = _Problems()
    v2 = bool(events) and bool(events[0].salt)
    chain = _check_chain(run_id, events, None, v2=v2, can_hash=True, problems=problems)
    if events and not v2 and events[0].prev_hash != "":
        problems.add_event(1, "prev_hash does not match the previous event's hash")
    return _result(run_id, problems, chain.events, chain.erased, "")


def verify_run(
    run: RunRecord | None,
    events: Sequence[EventRecord],
    keyring: Mapping[str, ChainKey] | None = None,
    *,
    run_id: str | None = None,
    require_key: bool | None = None,
) -> VerifyResult:
    """Verify one run from its stored row (None when the row is gone) and its events
    in sequence order. ``require_key`` (default: whether a keyring is given) refuses
    an unkeyed run: with a key in use, an unkeyed run may be a keyed one stripped of
    its key id and rewritten. Never raises."""
    if require_key is None:
        require_key = bool(keyring)
    rid = run.run_id if run is not None else run_id
    rid = rid if isinstance(rid, str) else repr(rid)
    problems = _Problems()
    try:
        if run is None:
            problems.add_row(
                f"the run's row is missing, yet {len(events)} of its events remain (the run was deleted)"
            )
            return _result(rid, problems, len(events), False, "")
        return _verify_run(rid, run, events, keyring, require_key, problems)
    except Exception as exc:  # a bug of ours must not hide the other runs' results
        problems.add_row(f"verification stopped on malformed data: {type(exc).__name__}: {exc}")
        return _result(rid, problems, len(events), False, "")


def _verify_run(
    rid: str, run: RunRecord, events: Sequence[EventRecord], keyring: Mapping[str, ChainKey] | None,
    require_key: bool, problems: _Problems,
) -> VerifyResult:
    # The key.
    key: ChainKey | None = None
    can_hash = True
    key_id = run.key_id if isinstance(run.key_id, str) else ""
    if not isinstance(run.key_id, str):
        problems.add_row(f"key_id is malformed: {run.key_id!r:.40}")
        can_hash = False
    elif key_id:
        key = keyring.get(key_id) if keyring is not None else None
        if key is None:
            problems.add_row(
                f"the run is keyed (key id {key_id}) and that key was not given: it cannot be checked"
            )
            can_hash = False
    elif require_key:
        problems.add_row("the run is not keyed: anyone who can write the file could have rewritten it")
    v2 = bool(run.salt)
    salts: _chain.Salts | None = None
    if v2:
        try:
            salts = _chain.Salts(run.salt)
        except (ValueError, TypeError) as exc:
            problems.add_row(f"the run's salt is malformed: {exc}")
            can_hash = False
    elif key_id:
        problems.add_row("the run is keyed but has no salt (its chain format was altered)")

    # The row's own values.
    status = run.status if isinstance(run.status, str) and run.status in _STATUSES else None
    if status is None:
        problems.add_row(f"status is not a known status: {run.status!r:.40}")
    try:
        _time(run.started_at)
    except ValueError as exc:
        problems.add_row(f"started_at is malformed: {exc}")
    if run.finished_at is not None:
        try:
            _time(run.finished_at)
        except ValueError as exc:
            problems.add_row(f"finished_at is malformed: {exc}")
    for name in (*_COUNTS, "pid"):
        try:
            _int(getattr(run, name))
        except ValueError as exc:
            problems.add_row(f"{name} is malformed: {exc}")
    try:
        _cost(run.cost_usd)
    except ValueError as exc:
        problems.add_row(f"cost_usd is malformed: {exc}")
    try:
        if not isinstance(strict_json(run.metadata), dict):
            raise ValueError("not a JSON object")
    except (ValueError, RecursionError) as exc:
        problems.add_row(f"metadata is malformed: {exc}")
    for name in ("name", "caller", "input", "output", "error", "host"):
        if not isinstance(getattr(run, name), str):
            problems.add_row(f"{name} is malformed: not text")
    erased = False
    if salts is not None:
        for name in _chain.RUN_CONTENT:
            if salts.erased(name):
                erased = True
                if getattr(run, name) != _chain.ERASED:
                    problems.add_row(f"the run's {name} is marked erased but holds content")

    # The header, where the chain starts.
    head = ""
    if v2 and can_hash:
        try:
            head = header_hash_of(run, key)
        except (ValueError, KeyError, TypeError) as exc:
            problems.add_row(f"the run's header is malformed: {exc}")
            can_hash = False

    chain = _check_chain(rid, events, key, v2=v2, can_hash=can_hash, problems=problems)
    erased = erased or chain.erased
    # Event 1 verified on its own (first_prev is its link) yet links elsewhere: in v2
    # its link was made to another header; a v1 chain must start at "".
    header_moved = False
    if events and can_hash and events[0].sequence == 1 and chain.first_prev not in (None, head):
        if v2:
            header_moved = True  # reported after the seal, which covers more
        else:
            problems.add_event(1, "prev_hash does not match the previous event's hash")

    # runs.model is derived from the chain.
    if run.model is not None and run.model != chain.model:
        problems.add_row(
            f"runs.model is {run.model!r:.60} but the run's resolved_model event says {chain.model!r:.60}"
        )

    # The finish: none while running; sealed once finished.
    if status == RunStatus.RUNNING.value:
        if run.seal:
            problems.add_row("the run is marked running, yet its row was sealed as finished")
        unfinished = (
            run.finished_at is None and run.output == "" and run.error == "" and run.cost_usd is None
            and all(getattr(run, name) == 0 for name in _COUNTS)
        )
        if not unfinished:
            problems.add_row(
                "the run is marked running, yet its row holds a finish (end time, output, error, "
                "cost or totals): a finished run reset to running"
            )
    elif status is not None and run.seal is not None:
        if run.finished_at is None:
            problems.add_row("the run finished but has no finished_at")
        if not run.seal:
            problems.add_row("the run finished but its row carries no seal")
        elif can_hash:
            try:
                expected = seal_of(run, key, chain.events, chain.last_hash)
            except (ValueError, KeyError, TypeError) as exc:
                problems.add_row(f"the run's row cannot be sealed: {exc}")
            else:
                if expected != run.seal:
                    problems.add_row(
                        "the run's row does not match its seal: a field was edited, "
                        "or events were removed from the end of its log"
                    )
    if header_moved:
        problems.add_row(
            "the run's header (name, caller, parent, start, host, pid, input, metadata or "
            "key id) does not match the one its chain started from"
        )
    return _result(rid, problems, chain.events, erased, key_id)


def _result(run_id: str, problems: _Problems, count: int, erased: bool, key_id: str) -> VerifyResult:
    if not problems:
        return VerifyResult(run_id, True, count, state="erased" if erased else "intact", key_id=key_id)
    ordered = problems.row + [f"sequence {seq}: {text}" for seq, text in problems.events]
    first_event = min((seq for seq, _ in problems.events), default=None)
    if problems.row:
        reason = problems.row[0]
    else:
        reason = min(problems.events, key=lambda found: found[0])[1]
    return VerifyResult(
        run_id, False, count, first_event, reason, state="broken", problems=tuple(ordered), key_id=key_id
    )
