"""The hash chain that makes a run's log tamper-evident, and the run's seal.

A run's chain starts at its header: a hash over the fields fixed when the run starts
(name, caller, parent, start time, host, pid, input, metadata, key id), so a header
edited later no longer matches the first event's link. Each event's hash covers the
previous hash, its own header and a commitment to its payload; editing, deleting or
reordering any stored event breaks every hash after it. When the run ends, its row is
sealed: a hash over the header hash, the final fields, the number of events and the
last event's hash.

Two things make it more than a checksum:

- A secret key (`_keys`): with one, every hash and seal is HMAC-SHA256, which nobody
  without the key can recompute after an edit. Without one, plain SHA-256: it shows
  accidental and naive edits only.
- Salted content digests: the chain commits to each piece of content (run input,
  output and error; step text, tool arguments and results, error messages, custom
  payloads) through a digest salted per run or per event, not the text itself. So
  content can be erased (the text and its salt removed, its digest kept) while every
  hash and seal still verifies, and an erased text cannot be guessed back from its
  digest.

Runs written before this format (chain v1: no salt) hash the payload text itself and
start their chain at ""; they still verify, as v1. Everything that is hashed is the
text as stored, in one canonical form.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from . import payloads
from ._keys import ChainKey
from ._model import Event, VerifyResult
from ._serialize import canonical_json

__all__ = [
    "ERASED",
    "ERASE_FIELDS",
    "RUN_CONTENT",
    "Salts",
    "chain_hash",
    "chain_hash_v2",
    "content_digest",
    "event_hash",
    "format_time",
    "header_hash",
    "new_salt",
    "payload_commitment",
    "run_seal_v2",
    "seal_events",
    "utc_text",
    "verify_events",
]

# What an erased piece of content reads as, in the run row and in payloads.
ERASED = "[erased]"
# The run's fields committed to through salted digests (the erasable ones).
RUN_CONTENT = ("input", "output", "error")

# The payload keys each event type keeps in clear in the chain (its frame); every other
# key, and every key of a custom event, is content and committed through its digest.
# Frozen with chain v2: changing it would change the hashes of stored events.
FRAME_KEYS: Mapping[str, frozenset[str]] = {
    payloads.STEP: frozenset({
        payloads.ITER, payloads.STEP_MS, payloads.TEXT_LEN, payloads.MODEL,
        payloads.FINISH_REASON, payloads.IN_TOKENS, payloads.OUT_TOKENS,
        payloads.THINKING_TOKENS, payloads.CACHE_READ_TOKENS, payloads.TEXT_REDACTED,
    }),
    payloads.RESOLVED_MODEL: frozenset({payloads.MODEL}),
    payloads.TOOL_CALL: frozenset({payloads.NAME, payloads.ID}),
    payloads.TOOL_RESULT: frozenset({
        payloads.NAME, payloads.ID, payloads.TRUNCATED, payloads.ERROR_FLAG, payloads.DURATION_MS,
    }),
    payloads.ERROR: frozenset(),
}
_NO_FRAME: frozenset[str] = frozenset()

_EVENT_V2 = b"agentaudit event v2\n"
_HEADER_V2 = b"agentaudit run header v2\n"
_SEAL_V2 = b"agentaudit run seal v2\n"
_SALT = b"agentaudit salt v2\n"
_DIGEST = b"agentaudit content v2\n"


def format_time(moment: datetime) -> str:
    """The one text form of an event time that is hashed and stored (microseconds)."""
    return moment.isoformat(timespec="microseconds")


def utc_text(moment: datetime) -> str:
    """A run's time as stored and hashed: UTC, microseconds (text order is time order)."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def new_salt() -> str:
    """A fresh random salt (hex): one per run, one per event."""
    return os.urandom(16).hex()


def _mac(key: ChainKey | None, message: bytes) -> str:
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return key.mac(message)


def _field_salt(salt: bytes, name: str) -> bytes:
    return hashlib.sha256(_SALT + salt + name.encode("utf-8", "surrogatepass")).digest()


def content_digest(field_salt: bytes, value: Any) -> str:
    """The salted digest the chain holds for one piece of content."""
    data = ("s:" + value) if isinstance(value, str) else ("j:" + canonical_json(value))
    return hashlib.sha256(_DIGEST + field_salt + data.encode("utf-8", "surrogatepass")).hexdigest()


