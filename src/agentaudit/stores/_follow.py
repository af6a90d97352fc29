"""Following a store's events live (``agentaudit tail -f``) without missing a late commit.

Events carry a position (``events.id``) that only grows. On SQLite one writer at a
time commits, so positions become visible in order and "everything after the last
position shown" is enough. On a server they come from a sequence (PostgreSQL) or an
auto-increment counter (MariaDB) handed out at insert time, while transactions
commit in any order: a transaction that inserted position 10 and commits after the
one that inserted 11 becomes visible *behind* a position already shown.

So the `Follower` remembers the holes: positions at or below the last one shown that
held no event when it looked (ranges, each with the moment it was first seen). Each
poll asks the store, over every run and type, which positions are there above the
cursor and inside the holes; a hole that fills is a late commit, shown once (a
position is shown only the first time it is seen, and never becomes a hole again).
Holes also come from positions that will never hold an event (a rolled-back
transaction, a conflicting "insert unless present"), so each is kept for `late`
seconds, and at most `MAX_HOLES` ranges are kept (the oldest go first). When it
starts, the follower takes the holes among the last `LOOK_BACK` positions too: a
transaction already open then is shown when it commits. It takes its place before
the recent events are printed (``tail -n``), and is told which of those it must not
show again (`Follower.seen`).

What it cannot see: a transaction that commits more than `late` seconds after its
hole was first seen, or one whose hole was pushed out by `MAX_HOLES` newer ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._model import Event

__all__ = ["LATE", "LOOK_BACK", "MAX_HOLES", "Follower"]

LATE = 600.0  # seconds a hole is watched for a late commit
LOOK_BACK = 1000  # positions below the start searched for holes
MAX_HOLES = 500  # hole ranges watched at once (one query's worth)
BATCH = 1000  # positions taken per poll


@dataclass
class _Hole:
    low: int  # inclusive
    high: int  # inclusive
    since: float  # when first seen empty (the follower's clock)


class Follower:
    """Polls ``store`` for the events after ``cursor`` (and late ones behind it).

    ``store`` answers ``event_positions(after, within=ranges, limit=n)`` (the
    positions held above ``after`` and inside the inclusive ``ranges``, ascending,
    of every run and type) and ``events_at(positions, run_id=, event_types=)``.
    ``cursor`` is the last position already shown (or the newest one when nothing
    was)."""

    def __init__(
        self,
        store: Any,
        cursor: int,
        *,
        run_id: str | None = None,
        event_types: Iterable[str] | None = None,
        late: float = LATE,
        look_back: int = LOOK_BACK,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if late <= 0:
            raise ValueError(f"late must be more than 0 seconds, got {late!r}")
        self.store = store
        self.cursor = int(cursor)
        self.run_id = run_id
        self.event_types = list(event_types) if event_types is not None else None
        self.late = late
        self._clock = clock
        self._holes: list[_Hole] = []
        low = max(0, self.cursor - look_back)
        if self.cursor > low:
            held = [p for p in store.event_positions(low, limit=self.cursor - low) if p <= self.cursor]
            self._add_holes(low, [*held, self.cursor + 1], clock())

    @property
    def holes(self) -> list[tuple[int, int]]:
        """The position ranges (inclusive) watched for a late commit."""
        return [(hole.low, hole.high) for hole in self._holes]

    def seen(self, positions: Iterable[int]) -> None:
        """Positions at or below the cursor shown elsewhere (the recent events printed
        when following starts): no longer watched, so never shown twice."""
        self._fill([p for p in positions if p <= self.cursor])

    def poll(self) -> list[tuple[int, Event]]:
        """The events that appeared since the last poll, by position: late ones (in a
        hole) and new ones (above the cursor), each once, filtered by run and type."""
        now = self._clock()
        self._holes = [hole for hole in self._holes if now - hole.since <= self.late][-MAX_HOLES:]
        present = self.store.event_positions(self.cursor, within=self.holes, limit=BATCH)
        if not present:
            return []
        late = [p for p in present if p <= self.cursor]
        new = [p for p in present if p > self.cursor]
        if late:
            self._fill(late)
        if new:
            self._add_holes(self.cursor, new, now)
            self.cursor = new[-1]
        return list(self.store.events_at(sorted(late + new), run_id=self.run_id, event_types=self.event_types))

    def _add_holes(self, after: int, positions: Sequence[int], now: float) -> None:
        """The gaps between ``after`` and each of the ascending ``positions``."""
        previous = after
        for position in positions:
            if position > previous + 1:
                self._holes.append(_Hole(previous + 1, position - 1, now))
            previous = position

    def _fill(self, positions: Sequence[int]) -> None:
        """Take filled ``positions`` out of the holes (splitting a range around them)."""
        taken = set(positions)
        holes: list[_Hole] = []
        for hole in self._holes:
            inside = sorted(p for p in taken if hole.low <= p <= hole.high)
            start = hole.low
            for position in inside:
                if position > start:
                    holes.append(_Hole(start, position - 1, hole.since))
                start = position + 1
            if start <= hole.high:
                holes.append(_Hole(start, hole.high, hole.since))
        self._holes = holes
