"""Signed checkpoints: what lets a third party trust a log kept by someone else.

Why: the hash chain and the run seals show an edit made without the key, but
whoever holds the key (or, without a key, anyone who can write the file) can
rewrite a run and recompute everything. A checkpoint takes the log's state at one
moment out of their reach: it is signed (Ed25519 with a private key that need not
live beside the database, and/or HMAC with the chain key) and written to a sink the
database administrator does not control (a file on another volume, a callable
that ships it elsewhere). Rewriting anything older than the last checkpoint held
elsewhere then shows, whoever did it. This follows AWS CloudTrail's digest files
(each one signs the previous one) and Certificate Transparency's signed tree heads.

The log. Checkpoints commit to one append-only log of entries, in the order they
were checkpointed; each entry is a leaf of an RFC 6962 Merkle tree (`_merkle`):

- ``sealed``: a run that finished (its seal and a SHA-256 digest of its row and of
  every one of its events, all columns as stored);
- ``head``: a run still running (its number of events and the digest of them),
  taken again at each checkpoint in which it grew;
- ``purged``: a run removed through agentaudit (``purge``, ``delete_run``), with
  its seal and digest at that moment: a purge is on the record, a deletion is not.

A checkpoint adds the entries since the previous one and is a C2SP
``tlog-checkpoint`` signed note: origin, tree size (entries so far), base64 root
of the whole log, and extension lines for its number, the hash of the previous
checkpoint's note text and its time. Each is also one JSON line in the sink,
with its entries, so the external file alone says which run each leaf is.

What a checkpoint proves: every run it covers existed with exactly that content
when it was made. What it cannot: anything written after the last checkpoint that
reached the sink (the window: ``CheckpointPolicy.interval``, 60 s by default,
plus the time the sink takes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac as _hmac
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from ._errors import CheckpointError
from ._merkle import CompactRange, leaf_hash, tree_root, verify_inclusion

__all__ = [
    "DEFAULT_INTERVAL",
    "ENTRY_KINDS",
    "HEADER_COLUMNS",
    "Checkpoint",
    "CheckpointBody",
    "CheckpointPolicy",
    "Ed25519Signer",
    "Ed25519Verifier",
    "Entry",
    "FileSink",
    "Finding",
    "HmacSigner",
    "HmacVerifier",
    "ProvenEntry",
    "content_digest",
    "generate_signing_key",
    "load_public_key",
    "load_signing_key",
    "read_checkpoint_file",
    "run_header",
    "sign_note",
    "verify_chain",
    "verify_note",
    "verify_proof",
]

logger = logging.getLogger("agentaudit")

# Seconds between checkpoints unless configured: the window in which a rewrite of
# the database is not yet fixed by a checkpoint held elsewhere.
DEFAULT_INTERVAL = 60.0
SIGNING_KEY_ENV = "AGENTAUDIT_SIGNING_KEY"
SINK_ENV = "AGENTAUDIT_CHECKPOINT_SINK"
INTERVAL_ENV = "AGENTAUDIT_CHECKPOINT_INTERVAL"
ENTRY_KINDS = ("sealed", "head", "purged")
_ENTRY_PREFIX = b"agentaudit checkpoint entry v1\n"
_DIGEST_PREFIX = b"agentaudit content v1\n"
_RECORD_VERSION = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# A note's key name: printable, no whitespace, no '+' (C2SP signed-note).
_KEY_NAME = re.compile(r"^[!-*,-~]+$")
_ED25519_TYPE = b"\x01"
# Signed-note's escape for a type without an assigned byte, then our identifier.
_HMAC_TYPE = b"\xffagentaudit-hmac-sha256"


# -- the digest of a run's stored content --------------------------------------------


def _stable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, Mapping):
        return {str(k): _stable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stable(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    return json.dumps(
        _stable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
    )


# The columns of a run's row fixed when it starts: what a running run's head covers
# (the rest changes when it ends).
HEADER_COLUMNS = (
    "run_id", "name", "caller", "parent_run_id", "started_at", "input", "metadata", "host", "pid",
    "key_id", "salt",
)


def run_header(run: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a run's row that is fixed when it starts."""
    return {name: run[name] for name in HEADER_COLUMNS if name in run}


