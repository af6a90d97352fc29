"""Run ids as people read and type them: short where that is enough, and a prefix
typed with or without dashes, in any case.

Ids are often UUIDs, and UUIDv7 (what langchain-core 1.x gives) starts with the time
in milliseconds: every run of the same hour shares its first 8 characters. So a run
is shown by the shortest prefix of its id that no other stored id shares, and never
fewer than `MIN_SHOWN` characters (like git's abbreviated hashes): runs of the same
hour get longer prefixes, runs far apart stay at 8. A typed prefix is looked up as
typed first; when nothing matches and it is made of hex digits and dashes, it is
looked up again in lower and upper case, dashed as a UUID is (8-4-4-4-12) and
undashed (32 hex digits, as ``uuid.hex`` writes them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["MAX_CANDIDATES", "MIN_SHOWN", "ambiguous", "prefix_forms", "short_id", "upper_bound"]

MIN_SHOWN = 8  # characters of an id shown at least
_WHOLE = 12  # ids this short are shown whole
_HEX_AND_DASHES = re.compile(r"[0-9A-Fa-f-]+")
_UUID_DASHES = (8, 12, 16, 20)  # where a UUID's dashes go, counted in hex digits
MAX_CANDIDATES = 10  # ids an ambiguity message names


def prefix_forms(prefix: str) -> list[str]:
    """Every stored form ``prefix`` may stand for, the typed one first."""
    typed = prefix.strip()
    forms = [typed]
    if _HEX_AND_DASHES.fullmatch(typed):
        digits = typed.replace("-", "")
        for case in (digits.lower(), digits.upper()):
            forms.extend((_dashed(case), case))
    return list(dict.fromkeys(form for form in forms if form))


def _dashed(digits: str) -> str:
    parts = []
    start = 0
    for stop in _UUID_DASHES:
        if len(digits) <= stop:
            break
        parts.append(digits[start:stop])
        start = stop
    parts.append(digits[start:])
    return "-".join(parts)


def upper_bound(prefix: str) -> str:
    """The least string above every string that starts with ``prefix`` (for an
    indexed range scan ``run_id >= prefix AND run_id < upper_bound(prefix)``)."""
    return prefix + "\U0010ffff"


def short_id(run_id: str, neighbours: Sequence[str | None]) -> str:
    """The shortest prefix of ``run_id`` that none of its sorted ``neighbours`` (the
    stored ids just before and after it) starts with; at least `MIN_SHOWN`
    characters, never ending on a dash, and the whole id when little would be left."""
    if len(run_id) <= _WHOLE:
        return run_id
    shared = max((_common_length(run_id, other) for other in neighbours if other), default=0)
    length = max(MIN_SHOWN, shared + 1)
    while length < len(run_id) and run_id[length - 1] == "-":
        length += 1
    return run_id if length >= len(run_id) - 2 else run_id[:length]


def _common_length(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def ambiguous(prefix: str, candidates: Sequence[tuple[str, str]], more: bool) -> str:
    """The message for a prefix several runs share: each candidate's id and name."""
    shown = ", ".join(f"{run_id} ({name})" for run_id, name in candidates[:MAX_CANDIDATES])
    tail = ", …" if more or len(candidates) > MAX_CANDIDATES else ""
    return f"run id prefix {prefix!r} is ambiguous; it matches {shown}{tail}"
