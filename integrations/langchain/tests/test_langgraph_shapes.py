"""LangGraph shapes an agent takes beyond ``create_agent``, as LangGraph's own test
suite drives them: a breakpoint inside a subgraph, the functional API's tasks
outliving their interrupted entrypoint, one ``run_id`` passed to several
invocations. Each invocation is exactly one audit run that ends as it did."""

from __future__ import annotations

import operator
import threading
import uuid
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.func import entrypoint, task
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from lc_support import ScriptedChatModel, add, ai, scripted

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed
from agentaudit_langchain import AuditCallbackHandler

# Where a run whose LangChain run id was used before keeps it (the user reads it there).
REUSED_RUN_ID_KEY = "langchain_run_id"


class State(TypedDict):
    my_key: str


class Joined(TypedDict):
    my_key: Annotated[str, operator.add]  # parallel branches' updates joined


def _append(text: str) -> Any:
    return lambda state: {"my_key": state["my_key"] + text}


def _paused_subgraph() -> Any:
    """inner_1 -> inner_2, with a breakpoint before inner_2 (no checkpointer of its
    own: it uses its parent's, as in LangGraph's nested-interrupt tests)."""
    sub = StateGraph(State)
    sub.add_node("inner_1", _append(" here"))
    sub.add_node("inner_2", _append(" and there"))
    sub.add_edge(START, "inner_1")
    sub.add_edge("inner_1", "inner_2")
    sub.add_edge("inner_2", END)
    return sub.compile(interrupt_before=["inner_2"])


def _nested(depth: int) -> Any:
    graph = _paused_subgraph()
    for level in range(depth):
        outer = StateGraph(State)
        outer.add_node(f"level_{level}", graph)
        outer.add_edge(START, f"level_{level}")
        outer.add_edge(f"level_{level}", END)
        graph = outer.compile(checkpointer=InMemorySaver()) if level == depth - 1 else outer.compile()
    return graph


def _parallel() -> Any:
    # Two paused subgraphs side by side, as in test_nested_graph_interrupts_parallel.
    outer = StateGraph(Joined)
    outer.add_node("left", _paused_subgraph())
    outer.add_node("right", _paused_subgraph())
    outer.add_edge(START, "left")
    outer.add_edge(START, "right")
    outer.add_edge("left", END)
    outer.add_edge("right", END)
    return outer.compile(checkpointer=InMemorySaver())


@pytest.mark.parametrize("shape", ["nested", "doubly_nested", "parallel"])
def test_a_breakpoint_inside_a_subgraph_interrupts_the_run(store, handler, shape):
    graph = {"nested": lambda: _nested(1), "doubly_nested": lambda: _nested(2), "parallel": _parallel}[
        shape
    ]()
    config = {"callbacks": [handler], "configurable": {"thread_id": shape}}

    graph.invoke({"my_key": "hi"}, config)

    (paused,) = store.list_runs()
    assert_run_well_formed(store, paused.run_id)
    assert paused.status == "interrupted", (paused.status, paused.error)
    assert paused.error == ""
    (event,) = store.get_logs(paused.run_id)
    assert event.event_type == "interrupt"
    # A breakpoint carries no interrupt values; the event says it was one.
    assert event.payload == {"interrupts": [], "breakpoint": True}
    assert graph.get_state(config).next  # LangGraph agrees: paused, not done

    graph.invoke(None, config)  # resume past the breakpoint

    resumed = next(r for r in store.list_runs() if r.run_id != paused.run_id)
    assert_run_well_formed(store, resumed.run_id)
    assert resumed.status == "succeeded"
    assert store.get_logs(resumed.run_id) == []
    assert "and there" in str(resumed.output)


def test_tasks_that_start_after_their_entrypoint_was_interrupted_stay_in_its_run(store, handler):
    interrupted = threading.Event()

    class SeesTheInterrupt(BaseCallbackHandler):
        def on_chain_error(self, error: BaseException, **kwargs: Any) -> None:
            if type(error).__name__ == "GraphInterrupt":
                interrupted.set()

    @task
    def first(x: int) -> int:
        assert interrupted.wait(10), "the entrypoint was never interrupted"
        return x + 1

    @task
    def second(x: int) -> int:
        return add.invoke({"a": x, "b": x})  # a tool: its call lands in the task's run

    @entrypoint(checkpointer=InMemorySaver())
    def workflow(x: int) -> list[Any]:
        a, b = first(x), second(x)
        answer = interrupt("go on?")
        return [a.result(), b.result(), answer]

    # Two workers: the entrypoint and `first`. `second` waits for a worker, so it
    # starts only after `first` saw the entrypoint interrupted and returned.
    config = {
        "callbacks": [handler, SeesTheInterrupt()],
        "configurable": {"thread_id": "tasks"},
        "max_concurrency": 2,
    }
    workflow.invoke(3, config)

    (paused,) = store.list_runs()  # no run of its own for a late task
    assert_run_well_formed(store, paused.run_id)
    assert paused.status == "interrupted"
    # The late task ran in this invocation (the resumed one takes its result from
    # the checkpoint): its tool call is this run's.
    call, result, event = store.get_logs(paused.run_id)
    assert (call.event_type, call.payload["name"], result.payload["result"]) == ("tool_call", "add", "6")
    assert [item["value"] for item in event.payload["interrupts"]] == ["go on?"]

    assert workflow.invoke(Command(resume="yes"), config) == [4, 6, "yes"]

    runs = store.list_runs()
    assert len(runs) == 2 and all(run.parent_run_id is None for run in runs)
    resumed = next(r for r in runs if r.run_id != paused.run_id)
    assert_run_well_formed(store, resumed.run_id)
    assert resumed.status == "succeeded"
    assert store.get_logs(resumed.run_id) == []  # nothing ran again


def test_one_run_id_passed_to_several_invocations_keeps_every_run(store, handler):
    graph = StateGraph(State)
    graph.add_node("shout", _append("!"))
    graph.add_edge(START, "shout")
    graph.add_edge("shout", END)
    app = graph.compile()
    fixed = uuid.uuid4()

    outputs = [
        app.invoke({"my_key": word}, {"callbacks": [handler], "run_id": fixed})
        for word in ("one", "two", "three")
    ]

    assert [o["my_key"] for o in outputs] == ["one!", "two!", "three!"]
    runs = sorted(store.list_runs(), key=lambda r: r.started_at)
    assert [r.input for r in runs] == ['{"my_key":"one"}', '{"my_key":"two"}', '{"my_key":"three"}']
    assert all(r.status == "succeeded" for r in runs)
    for run in runs:
        assert_run_well_formed(store, run.run_id)
    # The first run has the caller's id; the later ones a fresh id each, and the
    # caller's in their metadata, so all three are found from it.
    assert runs[0].run_id == str(fixed) and REUSED_RUN_ID_KEY not in runs[0].metadata
    assert len({r.run_id for r in runs}) == 3
    assert [r.metadata[REUSED_RUN_ID_KEY] for r in runs[1:]] == [str(fixed)] * 2
    # (The handler fixture checks that no fault was counted: the auditor is strict.)


def test_a_reused_run_id_is_kept_across_handlers(store, auditor):
    model = ScriptedChatModel(respond=scripted(ai("hello")))
    fixed = uuid.uuid4()
    for _ in range(2):  # a handler made per invocation, as web handlers often do
        model.invoke("hi", config={"callbacks": [AuditCallbackHandler(auditor)], "run_id": fixed})

    runs = store.list_runs()
    assert len(runs) == 2 and {r.status for r in runs} == {aa.RunStatus.SUCCEEDED}
    assert auditor.faults.counts() == {}
