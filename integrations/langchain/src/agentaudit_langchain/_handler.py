"""``AuditCallbackHandler``: LangChain callbacks in, one audit run per agent invocation out.

How LangChain's run tree maps onto audit runs:

- Every LangChain run (chain, graph node, model call, tool, retriever) has a
  ``run_id`` and a ``parent_run_id``. A run whose parent this handler has not seen
  is a *root*: it starts an audit run (a standalone ``agent.invoke`` has no parent;
  an agent invoked inside someone else's traced chain has a parent we never saw).
- A run whose parent we have seen joins its parent's audit run. The exception is
  a chain started inside a *tool*: that is a sub-agent, recorded as a child audit
  run (``parent_run_id`` = the calling run).
- Each model call's end is one ``step``. A tool's start records its ``tool_call``
  at once (write-ahead: a tool that hangs, crashes the process or is interrupted
  is still on record); its end or error records the ``tool_result``. The root's end
  or error closes the audit run, giving any tool still running a cancelled result,
  and always closes it, whatever fails on the way.
- A ``GraphInterrupt`` anywhere below the root (``interrupt()``, or a subgraph's
  breakpoint, which carries no values) makes the run ``interrupted``, with one
  ``interrupt`` event.

State is three dicts keyed by LangChain run id (the UUID's ``int``: a UUID hashes and
compares in Python, and an agent run makes some eighty lookups) and holding only
runs whose audit run is open: a model or tool entry is removed when its run ends; a
chain's stays until its root ends (a LangGraph task may start after its entrypoint
ended); whatever a run left behind (a stream the caller stopped reading) is swept
when its root ends. Dict reads and writes are atomic, so concurrent invocations,
parallel tool threads and event loops share one handler without a lock; a per-run
lock only keeps step numbers in event order.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

import agentaudit as aa
from agentaudit.adapters import (
    CANCELLED_TOOL_RESULT,
    error_text,
    is_cancellation,
    status_for_exception,
)

from ._messages import final_output, last_human_text, run_input, tool_result
from ._response import to_response

__all__ = ["INTERRUPTED_TOOL_RESULT", "REUSED_RUN_ID_KEY", "AuditCallbackHandler"]

# The result recorded for a tool that a LangGraph interrupt stopped (``interrupt()``
# inside the tool, human-in-the-loop middleware): its call is on record, it did not
# run to an end, and it runs again, in a new run, when the graph is resumed.
INTERRUPTED_TOOL_RESULT = "tool call interrupted"

# Invocation metadata LangChain and LangGraph add themselves; not the user's to see again.
_INTERNAL_PREFIXES = ("ls_", "lc_", "langgraph_", "checkpoint_", "__")
_CALLER_KEY = "agentaudit_caller"
# Where a run whose LangChain run id was already used keeps that id (see _AuditIds).
REUSED_RUN_ID_KEY = "langchain_run_id"
_JSON_SCALARS = (str, int, float, bool, type(None))


def _is_langgraph(error: BaseException, class_name: str) -> bool:
    # Matched by name so that importing this package never imports LangGraph.
    return any(
        cls.__name__ == class_name and cls.__module__.startswith("langgraph")
        for cls in type(error).__mro__
    )


_DISABLED = aa.Auditor(None)


class _AuditIds:
    """The LangChain run ids this process has given to audit runs, the latest
    ``limit`` of them, for every handler.

    An audit run takes its LangChain run's id, but a caller may pass the same
    ``config={"run_id": ...}`` to several invocations (LangGraph's own tests do).
    A store refuses a second run under one id, which would lose it: the second and
    later runs get a fresh id instead and keep the caller's in their metadata
    (``REUSED_RUN_ID_KEY``). Process-wide, because a handler is often made per
    invocation; bounded, because generated ids never repeat and must not pile up.
    An id reused after ``limit`` other runs, or by another process, is still refused
    by the store (a ``start_run`` fault).
    """

    def __init__(self, limit: int = 1 << 14) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._seen: dict[int, None] = {}  # insertion-ordered: the oldest is evicted first

    def claim(self, key: int) -> bool:
        """Take ``key`` for a new audit run; False when it was taken before."""
        with self._lock:
            if key in self._seen:
                return False
            if len(self._seen) >= self._limit:
                del self._seen[next(iter(self._seen))]
            self._seen[key] = None
            return True


_AUDIT_IDS = _AuditIds()


def _stats_for_error(error: BaseException) -> aa.RunStats:
    """How a root that raised ended: interrupted (LangGraph control flow, not a
    failure), cancelled, timed out, or failed with the error's text."""
    if _is_langgraph(error, "GraphBubbleUp"):
        return aa.RunStats(status=aa.RunStatus.INTERRUPTED)
    return aa.RunStats(status=status_for_exception(error), error=error_text(error))


def _interrupts(error: BaseException) -> list[dict[str, Any]]:
    """The ``Interrupt`` values a ``GraphInterrupt`` carries, as ``{id, value}``;
    none for a breakpoint (``interrupt_before``/``interrupt_after``), which raises
    ``GraphInterrupt(())``."""
    found = error.args[0] if error.args else ()
    if not isinstance(found, (list, tuple)):
        return []
    return [
        {"id": getattr(item, "id", None), "value": getattr(item, "value", item)} for item in found
    ]


class _AuditRun:
    """One audit run in progress: its writer, the LangChain run that is its root,
    and the LangChain runs below the root that have not ended yet."""

    __slots__ = (
        "breakpoint",
        "interrupted",
        "interrupts",
        "last_calls",
        "members",
        "root_id",
        "step_lock",
        "steps",
        "writer",
    )

    def __init__(self, writer: aa.Writer, root_id: int) -> None:
        self.writer = writer
        self.root_id = root_id
        self.members: set[int] = set()
        self.steps = 0
        self.step_lock = threading.Lock()
        self.interrupts: dict[Any, dict[str, Any]] = {}
        # Set by any GraphInterrupt below the root, also one that carries no values.
        self.interrupted = False
        self.breakpoint = False
        # The tool calls the latest step asked for: where a tool's call id is found
        # when LangChain does not pass it (langchain-core before 1.x's later releases).
        self.last_calls: tuple[aa.ToolCall, ...] = ()

    def step(self, response: aa.Response) -> None:
        # Parallel model calls (e.g. inside parallel tools) finish on different
        # threads; the lock keeps iteration numbers in the order the events land.
        with self.step_lock:
            self.steps += 1
            self.writer.on_step(self.steps, response)
            if response.tool_calls:
                self.last_calls = response.tool_calls

    def call_id_for(self, call: aa.ToolCall) -> str:
        """The id of the call the model made with this name and these arguments."""
        for asked in self.last_calls:
            if asked.name == call.name and asked.arguments == call.arguments:
                return asked.id
        return ""

    def note_interrupt(self, error: BaseException) -> None:
        self.interrupted = True
        found = _interrupts(error)
        if not found:
            # A subgraph's breakpoint: the error says nothing but that the graph paused.
            self.breakpoint = True
        for item in found:
            self.interrupts.setdefault(item["id"] or len(self.interrupts), item)


class AuditCallbackHandler(BaseCallbackHandler):
    """Records each LangChain agent invocation as one agentaudit run.

    Pass it in the invocation's config, and every nested run (graph nodes, model
    calls, tools, sub-agents) reaches it::

        handler = AuditCallbackHandler(aa.Auditor(aa.SQLiteStore("agentaudit.db")))
        agent.invoke({"messages": [...]}, config={"callbacks": [handler]})

    One handler serves any number of concurrent invocations (threads, ``batch``,
    ``abatch``, event loops); each is its own run.

    Args:
        auditor: Where runs are recorded. ``aa.Auditor(None)`` turns the handler
            into a no-op that LangChain skips.
        name: The run name. Default: the invocation's run name, which is the
            agent's ``create_agent(name=...)`` or the config's ``run_name``.
        caller: Who the run is on behalf of (a user id, a job): a string, or a
            zero-argument callable called at the start of every run (a
            ``ContextVar``'s ``get``). An invocation can override it with
            ``config={"metadata": {"agentaudit_caller": ...}}``.
        metadata: Stored on every run. The invocation's own config metadata
            (string, number and boolean values, such as LangGraph's ``thread_id``)
            is merged over it.

    Raises:
        TypeError: When an argument has the wrong type.
    """

    # Called on the agent's own thread or event loop: no executor hop per event.
    run_inline = True

    def __init__(
        self,
        auditor: aa.Auditor,
        *,
        name: str | None = None,
        caller: str | Callable[[], str | None] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(auditor, aa.Auditor):
            raise TypeError(
                f"AuditCallbackHandler needs an agentaudit.Auditor, got {type(auditor).__name__}"
            )
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise TypeError(f"name must be a non-empty str or None, got {name!r}")
        if caller is not None and not isinstance(caller, str) and not callable(caller):
            raise TypeError(
                "caller must be a str, a zero-argument callable returning one, or None; "
                f"got {type(caller).__name__}"
            )
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping or None, got {type(metadata).__name__}")
        self._auditor = auditor
        self._guard = auditor.guard
        # One guard per hook, made once: Faults guards are reusable, and a `with`
        # on a kept guard costs a fraction of making one per callback.
        self._guard_on_chain_start = auditor.guard("langchain.on_chain_start")
        self._guard_on_chain_end = auditor.guard("langchain.on_chain_end")
        self._guard_on_chain_error = auditor.guard("langchain.on_chain_error")
        self._guard_on_chat_model_start = auditor.guard("langchain.on_chat_model_start")
        self._guard_on_llm_start = auditor.guard("langchain.on_llm_start")
        self._guard_on_llm_end = auditor.guard("langchain.on_llm_end")
        self._guard_on_llm_error = auditor.guard("langchain.on_llm_error")
        self._guard_on_tool_start = auditor.guard("langchain.on_tool_start")
        self._guard_on_tool_end = auditor.guard("langchain.on_tool_end")
        self._guard_on_tool_error = auditor.guard("langchain.on_tool_error")
        self._guard_on_retriever_start = auditor.guard("langchain.on_retriever_start")
        self._guard_on_retriever_end = auditor.guard("langchain.on_retriever_end")
        self._guard_on_retriever_error = auditor.guard("langchain.on_retriever_error")
        self._name = name
        self._caller = caller
        self._metadata = dict(metadata or {})
        self._enabled = bool(getattr(auditor, "enabled", True))
        # Strict auditors (tests) want our faults loud: let LangChain re-raise them.
        self.raise_error = bool(getattr(auditor, "strict", False))
        # Live LangChain runs only (see the module docstring).
        self._runs: dict[int, _AuditRun] = {}
        self._models: dict[int, tuple[str | None, str | None]] = {}
        # LangChain tool run -> the ToolCall its start recorded (its end records the
        # result against that same object).
        self._tools: dict[int, aa.ToolCall] = {}

    # -- what LangChain should not call at all ----------------------------------------

    @property
    def ignore_chain(self) -> bool:
        return not self._enabled

    @property
    def ignore_llm(self) -> bool:
        return not self._enabled

    @property
    def ignore_chat_model(self) -> bool:
        return not self._enabled

    @property
    def ignore_agent(self) -> bool:  # LangChain's switch for the tool callbacks
        return not self._enabled

    @property
    def ignore_retriever(self) -> bool:
        return not self._enabled

    @property
    def ignore_retry(self) -> bool:
        return True

    @property
    def ignore_custom_event(self) -> bool:
        return True

    # -- run bookkeeping ---------------------------------------------------------------

    def _join(self, run: _AuditRun, key: int) -> None:
        run.members.add(key)
        self._runs[key] = run

    def _start(
        self,
        key: int,
        run_id: UUID,
        name: Any,
        run_input: Any,
        metadata: Mapping[str, Any] | None,
        parent: _AuditRun | None = None,
    ) -> _AuditRun:
        caller = self._caller
        if callable(caller):
            caller = None
            with self._guard("langchain.caller"):
                found = self._caller()  # type: ignore[operator]
                caller = found if isinstance(found, str) else None
        merged = self._metadata
        if metadata:
            extra = {
                key: value
                for key, value in metadata.items()
                if isinstance(value, _JSON_SCALARS)
                and isinstance(key, str)
                and not key.startswith(_INTERNAL_PREFIXES)
            }
            own_caller = extra.pop(_CALLER_KEY, None)
            if isinstance(own_caller, str):
                caller = own_caller
            if extra:
                merged = {**merged, **extra}
        run_name = self._name if parent is None and self._name else name
        if not isinstance(run_name, str) or not run_name.strip():
            run_name = "langchain"
        # The audit run takes the LangChain run's id, so a caller who sets
        # config={"run_id": ...} knows it up front (and it matches LangSmith's);
        # an id used before gets a fresh one (see _AuditIds).
        audit_id = str(run_id)
        if not _AUDIT_IDS.claim(key):
            merged = {**merged, REUSED_RUN_ID_KEY: audit_id}
            audit_id = str(uuid.uuid4())
        writer: aa.Writer | None = None
        with self._guard("langchain.start_run"):
            if parent is None:
                writer = self._auditor.start_run(
                    run_name, caller=caller, input=run_input, metadata=merged, run_id=audit_id
                )
            else:
                writer = self._auditor.start_run(
                    run_name,
                    caller=caller,
                    input=run_input,
                    metadata=merged,
                    run_id=audit_id,
                    parent_run_id=parent.writer.run_id,
                )
        if writer is None:
            # The run could not start. Its LangChain runs are still tracked, with a
            # writer that records nothing, so that they do not each retry as a root.
            writer = _DISABLED.start_run(run_name, parent_run_id=None)
        run = _AuditRun(writer, key)
        self._runs[key] = run
        return run

    def _end(self, run: _AuditRun, stats: aa.RunStats | Callable[[], aa.RunStats]) -> None:
        """Close the audit run. Whatever fails on the way (our fault, or strict
        mode raising it), the run is closed: with ``stats``, or, when even they
        could not be read (``stats`` is then a callable that raised), as failed."""
        # Below the root: ended chains (kept for late tasks) and runs that never
        # ended (a stream the caller stopped reading).
        unfinished: list[aa.ToolCall] = []
        for member in run.members:
            self._runs.pop(member, None)
            self._models.pop(member, None)
            call = self._tools.pop(member, None)
            if call is not None:
                unfinished.append(call)
        run.members.clear()
        final: aa.RunStats | None = None
        try:
            final = stats() if callable(stats) else stats
            if run.interrupted and final.status is aa.RunStatus.SUCCEEDED:
                # The root graph swallows an interrupt and returns the state it reached.
                final = aa.RunStats(status=aa.RunStatus.INTERRUPTED, output=final.output)
            for call in unfinished:  # every call the run made gets its result
                run.writer.tool_finished(call, CANCELLED_TOOL_RESULT, error=True)
            if run.interrupted:
                self._log_interrupts(run)
        finally:
            if final is None:
                final = aa.RunStats(
                    status=aa.RunStatus.FAILED,
                    error="agentaudit could not read how the run ended (a fault, counted)",
                )
            run.writer.close(final)

    @staticmethod
    def _log_interrupts(run: _AuditRun) -> None:
        payload: dict[str, Any] = {"interrupts": list(run.interrupts.values())}
        if run.breakpoint:
            payload["breakpoint"] = True
        run.interrupted = run.breakpoint = False
        run.interrupts.clear()
        run.writer.log_event("interrupt", payload)

    def _leave(self, key: int) -> _AuditRun | None:
        """Drop a run that ended; its audit run, or None when it is not ours (or
        this is the second delivery of the event, the handler being registered twice)."""
        run = self._runs.pop(key, None)
        if run is not None and run.root_id != key:
            run.members.discard(key)
        return run

    # -- chains (the agent graph, its nodes, any runnable) ----------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        with self._guard_on_chain_start:
            key = run_id.int
            runs = self._runs
            if key in runs:
                return  # delivered twice
            if parent_run_id is not None:
                parent_key = parent_run_id.int
                parent = runs.get(parent_key)
                if parent is not None and parent_key not in self._tools:
                    parent.members.add(key)
                    runs[key] = parent
                    return
            else:
                parent = None
            # A root, or a chain run by a tool: a sub-agent, recorded as a child run.
            self._start(key, run_id, kwargs.get("name"), run_input(inputs), metadata, parent)

    # A chain below the root stays known after its end, until the root ends: a
    # LangGraph @task can start after its @entrypoint was interrupted (the tasks it
    # had launched are still being started while the graph winds down), and it
    # belongs to the run it was launched in, which is still open. Its result is
    # checkpointed there; the resumed run does not run it again.

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._guard_on_chain_end:
            key = run_id.int
            run = self._runs.get(key)
            if run is not None and run.root_id == key and self._runs.pop(key, None) is run:
                self._end(run, lambda: aa.RunStats(output=final_output(outputs)))

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._guard_on_chain_error:
            key = run_id.int
            run = self._runs.get(key)
            if run is None:
                return
            if _is_langgraph(error, "GraphInterrupt"):
                run.note_interrupt(error)
            if run.root_id == key and self._runs.pop(key, None) is run:
                self._end(run, lambda: _stats_for_error(error))

    # -- model calls ---------------------------------------------------------------------

    def _model_start(
        self,
        serialized: dict[str, Any] | None,
        run_id: UUID,
        parent_run_id: UUID | None,
        prompt: Any,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> None:
        key = run_id.int
        if key in self._runs:
            return
        parent = self._runs.get(parent_run_id.int) if parent_run_id is not None else None
        if parent is None:  # a model invoked on its own: a one-step run
            name = kwargs.get("name")
            if not name and isinstance(serialized, Mapping):
                name = serialized.get("name")
            self._start(key, run_id, name or "llm", prompt, metadata)
        else:
            self._join(parent, key)
        if metadata:
            provider = metadata.get("ls_provider")
            requested = metadata.get("ls_model_name")
            self._models[key] = (
                provider if isinstance(provider, str) else None,
                requested if isinstance(requested, str) else None,
            )

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        with self._guard_on_chat_model_start:
            prompt = None
            if parent_run_id is None or parent_run_id.int not in self._runs:
                prompt = last_human_text(messages[0]) if messages else None
            self._model_start(serialized, run_id, parent_run_id, prompt, metadata, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        with self._guard_on_llm_start:
            prompt = prompts[0] if prompts else None
            self._model_start(serialized, run_id, parent_run_id, prompt, metadata, kwargs)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._guard_on_llm_end:
            key = run_id.int
            provider, requested = self._models.pop(key, (None, None))
            run = self._leave(key)
            if run is None:
                return
            if run.root_id != key:
                run.step(to_response(response, provider, requested))
                return
            step: aa.Response | None = None
            try:  # a model called on its own: its run ends with this step, come what may
                step = to_response(response, provider, requested)
                run.step(step)
            finally:
                self._end(run, aa.RunStats() if step is None else aa.RunStats(output=step.text))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._guard_on_llm_error:
            key = run_id.int
            self._models.pop(key, None)
            run = self._leave(key)
            if run is None:
                return
            try:
                run.writer.log_error(error_text(error))
            finally:
                if run.root_id == key:
                    self._end(run, _stats_for_error(error))

    # -- tools ---------------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        with self._guard_on_tool_start:
            key = run_id.int
            if key in self._runs:
                return
            name = serialized.get("name") if isinstance(serialized, Mapping) else None
            if not isinstance(name, str) or not name:
                name = kwargs.get("name") or "tool"
            parent = self._runs.get(parent_run_id.int) if parent_run_id is not None else None
            if parent is None:  # a tool invoked on its own: a run of its own
                run = self._start(
                    key, run_id, name, input_str if inputs is None else inputs, metadata
                )
            else:
                run = parent
                self._join(parent, key)
            call_id = kwargs.get("tool_call_id")
            # `inputs` is the argument mapping; `input_str` only its Python repr.
            call = aa.ToolCall.lenient(
                name,
                inputs if inputs is not None else input_str,
                call_id if isinstance(call_id, str) else None,
            )
            if not call.id and run.last_calls:
                # No id passed: the id of the call the latest step asked for.
                call = aa.ToolCall(call.name, call.arguments, run.call_id_for(call))
            self._tools[key] = call
            # Write-ahead: the call is on record before the tool runs.
            run.writer.tool_started(call)

    def _tool_done(
        self, key: int, result: Any, error: bool, root_stats: aa.RunStats | None = None
    ) -> None:
        """Record a tool's result against the call its start recorded; a tool that
        was the root ends its run (with ``root_stats``, or succeeded with the result)."""
        call = self._tools.pop(key, None)
        run = self._leave(key)
        if run is None or call is None:
            return
        try:
            run.writer.tool_finished(call, result, error=error)
        finally:
            if run.root_id == key:
                self._end(run, root_stats or aa.RunStats(output=result))

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._guard_on_tool_end:
            key = run_id.int
            try:
                result, is_error, _ = tool_result(output)
            except Exception:
                # Unreadable: the tool's run still ends (then the fault is counted).
                self._tool_done(key, "agentaudit could not read the tool's result", True, aa.RunStats())
                raise
            # An error result the tool handled itself (ToolMessage status="error",
            # returned normally) is the tool's answer: the run that is this tool
            # succeeded, with the result marked as an error.
            self._tool_done(key, result, is_error)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._guard_on_tool_error:
            key = run_id.int
            if _is_langgraph(error, "GraphBubbleUp"):
                # An interrupt (or a command to the parent graph) is control flow:
                # the tool did not fail, and it runs again when the graph resumes.
                # Its call is on record already; its result says why it has none.
                if _is_langgraph(error, "GraphInterrupt"):
                    run = self._runs.get(key)
                    if run is not None:
                        run.note_interrupt(error)
                    result = INTERRUPTED_TOOL_RESULT
                else:
                    result = f"tool call ended by LangGraph control flow ({type(error).__name__})"
                self._tool_done(key, result, True, _stats_for_error(error))
                return
            result = CANCELLED_TOOL_RESULT if is_cancellation(error) else error_text(error)
            self._tool_done(key, result, True, _stats_for_error(error))

    # -- retrievers: tracked only so that runs below them find their audit run ----------

    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        with self._guard_on_retriever_start:
            key = run_id.int
            parent = self._runs.get(parent_run_id.int) if parent_run_id is not None else None
            if parent is not None and key not in self._runs:
                self._join(parent, key)

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._guard_on_retriever_end:
            self._leave(run_id.int)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._guard_on_retriever_error:
            self._leave(run_id.int)
