"""The value types of the audit: what a model said, what a tool was called with,
how a run ended, and what the stores give back.

All are frozen dataclasses validated at construction: a bad value raises
``ValueError`` naming the field and what was wrong, so a mistake shows up where it
was made and never as a corrupt row later.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from ._serialize import canonical_json, safe_text

__all__ = [
    "Event",
    "Response",
    "Run",
    "RunFilter",
    "RunStats",
    "RunStatus",
    "ToolCall",
    "Usage",
    "VerifyResult",
]


class RunStatus(str, Enum):
    """Where a run stands. ``running`` until its writer closes it."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"
    ABANDONED = "abandoned"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self is not RunStatus.RUNNING

    @classmethod
    def parse(cls, value: RunStatus | str, *, what: str = "status") -> RunStatus:
        if isinstance(value, RunStatus):
            return value
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(s.value for s in cls)
            raise ValueError(f"{what} must be one of {allowed}; got {value!r}") from None


TERMINAL_STATUSES: tuple[RunStatus, ...] = tuple(s for s in RunStatus if s.is_terminal)


# The largest count a store keeps: a signed 64-bit integer, as SQLite, PostgreSQL
# and MySQL store them. A larger count is refused where it is made, not by the disk.
MAX_COUNT = 2**63 - 1


def _check_count(owner: str, name: str, value: object) -> None:
    if type(value) is int and 0 <= value <= MAX_COUNT:  # the common case, in one test
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}.{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{owner}.{name} must be >= 0, got {value}")
    if value > MAX_COUNT:
        raise ValueError(f"{owner}.{name} must be at most 2**63 - 1, got {value}")


def _check_str(owner: str, name: str, value: object, *, empty_ok: bool = True) -> None:
    if type(value) is str and (empty_ok or (value and not value[0].isspace())):
        return  # the common case; anything else gets the full checks below
    if not isinstance(value, str):
        raise ValueError(f"{owner}.{name} must be a str, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise ValueError(f"{owner}.{name} must not be empty")


def _check_aware(owner: str, name: str, value: object, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, datetime):
        raise ValueError(f"{owner}.{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise ValueError(
            f"{owner}.{name} must be timezone-aware (e.g. datetime.now(timezone.utc)), got a naive datetime"
        )


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one model call. ``reasoning_tokens`` and ``cache_read_tokens``
    are breakdowns (already inside ``output_tokens`` / ``input_tokens``), as the
    providers report them."""

    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_read_tokens: int = 0

    def __post_init__(self) -> None:
        i, o, r, c = self.input_tokens, self.output_tokens, self.reasoning_tokens, self.cache_read_tokens
        exact = type(i) is int and type(o) is int and type(r) is int and type(c) is int
        if exact and 0 <= i <= MAX_COUNT and 0 <= o <= MAX_COUNT and 0 <= r <= MAX_COUNT and 0 <= c <= MAX_COUNT:
            return  # the common case, without a call per field
        for name in ("input_tokens", "output_tokens", "reasoning_tokens", "cache_read_tokens"):
            _check_count("Usage", name, getattr(self, name))


def canonical_arguments(arguments: str | Mapping[str, Any] | None) -> str:
    """Tool arguments as canonical JSON (sorted keys, compact). Raises ValueError."""
    if arguments is None:
        return "{}"
    if type(arguments) is dict:  # the common case, before the slower ABC check
        return canonical_json(arguments)
    if isinstance(arguments, str):
        text = arguments.strip()
        if not text:
            return "{}"
        try:
            parsed = json.loads(text)
        except RecursionError:
            raise ValueError(
                f"ToolCall.arguments is JSON nested too deeply to parse: {arguments[:80]!r}"
            ) from None
        except ValueError as exc:
            raise ValueError(
                f"ToolCall.arguments must be JSON text or a mapping; got a string that is not JSON "
                f"({exc.msg} at position {exc.pos}): {arguments[:80]!r}"
            ) from None
        return canonical_json(parsed)
    if isinstance(arguments, Mapping):
        return canonical_json(arguments)
    raise ValueError(
        f"ToolCall.arguments must be a str or a mapping, got {type(arguments).__name__}"
    )


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool invocation a model asked for.

    ``arguments`` may be given as JSON text or a mapping; it is stored as canonical
    JSON text either way. Models do emit malformed JSON: use :meth:`lenient` to keep
    such a call (its raw text is kept as a JSON string) instead of raising.
    """

    name: str
    arguments: str = "{}"
    id: str = ""

    def __post_init__(self) -> None:
        _check_str("ToolCall", "name", self.name, empty_ok=False)
        if self.id is None:
            object.__setattr__(self, "id", "")
        _check_str("ToolCall", "id", self.id)
        object.__setattr__(self, "arguments", canonical_arguments(self.arguments))

    @classmethod
    def lenient(cls, name: str, arguments: Any = None, id: str | None = "") -> ToolCall:
        """Build a ToolCall from whatever a model or framework produced, never raising
        on the arguments: malformed JSON text is kept verbatim as a JSON string, and
        an unserializable mapping value becomes a placeholder."""
        if (
            type(arguments) is dict
            and type(name) is str
            and name
            and not name[0].isspace()
            and (id is None or type(id) is str)
        ):
            # The common case (a framework's parsed arguments), built without the
            # checks it already passes: this runs for every tool call of every step.
            call = object.__new__(cls)
            object.__setattr__(call, "name", name)
            object.__setattr__(call, "arguments", canonical_json(arguments))
            object.__setattr__(call, "id", id or "")
            return call
        if isinstance(arguments, str):
            try:
                return cls(name or "<unnamed>", arguments, id or "")
            except ValueError:
                return cls(name or "<unnamed>", json.dumps(arguments, ensure_ascii=False), id or "")
        if arguments is not None and not isinstance(arguments, Mapping):
            arguments = {"input": arguments}
        return cls(name or "<unnamed>", arguments, id or "")

    @property
    def args(self) -> Any:
        """The arguments parsed back into Python values."""
        return json.loads(self.arguments)


@dataclass(frozen=True, slots=True)
class Response:
    """What one model call returned: its narration, the model that served it, why it
    stopped, its token usage and the tools it asked for. ``model`` is named
    ``provider/model`` (``openai/gpt-4o-mini``) by the adapters."""

    text: str = ""
    model: str = ""
    finish_reason: str = ""
    usage: Usage = field(default_factory=Usage)
    tool_calls: tuple[ToolCall, ...] = ()

    def __post_init__(self) -> None:
        if (
            type(self.text) is str
            and type(self.model) is str
            and type(self.finish_reason) is str
            and type(self.usage) is Usage
            and type(self.tool_calls) is tuple
        ):
            for call in self.tool_calls:
                if type(call) is not ToolCall:
                    break
            else:
                return  # the common case: nothing to check or convert
        for name in ("text", "model", "finish_reason"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, "")
            _check_str("Response", name, getattr(self, name))
        if self.usage is None:
            object.__setattr__(self, "usage", Usage())
        if not isinstance(self.usage, Usage):
            raise ValueError(f"Response.usage must be a Usage, got {type(self.usage).__name__}")
        calls = tuple(self.tool_calls or ())
        for call in calls:
            if not isinstance(call, ToolCall):
                raise ValueError(
                    f"Response.tool_calls must hold ToolCall values, got {type(call).__name__}"
                )
        object.__setattr__(self, "tool_calls", calls)


@dataclass(frozen=True, slots=True)
class RunStats:
    """How a run ended, handed to :meth:`Writer.close`.

    Counts left as ``None`` are filled by the writer from what it saw (tool calls,
    steps, token totals; cost from the auditor's pricing, when it has any).
    """

    status: RunStatus | str = RunStatus.SUCCEEDED
    output: Any = None
    error: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    thinking_tokens: int | None = None
    cost_usd: float | None = None
    tool_calls: int | None = None
    steps: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", RunStatus.parse(self.status, what="RunStats.status"))
        if self.error is None:
            object.__setattr__(self, "error", "")
        _check_str("RunStats", "error", self.error)
        for name in ("input_tokens", "output_tokens", "thinking_tokens", "tool_calls", "steps"):
            value = getattr(self, name)
            if value is not None:
                _check_count("RunStats", name, value)
        if self.cost_usd is not None:
            if isinstance(self.cost_usd, bool) or not isinstance(self.cost_usd, (int, float)):
                raise ValueError(f"RunStats.cost_usd must be a number, got {type(self.cost_usd).__name__}")
            if not 0 <= self.cost_usd < float("inf"):  # also rejects NaN
                raise ValueError(f"RunStats.cost_usd must be a finite number >= 0, got {self.cost_usd}")


@dataclass(frozen=True, slots=True)
class Run:
    """One recorded agent run, as a store returns it."""

    run_id: str
    name: str
    caller: str = ""
    parent_run_id: str | None = None
    status: RunStatus = RunStatus.RUNNING
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    finished_at: datetime | None = None
    input: str = ""
    output: str = ""
    error: str = ""
    tool_calls: int = 0
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    cost_usd: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    host: str = ""
    pid: int = 0

    def __post_init__(self) -> None:
        _check_str("Run", "run_id", self.run_id, empty_ok=False)
        _check_str("Run", "name", self.name, empty_ok=False)
        object.__setattr__(self, "status", RunStatus.parse(self.status, what="Run.status"))
        _check_aware("Run", "started_at", self.started_at, optional=False)
        _check_aware("Run", "finished_at", self.finished_at)
        for name in ("tool_calls", "steps", "input_tokens", "output_tokens", "thinking_tokens", "pid"):
            _check_count("Run", name, getattr(self, name))

    def finished(self, stats: RunStats, finished_at: datetime) -> Run:
        """This run as ``stats`` ends it: the one rule every store applies to a finish
        (counts the stats leave out keep the run's own)."""
        return dataclasses.replace(
            self,
            status=RunStatus.parse(stats.status),
            finished_at=finished_at,
            output=safe_text(stats.output),
            error=stats.error,
            tool_calls=self.tool_calls if stats.tool_calls is None else stats.tool_calls,
            steps=self.steps if stats.steps is None else stats.steps,
            input_tokens=stats.input_tokens or 0,
            output_tokens=stats.output_tokens or 0,
            thinking_tokens=stats.thinking_tokens or 0,
            cost_usd=stats.cost_usd,
        )

    @property
    def duration_ms(self) -> float | None:
        """Wall time from start to finish, or None while the run has not finished."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds() * 1000.0


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a run's log. ``sequence`` starts at 1 with no gaps; ``hash``
    chains over ``prev_hash`` ("" for the first event) and the event's fields."""

    run_id: str
    sequence: int
    event_type: str
    payload: dict[str, Any]
    created_at: datetime
    prev_hash: str = ""
    hash: str = ""
    # The canonical JSON text of ``payload`` that ``hash`` covers, as sealed or as a
    # store read it back ("" when not known): a store writes this text, so what is
    # stored is what was hashed, and nothing encodes the payload twice.
    payload_json: str = field(default="", compare=False, repr=False)


def _status_tuple(value: Any) -> tuple[RunStatus, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, RunStatus)):
        return (RunStatus.parse(value, what="RunFilter.status"),)
    if isinstance(value, Iterable):
        return tuple(RunStatus.parse(v, what="RunFilter.status") for v in value)
    raise ValueError(f"RunFilter.status must be a status or a list of them, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs :meth:`list_runs` / :meth:`count_runs` return. Unset fields match
    everything; ``status`` takes one status or several; ``since`` is inclusive and
    ``until`` exclusive, both on ``started_at``."""

    caller: str | None = None
    name: str | None = None
    status: RunStatus | str | tuple[RunStatus, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None
    parent_run_id: str | None = None
    limit: int | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", _status_tuple(self.status))
        _check_aware("RunFilter", "since", self.since)
        _check_aware("RunFilter", "until", self.until)
        if self.limit is not None:
            _check_count("RunFilter", "limit", self.limit)
        _check_count("RunFilter", "offset", self.offset)

    @property
    def statuses(self) -> tuple[RunStatus, ...] | None:
        return self.status  # type: ignore[return-value]

    def matches(self, run: Run) -> bool:
        """Whether ``run`` passes every condition but limit and offset."""
        if self.caller is not None and run.caller != self.caller:
            return False
        if self.name is not None and run.name != self.name:
            return False
        if self.status is not None and run.status not in self.status:  # type: ignore[operator]
            return False
        if self.since is not None and run.started_at < self.since:
            return False
        if self.until is not None and run.started_at >= self.until:
            return False
        return not (self.parent_run_id is not None and run.parent_run_id != self.parent_run_id)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of checking one run's hash chain. Truthy when intact;
    ``broken_sequence`` names the first sequence that does not verify."""

    run_id: str
    ok: bool
    events: int
    broken_sequence: int | None = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok
