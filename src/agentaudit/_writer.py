"""The per-run Writer: the seed's OnStep / OnTool / LogEvent / LogError / Close.

Why a writer per run: framework hooks do not know run identity; the writer captures
the run id and policy at construction so each hook call stays small. Every hook
never raises: a fault in our code or the store is logged once, counted, and dropped,
because audit must not break the agent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from . import _finisher
from ._caps import RUN_IO_MAX, STEP_TEXT_MAX, TOOL_RESULT_MAX, cap, utf8_len
from ._chain import chain_hash, format_time
from ._faults import Faults
from ._model import Event, Response, RunStats, RunStatus, ToolCall
from ._pricing import Pricing, price_step
from ._redaction import RedactionPolicy
from ._serialize import canonical_json, clean_str, safe_text, to_jsonable

__all__ = ["DEFAULT_FINISH_TIMEOUT", "NOOP_WRITER", "Writer"]

# Caps how long close waits on the store's finish_run. 10 s is generous for one
# row; longer means a hung store the agent should not keep waiting on.
DEFAULT_FINISH_TIMEOUT = 10.0

_DEFAULT_POLICY = RedactionPolicy()

_FAST_PATHS: dict[tuple[type, str], bool] = {}


def _owner(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in c.__dict__), None)


def store_fast_path(store: Any, name: str, stands_for: str) -> Any:
    """``store``'s private shortcut ``name`` for the protocol method ``stands_for``
    (bound), or None. Taken only when one class defines both: a subclass that
    overrides ``stands_for``, or a wrapper that forwards attributes with
    ``__getattr__`` (a fault-injecting test store), must not be bypassed."""
    cls = type(store)
    key = (cls, name)
    usable = _FAST_PATHS.get(key)
    if usable is None:
        owner = _owner(cls, name)
        usable = _FAST_PATHS[key] = owner is not None and owner is _owner(cls, stands_for)
    return getattr(store, name) if usable else None


class Writer:
    """Records one run's events into a store.

    ``Writer(store, run_id)`` is the low-level form: the caller already started the
    run. ``Writer(None, run_id)`` does nothing, cheaply. Usually you get one from
    :meth:`Auditor.start_run` or :meth:`Auditor.run`.
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
        # A store that seals events itself, later and in batches (SQLiteStore, when
        # it commits them), takes them unsealed: see _append and _seal.
        self._append_deferred = store_fast_path(store, "_append_deferred", "append_log")
        self.run_id = run_id
        self._policy = redaction or _DEFAULT_POLICY
        self._pricing = pricing
        self._faults = faults if faults is not None else Faults()
        self._finish_timeout = finish_timeout
        self._lock = threading.Lock()
        self._seq = 0
        self._prev_hash = ""
        self._calls = 0
        self._steps = 0
        self._input_tokens = 0
        self._output_tokens = 0
        self._thinking_tokens = 0
        self._cost: float | None = None
        self._output: Any = None
        self._closed = False
        self._resolved_model_logged = False
        self._started = time.monotonic()
        self._last_step = 0.0

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
        """How many tool invocations ``on_tool`` has seen so far."""
        return self._calls

    def steps_count(self) -> int:
        """How many steps ``on_step`` has seen so far."""
        return self._steps

    def set_output(self, output: Any) -> None:
        """The run's output, used by ``close`` when its RunStats carries none."""
        self._output = output

    # -- text hygiene -----------------------------------------------------------------
    def _persistable(self, text: str, field: str) -> str:
        """Secrets masked, then the user's mask, lone surrogates cleaned."""
        policy = self._policy
        text = policy.mask_secrets(clean_str(text))
        if policy.mask is not None and policy.enabled:
            try:
                text = policy.mask(text)
                if not isinstance(text, str):
                    raise TypeError(f"mask returned {type(text).__name__}, not str")
            except Exception as exc:
                self._faults.report("mask", exc, self.run_id)
                return f"<mask failed on {field}>"
        return text

    def _persist_value(self, value: Any, field: str) -> Any:
        """A JSON-like value with every string made persistable and secret keys masked."""
        value = self._policy.mask_keys(to_jsonable(value))
        return self._walk(value, field)

    def _walk(self, value: Any, field: str) -> Any:
        if isinstance(value, str):
            return self._persistable(value, field)
        if isinstance(value, dict):
            return {k: self._walk(v, field) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v, field) for v in value]
        return value

    def _args_json(self, call: ToolCall) -> str:
        text = call.arguments
        if self._policy.may_hold_secret_key(text):
            text = canonical_json(self._policy.mask_keys(call.args))
        return self._persistable(text, "tool_call.args")

    # -- hooks ------------------------------------------------------------------------
    def on_step(
        self, iter: int, response: Response | None = None, *, extra: Mapping[str, Any] | None = None
    ) -> None:
        """Record one model step: a ``step`` event, and the one-shot ``resolved_model``."""
        if self._store is None:
            return
        try:
            self._on_step(iter, response, extra)
        except Exception as exc:
            self._faults.report("on_step", exc, self.run_id)

    def _on_step(self, iter: int, response: Response | None, extra: Mapping[str, Any] | None) -> None:
        now = time.monotonic()
        resolved = ""
        with self._lock:
            # Step-to-step wall time (model call + the previous step's tools): a long
            # gap localises a slow or hung model call.
            prev = self._last_step or self._started
            step_ms = round((now - prev) * 1000.0, 3)
            self._last_step = now
            self._steps += 1
            if response is not None:
                usage = response.usage
                self._input_tokens += usage.input_tokens
                self._output_tokens += usage.output_tokens
                self._thinking_tokens += usage.reasoning_tokens
                if self._pricing is not None and response.model:
                    try:
                        cost = price_step(self._pricing, response.model, usage)
                    except Exception as exc:
                        cost = None
                        self._faults.report("pricing", exc, self.run_id)
                    if cost is not None:
                        self._cost = (self._cost or 0.0) + cost
                if response.model and not self._resolved_model_logged:
                    # The first step naming a model records which model served the run,
                    # even if the run errors before a useful step.
                    self._resolved_model_logged = True
                    resolved = response.model
        # The caller's extra values may change after this returns: copied now. The
        # Response is frozen, so its payload can be built later (see _seal).
        persisted = (
            {key: self._persist_value(value, f"step.{key}") for key, value in extra.items()}
            if extra
            else None
        )
        step = (self._step_payload, iter, step_ms, response, persisted)
        if resolved:
            self._append(("step", step), ("resolved_model", {"model": resolved}))
        else:
            self._append(("step", step))

    def _step_payload(
        self, iter: int, step_ms: float, response: Response | None, extra: dict[str, Any] | None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"iter": iter, "step_ms": step_ms}
        if response is None:
            payload["text_len"] = 0
        else:
            text = response.text.strip()
            payload["text_len"] = utf8_len(response.text)
            if response.model:
                payload["model"] = response.model
            if response.finish_reason:
                payload["finish_reason"] = response.finish_reason
            usage = response.usage
            payload["in_tokens"] = usage.input_tokens
            payload["out_tokens"] = usage.output_tokens
            if usage.reasoning_tokens > 0:
                payload["thinking_tokens"] = usage.reasoning_tokens
            if usage.cache_read_tokens > 0:
                payload["cache_read_tokens"] = usage.cache_read_tokens
            if text:
                # Narration next to a secret-bearing tool may echo the secret it sends.
                if self._policy.step_fires_secret_tool(c.name for c in response.tool_calls):
                    payload["text_redacted"] = True
                else:
                    payload["text"] = cap(self._persistable(text, "step.text"), STEP_TEXT_MAX)[0]
        if extra:
            for key, value in extra.items():
                if key not in payload:
                    payload[key] = value
        return payload

    def on_tool(
        self,
        call: ToolCall,
        result: Any,
        *,
        error: bool = False,
        duration_ms: float | None = None,
    ) -> None:
        """Record one executed tool call: ``tool_call`` then ``tool_result``, adjacent."""
        if self._store is None:
            return
        try:
            with self._lock:
                self._calls += 1
            # The result as text now (it may be a mutable object); the ToolCall is
            # frozen. The payloads are built later (see _seal).
            text = safe_text(result)
            ms = None if duration_ms is None else round(float(duration_ms), 3)
            self._append(
                ("tool_call", (self._tool_call_payload, call)),
                ("tool_result", (self._tool_result_payload, call, text, error, ms)),
            )
        except Exception as exc:
            self._faults.report("on_tool", exc, self.run_id)

    def _tool_call_payload(self, call: ToolCall) -> dict[str, Any]:
        return {"name": clean_str(call.name), "args": self._args_json(call), "id": clean_str(call.id)}

    def _tool_result_payload(
        self, call: ToolCall, text: str, error: bool, duration_ms: float | None
    ) -> dict[str, Any]:
        capped, truncated = cap(self._persistable(text, "tool_result.result"), TOOL_RESULT_MAX)
        payload: dict[str, Any] = {
            "name": clean_str(call.name),
            "id": clean_str(call.id),
            "result": capped,
            "truncated": truncated,
        }
        if error:
            payload["error"] = True
        if duration_ms is not None:
            payload["duration_ms"] = duration_ms
        return payload

    def log_event(self, event_type: str, payload: Mapping[str, Any] | None = None) -> None:
        """Record a custom event (e.g. ``compaction_fired``) mid-run."""
        if self._store is None:
            return
        try:
            if not isinstance(event_type, str) or not event_type.strip():
                raise ValueError(f"event_type must be a non-empty str, got {event_type!r}")
            body = self._persist_value(dict(payload or {}), event_type)
            self._append((event_type, body))
        except Exception as exc:
            self._faults.report("log_event", exc, self.run_id)

    def log_error(self, message: str) -> None:
        """Record an ``error`` event mid-run; distinct from the terminal status."""
        if self._store is None:
            return
        try:
            text = cap(self._persistable(safe_text(message), "error.message"), RUN_IO_MAX)[0]
            self._append(("error", {"message": text}))
        except Exception as exc:
            self._faults.report("log_error", exc, self.run_id)

    # -- sealing ----------------------------------------------------------------------
    def _append(self, *items: tuple[str, Any]) -> None:
        """Record events: (type, payload), the payload a dict or a (build, *args)
        tuple that makes it (see _seal)."""
        store = self._store
        run_id = self.run_id
        with self._lock:
            created = datetime.now(timezone.utc)
            deferred = self._append_deferred
            if deferred is not None:
                # The store calls _seal when it takes these for a commit: the JSON, the
                # time text and the hash are made there, in a batch, not here on the
                # agent's thread one event at a time.
                try:
                    if deferred(self._seal, items, created):
                        return
                except Exception as exc:
                    self._faults.report("append_log", exc, run_id)
                    return
            created_text = format_time(created)
            for event_type, payload in items:
                if type(payload) is tuple:  # built now (a fault here is the hook's)
                    payload = payload[0](*payload[1:])
                seq = self._seq + 1
                body = canonical_json(payload)
                prev = self._prev_hash
                digest = chain_hash(prev, run_id, seq, event_type, created_text, body)
                try:
                    store.append_log(Event(run_id, seq, event_type, payload, created, prev, digest))
                except Exception as exc:
                    # Not taken: the sequence is not advanced, so the log keeps no gap.
                    self._faults.report("append_log", exc, self.run_id)
                    continue
                self._seq = seq
                self._prev_hash = digest

    def _seal(
        self, items: tuple[tuple[str, Any], ...], created: datetime
    ) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """The stored rows of events handed to ``_append_deferred``: (run id, sequence,
        type, payload JSON, time text, previous hash, hash) and the payload. The store
        calls it once per hand-over, in the order they were handed over, one call at a
        time (so the chain needs no lock of its own)."""
        run_id = self.run_id
        created_text = format_time(created)
        rows = []
        for event_type, payload in items:
            if type(payload) is tuple:
                try:
                    payload = payload[0](*payload[1:])
                except Exception as exc:  # this event only; the chain skips it
                    self._faults.report(f"render.{event_type}", exc, run_id)
                    continue
            seq = self._seq + 1
            body = canonical_json(payload)
            prev = self._prev_hash
            digest = chain_hash(prev, run_id, seq, event_type, created_text, body)
            rows.append(((run_id, seq, event_type, body, created_text, prev, digest), payload))
            self._seq = seq
            self._prev_hash = digest
        return rows

    # -- closing ----------------------------------------------------------------------
    def _resolve(self, stats: RunStats | None) -> RunStats | None:
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            stats = stats if stats is not None else RunStats(status=RunStatus.SUCCEEDED)
            output = stats.output if stats.output is not None else self._output
            return RunStats(
                status=stats.status,
                output=cap(self._persistable(safe_text(output), "run.output"), RUN_IO_MAX)[0],
                error=cap(self._persistable(stats.error, "run.error"), RUN_IO_MAX)[0],
                input_tokens=self._input_tokens if stats.input_tokens is None else stats.input_tokens,
                output_tokens=self._output_tokens if stats.output_tokens is None else stats.output_tokens,
                thinking_tokens=(
                    self._thinking_tokens if stats.thinking_tokens is None else stats.thinking_tokens
                ),
                cost_usd=self._cost if stats.cost_usd is None else stats.cost_usd,
                tool_calls=self._calls,
                steps=self._steps,
            )

    def _submit_finish(self, stats: RunStats) -> concurrent.futures.Future[Any]:
        store, run_id = self._store, self.run_id
        finished = datetime.now(timezone.utc)
        return _finisher.submit(lambda: store.finish_run(run_id, stats, finished))

    def close(self, stats: RunStats | None = None) -> None:
        """Finish the run (default: succeeded). Fills tool calls, steps, token totals and
        cost from what the writer saw. Idempotent; returns within ``finish_timeout``
        even when the store hangs (the finish still lands if it recovers); never raises."""
        if self._store is None:
            return
        try:
            resolved = self._resolve(stats)
            if resolved is None:
                return
            finish_within = store_fast_path(self._store, "_finish_run_within", "finish_run")
            if finish_within is not None:
                # A store that bounds its own wait (SQLiteStore) is called here: no
                # hand-off to a finisher thread and back on every run's close.
                try:
                    finish_within(
                        self.run_id, resolved, datetime.now(timezone.utc), self._finish_timeout
                    )
                except TimeoutError as exc:
                    self._faults.report("finish_timeout", exc, self.run_id)
                except Exception as exc:
                    self._faults.report("finish_run", exc, self.run_id)
                return
            future = self._submit_finish(resolved)
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

    async def aclose(self, stats: RunStats | None = None) -> None:
        """``close`` without blocking the event loop. Works in a cancelled task: the
        finish is shielded and lands even if this await is cancelled again."""
        if self._store is None:
            return
        try:
            resolved = self._resolve(stats)
            if resolved is None:
                return
            future = asyncio.wrap_future(self._submit_finish(resolved))
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

    def __repr__(self) -> str:
        state = "no-op" if self._store is None else ("closed" if self._closed else "open")
        return f"Writer(run_id={self.run_id!r}, {state}, events={self._seq})"


NOOP_WRITER = Writer(None, "")
