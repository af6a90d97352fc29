"""Auditing a hand-written agent loop: `@audited` makes a call one run,
`@audit_tool` records each tool call in the current run, and `record_step`
records what the model returned.

The active run travels in a context variable (see `_context`): a decorated call
sets it for the call's duration, so nested decorated calls become child runs and
`record_step` / `audit_tool` find their run without being handed a writer.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Any, ParamSpec, TypeVar, cast, overload

from ._auditor import Auditor
from ._caps import RUN_IO_MAX, utf8_len
from ._context import activate, current_run, deactivate
from ._model import Response, RunStats, RunStatus, ToolCall
from ._responses import to_response
from ._serialize import canonical_json
from .adapters import (
    CANCELLED_TOOL_RESULT,
    error_text,
    is_cancellation,
    status_for_exception,
)

__all__ = ["audit_tool", "audited", "configure", "default_auditor", "record_step"]

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")

# -- the process default ----------------------------------------------------------------

_default: Auditor | None = None
_default_lock = threading.Lock()


def configure(auditor: Auditor | None) -> Auditor | None:
    """Set the auditor that `@audited` uses when none is given; `None` unsets it.

    Decorated functions look the default up at each call, so `configure` may run
    after they are defined (typically once, at start-up). Returns the previous
    default, so a test can put it back.
    """
    if auditor is not None and not isinstance(auditor, Auditor):
        raise TypeError(
            f"configure() takes an agentaudit.Auditor or None, got {type(auditor).__name__}"
        )
    global _default
    with _default_lock:
        previous, _default = _default, auditor
    return previous


def default_auditor() -> Auditor | None:
    """The auditor set by `configure`, if any."""
    return _default


# -- what a call was given --------------------------------------------------------------


def _run_name(fn: Callable[..., Any]) -> str:
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    # "test_x.<locals>.agent" says nothing the last part does not.
    return qualname.rsplit("<locals>.", 1)[-1]


class _Binder:
    """Turns a call's arguments into the mapping recorded as input: parameter names
    to values, without `self`/`cls`, with `**kwargs` spread out."""

    def __init__(self, fn: Callable[..., Any], *, drop: frozenset[str] = frozenset()) -> None:
        try:
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins and C callables
            self.signature = None
        self.skip_first = False
        self.var_keyword = ""
        self.drop = drop
        if self.signature is not None:
            params = list(self.signature.parameters.values())
            self.skip_first = bool(params) and params[0].name in ("self", "cls") and params[
                0
            ].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for param in params:
                if param.kind is inspect.Parameter.VAR_KEYWORD:
                    self.var_keyword = param.name

    def arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        if self.signature is None:
            return {"args": list(args), "kwargs": dict(kwargs)}
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError:  # the call itself will fail and say why; record what was passed
            return {"args": list(args), "kwargs": dict(kwargs)}
        out: dict[str, Any] = {}
        for index, (name, value) in enumerate(bound.arguments.items()):
            if index == 0 and self.skip_first:
                continue
            if name == self.var_keyword:
                out.update(value)
            elif name not in self.drop:
                out[name] = value
        return out


# -- @audited --------------------------------------------------------------------------


# Room left for the "…[+N more items]" marker, so the run's own cap never cuts it.
_ITEMS_BUDGET = RUN_IO_MAX - 40


class _Items:
    """A generator's yielded items as the run's output: each kept as canonical JSON
    until their total passes the run output cap; the rest are counted, not kept, so a
    long stream costs bounded memory."""

    __slots__ = ("dropped", "kept", "size")

    def __init__(self) -> None:
        self.kept: list[str] = []
        self.size = 2  # the brackets
        self.dropped = 0

    def add(self, item: Any) -> None:
        if self.dropped:
            self.dropped += 1
            return
        text = canonical_json(item)
        self.size += utf8_len(text) + 1
        if self.size > _ITEMS_BUDGET and self.kept:
            self.dropped = 1
            return
        self.kept.append(text)

    def output(self) -> str:
        text = "[" + ",".join(self.kept) + "]"
        if self.dropped:
            text += f"…[+{self.dropped} more items]"
        return text


@overload
def audited(auditor: F, /) -> F: ...


@overload
def audited(
    auditor: Auditor | None = None,
    *,
    name: str | None = None,
    caller: str | None = None,
    capture_input: bool = True,
    capture_output: bool = True,
) -> Callable[[F], F]: ...


def audited(
    auditor: Any = None,
    *,
    name: str | None = None,
    caller: str | None = None,
    capture_input: bool = True,
    capture_output: bool = True,
) -> Any:
    """Record each call of the decorated function as one run.

    Works on functions, `async` functions, generators and async generators, bare
    (`@audited`) or called (`@audited(auditor, name="triage")`).

    Args:
        auditor: where runs go. `None` uses the process default set by
            `configure`, looked up at each call; with no default either, the
            function runs untouched.
        name: the run's name; the function's qualified name by default.
        caller: who the run acts for (`"user:42"`), recorded on the run.
        capture_input: record the call's arguments (by parameter name, without
            `self`/`cls`) as the run's input.
        capture_output: record the return value (a generator's yielded items) as the
            run's output.

    An exception marks the run failed and is re-raised unchanged; cancellation marks
    it cancelled. A decorated call made inside another run is that run's child.
    """
    if callable(auditor) and not isinstance(auditor, Auditor):
        return _decorate(auditor, None, name, caller, capture_input, capture_output)
    if auditor is not None and not isinstance(auditor, Auditor):
        raise TypeError(
            f"audited() takes an agentaudit.Auditor (or nothing), got {type(auditor).__name__}"
        )
    for label, value in (("name", name), ("caller", caller)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"audited({label}=...) must be a str, got {type(value).__name__}")
    if name is not None and not name.strip():
        raise ValueError("audited(name=...) must not be empty")

    def decorator(fn: F) -> F:
        return cast("F", _decorate(fn, auditor, name, caller, capture_input, capture_output))

    return decorator


def _decorate(
    fn: Any,
    auditor: Auditor | None,
    name: str | None,
    caller: str | None,
    capture_input: bool,
    capture_output: bool,
) -> Any:
    # @audited above @staticmethod / @classmethod: wrap the function, keep the kind.
    if isinstance(fn, (staticmethod, classmethod)):
        inner = _decorate(fn.__func__, auditor, name, caller, capture_input, capture_output)
        return type(fn)(inner)
    if not callable(fn):
        raise TypeError(f"audited can only decorate a callable, got {type(fn).__name__}")
    spec = _RunSpec(fn, auditor, name or _run_name(fn), caller, capture_input, capture_output)
    if inspect.isasyncgenfunction(fn):
        return _wrap_async_generator(fn, spec)
    if inspect.isgeneratorfunction(fn):
        return _wrap_generator(fn, spec)
    if inspect.iscoroutinefunction(fn):
        return _wrap_coroutine(fn, spec)
    return _wrap_function(fn, spec)


class _RunSpec:
    """What a decorated function's runs are started with."""

    __slots__ = ("auditor", "binder", "caller", "capture_input", "capture_output", "name")

    def __init__(
        self,
        fn: Callable[..., Any],
        auditor: Auditor | None,
        name: str,
        caller: str | None,
        capture_input: bool,
        capture_output: bool,
    ) -> None:
        self.auditor = auditor
        self.name = name
        self.caller = caller
        self.capture_input = capture_input
        self.capture_output = capture_output
        self.binder = _Binder(fn) if capture_input else None

    def resolve(self) -> Auditor | None:
        return self.auditor if self.auditor is not None else _default

    def input(self, auditor: Auditor, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        if self.binder is None:
            return None
        with auditor.guard("audited.input"):
            return self.binder.arguments(args, kwargs)
        return None  # the guard swallowed a fault


def _wrap_function(fn: Callable[..., Any], spec: _RunSpec) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        auditor = spec.resolve()
        if auditor is None:
            return fn(*args, **kwargs)
        run_input = spec.input(auditor, args, kwargs)
        with auditor.run(spec.name, caller=spec.caller, input=run_input) as writer:
            result = fn(*args, **kwargs)
            if spec.capture_output:
                writer.set_output(result)
            return result

    return wrapper


def _wrap_coroutine(fn: Callable[..., Any], spec: _RunSpec) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        auditor = spec.resolve()
        if auditor is None:
            return await fn(*args, **kwargs)
        run_input = spec.input(auditor, args, kwargs)
        async with auditor.run(spec.name, caller=spec.caller, input=run_input) as writer:
            result = await fn(*args, **kwargs)
            if spec.capture_output:
                writer.set_output(result)
            return result

    return wrapper


class _Current:
    """Makes `writer` the current run for one resumption of a generator. A no-op for
    `None` (no auditor), so the unaudited path stays the same code."""

    __slots__ = ("token", "writer")

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.token: Any = None

    def __enter__(self) -> None:
        if self.writer is not None:
            self.token = activate(self.writer)

    def __exit__(self, *exc: object) -> None:
        if self.token is not None:
            deactivate(self.token)
            self.token = None


def _wrap_generator(fn: Callable[..., Any], spec: _RunSpec) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        # This body first runs at the consumer's first next(): so does the run.
        auditor = spec.resolve()
        writer = None
        if auditor is not None:
            writer = auditor.start_run(
                spec.name, caller=spec.caller, input=spec.input(auditor, args, kwargs)
            )
        items = _Items() if writer is not None and spec.capture_output else None
        # The run is current only while the generator's own code runs: set around
        # each resumption, never across a yield (the consumer's code is not in it).
        current = _Current(writer)
        try:
            with current:
                gen = fn(*args, **kwargs)
            to_send: Any = None
            to_throw: BaseException | None = None
            while True:
                try:
                    with current:
                        item = gen.throw(to_throw) if to_throw is not None else gen.send(to_send)
                except StopIteration as stop:
                    result = stop.value
                    break
                if items is not None:
                    _collect(auditor, writer, items, item)
                try:
                    to_send, to_throw = (yield item), None
                except GeneratorExit:
                    with current:
                        gen.close()
                    raise
                except BaseException as exc:  # consumer's gen.throw(): pass it in
                    to_send, to_throw = None, exc
        except BaseException as exc:
            # GeneratorExit too: the consumer stopped early (break, close(), garbage
            # collection, a client gone), so the work was cut short: cancelled.
            if writer is not None:
                _close(writer, exc, items)
            raise
        if writer is not None:
            _close(writer, None, items)
        return result

    return wrapper


def _wrap_async_generator(fn: Callable[..., Any], spec: _RunSpec) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        auditor = spec.resolve()
        writer = None
        if auditor is not None:
            writer = auditor.start_run(
                spec.name, caller=spec.caller, input=spec.input(auditor, args, kwargs)
            )
        items = _Items() if writer is not None and spec.capture_output else None
        current = _Current(writer)
        try:
            with current:
                agen = fn(*args, **kwargs)
            to_send: Any = None
            to_throw: BaseException | None = None
            while True:
                try:
                    with current:
                        if to_throw is not None:
                            item = await agen.athrow(to_throw)
                        else:
                            item = await agen.asend(to_send)
                except StopAsyncIteration:
                    break
                if items is not None:
                    _collect(auditor, writer, items, item)
                try:
                    to_send, to_throw = (yield item), None
                except GeneratorExit:
                    with current:
                        await agen.aclose()
                    raise
                except BaseException as exc:
                    to_send, to_throw = None, exc
        except BaseException as exc:
            if writer is not None:
                await _aclose(writer, exc, items)
            raise
        if writer is not None:
            await _aclose(writer, None, items)

    return wrapper


def _stats(exc: BaseException | None, items: _Items | None) -> RunStats:
    output = items.output() if items is not None else None
    if exc is None:
        return RunStats(status=RunStatus.SUCCEEDED, output=output)
    if isinstance(exc, GeneratorExit):
        error = "closed by its consumer before it finished"
    else:
        error = error_text(exc)
    return RunStats(status=status_for_exception(exc), error=error, output=output)


def _close(writer: Any, exc: BaseException | None, items: _Items | None) -> None:
    writer.close(_stats(exc, items))


async def _aclose(writer: Any, exc: BaseException | None, items: _Items | None) -> None:
    await writer.aclose(_stats(exc, items))


def _collect(auditor: Any, writer: Any, items: _Items, item: Any) -> None:
    with auditor.guard("audited.output", writer.run_id):
        items.add(item)


# -- @audit_tool -----------------------------------------------------------------------


def _new_call_id() -> str:
    return f"aa-{uuid.uuid4().hex[:12]}"


# The decorated tool keeps its return type; its parameters are typed `...` because it
# also takes the call id keyword (`tool_call_id=`), which its own signature lacks.
@overload
def audit_tool(fn: Callable[P, R], /) -> Callable[..., R]: ...


@overload
def audit_tool(
    fn: None = None, /, *, name: str | None = None, id_kwarg: str = "tool_call_id"
) -> Callable[[Callable[P, R]], Callable[..., R]]: ...


def audit_tool(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, id_kwarg: str = "tool_call_id"
) -> Any:
    """Record each call of the decorated tool function (sync or `async`) in the
    current run: a `tool_call` with its arguments, recorded before the function
    runs (so a tool that hangs or crashes the process is still on record), then its
    `tool_result` with the return value, the duration and, when it raised,
    `error: true` (the exception is re-raised unchanged; a cancelled call's result
    is `"tool call cancelled"`). A call still running when its run closes gets that
    cancelled result from the close. Outside a run the function just runs.

    Args:
        name: the tool's name as the model knows it; the function's name by default.
        id_kwarg: the keyword the caller passes the model's call id in
            (`tool_call_id=call.id`). It is taken away before the function is
            called, unless the function declares a parameter of that name. Without
            it, an id is generated.
    """
    if fn is not None and not callable(fn):
        raise TypeError(f"audit_tool can only decorate a callable, got {type(fn).__name__}")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"audit_tool(name=...) must be a non-empty str, got {name!r}")
    if not isinstance(id_kwarg, str) or not id_kwarg.isidentifier():
        raise ValueError(f"audit_tool(id_kwarg=...) must be a keyword name, got {id_kwarg!r}")

    def decorator(tool: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(tool):
            raise TypeError(f"audit_tool can only decorate a callable, got {type(tool).__name__}")
        tool_name: str = name or getattr(tool, "__name__", None) or "tool"
        return _decorate_tool(tool, tool_name, id_kwarg)

    return decorator(fn) if fn is not None else decorator


class _ToolSpec:
    __slots__ = ("binder", "id_kwarg", "keeps_id", "name")

    def __init__(self, fn: Callable[..., Any], name: str, id_kwarg: str) -> None:
        self.name = name
        self.id_kwarg = id_kwarg
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        param = params.get(id_kwarg)
        # A function that declares the id parameter wants it; otherwise it is ours.
        self.keeps_id = param is not None and param.kind is not inspect.Parameter.VAR_KEYWORD
        self.binder = _Binder(fn, drop=frozenset({id_kwarg}))

    def split(self, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The call id, and the keyword arguments the function gets."""
        call_id = kwargs.get(self.id_kwarg) if self.keeps_id else kwargs.pop(self.id_kwarg, None)
        return (call_id if isinstance(call_id, str) and call_id else _new_call_id()), kwargs

    def start(
        self, writer: Any, call_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> ToolCall | None:
        """Record the call before the tool runs (write-ahead): a tool that hangs, or
        a process that dies inside it, still leaves its call on record. The call
        recorded, or None when it could not be built (a fault, counted)."""
        call: ToolCall | None = None
        with writer.faults.guard("audit_tool", writer.run_id):
            call = ToolCall.lenient(self.name, self.binder.arguments(args, kwargs), call_id)
        if call is not None:
            writer.tool_started(call)
        return call

    @staticmethod
    def finish(writer: Any, call: ToolCall | None, result: Any, error: bool, started: float) -> None:
        """Record the result against the call `start` recorded."""
        if call is not None:
            duration_ms = (time.perf_counter() - started) * 1000.0
            writer.tool_finished(call, result, error=error, duration_ms=duration_ms)


def _decorate_tool(fn: Callable[..., Any], name: str, id_kwarg: str) -> Callable[..., Any]:
    spec = _ToolSpec(fn, name, id_kwarg)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            call_id, kwargs = spec.split(kwargs)
            writer = current_run()
            if not writer.enabled:
                return await fn(*args, **kwargs)
            call = spec.start(writer, call_id, args, kwargs)
            started = time.perf_counter()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                # A cancelled task's tool: the result a run's close would give it.
                text = CANCELLED_TOOL_RESULT if is_cancellation(exc) else error_text(exc)
                spec.finish(writer, call, text, True, started)
                raise
            spec.finish(writer, call, result, False, started)
            return result

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call_id, kwargs = spec.split(kwargs)
        writer = current_run()
        if not writer.enabled:
            return fn(*args, **kwargs)
        call = spec.start(writer, call_id, args, kwargs)
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            text = CANCELLED_TOOL_RESULT if is_cancellation(exc) else error_text(exc)
            spec.finish(writer, call, text, True, started)
            raise
        spec.finish(writer, call, result, False, started)
        return result

    return wrapper


# -- record_step -----------------------------------------------------------------------

# Numbering takes the run's step count and records the step as one move, so steps
# recorded from several threads of one run still number 1, 2, 3 without repeats.
_step_lock = threading.Lock()


def record_step(response: Any, *, iter: int | None = None) -> Response | None:
    """Record one model step in the current run.

    `response` is an `aa.Response`, or what the SDK returned: an
    OpenAI Chat Completions `ChatCompletion`, an OpenAI Responses `Response`, an
    Anthropic `Message`, or the plain dict of one (read by field name; no SDK is
    imported). Steps are numbered 1, 2, 3 per run unless `iter` is given.

    Never raises at the loop in a run: a shape it cannot read is recorded with what
    could be read, and a bad `iter` (not an int >= 1) is ignored, the step numbered
    as if none was given; either is reported as a fault (raised in strict mode).
    Returns the `aa.Response` recorded, or `None` outside a run (where it does
    nothing at all: audit off must not behave differently from audit on).
    """
    writer = current_run()
    if not writer.enabled:
        return None
    problem = None if iter is None else _iter_problem(iter)
    if problem is not None:
        writer.faults.report("record_step.argument", problem, writer.run_id)  # strict: raises
        iter = None
    converted, problems = to_response(response)
    if problems:
        _report_shape(writer, response, problems)
    if iter is not None:
        writer.on_step(iter, converted)
    else:
        with _step_lock:
            writer.on_step(writer.steps_count() + 1, converted)
    return converted


def _iter_problem(iter: Any) -> Exception | None:
    """Why ``iter`` is not a step number (an int >= 1), or None when it is one."""
    if isinstance(iter, bool) or not isinstance(iter, int):
        return TypeError(f"record_step(iter=...) must be an int >= 1, got a {type(iter).__name__}")
    if iter < 1:
        return ValueError(f"record_step(iter=...) must be an int >= 1, got {iter!r}")
    return None


class ResponseShapeError(ValueError):
    """What record_step could not read from a response (reported as a fault)."""


def _report_shape(writer: Any, response: Any, problems: tuple[str, ...]) -> None:
    exc = ResponseShapeError(
        f"record_step could not fully read a {type(response).__qualname__}: " + "; ".join(problems)
    )
    writer.faults.report("record_step.shape", exc, writer.run_id)