class Salts:
    """The salts of one run's or one event's content, as stored.

    Stored form: 32 hex digits (the salt every field's own salt derives from), or,
    once something was erased, a JSON object naming each field's own salt (``s:``)
    or, for an erased field, its digest (``d:``): the erased field's salt is gone,
    so its digest cannot be tested against guesses. Raises ValueError on anything
    else."""

    __slots__ = ("_base", "_fields")

    def __init__(self, stored: str) -> None:
        self._base: bytes | None = None
        self._fields: dict[str, tuple[str, bytes | str]] = {}
        if not isinstance(stored, str):
            raise ValueError(f"a salt is text, not {type(stored).__name__}")
        if stored.startswith("{"):
            table = json.loads(stored)
            if not isinstance(table, dict):
                raise ValueError("the salt table is not a JSON object")
            for name, value in table.items():
                if not isinstance(value, str) or value[:2] not in ("s:", "d:") or len(value) != 66:
                    raise ValueError(f"the salt of {name!r} is malformed")
                bytes.fromhex(value[2:])
                self._fields[name] = (
                    ("s", bytes.fromhex(value[2:])) if value[0] == "s" else ("d", value[2:])
                )
        else:
            if len(stored) != 32:
                raise ValueError("a salt is 32 hex digits")
            self._base = bytes.fromhex(stored)

    def erased(self, name: str) -> bool:
        entry = self._fields.get(name)
        return entry is not None and entry[0] == "d"

    def digest(self, name: str, value: Any) -> str:
        """The digest of field ``name``: computed from ``value`` and its salt, or the
        stored digest when the field was erased. KeyError for a field unknown to a
        salt table."""
        if self._base is not None:
            return content_digest(_field_salt(self._base, name), value)
        kind, stored = self._fields[name]
        if kind == "d":
            return str(stored)
        return content_digest(stored, value)  # type: ignore[arg-type]

    def table(self, names: Iterable[str], erase: Mapping[str, Any]) -> str:
        """The stored form holding a salt for every field in ``names``, with the fields
        in ``erase`` (name -> current value) turned into their digests."""
        table: dict[str, str] = {}
        for name in names:
            if name in erase:
                table[name] = "d:" + self.digest(name, erase[name])
            elif self._base is not None:
                table[name] = "s:" + _field_salt(self._base, name).hex()
            else:
                kind, stored = self._fields[name]
                table[name] = ("s:" + stored.hex()) if kind == "s" else ("d:" + str(stored))  # type: ignore[union-attr]
        return canonical_json(table)


def payload_commitment(event_type: str, payload: Mapping[str, Any], salts: Salts) -> str:
    """What the chain covers of a payload: its frame keys in clear, every other
    value as its salted digest (canonical JSON)."""
    frame = FRAME_KEYS.get(event_type, _NO_FRAME)
    return canonical_json(
        {k: (v if k in frame else "#" + salts.digest(k, v)) for k, v in payload.items()}
    )


def content_keys(event_type: str, payload: Mapping[str, Any]) -> list[str]:
    """The keys of ``payload`` that are content (erasable) for its event type."""
    frame = FRAME_KEYS.get(event_type, _NO_FRAME)
    return [k for k in payload if k not in frame]


# What `erase` can remove: the run's own content fields, and by event kind the
# content of a payload (custom events: every key).
ERASE_FIELDS = ("input", "output", "error", "text", "args", "result", "message", "custom")
_ERASED_KINDS = {
    "text": payloads.STEP, "args": payloads.TOOL_CALL, "result": payloads.TOOL_RESULT,
    "message": payloads.ERROR,
}


def erase_fields(fields: Iterable[str] | str | None) -> frozenset[str]:
    """The `ERASE_FIELDS` chosen (all for None). ValueError for any other name."""
    if fields is None:
        return frozenset(ERASE_FIELDS)
    chosen = frozenset([fields] if isinstance(fields, str) else fields)
    if not chosen or chosen - set(ERASE_FIELDS):
        raise ValueError(f"erase fields are some of {', '.join(ERASE_FIELDS)}; got {sorted(chosen)!r}")
    return chosen


def erased_run_fields(salt: str, values: Mapping[str, Any], chosen: frozenset[str]) -> tuple[str, list[str]]:
    """A run's salt once the ``chosen`` content fields (given with their current
    ``values``) are erased, and the names erased now; ValueError for a v1 run."""
    if not salt:
        raise ValueError("the run was written before erasable chains (chain v1)")
    salts = Salts(salt)
    wanted = {n: values[n] for n in RUN_CONTENT if n in chosen and not salts.erased(n)}
    return (salts.table(RUN_CONTENT, wanted) if wanted else salt), list(wanted)


def erased_event(
    event_type: str, payload: Mapping[str, Any], salt: str, chosen: frozenset[str]
) -> tuple[dict[str, Any], str, int] | None:
    """An event's payload and salt once its content picked by ``chosen`` is erased,
    and how many values were; None when nothing of it is to erase."""
    reserved = event_type in payloads.RESERVED_EVENT_TYPES
    kinds = {_ERASED_KINDS[n] for n in chosen if n in _ERASED_KINDS}
    if not ((reserved and event_type in kinds) or (not reserved and "custom" in chosen)):
        return None
    if not salt:
        raise ValueError("the event was written before erasable chains (chain v1)")
    salts = Salts(salt)
    keys = content_keys(event_type, payload)
    wanted = {k: payload[k] for k in keys if not salts.erased(k)}
    if not wanted:
        return None
    erased = {k: (ERASED if k in wanted else v) for k, v in payload.items()}
    return erased, salts.table(keys, wanted), len(wanted)


