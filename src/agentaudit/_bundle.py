"""Offline bundles: runs, their events and the proof of them, checkable with a file.

Why: an auditor, a regulator or a court gets one file and a public key, not the
database. A bundle holds the selected runs and every one of their events (every
column as stored), the signed checkpoint that covers them, an inclusion proof per
run, and a manifest with the SHA-256 of every part, itself signed. `verify_bundle`
checks all of it with no database and nothing but the public key.

The format (``agentaudit-bundle/1``) is a ZIP file whose members are, in this order:

- ``manifest.json``: format, creation time, origin, the filter used, the number of
  runs, and for every other part its size and SHA-256 (hex);
- ``manifest.sig``: a signed note whose text is ``agentaudit-bundle/1``, then the
  SHA-256 of ``manifest.json``, one per line; signed like checkpoints;
- ``runs.jsonl``: one JSON object per run: its row, every column as stored;
- ``events.jsonl``: one JSON object per event, every column as stored, in order;
- ``checkpoints.jsonl``: the signed checkpoint notes the proofs lead to;
- ``proofs.jsonl``: one inclusion proof per run (see ``agentaudit prove``).

Members are stored uncompressed with a fixed time and mode, so the file is a
function of its parts: verification rebuilds it from them and compares it byte for
byte, and a change to any byte of the file (a header included) is caught.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ._checkpoints import (
    CheckpointBody,
    Finding,
    Signer,
    Verifier,
    _stable,
    content_digest,
    run_header,
    sign_note,
    split_note,
    verify_note,
    verify_proof,
)
from ._errors import CheckpointError

__all__ = ["BUNDLE_FORMAT", "BundleReport", "build_bundle", "verify_bundle"]

BUNDLE_FORMAT = "agentaudit-bundle/1"
PARTS = ("runs.jsonl", "events.jsonl", "checkpoints.jsonl", "proofs.jsonl")
_MEMBERS = ("manifest.json", "manifest.sig", *PARTS)
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def _jsonl(records: Sequence[Any]) -> bytes:
    return b"".join(
        json.dumps(_stable(r), ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogatepass")
        + b"\n"
        for r in records
    )


def _zip(members: Sequence[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.external_attr = 0o600 << 16
            info.create_system = 3
            archive.writestr(info, data)
    return out.getvalue()


def build_bundle(
    runs: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]],
    proofs: Mapping[str, Mapping[str, Any]],
    signers: Sequence[Signer],
    *,
    origin: str,
    selection: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> bytes:
    """The bundle's bytes for ``runs`` (each its row and its events, as stored)
    with their ``proofs`` (by run id), signed by ``signers``."""
    if not signers:
        raise CheckpointError("a bundle is signed: give a signing key")
    notes = sorted({str(p["checkpoint"]) for p in proofs.values()},
                   key=lambda n: CheckpointBody.parse(split_note(n)[0]).seq)
    parts = {
        "runs.jsonl": _jsonl([dict(row) for row, _ in runs]),
        "events.jsonl": _jsonl([dict(e) for _, events in runs for e in events]),
        "checkpoints.jsonl": _jsonl([{"note": n} for n in notes]),
        "proofs.jsonl": _jsonl([proofs[str(row["run_id"])] for row, _ in runs if str(row["run_id"]) in proofs]),
    }
    manifest = {
        "format": BUNDLE_FORMAT,
        "created_at": (now or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(timespec="seconds"),
        "origin": origin,
        "selection": dict(selection or {}),
        "runs": len(runs),
        "events": sum(len(events) for _, events in runs),
        "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                  for name, data in parts.items()},
    }
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    signature = sign_note(f"{BUNDLE_FORMAT}\n{hashlib.sha256(manifest_bytes).hexdigest()}\n", signers)
    return _zip([("manifest.json", manifest_bytes), ("manifest.sig", signature.encode("utf-8")),
                 *((name, parts[name]) for name in PARTS)])


def write_bundle(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` (created readable by its owner only), fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


@dataclass(frozen=True)
class BundleReport:
    """What `verify_bundle` found: ``ok`` when the bundle is whole, signed by a
    given key, and every run in it matches what a signed checkpoint took."""

    runs: int
    events: int
    findings: tuple[Finding, ...]
    manifest: Mapping[str, Any]
    signed_by: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(f.problem for f in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.problem]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "runs": self.runs, "events": self.events, "signed_by": list(self.signed_by),
                "findings": [f.to_json() for f in self.findings]}


def _fail(detail: str, kind: str = "bundle") -> BundleReport:
    return BundleReport(0, 0, (Finding(kind, detail),), {})


def _lines(data: bytes, what: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(data.decode("utf-8", "surrogateescape").split("\n"), start=1):
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise CheckpointError(f"{what} line {number} is not JSON") from None
        if not isinstance(record, dict):
            raise CheckpointError(f"{what} line {number} is not an object")
        records.append(record)
    return records


def verify_bundle(source: str | os.PathLike[str] | bytes, verifiers: Sequence[Verifier]) -> BundleReport:
    """Check a bundle with nothing but ``verifiers`` (the public key): its bytes,
    its signed manifest, the hash of every part, each run's inclusion proof in a
    signed checkpoint, and each run's row and events against what that checkpoint
    took. Never raises on a malformed file: every problem is a finding."""
    if not verifiers:
        raise CheckpointError("checking a bundle needs the public key that signed it")
    try:
        if isinstance(source, bytes):
            data = source
        else:
            with open(source, "rb") as handle:
                data = handle.read()
    except OSError as exc:
        raise CheckpointError(f"cannot read the bundle {os.fspath(source)!r}: {exc.strerror}") from None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if tuple(names) != _MEMBERS:
                return _fail(f"the bundle's members are {names[:8]}, not {list(_MEMBERS)}")
            members = {name: archive.read(name) for name in names}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, KeyError, EOFError) as exc:
        return _fail(f"not a readable bundle: {exc}")
    except RuntimeError as exc:  # an encrypted member, say
        return _fail(f"not a readable bundle: {exc}")
    if _zip([(name, members[name]) for name in _MEMBERS]) != data:
        return _fail("the bundle file was altered: it is not the file its parts make")
    try:
        text, signed_by = verify_note(members["manifest.sig"].decode("utf-8"), verifiers)
    except (CheckpointError, UnicodeDecodeError) as exc:
        return _fail(f"the manifest's signature does not verify: {exc}", "signature")
    if text != f"{BUNDLE_FORMAT}\n{hashlib.sha256(members['manifest.json']).hexdigest()}\n":
        return _fail("the manifest is not the one that was signed", "signature")
    try:
        manifest = json.loads(members["manifest.json"])
        files = manifest["files"]
        for name in PARTS:
            part = members[name]
            if files[name] != {"bytes": len(part), "sha256": hashlib.sha256(part).hexdigest()}:
                return _fail(f"{name} does not match its SHA-256 in the manifest")
        runs = _lines(members["runs.jsonl"], "runs.jsonl")
        events = _lines(members["events.jsonl"], "events.jsonl")
        proofs = {str(p.get("run_id")): p for p in _lines(members["proofs.jsonl"], "proofs.jsonl")}
    except (ValueError, KeyError, TypeError, CheckpointError) as exc:
        return _fail(f"the bundle's parts are malformed: {exc}")
    by_run: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_run.setdefault(str(event.get("run_id")), []).append(event)
    findings: list[Finding] = []
    for row in runs:
        run_id = str(row.get("run_id"))
        proof = proofs.get(run_id)
        if proof is None:
            findings.append(Finding("unproven", f"run {run_id} has no proof in the bundle", run_id))
            continue
        try:
            proven = verify_proof(proof, verifiers)
        except CheckpointError as exc:
            findings.append(Finding("proof", f"run {run_id}'s proof does not verify: {exc}", run_id))
            continue
        entry, its_events = proven.entry, by_run.get(run_id, [])
        if entry.kind == "sealed":
            same = content_digest(row, its_events) == entry.digest
        else:
            same = len(its_events) >= entry.events and (
                content_digest(run_header(row), its_events[: entry.events]) == entry.digest
            )
            if same and len(its_events) > entry.events:
                findings.append(Finding(
                    "uncovered", f"run {run_id} was running at checkpoint {proven.body.seq}: its "
                    f"{len(its_events) - entry.events} later events are not covered", run_id,
                    proven.body.seq, problem=False,
                ))
        if not same:
            findings.append(Finding("edited", f"run {run_id} differs from what checkpoint "
                                    f"{proven.body.seq} signed", run_id, proven.body.seq))
    if len(runs) != manifest.get("runs") or len(events) != manifest.get("events"):
        findings.append(Finding("bundle", "the manifest's counts do not match the parts"))
    return BundleReport(len(runs), len(events), tuple(findings), manifest, tuple(signed_by))
