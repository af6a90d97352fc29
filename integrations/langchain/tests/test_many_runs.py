"""10,000 invocations through one handler leave nothing of theirs behind in it."""

from __future__ import annotations

from conftest import assert_no_state
from langchain_core.runnables import RunnableLambda
from lc_support import ScriptedChatModel, ai, get_weather, scripted

import agentaudit as aa
from agentaudit.testing import assert_run_well_formed
from agentaudit_langchain import AuditCallbackHandler

RUNS = 10_000


def test_ten_thousand_runs_leave_no_state_behind():
    # A model call and a tool call per run, the cheapest real chain holding both
    # (a full create_agent run costs ten times more and exercises no other state).
    model = ScriptedChatModel(
        respond=scripted(ai("checking", [("get_weather", {"city": "Oslo"}, "call_1")]))
    )

    def turn(question: str) -> str:
        call = model.invoke(question).tool_calls[0]
        return get_weather.invoke({**call, "type": "tool_call"}).content

    chain = RunnableLambda(turn, name="weather_turn")
    store = aa.MemoryStore()
    auditor = aa.Auditor(store)
    handler = AuditCallbackHandler(auditor)

    for i in range(RUNS):
        assert chain.invoke(f"q{i}", config={"callbacks": [handler]}) == "sunny in Oslo"

    assert_no_state(handler)
    assert auditor.faults.counts() == {}
    runs = store.list_runs()
    assert len(runs) == RUNS
    assert {run.input for run in runs} == {f"q{i}" for i in range(RUNS)}
    for run in runs:
        assert run.status == "succeeded"
        assert (run.steps, run.tool_calls, run.output) == (1, 1, "sunny in Oslo")
        assert_run_well_formed(store, run.run_id)
