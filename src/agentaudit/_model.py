"""The value types of the audit: what a model said, what a tool was called with,
how a run ended, and what the stores give back.

All are frozen dataclasses validated at construction: a bad value raises
``ValueError`` naming the field and what was wrong, so a mistake shows up where it
was made and never as a corrupt row later.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any

from . import payloads
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
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"ToolCall.arguments must be JSON text or a mapping; got a string that is not JSON "
                f"({exc.msg} at position {exc.pos}): {arguments[:80]!r}"
            ) from None
        except ValueError as exc:  # valid JSON that Python refuses (an int of 5,000 digits)
            raise ValueError(
                f"ToolCall.arguments could not be read as JSON ({exc}): {arguments[:80]!r}"
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
    JSON text either way. Models do emit malformed JSON: use [`lenient`][agentaudit.ToolCall.lenient] to keep
    such a call (its raw text is kept as a JSON string) instead of raising.
    """

    name: str
    arguments: str = "{}"
    id: str = ""

    if TYPE_CHECKING:
        # What the constructor accepts (the fields above are what it stores): arguments
        # as JSON text or a mapping, an id of None for none.
        def __init__(
            self,
            name: str,
            arguments: str | Mapping[str, Any] | None = "{}",
            id: str | None = "",
        ) -> None: ...

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

    if TYPE_CHECKING:
        # What the constructor accepts (the fields above are what it stores): the tool
        # calls as any iterable (a list is kept as a tuple), None for the defaults.
        def __init__(
            self,
            text: str | None = "",
            model: str | None = "",
            finish_reason: str | None = "",
            usage: Usage | None = None,
            tool_calls: Iterable[ToolCall] | None = (),
        ) -> None: ...

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
    """How a run ended, handed to [`Writer.close`][agentaudit.Writer.close].

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
    # The chain's bookkeeping (see `_chain`): the id of the key that seals the run
    # ("" when unkeyed) and its content salt ("" for a chain v1 run, written before
    # salts or built by hand).
    key_id: str = ""
    salt: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        _check_str("Run", "run_id", self.run_id, empty_ok=False)
        _check_str("Run", "name", self.name, empty_ok=False)
        object.__setattr__(self, "status", RunStatus.parse(self.status, what="Run.status"))
        _check_aware("Run", "started_at", self.started_at, optional=False)
        _check_aware("Run", "finished_at", self.finished_at)
        for name in ("tool_calls", "steps", "input_tokens", "output_tokens", "thinking_tokens", "pid"):
            _check_count("Run", name, getattr(self, name))
        _check_str("Run", "key_id", self.key_id)
        _check_str("Run", "salt", self.salt)

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
    # The salt its content digests use (chain v2; "" for v1), as stored.
    salt: str = field(default="", repr=False)


def _status_tuple(value: Any) -> tuple[RunStatus, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, RunStatus)):
        return (RunStatus.parse(value, what="RunFilter.status"),)
    if isinstance(value, Iterable):
        return tuple(RunStatus.parse(v, what="RunFilter.status") for v in value)
    raise ValueError(f"RunFilter.status must be a status or a list of them, got {type(value).__name__}")


# A run "has an error" when it ended in one of these (it did not do its job; a cancelled
# or interrupted run was stopped on purpose) or carries an error message.
FAILED_STATUSES: tuple[RunStatus, ...] = (RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.ABANDONED)
RUN_ORDERS = ("started_at", "duration", "tokens", "cost")


def search_terms(text: str) -> list[str]:
    """The words of a search, as the full-text index sees words: runs of letters and
    digits, case and diacritics folded (``"Wörld-Cup!"`` is ``["world", "cup"]``)."""
    folded = unicodedata.normalize("NFKD", text.lower())  # lower(), as FTS5 folds: "ß" stays
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return [word for word in re.split(r"[\W_]+", plain) if word]


def payload_texts(value: Any) -> Iterator[str]:
    """Every string value in a payload, nested ones too (not its keys): the text an
    event is found by."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from payload_texts(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from payload_texts(item)


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs [`list_runs`][agentaudit.Store.list_runs] / [`count_runs`][agentaudit.Store.count_runs] return, and in what order.

    Unset fields match everything; ``status`` takes one status or several; ``since``
    is inclusive and ``until`` exclusive, both on ``started_at``. ``model``: the model
    that first served the run. ``text``: every word of it starts a word somewhere in
    the run (its input, output or error, or its events' text: step narration, tool
    arguments and results, error messages), case and accents aside. ``has_error``:
    the run failed, timed out, was abandoned, or carries an error message (False: none
    of these). ``min_cost_usd``: runs that cost at least this (unpriced runs never
    match). ``order_by``: ``started_at`` (the default), ``duration``, ``tokens``
    (input + output) or ``cost``, largest first unless ``ascending``; runs without a
    value (still running, unpriced) come last either way."""

    caller: str | None = None
    name: str | None = None
    status: RunStatus | str | Iterable[RunStatus | str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    parent_run_id: str | None = None
    limit: int | None = None
    offset: int = 0
    model: str | None = None
    text: str | None = None
    has_error: bool | None = None
    min_cost_usd: float | None = None
    order_by: str = "started_at"
    ascending: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", _status_tuple(self.status))
        _check_aware("RunFilter", "since", self.since)
        _check_aware("RunFilter", "until", self.until)
        if self.limit is not None:
            _check_count("RunFilter", "limit", self.limit)
        _check_count("RunFilter", "offset", self.offset)
        for name in ("caller", "name", "parent_run_id", "model", "text"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"RunFilter.{name} must be a str or None, got {type(value).__name__}")
        if self.text is not None and not search_terms(self.text):
            raise ValueError(f"RunFilter.text has no word to search for: {self.text!r}")
        if self.has_error is not None and not isinstance(self.has_error, bool):
            raise ValueError(f"RunFilter.has_error must be True, False or None, got {self.has_error!r}")
        if self.min_cost_usd is not None:
            cost = self.min_cost_usd
            if isinstance(cost, bool) or not isinstance(cost, (int, float)):
                raise ValueError(f"RunFilter.min_cost_usd must be a number, got {type(cost).__name__}")
            if not 0 <= cost < float("inf"):  # also refuses NaN
                raise ValueError(f"RunFilter.min_cost_usd must be a finite number >= 0, got {cost}")
        if self.order_by not in RUN_ORDERS:
            raise ValueError(f"RunFilter.order_by must be one of {', '.join(RUN_ORDERS)}; got {self.order_by!r}")
        if not isinstance(self.ascending, bool):
            raise ValueError(f"RunFilter.ascending must be a bool, got {type(self.ascending).__name__}")

    @property
    def statuses(self) -> tuple[RunStatus, ...] | None:
        return self.status  # type: ignore[return-value]

    def matches(self, run: Run, events: Iterable[Event] | None = None) -> bool:
        """Whether ``run`` passes every condition but limit and offset. ``events``,
        the run's events, give its model and the rest of its text; without them the
        run has no model and only its input, output and error are searched."""
        if self.caller is not None and run.caller != self.caller:
            return False
        if self.name is not None and run.name != self.name:
            return False
        if self.statuses is not None and run.status not in self.statuses:
            return False
        if self.since is not None and run.started_at < self.since:
            return False
        if self.until is not None and run.started_at >= self.until:
            return False
        if self.parent_run_id is not None and run.parent_run_id != self.parent_run_id:
            return False
        if self.has_error is not None and self.has_error != (bool(run.error) or run.status in FAILED_STATUSES):
            return False
        if self.min_cost_usd is not None and (run.cost_usd is None or run.cost_usd < self.min_cost_usd):
            return False
        if self.model is None and self.text is None:
            return True
        logged = list(events or ())
        if self.model is not None and _first_model(logged) != self.model:
            return False
        if self.text is not None:
            words = set()
            for text in (run.input, run.output, run.error, *(t for e in logged for t in payload_texts(e.payload))):
                words.update(search_terms(text))
            return all(any(word.startswith(term) for word in words) for term in search_terms(self.text))
        return True

    def sort_key(self, run: Run) -> tuple[Any, ...]:
        """What ``order_by`` sorts on, for stores that sort in Python: runs without a
        value last, then the value, then the start; sort with ``reverse=not
        ascending``."""
        value: float | None
        if self.order_by == "duration":
            value = run.duration_ms
        elif self.order_by == "tokens":
            value = run.input_tokens + run.output_tokens
        elif self.order_by == "cost":
            value = run.cost_usd
        else:
            return (run.started_at, run.run_id)
        # Sorted with reverse=True when descending: the missing ones still come last.
        last = (value is None) if self.ascending else (value is not None)
        return (last, value or 0, run.started_at, run.run_id)


def _first_model(events: Iterable[Event]) -> str:
    """The model that first served a run (its ``resolved_model`` event), or ''."""
    for event in events:
        if event.event_type == payloads.RESOLVED_MODEL:
            return str(event.payload.get(payloads.MODEL, ""))
    return ""


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of checking one run: its header, its events' hash chain and, once
    finished, its row's seal. Truthy when it holds.

    ``state`` is ``"intact"``, ``"erased"`` (content was removed by ``erase``; the
    chain still proves everything else, and ``ok`` is True) or ``"broken"``.
    ``broken_sequence`` names the first event that does not verify (None when the
    first problem is not in an event); ``reason`` says what the first problem is and
    ``problems`` lists every one found. ``key_id`` names the key the run was sealed
    with ("" when unkeyed)."""

    run_id: str
    ok: bool
    events: int
    broken_sequence: int | None = None
    reason: str = ""
    state: str = ""
    problems: tuple[str, ...] = ()
    key_id: str = ""

    def __post_init__(self) -> None:
        if not self.state:
            object.__setattr__(self, "state", "intact" if self.ok else "broken")
        if self.state not in ("intact", "broken", "erased"):
            raise ValueError(f"VerifyResult.state must be intact, broken or erased, got {self.state!r}")
        if self.ok != (self.state != "broken"):
            raise ValueError(f"VerifyResult.ok must be {self.state != 'broken'} for state {self.state!r}")
        if not self.ok and not self.problems and self.reason:
            object.__setattr__(self, "problems", (self.reason,))

    def __bool__(self) -> bool:
        return self.ok
