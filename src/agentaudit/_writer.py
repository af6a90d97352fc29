"""The per-run Writer: the seed's OnStep / OnTool / LogEvent / LogError / Close.

Why a writer per run: framework hooks do not know run identity; the writer captures
the run id and policy at construction so each hook call stays small.

How an event travels, in one direction: a hook builds its payload on the caller's
thread (every text masked, cleaned and capped, so no store can refuse it for its
content), then `Writer._record` seals it (`_chain.seal_events`: sequence, time,
canonical JSON, hash) under the run's lock and hands the sealed events to the store
through its public protocol (`append_events` when the store has it, else
`append_log` one by one). The chain advances only when the store took them. The
store never calls back.

Every hook never raises: a fault in our code or the store is logged once per kind
per run, counted on the auditor, and dropped, because audit must not break the
agent. ``strict=True`` re-raises, for tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from . import _finisher, payloads
from ._caps import (
    ARGS_MAX,
    EVENT_TYPE_MAX,
    PAYLOAD_MAX,
    RUN_IO_MAX,
    STEP_TEXT_MAX,
    TOOL_RESULT_MAX,
    VALUE_MAX,
    cap,
    utf8_len,
)
from ._chain import seal_events
from ._errors import CommitTimeout
from ._faults import Faults
from ._keys import ChainKey
from ._model import MAX_COUNT, Event, Response, RunStats, RunStatus, ToolCall
from ._pricing import Pricing, price_step
from ._redaction import RedactionPolicy
from ._serialize import canonical_json, clean_str, safe_text, to_jsonable

__all__ = ["DEFAULT_FINISH_TIMEOUT", "NOOP_WRITER", "Writer"]

# Caps how long close waits on the store's finish. 10 s is generous for one row;
# longer means a hung store the agent should not keep waiting on.
DEFAULT_FINISH_TIMEOUT = 10.0

_DEFAULT_POLICY = RedactionPolicy()
# Containers deeper or wider than this are cut before anything else is done with
# them: a 50 MB payload must not cost the agent's thread a walk over all of it.
_MAX_ITEMS = 1000
_MAX_DEPTH = 16


# Names already masked, per redaction policy (a policy is immutable, so a name
# masks the same way every time); bounded.
_MAX_NAMES = 4096
_NAMES: weakref.WeakKeyDictionary[RedactionPolicy, dict[str, str]] = weakref.WeakKeyDictionary()
_NAMES_LOCK = threading.Lock()


def _names_of(policy: RedactionPolicy) -> dict[str, str]:
    try:
        with _NAMES_LOCK:
            names = _NAMES.get(policy)
            if names is None:
                names = _NAMES[policy] = {}
            return names
    except TypeError:  # a policy holding unhashable values: no sharing across runs
        return {}


def _trimmed(value: Any, depth: int = 0) -> Any:
    """``value`` with long strings, wide containers and deep nesting cut (cheap,
    before the JSON conversion and masking that would otherwise walk all of it)."""
    if isinstance(value, str):
        return value if len(value) <= 4 * VALUE_MAX else value[: 4 * VALUE_MAX]
    if depth >= _MAX_DEPTH and isinstance(value, (Mapping, list, tuple, set, frozenset)):
        return f"<too deep {type(value).__qualname__}>"
    if isinstance(value, Mapping):
        try:
            items = list(_first(value.items(), _MAX_ITEMS + 1))
        except Exception:
            return value  # to_jsonable turns it into a placeholder
        out = {k: _trimmed(v, depth + 1) for k, v in items[:_MAX_ITEMS]}
        if len(items) > _MAX_ITEMS:
            out["…"] = f"[+{len(value) - _MAX_ITEMS} more keys]"
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        kept = [_trimmed(v, depth + 1) for v in _first(value, _MAX_ITEMS)]
        if len(value) > _MAX_ITEMS:
            kept.append(f"…[+{len(value) - _MAX_ITEMS} more items]")
        return kept
    return value


def _first(items: Iterable[Any], n: int) -> Iterable[Any]:
    for i, item in enumerate(items):
        if i >= n:
            return
        yield item


def _check_tool_call(call: Any) -> None:
    if not isinstance(call, ToolCall):
        raise TypeError(f"a tool hook takes an aa.ToolCall, got {type(call).__name__}")


def _duration(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"duration_ms must be a finite number or None, got {value!r}")
    return round(float(value), 3)


def _add_count(total: int, value: int) -> int:
    # SQLite and PostgreSQL integers are 64-bit: a total saturates rather than overflow.
    return min(total + value, MAX_COUNT)


class _OpenTool:
    """A tool call recorded at its start whose result has not come yet."""

    __slots__ = ("call", "started")

    def __init__(self, call: ToolCall, started: float) -> None:
        self.call = call
        self.started = started


class Writer:
    """Records one run's events into a store.

    ``Writer(store, run_id)`` is the low-level form: the caller already started the
    run. ``Writer(None, run_id)`` does nothing, cheaply. Usually you get one from
    [`Auditor.start_run`][agentaudit.Auditor.start_run] or [`Auditor.run`][agentaudit.Auditor.run].
    """

    def __init__(
        self,
        store: Any,
        run_id: str,
        *,
        redaction: RedactionPolicy | None = None,
        pricing: Pricing | None = None,
        faults: Faults | None = None,
        finish_timeout: float = DEFAULT_FINISH_TIMEOUT,
    ) -> None:
        self._store = store
        # The optional batch method (see stores.BatchingStore), when the store has it.
        self._append_events = _optional_method(store, "append_events", "append_log")
        self.run_id = run_id
        self._policy = redaction or _DEFAULT_POLICY
        self._names = _names_of(self._policy)
        self._pricing = pricing
        self._faults = faults if faults is not None else Faults()
        self._finish_timeout = finish_timeout
        self._lock = threading.Lock()
        self._seq = 0
        self._prev_hash = ""
        # Chain v1 (no salt, unkeyed) unless the Auditor starts a v2 chain at the
        # run's header (`_start_chain`): a run started by hand keeps the old format.
        self._salted = False
        self._key: ChainKey | None = None
        self._calls = 0
        self._steps = 0
        self._input_tokens = 0
        self._output_tokens = 0
        self._thinking_tokens = 0
        self._cost: float | None = None
        self._output: Any = None
        self._closed = False
        self._resolved_model_logged = False
        self._open_tools: list[_OpenTool] = []
        self._started = time.monotonic()
        self._last_step = 0.0

    def _start_chain(self, head: str, key: ChainKey | None) -> None:
        """Chain v2: the first event links to the run's header hash ``head``; every
        event is salted, and keyed with ``key`` when given."""
        self._prev_hash = head
        self._salted = True
        self._key = key

    # -- state ------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """False for a no-op writer (no store)."""
        return self._store is not None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def faults(self) -> Faults:
        return self._faults

    def token_stats(self) -> tuple[int, int, int]:
        """Running totals (input, output, thinking) tallied from ``on_step``."""
        with self._lock:
            return self._input_tokens, self._output_tokens, self._thinking_tokens

    def tool_calls_count(self) -> int:
        """How many tool calls have been recorded so far."""
        return self._calls

    def steps_count(self) -> int:
        """How many steps ``on_step`` has recorded so far."""
        return self._steps

    @property
    def events_count(self) -> int:
        """How many events the store has taken for this run so far."""
        return self._seq

    def set_output(self, output: Any) -> None:
        """The run's output, used by ``close`` when its RunStats carries none."""
        self._output = output

    # -- text hygiene: every recorded string passes through here ------------------------
    def _text(self, text: str, field: str, max_bytes: int = VALUE_MAX) -> str:
        """``text`` as it may be persisted: cut, secrets masked, the user's mask run,
        lone surrogates cleaned, then capped to ``max_bytes``. Names (tool names and
        ids, models, event types, keys) repeat run after run: each is masked once per
        policy and remembered."""
        if max_bytes != EVENT_TYPE_MAX:
            return self._text_capped(text, field, max_bytes)[0]
        names = self._names
        found = names.get(text)
        if found is None:
            found = self._text_capped(text, field, max_bytes)[0]
            if not found.startswith("<mask failed on"):
                if len(names) >= _MAX_NAMES:
                    names.clear()
                names[text] = found
        return found

    def _text_capped(self, text: str, field: str, max_bytes: int) -> tuple[str, bool]:
        # Masking is regex work: bound it by the cap first (a masked value only
        # shrinks to its marker, so nothing kept is lost by cutting first).
        dropped = 0
        if len(text) > 4 * max_bytes:
            dropped = utf8_len(text[4 * max_bytes :])
            text = text[: 4 * max_bytes]
        policy = self._policy
        text = policy.mask_secrets(clean_str(text))
        if policy.mask is not None and policy.enabled:
            try:
                masked = policy.mask(text)
                if not isinstance(masked, str):
                    raise TypeError(f"mask returned {type(masked).__name__}, not str")
                text = clean_str(masked)
            except Exception as exc:
                self._faults.report("mask", exc, self.run_id)
                return f"<mask failed on {field}>", False
        return cap(text, max_bytes, dropped_before=dropped)

    def _value(self, value: Any, field: str, max_bytes: int = PAYLOAD_MAX) -> Any:
        """A JSON-like value as it may be persisted: trimmed, converted, secret keys
        masked, every key and string made persistable, the whole bounded by
        ``max_bytes`` of JSON (past it, a capped preview of the JSON is kept)."""
        value = self._policy.mask_keys(to_jsonable(_trimmed(value)))
        value = self._walk(value, field)
        text = canonical_json(value)
        size = utf8_len(text)
        if size <= max_bytes:
            return value
        # Past the bound, a preview of the JSON; quoted again, it grows (escapes), so
        # the preview shrinks until the whole fits.
        budget = max_bytes
        while True:
            preview = {"truncated_payload": cap(text, budget)[0]}
            size = utf8_len(canonical_json(preview))
            if size <= max_bytes or budget <= 0:
                return preview
            budget -= size - max_bytes + 32

    def _walk(self, value: Any, field: str) -> Any:
        if isinstance(value, str):
            return self._text(value, field)
        if isinstance(value, dict):
            return {self._text(k, field, EVENT_TYPE_MAX): self._walk(v, field) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v, field) for v in value]
        return value

    def _args_json(self, call: ToolCall) -> str:
        text = call.arguments
        if self._policy.may_hold_secret_key(text):
            text = canonical_json(self._policy.mask_keys(call.args))
        return self._text(text, "tool_call.args", ARGS_MAX)

    # -- the one way events are recorded ------------------------------------------------
    def _record(self, events: Sequence[tuple[str, dict[str, Any]]]) -> int:
        """Seal ``events`` (type, finished payload) and hand them to the store; how
        many it took. Refused after close."""
        with self._lock:
            if self._closed:
                raise _AfterClose(f"run {self.run_id} is closed; {events[0][0]} not recorded")
            return self._record_locked(events)

    def _record_locked(self, events: Sequence[tuple[str, dict[str, Any]]]) -> int:
        """`_record` with the run's lock held: seal, hand over, and advance the chain
        to the last event the store took (so the log never has a gap)."""
        run_id = self.run_id
        sealed = seal_events(
            run_id, self._seq, self._prev_hash, events, datetime.now(timezone.utc),
            salted=self._salted, key=self._key,
        )
        taken, error = self._hand_over(sealed)
        if taken:
            self._seq, self._prev_hash = sealed[taken - 1].sequence, sealed[taken - 1].hash
        if error is not None:
            # A CommitTimeout means taken, still queued: it lands later.
            self._faults.report(
                "commit_timeout" if isinstance(error, CommitTimeout) else "append_log", error, run_id
            )
        return taken

    def _hand_over(self, events: list[Event]) -> tuple[int, Exception | None]:
        """Give ``events`` to the store: how many it took, in order, and why it
        stopped (or why they are not durable yet: a CommitTimeout)."""
        if self._append_events is not None:
            try:
                self._append_events(events)
            except CommitTimeout as exc:
                return len(events), exc
            except Exception as exc:
                return 0, exc
            return len(events), None
        taken, error = 0, None
        for event in events:  # a store with the one-event protocol method only
            try:
                self._store.append_log(event)
            except CommitTimeout as exc:
                error = exc
            except Exception as exc:
                return taken, exc
            taken += 1
        return taken, error

    def _hook(self, kind: str, build: Callable[[], Sequence[tuple[str, dict[str, Any]]] | None]) -> None:
        """Run one hook: build its events and record them, faults counted."""
        try:
            events = build()
            if events:
                self._record(events)
        except _AfterClose as exc:
            self._faults.report("after_close", exc, self.run_id)
        except Exception as exc:
            self._faults.report(kind, exc, self.run_id)

    # -- hooks ------------------------------------------------------------------------
    def on_step(
        self, iter: int, response: Response | None = None, *, extra: Mapping[str, Any] | None = None
    ) -> None:
        """Record one model step: a ``step`` event, and the one-shot ``resolved_model``."""
        if self._store is None:
            return
        self._hook("on_step", lambda: self._step_events(iter, response, extra))

    def _step_events(
        self, iter: int, response: Response | None, extra: Mapping[str, Any] | None
    ) -> list[tuple[str, dict[str, Any]]] | None:
        if isinstance(iter, bool) or not isinstance(iter, int):
            raise TypeError(f"on_step's iter must be an int, got {type(iter).__name__}")
        if response is not None and not isinstance(response, Response):
            raise TypeError(
                f"on_step takes an aa.Response or None, got {type(response).__name__} "
                "(aa.record_step reads provider objects)"
            )
        if extra is not None and not isinstance(extra, Mapping):
            raise TypeError(f"on_step's extra must be a mapping, got {type(extra).__name__}")
        payload: dict[str, Any] = {payloads.ITER: iter, payloads.STEP_MS: 0.0}
        model = ""
        if response is None:
            payload[payloads.TEXT_LEN] = 0
        else:
            text = response.text.strip()
            payload[payloads.TEXT_LEN] = utf8_len(response.text)
            if response.model:
                model = payload[payloads.MODEL] = self._text(response.model, "step.model")
            if response.finish_reason:
                payload[payloads.FINISH_REASON] = self._text(response.finish_reason, "step.finish_reason")
            usage = response.usage
            payload[payloads.IN_TOKENS] = usage.input_tokens
            payload[payloads.OUT_TOKENS] = usage.output_tokens
            if usage.reasoning_tokens > 0:
                payload[payloads.THINKING_TOKENS] = usage.reasoning_tokens
            if usage.cache_read_tokens > 0:
                payload[payloads.CACHE_READ_TOKENS] = usage.cache_read_tokens
            if response.tool_calls:
                payload[payloads.REQUESTED_TOOL_CALLS] = self._requested_calls(response.tool_calls)
            if text:
                # Narration next to a secret-bearing tool may echo the secret it sends.
                if self._policy.step_fires_secret_tool(c.name for c in response.tool_calls):
                    payload[payloads.TEXT_REDACTED] = True
                else:
                    payload[payloads.TEXT] = self._text(text, "step.text", STEP_TEXT_MAX)
        if extra:
            persisted = self._value(dict(extra), "step.extra")
            for key, value in persisted.items():
                payload.setdefault(key, value)
        cost = self._step_cost(response)
        now = time.monotonic()
        with self._lock:
            if self._closed:
                raise _AfterClose(f"run {self.run_id} is closed; step not recorded")
            # Step-to-step wall time (model call + the previous step's tools): a long
            # gap localises a slow or hung model call.
            payload[payloads.STEP_MS] = round((now - (self._last_step or self._started)) * 1000.0, 3)
            events: list[tuple[str, dict[str, Any]]] = [(payloads.STEP, payload)]
            first_model = bool(model) and not self._resolved_model_logged
            if first_model:
                # The first step naming a model records which model served the run,
                # even if the run errors before a useful step.
                events.append((payloads.RESOLVED_MODEL, {payloads.MODEL: model}))
            if not self._record_locked(events):
                return None  # not taken: the step did not happen, as far as the log knows
            self._last_step = now
            self._steps += 1
            self._resolved_model_logged = self._resolved_model_logged or first_model
            if response is not None:
                usage = response.usage
                self._input_tokens = _add_count(self._input_tokens, usage.input_tokens)
                self._output_tokens = _add_count(self._output_tokens, usage.output_tokens)
                self._thinking_tokens = _add_count(self._thinking_tokens, usage.reasoning_tokens)
            if cost is not None:
                self._cost = (self._cost or 0.0) + cost
        return None

    def _requested_calls(self, calls: Sequence[ToolCall]) -> list[dict[str, str]]:
        limit = payloads.REQUESTED_TOOL_CALLS_MAX
        requested = [
            {
                payloads.ID: self._text(call.id, "step.requested_tool_calls.id", EVENT_TYPE_MAX),
                payloads.NAME: self._text(call.name, "step.requested_tool_calls.name", EVENT_TYPE_MAX),
            }
            for call in calls[:limit]
        ]
        if len(calls) > limit:
            requested.append({payloads.ID: "", payloads.NAME: f"…[+{len(calls) - limit} more]"})
        return requested

    def _step_cost(self, response: Response | None) -> float | None:
        if self._pricing is None or response is None or not response.model:
            return None
        try:
            cost = price_step(self._pricing, response.model, response.usage)
            if cost is not None and not (math.isfinite(cost) and cost >= 0):
                raise ValueError(f"pricing gave {cost!r} for {response.model!r}; a cost is a finite number >= 0")
        except Exception as exc:
            self._faults.report("pricing", exc, self.run_id)
            return None
        return cost

    def tool_started(self, call: ToolCall) -> None:
        """Record that a tool was called, before it runs (``tool_call``): a crash or
        an interrupt mid-tool still leaves the intent on record. Pair it with
        [`tool_finished`][agentaudit.Writer.tool_finished]; a tool still running at ``close`` gets a cancelled
        result."""
        if self._store is None:
            return
        self._hook("tool_started", lambda: self._tool_start(call))

    def _tool_start(self, call: ToolCall) -> None:
        _check_tool_call(call)
        event = (payloads.TOOL_CALL, self._tool_call_payload(call))
        with self._lock:
            if self._closed:
                raise _AfterClose(f"run {self.run_id} is closed; tool_call not recorded")
            if self._record_locked([event]):
                self._calls += 1
                self._open_tools.append(_OpenTool(call, time.monotonic()))

    def tool_finished(
        self, call: ToolCall, result: Any, *, error: bool = False, duration_ms: float | None = None
    ) -> None:
        """Record the result of a tool whose start [`tool_started`][agentaudit.Writer.tool_started] recorded
        (``tool_result``). A call with no recorded start is recorded whole, as by
        [`on_tool`][agentaudit.Writer.on_tool]. ``duration_ms`` defaults to the time since its start."""
        if self._store is None:
            return
        self._hook("tool_finished", lambda: self._tool_finish(call, result, error, duration_ms))

    def _tool_finish(self, call: ToolCall, result: Any, error: bool, duration_ms: Any) -> None:
        _check_tool_call(call)
        ms = _duration(duration_ms)
        text = safe_text(result)
        now = time.monotonic()
        with self._lock:
            if self._closed:
                raise _AfterClose(f"run {self.run_id} is closed; tool_result not recorded")
            opened = self._take_open(call)
        if opened is None:
            self._tool_whole(call, text, error, ms)
            return
        if ms is None:
            ms = round((now - opened.started) * 1000.0, 3)
        event = (payloads.TOOL_RESULT, self._tool_result_payload(call, text, bool(error), ms))
        with self._lock:
            if self._closed:
                raise _AfterClose(f"run {self.run_id} is closed; tool_result not recorded")
            if not self._record_locked([event]):
                self._open_tools.append(opened)  # still open: close gives it its result

    def _take_open(self, call: ToolCall) -> _OpenTool | None:
        tools = self._open_tools
        matchers: tuple[Callable[[_OpenTool], bool], ...] = (
            lambda t: t.call == call,
            lambda t: bool(call.id) and t.call.id == call.id,
            lambda t: not call.id and t.call.name == call.name,
        )
        for match in matchers:
            for i, tool in enumerate(tools):
                if match(tool):
                    return tools.pop(i)
        return None

    def on_tool(
        self,
        call: ToolCall,
        result: Any,
        *,
        error: bool = False,
        duration_ms: float | None = None,
    ) -> None:
        """Record one executed tool call: ``tool_call`` then ``tool_result``, adjacent
        (the seed's one-call form, for a loop that learns of a tool once it ran)."""
        if self._store is None:
            return
        self._hook("on_tool", lambda: self._tool_whole(call, safe_text(result), error, _duration(duration_ms)))

    def _tool_whole(self, call: ToolCall, text: str, error: Any, ms: float | None) -> None:
        _check_tool_call(call)
        events = [
            (payloads.TOOL_CALL, self._tool_call_payload(call)),
            (payloads.TOOL_RESULT, self._tool_result_payload(call, text, bool(error), ms)),
        ]
        with self._lock:
            if self._closed:
                raise _AfterClose(f"run {self.run_id} is closed; tool not recorded")
            taken = self._record_locked(events)
            if taken:
                self._calls += 1
            if taken == 1:  # the call is on record, its result not: close gives it one
                self._open_tools.append(_OpenTool(call, time.monotonic()))

    def _tool_call_payload(self, call: ToolCall) -> dict[str, Any]:
        return {
            payloads.NAME: self._text(call.name, "tool_call.name", EVENT_TYPE_MAX),
            payloads.ARGS: self._args_json(call),
            payloads.ID: self._text(call.id, "tool_call.id", EVENT_TYPE_MAX),
        }

    def _tool_result_payload(
        self, call: ToolCall, text: str, error: bool, duration_ms: float | None
    ) -> dict[str, Any]:
        capped, truncated = self._text_capped(text, "tool_result.result", TOOL_RESULT_MAX)
        payload: dict[str, Any] = {
            payloads.NAME: self._text(call.name, "tool_result.name", EVENT_TYPE_MAX),
            payloads.ID: self._text(call.id, "tool_result.id", EVENT_TYPE_MAX),
            payloads.RESULT: capped,
            payloads.TRUNCATED: truncated,
        }
        if error:
            payload[payloads.ERROR_FLAG] = True
        if duration_ms is not None:
            payload[payloads.DURATION_MS] = duration_ms
        return payload

    def log_event(self, event_type: str, payload: Mapping[str, Any] | None = None) -> None:
        """Record a custom event (e.g. ``compaction_fired``) mid-run."""
        if self._store is None:
            return
        self._hook("log_event", lambda: self._custom_event(event_type, payload))

    def _custom_event(self, event_type: Any, payload: Any) -> list[tuple[str, dict[str, Any]]]:
        if not isinstance(event_type, str) or not event_type.strip():
            raise ValueError(f"event_type must be a non-empty str, got {event_type!r}")
        if payload is not None and not isinstance(payload, Mapping):
            raise TypeError(f"log_event's payload must be a mapping or None, got {type(payload).__name__}")
        kind = self._text(event_type.strip(), "event_type", EVENT_TYPE_MAX)
        if kind in payloads.RESERVED_EVENT_TYPES:
            raise ValueError(
                f"log_event cannot write a {kind!r} event: the Writer's own hooks write those "
                "(on_step, tool_started/tool_finished, on_tool, log_error)"
            )
        body = self._value(dict(payload or {}), kind)
        return [(kind, body)]

    def log_error(self, message: str) -> None:
        """Record an ``error`` event mid-run; distinct from the terminal status."""
        if self._store is None:
            return
        self._hook(
            "log_error",
            lambda: [(payloads.ERROR, {payloads.MESSAGE: self._text(safe_text(message), "error.message", RUN_IO_MAX)})],
        )

    # -- closing ----------------------------------------------------------------------
    def _final_stats(self, stats: Any) -> RunStats:
        """The run's final record, whatever ``stats`` is: a bad argument closes the run
        as failed with the reason (and counts a fault) instead of leaving it running."""
        try:
            stats = _as_stats(stats)
        except (TypeError, ValueError) as exc:
            stats = RunStats(status=RunStatus.FAILED, error=f"close() was given a bad argument: {exc}")
            self._faults.report("close_argument", exc, self.run_id)
        output = stats.output if stats.output is not None else self._output
        cost = self._cost if stats.cost_usd is None else stats.cost_usd
        return RunStats(
            status=stats.status,
            output=self._text(safe_text(output), "run.output", RUN_IO_MAX),
            error=self._text(stats.error, "run.error", RUN_IO_MAX),
            input_tokens=self._input_tokens if stats.input_tokens is None else stats.input_tokens,
            output_tokens=self._output_tokens if stats.output_tokens is None else stats.output_tokens,
            thinking_tokens=(
                self._thinking_tokens if stats.thinking_tokens is None else stats.thinking_tokens
            ),
            cost_usd=cost if cost is None or math.isfinite(cost) else None,
            tool_calls=self._calls,
            steps=self._steps,
        )

    def _close_record(self, stats: Any) -> tuple[RunStats, list[Exception]] | None:
        """Close the run's log: tools still running get their cancelled result, later
        hooks are refused. Returns the final stats and, in strict mode, the faults to
        raise once the finish is on its way (the run must end either way). None when
        already closed."""
        deferred: list[Exception] = []

        def fault(exc: Exception) -> None:
            if self._faults.strict:
                deferred.append(exc)  # counted by report() before it raised
            else:  # report() does not raise here: this is a bug of ours
                self._faults.count("close", exc, self.run_id)

        with self._lock:
            if self._closed:
                return None
            self._closed = True
            open_tools, self._open_tools = self._open_tools, []
            for tool in open_tools:
                try:
                    elapsed = round((time.monotonic() - tool.started) * 1000.0, 3)
                    result = self._tool_result_payload(
                        tool.call, payloads.CANCELLED_TOOL_RESULT, True, elapsed
                    )
                    self._record_locked([(payloads.TOOL_RESULT, result)])
                except Exception as exc:
                    fault(exc)
        try:
            final = self._final_stats(stats)
        except Exception as exc:  # never leave the run running for a fault of ours
            fault(exc)
            final = RunStats(
                status=RunStatus.FAILED,
                error=f"agentaudit could not record the run's ending: {type(exc).__name__}",
                tool_calls=self._calls,
                steps=self._steps,
            )
        return final, deferred

    def _submit_finish(self, stats: RunStats) -> concurrent.futures.Future[Any]:
        """The store's finish, under way: its future settles once the run and all its
        events are durable. A store with ``submit_finish`` runs it itself (the SQLite
        store: its writer thread); any other store's ``finish_run`` runs on a finisher
        thread, so a hung store costs ``close`` at most ``finish_timeout``."""
        store, run_id = self._store, self.run_id
        finished = datetime.now(timezone.utc)
        submit = _optional_method(store, "submit_finish", "finish_run")
        if submit is None:
            return _finisher.submit(lambda: store.finish_run(run_id, stats, finished))
        try:
            future: concurrent.futures.Future[Any] = submit(run_id, stats, finished)
        except Exception as exc:  # reported as the finish's fault, like any other
            future = concurrent.futures.Future()
            future.set_exception(exc)
        return future

    def close(self, stats: RunStats | RunStatus | str | None = None) -> None:
        """Finish the run (default: succeeded). ``stats`` is a RunStats, or just a
        status. Fills tool calls, steps, token totals and cost from what the writer
        saw. Idempotent; never raises. Returns once the run is durable, or after
        ``finish_timeout`` when the store hangs (the finish still lands if it
        recovers). Called on a thread that runs an event loop, it does not wait
        (the loop must not block): use ``aclose`` there to wait."""
        if self._store is None:
            return
        closing = self._close_record(stats)
        if closing is None:
            return
        final, deferred = closing
        try:
            future = self._submit_finish(final)
            if _in_event_loop():
                future.add_done_callback(self._finish_reported)
            else:
                try:
                    future.result(timeout=self._finish_timeout)
                except concurrent.futures.TimeoutError as exc:
                    self._faults.report("finish_timeout", exc, self.run_id)
                except Exception as exc:
                    self._faults.report("finish_run", exc, self.run_id)
        except Exception as exc:
            self._faults.report("close", exc, self.run_id)
        finally:
            self._faults.forget(self.run_id)
        if deferred:
            raise deferred[0]

    def _finish_reported(self, future: concurrent.futures.Future[Any]) -> None:
        # A finish nobody waited for (close on an event loop's thread): its fault is
        # counted when it settles, never raised (there is no caller left to take it).
        exc = future.exception()
        if exc is not None:
            self._faults.count("finish_run", exc, self.run_id)

    async def aclose(self, stats: RunStats | RunStatus | str | None = None) -> None:
        """``close`` without blocking the event loop. Works in a cancelled task: the
        finish is shielded and lands even if this await is cancelled again."""
        if self._store is None:
            return
        closing = self._close_record(stats)
        if closing is None:
            return
        final, deferred = closing
        try:
            future = asyncio.wrap_future(self._submit_finish(final))
            try:
                await asyncio.wait_for(asyncio.shield(future), self._finish_timeout)
            except asyncio.TimeoutError as exc:
                self._faults.report("finish_timeout", exc, self.run_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._faults.report("finish_run", exc, self.run_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._faults.report("close", exc, self.run_id)
        finally:
            self._faults.forget(self.run_id)
        if deferred:
            raise deferred[0]

    def __repr__(self) -> str:
        state = "no-op" if self._store is None else ("closed" if self._closed else "open")
        return f"Writer(run_id={self.run_id!r}, {state}, events={self._seq})"


class _AfterClose(Exception):
    """A hook called on a closed run: refused and counted (kind ``after_close``)."""


def _as_stats(stats: Any) -> RunStats:
    if stats is None:
        return RunStats(status=RunStatus.SUCCEEDED)
    if isinstance(stats, RunStats):
        return stats
    if isinstance(stats, (RunStatus, str)):
        return RunStats(status=stats)
    raise TypeError(f"close() takes an aa.RunStats or a status, got {type(stats).__name__}")


def _optional_method(store: Any, name: str, stands_for: str) -> Any:
    """``store``'s optional protocol method ``name`` (bound), used only when the class
    that defines it defines the plain method ``stands_for`` too: a subclass that
    overrides only the plain method, or a wrapper forwarding attributes with
    ``__getattr__``, is never bypassed. Decided once per class."""
    if store is None:
        return None
    cls = type(store)
    usable = _USABLE.get((cls, name))
    if usable is None:
        owner = next((c for c in cls.__mro__ if name in c.__dict__), None)
        usable = owner is not None and owner is next(
            (c for c in cls.__mro__ if stands_for in c.__dict__), None
        )
        _USABLE[(cls, name)] = usable
    return getattr(store, name) if usable else None


_USABLE: dict[tuple[type, str], bool] = {}


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


NOOP_WRITER = Writer(None, "")