def content_digest(run: Mapping[str, Any] | None, events: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 (hex) over a run's row and its events, every column as stored (a
    column added later is covered too). A running run's head digests its
    `run_header` and its events so far."""
    digest = hashlib.sha256(_DIGEST_PREFIX)
    digest.update(_dumps(run).encode("utf-8", "surrogatepass") + b"\n")
    for event in events:
        digest.update(_dumps(event).encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


# -- entries: the leaves ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One leaf of the checkpoint log (see the module docstring)."""

    kind: str
    run_id: str
    events: int
    seal: str
    digest: str

    def __post_init__(self) -> None:
        if self.kind not in ENTRY_KINDS:
            raise CheckpointError(f"an entry's kind is one of {', '.join(ENTRY_KINDS)}, got {self.kind!r}")
        if not isinstance(self.run_id, str) or not self.run_id:
            raise CheckpointError(f"an entry needs a run id, got {self.run_id!r}")
        if isinstance(self.events, bool) or not isinstance(self.events, int) or self.events < 0:
            raise CheckpointError(f"an entry's event count is an int >= 0, got {self.events!r}")
        if not isinstance(self.seal, str):
            raise CheckpointError(f"an entry's seal is text, got {type(self.seal).__name__}")
        if not isinstance(self.digest, str) or not _HEX64.match(self.digest):
            raise CheckpointError(f"an entry's digest is 64 hex digits, got {self.digest!r:.80}")

    def to_json(self) -> list[Any]:
        return [self.kind, self.run_id, self.events, self.seal, self.digest]

    @classmethod
    def from_json(cls, value: Any) -> Entry:
        if not isinstance(value, list) or len(value) != 5:
            raise CheckpointError(f"an entry is [kind, run_id, events, seal, digest], got {value!r:.120}")
        return cls(*value)

    def leaf(self) -> bytes:
        """The entry's leaf hash."""
        text = json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)
        return leaf_hash(_ENTRY_PREFIX + text.encode("utf-8", "surrogatepass"))


# -- the note -------------------------------------------------------------------------


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise CheckpointError(f"{what} is not base64: {text!r:.80}") from None


