"""The handler's constructor checks its arguments; a disabled auditor makes the
handler a no-op LangChain does not even call."""

from __future__ import annotations

from contextvars import ContextVar

import pytest
from langchain.agents import create_agent
from lc_support import WEATHER_TURNS, ScriptedChatModel, add, ask, get_weather, scripted

import agentaudit as aa
from agentaudit_langchain import AuditCallbackHandler


def weather_agent():
    return create_agent(ScriptedChatModel(respond=scripted(*WEATHER_TURNS)), tools=[get_weather, add])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"auditor": None}, "needs an agentaudit.Auditor"),
        ({"auditor": aa.MemoryStore()}, "needs an agentaudit.Auditor, got MemoryStore"),
        ({"name": ""}, "name must be a non-empty str"),
        ({"name": 3}, "name must be a non-empty str"),
        ({"caller": 42}, "caller must be a str, a zero-argument callable"),
        ({"metadata": ["env"]}, "metadata must be a mapping"),
    ],
)
def test_bad_arguments_raise_type_error(kwargs, message):
    arguments = {"auditor": aa.Auditor(aa.MemoryStore()), **kwargs}
    auditor = arguments.pop("auditor")
    with pytest.raises(TypeError, match=message):
        AuditCallbackHandler(auditor, **arguments)


def test_a_disabled_auditor_records_nothing_and_is_skipped():
    handler = AuditCallbackHandler(aa.Auditor(None))
    assert handler.ignore_chain and handler.ignore_llm and handler.ignore_agent

    result = weather_agent().invoke(ask(), config={"callbacks": [handler]})

    assert result["messages"][-1].text == "Paris is sunny, Rome is sunny, and 2+3=5."
    assert handler._runs == {}


def test_caller_may_be_a_callable_read_at_each_run(store, auditor):
    user: ContextVar[str | None] = ContextVar("user", default=None)
    handler = AuditCallbackHandler(auditor, caller=user.get)
    agent = weather_agent()

    for who in ("alice", "bob"):
        token = user.set(who)
        agent.invoke(ask(), config={"callbacks": [handler]})
        user.reset(token)

    assert sorted(run.caller for run in store.list_runs()) == ["alice", "bob"]


def test_the_run_id_is_the_invocations_run_id(store, handler):
    import uuid

    run_id = uuid.uuid4()
    weather_agent().invoke(ask(), config={"callbacks": [handler], "run_id": run_id})

    run = store.get_run(str(run_id))
    assert run is not None
    assert run.status == "succeeded"
