"""Turning LlamaIndex's span and event stream into audit runs.

One ``Recorder`` serves every run in the process. It keeps a map of the open spans
that lie inside an agent run, each pointing at its run, so that any later span or
event is routed by its parent or its own span id: concurrent runs (asyncio tasks,
threads) never share state, and a run started inside another run's tool finds its
parent. When a run's span ends, everything the run owned is dropped.

A tool's call is recorded when its ``call_tool`` span opens (write-ahead: a tool that
hangs, or a process that dies mid-tool, still leaves the call on record), its result
when the span closes.

Every hook body runs inside the auditor's guard (``Recorder.guard``): a fault
is logged once, counted on ``auditor.faults`` and swallowed, so the agent never
sees it.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.agent.workflow import AgentOutput
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.instrumentation.dispatcher import active_instrument_tags

import agentaudit as aa
from agentaudit.adapters import (
    CANCELLED_TOOL_RESULT,
    error_text,
    is_cancellation,
    status_for_exception,
)

from ._llm import chunk_finish_reason, is_structured_wrapper, llm_metadata, read_chat_response
from ._workflow import (
    agent_of_step,
    is_agent_run,
    run_input,
    run_name,
    run_output,
    tool_call_of,
    tool_result_of,
)

__all__ = ["WAITING_TOOL_RESULT", "Recorder"]

# The result recorded for a tool that paused to wait for an event (human in the
# loop, ``ctx.wait_for_event``): its call is on record, it did not run to an end.
# The workflow runs the step again when the event arrives: a new call and result.
WAITING_TOOL_RESULT = "tool call waiting for an event; it runs again when the event arrives"
_DETACHED = "agentaudit_llamaindex was uninstrumented while the run was in flight"
_UNREADABLE_END = "agentaudit could not read how the run ended (a fault, counted)"


@dataclass(eq=False)
class _Run:
    """One agent run in flight."""

    span_id: str
    writer: aa.Writer
    # Serializes this run's writes, so step iters are numbered in log order.
    lock: threading.Lock = field(default_factory=threading.Lock)
    steps: int = 0
    agent: str | None = None  # the agent whose turn it is (AgentWorkflow hands off)
    cancelled: bool = False  # the user cancelled the run (WorkflowCancelledByUser)
    spans: set[str] = field(default_factory=set)
    llm_calls: set[str] = field(default_factory=set)


@dataclass(eq=False)
class _Span:
    """An open span inside a run."""

    run: _Run
    parent_id: str | None
    agent: str | None = None  # set on run_agent_step spans
    pending: list[aa.Response] = field(default_factory=list)  # model turns of the step
    tool: aa.ToolCall | None = None  # set on call_tool spans (recorded at enter)
    cancelled: bool = False
    llm: Any = None  # the LLM instance, on the spans of LLM methods


@dataclass(eq=False)
class _LLMCall:
    """One model call in flight, keyed by its span id. Kept apart from the span map:
    a streaming call's span exits when the stream is handed out, before its end
    event fires."""

    run: _Run
    model_dict: Mapping[str, Any]
    step_span: str | None  # the enclosing run_agent_step span, if any
    agent: str | None
    finish_reason: str = ""  # remembered from streamed chunks
    # A structured-output wrapper (``llm.as_structured_llm(...)``, the agents'
    # ``output_cls`` pass): the provider's own call inside it is the step.
    wrapper: bool = False
    wrapped_by: _LLMCall | None = None  # the wrapper this call serves
    served: bool = False  # (a wrapper) its inner call wrote the step


class Recorder:
    """The state machine behind the event and span handlers."""

    def __init__(
        self,
        auditor: aa.Auditor,
        *,
        caller: str | Callable[[], str | None] | None,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        self.auditor = auditor
        self.caller = caller
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._spans: dict[str, _Span] = {}
        self._llm_calls: dict[str, _LLMCall] = {}
        self._detached = False
        self.handle: Any = None  # the Instrumentation that owns this recorder
        # Made once: a run passes through the guard some seventy times.
        self._guards: dict[str, AbstractContextManager[Any]] = {}

    # -- the guard -------------------------------------------------------------------

    def guard(self, hook: str) -> AbstractContextManager[Any]:
        """The one guard every hook body runs in."""
        found = self._guards.get(hook)
        if found is None:
            found = self._guards[hook] = self.auditor.guard(f"llamaindex.{hook}")
        return found

    # -- introspection (tests, diagnostics) -------------------------------------------

    def tracked(self) -> dict[str, int]:
        """How many runs, spans and model calls are held right now."""
        with self._lock:
            return {
                "runs": len(self._runs),
                "spans": len(self._spans),
                "llm_calls": len(self._llm_calls),
            }

    # -- spans -------------------------------------------------------------------------

    def span_enter(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any,
        parent_id: str | None,
    ) -> None:
        with self.guard("span_enter"):
            if self._detached:
                return
            # A dict read is atomic: no lock for the parent (most spans need no other).
            parent = self._spans.get(parent_id) if parent_id else None
            if is_agent_run(id_, instance):
                self._start_run(id_, bound_args, instance, parent_id, parent)
                return
            if parent is None:
                return  # outside any agent run
            run = parent.run
            span = _Span(run=run, parent_id=parent_id)
            span.agent = agent_of_step(bound_args)
            span.tool = tool_call_of(id_, bound_args)
            if span.tool is not None:
                self._start_tool(id_, span)
                return
            if isinstance(instance, BaseLLM):
                span.llm = instance  # described at its chat start, if that needs it
            if not self._track(id_, span):
                return  # the run ended meanwhile
            if span.agent is not None:
                self._agent_turn(run, span.agent)

    def span_exit(self, id_: str, result: Any) -> None:
        with self.guard("span_exit"):
            span = self._pop_span(id_)
            if span is None:
                return
            run = span.run
            if run.span_id == id_:
                self._end_run(run, result=result)
            elif span.tool is not None:
                self._end_tool(span, result)
            elif span.agent is not None:
                self._flush_step(span, result if isinstance(result, AgentOutput) else None)

    def span_drop(self, id_: str, err: BaseException | None) -> None:
        with self.guard("span_drop"):
            span = self._pop_span(id_)
            if span is None:
                return
            run = span.run
            if run.span_id == id_:
                self._end_run(run, error=err or RuntimeError("the run's span was dropped"))
                return
            if span.tool is not None:
                if err is None or is_cancellation(err):
                    self._write_tool(span, CANCELLED_TOOL_RESULT, True)
                else:
                    self._write_tool(span, error_text(err), True)
            elif span.agent is not None:
                self._flush_step(span, None)
            with self._lock:
                call = self._llm_calls.pop(id_, None)
                if call is not None:
                    call.run.llm_calls.discard(id_)
            if call is not None and err is not None:
                self._model_failed(call, err)

    # -- events ------------------------------------------------------------------------

    def llm_chat_start(self, span_id: str | None, model_dict: Mapping[str, Any]) -> None:
        with self.guard("llm_chat_start"):
            if span_id is None:
                return
            with self._lock:
                span = self._spans.get(span_id)
                if span is None or span_id in self._llm_calls:
                    return
                run = span.run
                # A wrapper LLM that calls another (achat -> chat) fires twice for one
                # call: only the outermost call is a step.
                step_span: str | None = None
                agent = run.agent
                wrapped_by: _LLMCall | None = None
                ancestor_id = span.parent_id
                while ancestor_id is not None and ancestor_id != run.span_id:
                    outer = self._llm_calls.get(ancestor_id)
                    if outer is not None:
                        if not outer.wrapper or wrapped_by is not None:
                            return
                        # The model call a structured-output pass makes: recorded
                        # as itself (provider, served model, usage), not as the wrapper.
                        wrapped_by = outer
                    ancestor = self._spans.get(ancestor_id)
                    if ancestor is None:
                        break
                    if ancestor.agent is not None and step_span is None:
                        step_span, agent = ancestor_id, ancestor.agent
                    ancestor_id = ancestor.parent_id
                # What the LLM says of itself, when the event's model_dict is thinner
                # (older releases give no model_name). Asked only then: an LLM's
                # metadata property builds a pydantic object on every read.
                described = dict(model_dict or {})
                if span.llm is not None and not (
                    "model_name" in described and "class_name" in described
                ):
                    described = {**llm_metadata(span.llm), **described}
                wrapper = is_structured_wrapper(described)
                if wrapper and span.llm is not None:
                    # Named after the provider it wraps, should no inner call show.
                    described = {**described, **llm_metadata(getattr(span.llm, "llm", None))}
                self._llm_calls[span_id] = _LLMCall(
                    run=run,
                    model_dict=described,
                    step_span=step_span,
                    agent=agent,
                    wrapper=wrapper,
                    wrapped_by=wrapped_by,
                )
                run.llm_calls.add(span_id)

    def llm_chat_progress(self, span_id: str | None, response: Any) -> None:
        with self.guard("llm_chat_progress"):
            call = self._llm_calls.get(span_id) if span_id else None
            if call is None:
                return
            reason = chunk_finish_reason(getattr(response, "raw", None))
            if reason:
                call.finish_reason = reason

    def llm_chat_end(self, span_id: str | None, response: Any) -> None:
        with self.guard("llm_chat_end"):
            if span_id is None:
                return
            with self._lock:
                call = self._llm_calls.pop(span_id, None)
                if call is None:
                    return
                call.run.llm_calls.discard(span_id)
                step = self._spans.get(call.step_span) if call.step_span else None
                if call.wrapped_by is not None:
                    call.wrapped_by.served = True
                elif call.served:
                    return  # a structured-output wrapper whose inner call was the step
            step_response = read_chat_response(response, call.model_dict, call.finish_reason)
            if step is not None:
                # Written when the agent step ends, with the tool calls the agent parsed
                # (a ReAct agent's calls are in its text, not in the response).
                step.pending.append(step_response)
            else:
                self._write_step(call.run, step_response, call.agent)

    def llm_exception(self, span_id: str | None, exception: BaseException) -> None:
        """A streamed model call failed mid-stream (its span had already exited)."""
        with self.guard("llm_exception"):
            if span_id is None:
                return
            with self._lock:
                call = self._llm_calls.pop(span_id, None)
                if call is None:
                    return
                call.run.llm_calls.discard(span_id)
            self._model_failed(call, exception)

    def span_cancelled(self, span_id: str | None) -> None:
        with self.guard("span_cancelled"):
            if span_id is None:
                return
            with self._lock:
                span = self._spans.get(span_id)
            if span is None:
                return
            span.cancelled = True
            if span.run.span_id == span_id:
                span.run.cancelled = True

    # -- detaching ---------------------------------------------------------------------

    def detach(self) -> None:
        """Stop recording; close the runs still in flight as abandoned."""
        with self.guard("detach"):
            with self._lock:
                self._detached = True
                runs = list(self._runs.values())
            for run in runs:
                self._finish(run, aa.RunStats(status=aa.RunStatus.ABANDONED, error=_DETACHED))

    # -- runs --------------------------------------------------------------------------

    def _resolve_caller(self) -> str | None:
        caller = self.caller
        if callable(caller):
            with self.guard("caller"):
                value = caller()
                return value if isinstance(value, str) else None
            return None
        return caller

    def _start_run(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        agent: Any,
        parent_id: str | None,
        parent: _Span | None,
    ) -> None:
        metadata = dict(self.metadata)
        llamaindex_run_id = active_instrument_tags.get().get("llamaindex.run_id")
        if isinstance(llamaindex_run_id, str):
            metadata["llamaindex.run_id"] = llamaindex_run_id
        options: dict[str, Any] = {
            "caller": self._resolve_caller(),
            "input": run_input(bound_args),
            "metadata": metadata,
        }
        if parent is not None:
            # A run started inside another run (an agent called from a tool).
            options["parent_run_id"] = parent.run.writer.run_id
        # else: the core's default, the run active in this context (aa.current_run()).
        writer = self.auditor.start_run(run_name(agent), **options)
        if not writer.enabled:
            return  # a disabled auditor: nothing to record, so nothing to track
        run = _Run(span_id=id_, writer=writer)
        with self._lock:
            if self._detached:
                detached = True
            else:
                detached = False
                self._runs[id_] = run
                self._spans[id_] = _Span(run=run, parent_id=parent_id)
                run.spans.add(id_)
        if detached:
            writer.close(aa.RunStats(status=aa.RunStatus.ABANDONED, error=_DETACHED))

    def _end_run(
        self, run: _Run, *, result: Any = None, error: BaseException | None = None
    ) -> None:
        try:
            if error is not None:
                stats = aa.RunStats(status=status_for_exception(error), error=error_text(error))
            elif run.cancelled:
                stats = aa.RunStats(status=aa.RunStatus.CANCELLED, error="cancelled by the user")
            else:
                stats = aa.RunStats(status=aa.RunStatus.SUCCEEDED, output=run_output(result))
        except Exception:
            # Never left running for a fault of ours; the guard counts the fault.
            self._finish(run, aa.RunStats(status=aa.RunStatus.FAILED, error=_UNREADABLE_END))
            raise
        self._finish(run, stats)

    def _finish(self, run: _Run, stats: aa.RunStats) -> None:
        with self._lock:
            if self._runs.pop(run.span_id, None) is None:
                return  # already finished
            unfinished_steps = []
            for span_id in run.spans:
                span = self._spans.pop(span_id, None)
                if span is not None and span.pending:
                    unfinished_steps.append(span)
            for span_id in run.llm_calls:
                self._llm_calls.pop(span_id, None)
            run.spans.clear()
            run.llm_calls.clear()
        try:
            for span in unfinished_steps:  # model turns whose step never ended
                self._flush_step(span, None)
        finally:  # a fault on the way (strict mode raising it) still closes the run
            with run.lock:
                run.writer.close(stats)

    def _track(self, id_: str, span: _Span) -> bool:
        """Hold ``span`` as part of its run; False when the run has ended."""
        run = span.run
        with self._lock:
            if run.span_id not in self._runs:
                return False
            self._spans[id_] = span
            run.spans.add(id_)
        return True

    def _pop_span(self, id_: str) -> _Span | None:
        with self._lock:
            span = self._spans.pop(id_, None)
            if span is not None and span.run.span_id != id_:
                span.run.spans.discard(id_)
            return span

    # -- steps and tools ---------------------------------------------------------------

    def _agent_turn(self, run: _Run, agent: str) -> None:
        with run.lock:
            previous, run.agent = run.agent, agent
            if previous is not None and previous != agent:
                run.writer.log_event("handoff", {"from_agent": previous, "to_agent": agent})

    def _flush_step(self, span: _Span, output: AgentOutput | None) -> None:
        pending, span.pending = span.pending, []
        if not pending:
            return
        last = pending[-1]
        if output is not None and not last.tool_calls and output.tool_calls:
            parsed = tuple(
                aa.ToolCall.lenient(call.tool_name, call.tool_kwargs, call.tool_id)
                for call in output.tool_calls
            )
            pending[-1] = dataclasses.replace(last, tool_calls=parsed)
        for response in pending:
            self._write_step(span.run, response, span.agent)

    def _write_step(self, run: _Run, response: aa.Response, agent: str | None) -> None:
        extra = {"agent": agent} if agent else None
        with run.lock:
            run.steps += 1
            run.writer.on_step(run.steps, response, extra=extra)

    def _start_tool(self, id_: str, span: _Span) -> None:
        """Write-ahead: record the tool's call before it runs. Under the run's lock,
        which the run's close also takes: the call lands before the close (which then
        gives it a cancelled result if it never ends), or not at all."""
        assert span.tool is not None
        with span.run.lock:
            if self._track(id_, span):
                span.run.writer.tool_started(span.tool)

    def _end_tool(self, span: _Span, result: Any) -> None:
        outcome = tool_result_of(result)
        if outcome is not None:
            self._write_tool(span, outcome[0], outcome[1])
        elif span.cancelled:
            self._write_tool(span, CANCELLED_TOOL_RESULT, True)
        else:
            # The step paused to wait for an event (human in the loop); the workflow
            # replays it, a new call, when the event arrives.
            self._write_tool(span, WAITING_TOOL_RESULT, True)

    def _write_tool(self, span: _Span, output: Any, failed: bool) -> None:
        assert span.tool is not None
        run = span.run
        with run.lock:
            if run.span_id in self._runs:  # else the run's close gave it its result
                run.writer.tool_finished(span.tool, output, error=failed)

    def _model_failed(self, call: _LLMCall, error: BaseException) -> None:
        with call.run.lock:
            call.run.writer.log_error(f"model call failed: {error_text(error)}")