def chain_hash(
    prev_hash: str, run_id: str, sequence: int, event_type: str, created_text: str, payload_json: str
) -> str:
    """A chain v1 event hash (runs without a salt): SHA-256 over the previous hash,
    the event's header and its payload text."""
    # Length-prefixed free-text fields: no run id or event type can forge a boundary.
    return hashlib.sha256(
        f"{prev_hash}|{len(run_id)}:{run_id}|{sequence}|{len(event_type)}:{event_type}|"
        f"{created_text}\n{payload_json}".encode("utf-8", "surrogatepass")
    ).hexdigest()


def event_hash(
    prev_hash: str, run_id: str, sequence: int, event_type: str, created_at: datetime, payload_json: str
) -> str:
    """`chain_hash` with the time as a datetime."""
    return chain_hash(prev_hash, run_id, sequence, event_type, format_time(created_at), payload_json)


def chain_hash_v2(
    key: ChainKey | None, prev_hash: str, run_id: str, sequence: int, event_type: str,
    created_text: str, commitment: str,
) -> str:
    """A chain v2 event hash: keyed when the run is, over its payload's commitment."""
    return _mac(
        key,
        _EVENT_V2
        + f"{prev_hash}|{len(run_id)}:{run_id}|{sequence}|{len(event_type)}:{event_type}|"
        f"{created_text}\n{commitment}".encode("utf-8", "surrogatepass"),
    )


def header_hash(
    key: ChainKey | None, salts: Salts, *, run_id: str, name: str, caller: str,
    parent_run_id: str | None, started_at: str, input: str, metadata: str, host: str,
    pid: int, key_id: str,
) -> str:
    """The hash a v2 run's chain starts from: its header as stored (times and the
    metadata as their stored text, the input as its salted digest)."""
    body = canonical_json(
        [run_id, name, caller, parent_run_id, started_at, "#" + salts.digest("input", input),
         metadata, host, pid, key_id]
    )
    return _mac(key, _HEADER_V2 + body.encode("utf-8", "surrogatepass"))


def run_seal_v2(
    key: ChainKey | None, salts: Salts, *, header: str, status: str, finished_at: str | None,
    output: str, error: str, tool_calls: int, steps: int, input_tokens: int,
    output_tokens: int, thinking_tokens: int, cost_usd: float | None, events: int, last_hash: str,
) -> str:
    """The seal of a finished v2 run: its header hash, final fields (output and
    error as salted digests), number of events and last event's hash."""
    body = canonical_json(
        [header, status, finished_at, "#" + salts.digest("output", output),
         "#" + salts.digest("error", error), tool_calls, steps, input_tokens, output_tokens,
         thinking_tokens, cost_usd, events, last_hash]
    )
    return _mac(key, _SEAL_V2 + body.encode("utf-8", "surrogatepass"))


def seal_events(
    run_id: str,
    sequence: int,
    prev_hash: str,
    events: Iterable[tuple[str, dict[str, Any]]],
    created_at: datetime,
    *,
    salted: bool = False,
    key: ChainKey | None = None,
) -> list[Event]:
    """The one place events are sealed: each (type, payload) gets the next sequence
    after ``sequence``, the time, its canonical payload text and its chain hash, the
    first chained to ``prev_hash``. ``salted``: chain v2 (a salt per event, content
    committed through salted digests, keyed by ``key`` when given); otherwise v1.
    The Writer calls it only for events whose content no store can refuse (every text
    already cleaned and masked), and advances the run's chain only past the events
    the store took."""
    created_text = format_time(created_at)
    sealed = []
    for event_type, payload in events:
        sequence += 1
        body = canonical_json(payload)
        if salted:
            # `payload_commitment` with a fresh salt, inlined: this runs on the agent's
            # thread for every event.
            salt_bytes = os.urandom(16)
            salt = salt_bytes.hex()
            frame = FRAME_KEYS.get(event_type, _NO_FRAME)
            commitment = canonical_json({
                k: (v if k in frame else "#" + content_digest(_field_salt(salt_bytes, k), v))
                for k, v in payload.items()
            })
            digest = chain_hash_v2(key, prev_hash, run_id, sequence, event_type, created_text, commitment)
        else:
            salt = ""
            digest = chain_hash(prev_hash, run_id, sequence, event_type, created_text, body)
        sealed.append(
            Event(run_id, sequence, event_type, payload, created_at, prev_hash, digest, body, salt)
        )
        prev_hash = digest
    return sealed


def verify_events(run_id: str, events: Iterable[Event]) -> VerifyResult:
    """Check a run's events alone (sequence order): numbering 1..n, links, hashes.
    Unkeyed, and without the run's header: `_verify.verify_run` checks a whole run."""
    from ._verify import event_record, verify_chain  # _verify builds on this module

    return verify_chain(run_id, [event_record(e) for e in events])
