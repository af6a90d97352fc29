"""The hash chain that makes a run's log tamper-evident.

Each event's hash is SHA-256 over its canonical fields and the previous event's hash,
so editing, deleting or reordering any stored event breaks every hash after it, and
verification names the first sequence that no longer holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ._model import Event, VerifyResult
from ._serialize import canonical_json

__all__ = ["chain_hash", "event_hash", "format_time", "seal_events", "verify_events"]


def format_time(moment: datetime) -> str:
    """The one text form of an event time that is hashed and stored (UTC, microseconds)."""
    return moment.isoformat(timespec="microseconds")


def event_hash(
    prev_hash: str, run_id: str, sequence: int, event_type: str, created_at: datetime, payload_json: str
) -> str:
    """SHA-256 (hex) over the previous hash, the event's header and its canonical payload."""
    return chain_hash(prev_hash, run_id, sequence, event_type, format_time(created_at), payload_json)


def chain_hash(
    prev_hash: str, run_id: str, sequence: int, event_type: str, created_text: str, payload_json: str
) -> str:
    """`event_hash` with the time already in its `format_time` form (the writer
    formats it once, for the hash and the stored row)."""
    # Length-prefixed free-text fields: no run id or event type can forge a boundary.
    return hashlib.sha256(
        f"{prev_hash}|{len(run_id)}:{run_id}|{sequence}|{len(event_type)}:{event_type}|"
        f"{created_text}\n{payload_json}".encode("utf-8", "surrogatepass")
    ).hexdigest()


def seal_events(
    run_id: str,
    sequence: int,
    prev_hash: str,
    events: Iterable[tuple[str, dict[str, Any]]],
    created_at: datetime,
) -> list[Event]:
    """The one place events are sealed: each (type, payload) gets the next sequence
    after ``sequence``, the time, its canonical payload text and its chain hash, the
    first chained to ``prev_hash``. The Writer calls it only for events whose content
    no store can refuse (every text already cleaned and masked), and advances the
    run's chain only past the events the store took."""
    created_text = format_time(created_at)
    sealed = []
    for event_type, payload in events:
        sequence += 1
        body = canonical_json(payload)
        digest = chain_hash(prev_hash, run_id, sequence, event_type, created_text, body)
        sealed.append(
            Event(run_id, sequence, event_type, payload, created_at, prev_hash, digest, body)
        )
        prev_hash = digest
    return sealed


def verify_events(run_id: str, events: Iterable[Event]) -> VerifyResult:
    """Check a run's events (in sequence order): numbering 1..n, links, hashes."""
    prev = ""
    count = 0
    for expected, event in enumerate(events, start=1):
        count = expected
        if event.sequence != expected:
            return VerifyResult(
                run_id, False, count, expected, f"sequence {expected} is missing (found {event.sequence})"
            )
        if event.run_id != run_id:
            return VerifyResult(run_id, False, count, expected, "event belongs to another run")
        if event.prev_hash != prev:
            return VerifyResult(
                run_id, False, count, expected, "prev_hash does not match the previous event's hash"
            )
        actual = event_hash(
            prev, event.run_id, event.sequence, event.event_type, event.created_at,
            canonical_json(event.payload),
        )
        if actual != event.hash:
            return VerifyResult(run_id, False, count, expected, "hash does not match the event's content")
        prev = event.hash
    return VerifyResult(run_id, True, count)