@dataclass(frozen=True, slots=True)
class CheckpointBody:
    """The signed text of a checkpoint: a C2SP tlog-checkpoint note body."""

    origin: str
    size: int
    root: bytes
    seq: int
    prev: str  # SHA-256 (hex) of the previous checkpoint's body; "" for the first
    time: str  # UTC, ISO 8601

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not _KEY_NAME.match(self.origin):
            raise CheckpointError(
                f"a checkpoint origin is printable text without spaces or '+', got {self.origin!r}"
            )
        for name in ("size", "seq"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CheckpointError(f"a checkpoint's {name} is an int >= 0, got {value!r}")
        if not isinstance(self.root, bytes) or len(self.root) != 32:
            raise CheckpointError("a checkpoint root is 32 bytes")
        if self.prev and not _HEX64.match(self.prev):
            raise CheckpointError(f"a checkpoint's previous hash is 64 hex digits, got {self.prev!r:.80}")
        try:
            datetime.fromisoformat(self.time)
        except (TypeError, ValueError):
            raise CheckpointError(f"a checkpoint's time is ISO 8601, got {self.time!r:.80}") from None

    def text(self) -> str:
        return (
            f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"
            f"agentaudit-checkpoint {self.seq}\nprev {self.prev or '-'}\ntime {self.time}\n"
        )

    @property
    def hash(self) -> str:
        """SHA-256 (hex) of the note text: what the next checkpoint chains to."""
        return hashlib.sha256(self.text().encode("utf-8")).hexdigest()

    @classmethod
    def parse(cls, text: str) -> CheckpointBody:
        lines = text.split("\n")
        if len(lines) != 7 or lines[-1] != "":
            raise CheckpointError("a checkpoint body has six lines, each ending in a newline")
        origin, size, root, seq, prev, time = lines[:6]
        if not re.fullmatch(r"0|[1-9][0-9]*", size):
            raise CheckpointError(f"a checkpoint's tree size is a decimal number, got {size!r:.40}")
        seq_match = re.fullmatch(r"agentaudit-checkpoint (0|[1-9][0-9]*)", seq)
        prev_match = re.fullmatch(r"prev (-|[0-9a-f]{64})", prev)
        if not seq_match or not prev_match or not time.startswith("time "):
            raise CheckpointError("a checkpoint's extension lines are not agentaudit's")
        body = cls(
            origin, int(size), _b64decode(root, "the root"), int(seq_match.group(1)),
            "" if prev_match.group(1) == "-" else prev_match.group(1), time[5:],
        )
        if body.text() != text:
            raise CheckpointError("a checkpoint body is not in its one canonical form")
        return body


class Signer(Protocol):
    name: str

    def key_hash(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


class Verifier(Protocol):
    name: str

    def key_hash(self) -> bytes: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


def _cryptography() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise CheckpointError(
            "Ed25519 signatures need the 'cryptography' package: pip install 'agentaudit[signing]'"
        ) from None
    return ed25519


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _KEY_NAME.match(name):
        raise CheckpointError(f"a key name is printable text without spaces or '+', got {name!r}")
    return name


def _ed25519_key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519_TYPE + public).digest()[:4]


class Ed25519Verifier:
    """A public key that checks checkpoint signatures (signed-note type 0x01)."""

    def __init__(self, name: str, public: bytes) -> None:
        self.name = _check_name(name)
        if not isinstance(public, bytes) or len(public) != 32:
            raise CheckpointError("an Ed25519 public key is 32 bytes")
        self.public = public

    def key_hash(self) -> bytes:
        return _ed25519_key_hash(self.name, self.public)

    @property
    def vkey(self) -> str:
        """The key as signed-note verifier text: ``name+hash+base64(0x01 || key)``."""
        return f"{self.name}+{self.key_hash().hex()}+{base64.b64encode(_ED25519_TYPE + self.public).decode()}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        ed25519 = _cryptography()
        from cryptography.exceptions import InvalidSignature

        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class Ed25519Signer:
    """A private key that signs checkpoints and bundles."""

    def __init__(self, name: str, private_key: Any) -> None:
        ed25519 = _cryptography()
        if not isinstance(private_key, ed25519.Ed25519PrivateKey):
            raise CheckpointError(f"an Ed25519 private key is needed, got {type(private_key).__name__}")
        from cryptography.hazmat.primitives import serialization

        self.name = _check_name(name)
        self._key = private_key
        public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.verifier = Ed25519Verifier(name, public)

    def __repr__(self) -> str:
        return f"Ed25519Signer({self.verifier.vkey!r})"

    def key_hash(self) -> bytes:
        return self.verifier.key_hash()

    def sign(self, message: bytes) -> bytes:
        return bytes(self._key.sign(message))


class HmacVerifier:
    """An HMAC-SHA256 key (the chain key) that checks checkpoint signatures. It
    can also forge them: it proves only to those who hold it."""

    def __init__(self, name: str, secret: bytes, key_id: str) -> None:
        self.name = _check_name(name)
        if not isinstance(secret, bytes) or not secret:
            raise CheckpointError("an HMAC key is non-empty bytes")
        self._secret = secret
        self.key_id = key_id

    def __repr__(self) -> str:
        return f"HmacVerifier({self.name!r}, key_id={self.key_id!r})"

    def key_hash(self) -> bytes:
        return hashlib.sha256(self.name.encode() + b"\n" + _HMAC_TYPE + self.key_id.encode()).digest()[:4]

    def sign(self, message: bytes) -> bytes:
        return _hmac.digest(self._secret, b"agentaudit checkpoint hmac v1\n" + message, "sha256")

    def verify(self, message: bytes, signature: bytes) -> bool:
        return _hmac.compare_digest(self.sign(message), signature)


HmacSigner = HmacVerifier


def _chain_key(key: Any) -> tuple[bytes, str]:
    """(secret, key id) of a chain key: an `agentaudit._keys.ChainKey`, a Keyring
    (its signing key), or the secret itself."""
    from ._keys import ChainKey, Keyring

    if isinstance(key, Keyring):
        key = key.signing
    if not isinstance(key, ChainKey):
        try:
            key = ChainKey(key)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"bad HMAC key for checkpoints: {exc}") from None
    return key.secret, key.key_id


def hmac_verifiers(name: str, keys: Any) -> list[HmacVerifier]:
    """One verifier per key of a keyring (or for one key)."""
    from ._keys import Keyring

    if isinstance(keys, Keyring):
        return [HmacVerifier(name, keys[key_id].secret, key_id) for key_id in keys]
    secret, key_id = _chain_key(keys)
    return [HmacVerifier(name, secret, key_id)]


def load_signing_key(path: str | os.PathLike[str], name: str = "agentaudit") -> Ed25519Signer:
    """The Ed25519 private key in a PEM (PKCS#8, unencrypted) file."""
    _cryptography()
    from cryptography.hazmat.primitives import serialization

    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise CheckpointError(f"cannot read the signing key {os.fspath(path)!r}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{os.fspath(path)!r} is not an unencrypted PEM private key: {exc}") from None
    return Ed25519Signer(name, key)


def generate_signing_key(path: str | os.PathLike[str], name: str = "agentaudit") -> Ed25519Verifier:
    """Create a new Ed25519 private key in ``path`` (PEM, readable by its owner only;
    refuses to overwrite) and return its public key (give ``.vkey`` to verifiers)."""
    ed25519 = _cryptography()
    from cryptography.hazmat.primitives import serialization

    _check_name(name)
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CheckpointError(f"{os.fspath(path)!r} exists already; not overwriting a key") from None
    except OSError as exc:
        raise CheckpointError(f"cannot create {os.fspath(path)!r}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return Ed25519Signer(name, key).verifier


def load_public_key(value: str | os.PathLike[str]) -> Ed25519Verifier:
    """A public key from signed-note verifier text (``name+hash+base64``), or from a
    file holding that text or a PEM public key (the name is then ``agentaudit``)."""
    text = os.fspath(value)
    if not re.fullmatch(r"[^+\s]+\+[0-9a-f]{8}\+[A-Za-z0-9+/=]+", text.strip()) and os.path.exists(text):
        try:
            with open(text, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise CheckpointError(f"cannot read the public key {text!r}: {exc.strerror}") from None
        if data.lstrip().startswith(b"-----BEGIN"):
            _cryptography()
            from cryptography.hazmat.primitives import serialization

            try:
                key = serialization.load_pem_public_key(data)
                raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            except (ValueError, TypeError) as exc:
                raise CheckpointError(f"{text!r} is not an Ed25519 public key: {exc}") from None
            return Ed25519Verifier("agentaudit", raw)
        text = data.decode("utf-8", "replace")
    parts = text.strip().split("+", 2)  # base64 may hold "+" too
    if len(parts) != 3:
        raise CheckpointError(
            "a public key is 'name+hash+base64' (as `agentaudit signing-key` prints it) or a file "
            f"holding one; got {text.strip()!r:.80}"
        )
    name, hash_hex, material = parts
    raw = _b64decode(material, "the public key")
    if len(raw) != 33 or raw[:1] != _ED25519_TYPE:
        raise CheckpointError("the public key is not an Ed25519 signed-note key")
    verifier = Ed25519Verifier(name, raw[1:])
    if verifier.key_hash().hex() != hash_hex:
        raise CheckpointError("the public key's hash does not match its name and key")
    return verifier


def sign_note(text: str, signers: Sequence[Signer]) -> str:
    """``text`` as a signed note: the text, a blank line, one line per signature."""
    if not text.endswith("\n"):
        raise CheckpointError("a note's text ends in a newline")
    lines = [
        f"— {s.name} {base64.b64encode(s.key_hash() + s.sign(text.encode('utf-8'))).decode()}\n"
        for s in signers
    ]
    return text + "\n" + "".join(lines)


def split_note(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """(text, [(name, key hash, signature)]) of a signed note."""
    if not isinstance(note, str) or "\n\n" not in note:
        raise CheckpointError("a signed note has its text, a blank line, then signature lines")
    text, _, rest = note.partition("\n\n")
    text += "\n"
    signatures = []
    for line in rest.split("\n"):
        if not line:
            continue
        match = re.fullmatch(r"— (\S+) ([A-Za-z0-9+/=]+)", line)
        if not match:
            raise CheckpointError(f"not a signature line: {line!r:.80}")
        raw = _b64decode(match.group(2), "a signature")
        if len(raw) < 5:
            raise CheckpointError("a signature is too short")
        signatures.append((match.group(1), raw[:4], raw[4:]))
    return text, signatures


def verify_note(note: str, verifiers: Sequence[Verifier]) -> tuple[str, list[str]]:
    """The note's text and the names of the verifiers whose signature on it holds.
    Raises CheckpointError when it is malformed or none of them signed it."""
    text, signatures = split_note(note)
    good = []
    for verifier in verifiers:
        key_hash = verifier.key_hash()
        for name, found_hash, signature in signatures:
            if name == verifier.name and found_hash == key_hash and verifier.verify(text.encode("utf-8"), signature):
                good.append(verifier.name)
                break
    if verifiers and not good:
        raise CheckpointError("no signature on it is by a given key")
    return text, good


# -- checkpoints ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One checkpoint: its signed note and the entries it added to the log."""

    note: str
    first: int  # log index of its first entry
    entries: tuple[Entry, ...] = ()

    @property
    def body(self) -> CheckpointBody:
        return CheckpointBody.parse(split_note(self.note)[0])

    @property
    def seq(self) -> int:
        return self.body.seq

    def record(self) -> str:
        """The checkpoint as one JSON line (no newline), as sinks write it."""
        return json.dumps(
            {"v": _RECORD_VERSION, "seq": self.seq, "first": self.first, "note": self.note,
             "entries": [e.to_json() for e in self.entries]},
            ensure_ascii=False, separators=(",", ":"),
        )

    @classmethod
    def from_record(cls, line: str) -> Checkpoint:
        try:
            data = json.loads(line)
        except ValueError:
            raise CheckpointError(f"not a JSON checkpoint record: {line!r:.80}") from None
        if not isinstance(data, dict) or data.get("v") != _RECORD_VERSION:
            raise CheckpointError(f"not an agentaudit checkpoint record (v{_RECORD_VERSION})")
        note, first, entries = data.get("note"), data.get("first"), data.get("entries")
        if not isinstance(note, str) or not isinstance(first, int) or not isinstance(entries, list):
            raise CheckpointError("a checkpoint record has note, first and entries")
        made = cls(note, first, tuple(Entry.from_json(e) for e in entries))
        if made.body.seq != data.get("seq") or made.body.size != first + len(entries):
            raise CheckpointError(f"checkpoint record {data.get('seq')!r} does not match its note")
        return made


def make_checkpoint(
    *,
    origin: str,
    seq: int,
    prev: str,
    frontier: CompactRange,
    entries: Sequence[Entry],
    signers: Sequence[Signer],
    now: datetime | None = None,
) -> Checkpoint:
    """The checkpoint after ``seq - 1`` (whose body hashes to ``prev``) that adds
    ``entries`` to the log whose right edge is ``frontier`` (advanced in place)."""
    first = frontier.size
    for entry in entries:
        frontier.append(entry.leaf())
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    body = CheckpointBody(
        origin, frontier.size, frontier.root(), seq, prev, moment.isoformat(timespec="microseconds")
    )
    return Checkpoint(sign_note(body.text(), signers), first, tuple(entries))


# -- sinks ----------------------------------------------------------------------------


class FileSink:
    """Appends each checkpoint as one JSON line to a file (created readable by its
    owner only) and fsyncs it before returning. Put it on another volume, or a
    mount the database's administrator cannot write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            raise CheckpointError(f"cannot write checkpoints to {self.path}: {parent} is not a directory")

    def __repr__(self) -> str:
        return f"FileSink({self.path!r})"

    def __call__(self, checkpoint: Checkpoint) -> None:
        line = (checkpoint.record() + "\n").encode("utf-8", "surrogatepass")
        created = not os.path.exists(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # One write: concurrent appenders (several processes) never interleave.
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write to {self.path}")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            dir_fd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def read_checkpoint_file(path: str | os.PathLike[str]) -> tuple[list[Checkpoint], list[str]]:
    """The checkpoints in a sink file, ordered by number (repeats, as several
    processes may write one, collapsed), and the problems of lines that did not
    parse (a torn last line after a crash, an edit)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.read().split("\n")
    except OSError as exc:
        raise CheckpointError(f"cannot read the checkpoint file {os.fspath(path)!r}: {exc.strerror}") from None
    found: dict[int, Checkpoint] = {}
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            checkpoint = Checkpoint.from_record(line)
        except CheckpointError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        earlier = found.get(checkpoint.seq)
        if earlier is not None and earlier != checkpoint:
            problems.append(f"line {number}: a second, different checkpoint {checkpoint.seq}")
            continue
        found[checkpoint.seq] = checkpoint
    return [found[seq] for seq in sorted(found)], problems


Sink = Callable[[Checkpoint], None]


# -- the policy --------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointPolicy:
    """When and how a store makes checkpoints.

    ``interval``: seconds between checkpoints (default 60; 0 makes them only at
    close and on demand); ``at_close``: one more when the store closes.
    ``signing_key``: an Ed25519 private key (an `Ed25519Signer`, or the path of a
    PEM file, see `generate_signing_key`); ``hmac_key``: sign with the chain key
    too (a `Keyring`, a `ChainKey` or the secret); at least one of them makes the
    checkpoints worth more than their hashes. ``sink``: where each checkpoint also
    goes: a file path (appended, fsynced) or a callable taking the `Checkpoint`.
    ``origin``: the log's name in the notes (and the key name)."""

    interval: float = DEFAULT_INTERVAL
    at_close: bool = True
    signing_key: Any = None
    hmac_key: Any = None
    sink: Any = None
    origin: str = "agentaudit"
    signers: tuple[Signer, ...] = field(init=False, repr=False, default=())
    write_sink: Sink | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        interval = self.interval
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise TypeError(f"interval must be a number of seconds, got {type(interval).__name__}")
        if not 0 <= interval <= 86400:
            raise ValueError(f"interval must be between 0 and 86400 seconds, got {interval!r}")
        _check_name(self.origin)
        signers: list[Signer] = []
        key = self.signing_key
        if isinstance(key, Ed25519Signer):
            signers.append(key if key.name == self.origin else Ed25519Signer(self.origin, key._key))
        elif key is not None:
            if not isinstance(key, (str, os.PathLike)):
                raise TypeError(f"signing_key is an Ed25519Signer or a PEM file's path, got {type(key).__name__}")
            signers.append(load_signing_key(key, self.origin))
        if self.hmac_key is not None:
            secret, key_id = _chain_key(self.hmac_key)
            signers.append(HmacSigner(self.origin, secret, key_id))
        sink: Sink | None
        if self.sink is None:
            sink = None
        elif isinstance(self.sink, (str, os.PathLike)):
            sink = FileSink(self.sink)
        elif callable(self.sink):
            sink = self.sink
        else:
            raise TypeError(f"sink is a file path or a callable, got {type(self.sink).__name__}")
        object.__setattr__(self, "interval", float(interval))
        object.__setattr__(self, "signers", tuple(signers))
        object.__setattr__(self, "write_sink", sink)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> CheckpointPolicy | None:
        """The policy the environment asks for: ``AGENTAUDIT_SIGNING_KEY`` (a PEM
        file), ``AGENTAUDIT_CHECKPOINT_SINK`` (a file), ``AGENTAUDIT_CHECKPOINT_INTERVAL``
        (seconds), and the chain key (``AGENTAUDIT_KEY`` / ``AGENTAUDIT_KEY_FILE``) to
        sign with HMAC too; None when neither a signing key nor a sink is set."""
        from ._keys import keyring_from

        env = os.environ if environ is None else environ
        key, sink = env.get(SIGNING_KEY_ENV) or None, env.get(SINK_ENV) or None
        if key is None and sink is None:
            return None
        interval = env.get(INTERVAL_ENV)
        try:
            seconds = float(interval) if interval else DEFAULT_INTERVAL
        except ValueError:
            raise ValueError(f"{INTERVAL_ENV} is a number of seconds, got {interval!r}") from None
        return cls(interval=seconds, signing_key=key, sink=sink, hmac_key=keyring_from(None, environ=env))


# -- verification of a checkpoint log -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing verification found. ``problem`` False: a fact, not a fault (a
    purged run, say)."""

    kind: str
    detail: str
    run_id: str | None = None
    checkpoint: int | None = None
    problem: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, "run_id": self.run_id,
                "checkpoint": self.checkpoint, "problem": self.problem}


def verify_chain(
    checkpoints: Sequence[Checkpoint], verifiers: Sequence[Verifier], *, where: str = "the checkpoints"
) -> tuple[list[Entry], list[Finding]]:
    """Check a run of checkpoints from number 1: numbering, each one's link to the
    previous, its signature by one of ``verifiers``, and its root over every entry
    so far. Returns the log's entries (up to the last checkpoint that holds) and
    what was wrong. Never raises on malformed input."""
    findings: list[Finding] = []
    entries: list[Entry] = []
    leaves: list[bytes] = []
    prev = ""
    expected = 1
    for checkpoint in checkpoints:
        try:
            text, _signed_by = verify_note(checkpoint.note, verifiers)
            body = CheckpointBody.parse(text)
        except CheckpointError as exc:
            seq = _seq_of(checkpoint)
            findings.append(Finding("signature", f"checkpoint {seq if seq is not None else '?'} in "
                                    f"{where} does not verify: {exc}", checkpoint=seq))
            break
        if body.seq != expected:
            findings.append(Finding(
                "checkpoint-missing", f"{where} go from checkpoint {expected - 1} to {body.seq}",
                checkpoint=expected,
            ))
            break
        if body.prev != prev:
            findings.append(Finding("chain", f"checkpoint {body.seq} does not chain to checkpoint "
                                    f"{body.seq - 1}", checkpoint=body.seq))
            break
        if checkpoint.first != len(entries) or body.size != len(entries) + len(checkpoint.entries):
            findings.append(Finding("root", f"checkpoint {body.seq}'s entries do not fill its tree",
                                    checkpoint=body.seq))
            break
        leaves.extend(e.leaf() for e in checkpoint.entries)
        if tree_root(leaves) != body.root:
            findings.append(Finding("root", f"checkpoint {body.seq}'s entries do not hash to its "
                                    "signed root", checkpoint=body.seq))
            break
        entries.extend(checkpoint.entries)
        prev = body.hash
        expected += 1
    return entries, findings


def _seq_of(checkpoint: Checkpoint) -> int | None:
    try:
        return checkpoint.seq
    except CheckpointError:
        return None




# -- inclusion proofs ---------------------------------------------------------------------

PROOF_FORMAT = "agentaudit-inclusion-proof/1"


@dataclass(frozen=True, slots=True)
class ProvenEntry:
    """What a valid inclusion proof shows: ``entry`` is leaf ``index`` of the log
    that checkpoint ``body`` signed, by the keys named in ``signed_by``."""

    entry: Entry
    index: int
    body: CheckpointBody
    signed_by: tuple[str, ...]


def verify_proof(proof: Mapping[str, Any] | str, verifiers: Sequence[Verifier]) -> ProvenEntry:
    """Check an inclusion proof (as `SQLiteStore.prove` makes it, or its JSON
    text) with nothing but the keys: the checkpoint's signature by one of
    ``verifiers``, and the entry's audit path to its signed root. Raises
    `CheckpointError` saying what does not hold."""
    if isinstance(proof, str):
        try:
            proof = json.loads(proof)
        except ValueError:
            raise CheckpointError("the proof is not JSON") from None
    if not isinstance(proof, Mapping) or proof.get("format") != PROOF_FORMAT:
        raise CheckpointError(f"not an agentaudit inclusion proof ({PROOF_FORMAT})")
    if not verifiers:
        raise CheckpointError("checking a proof needs the public key (or the HMAC key) of the log")
    note, index, size, path = (proof.get(k) for k in ("checkpoint", "index", "tree_size", "path"))
    if not isinstance(note, str) or not isinstance(path, list) or not all(isinstance(p, str) for p in path):
        raise CheckpointError("the proof lacks its checkpoint or its path")
    text, signed_by = verify_note(note, verifiers)
    body = CheckpointBody.parse(text)
    entry = Entry.from_json(proof.get("entry"))
    if entry.run_id != proof.get("run_id"):
        raise CheckpointError("the proof's entry is of another run")
    if size != body.size:
        raise CheckpointError(f"the proof is for a tree of {size!r} entries, the checkpoint has {body.size}")
    try:
        nodes = [bytes.fromhex(p) for p in path]
    except ValueError:
        raise CheckpointError("the proof's path is not hex") from None
    if not isinstance(index, int) or not verify_inclusion(entry.leaf(), index, body.size, nodes, body.root):
        raise CheckpointError(
            f"the entry of run {entry.run_id} is not in checkpoint {body.seq}: its audit path does not "
            "lead to the signed root"
        )
    return ProvenEntry(entry, index, body, tuple(signed_by))
