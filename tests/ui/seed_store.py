"""Record the runs the viewer's browser tests look at, through the real recorders:
the demo's LangChain agent (examples/), a failed run, a run with child runs, a run a
LangGraph interrupt paused, a run whose recorded text is hostile HTML, and (``live``)
a run that stays running while a test drives it.

Run as a script so that each store is written by its own process, as agents do:

    python seed_store.py seed DB        # every finished run; prints their ids as JSON
    python seed_store.py live DB        # one running run, driven line by line on stdin
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))

from langchain.agents import create_agent  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.types import interrupt  # noqa: E402
from local_model import LocalWeatherModel  # noqa: E402

import agentaudit as aa  # noqa: E402
from agentaudit_langchain import AuditCallbackHandler  # noqa: E402

# Recorded text that is markup: the viewer must show it as text and run none of it.
XSS_NARRATION = "Checking. <script>window.__xss = 1; alert('narration')</script> done"
XSS_RESULT = '<img src=x onerror="window.__xss = 2; alert(\'result\')"> <b>bold?</b>'
XSS_LINK = '<a href="javascript:alert(\'link\')">click me</a> [md](javascript:alert(1))'
XSS_NAME = '<svg onload="alert(\'name\')">'
BATCH_RUNS = 30
PRICING = {"weather-sim-1": {"input": 2.5, "output": 10.0}, "scripted-1": {"input": 1.0, "output": 4.0}}


@tool
def get_weather(city: str) -> str:
    """Current weather for a city, in Celsius."""
    time.sleep(0.03)  # a tool that takes a moment: its bar has a width
    return {"Paris": "18°C, sunny", "Rome": "24°C, clear"}.get(city, "15°C, cloudy")


@tool
def celsius_to_fahrenheit(celsius: float) -> float:
    """Convert a temperature from Celsius to Fahrenheit."""
    time.sleep(0.01)
    return round(celsius * 9 / 5 + 32, 1)


@tool("get_weather")
def broken_weather(city: str) -> str:
    """Current weather for a city (its service is down)."""
    time.sleep(0.02)
    raise ConnectionError(f"weather service unreachable for {city}")


@tool
def needs_approval(amount: int) -> str:
    """Pay, once a human approved."""
    answer = interrupt({"question": f"pay {amount}?"})
    return f"paid {amount}: {answer}"


@tool
def fetch_page(url: str) -> str:
    """Fetch a page (here: a hostile one)."""
    return XSS_RESULT + "\n" + XSS_LINK


class Scripted(BaseChatModel):
    """Answers turn k of a conversation with ``turns[k]``."""

    turns: list[AIMessage]
    model: str = "scripted-1"

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Scripted:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        k = sum(1 for m in messages if isinstance(m, AIMessage))
        reply = self.turns[k].model_copy(deep=True)
        reply.usage_metadata = {"input_tokens": 30 + 10 * k, "output_tokens": 12, "total_tokens": 42 + 10 * k}
        reply.response_metadata["model_name"] = self.model
        return ChatResult(generations=[ChatGeneration(message=reply)])


def turn(text: str, calls: list[tuple[str, dict[str, Any], str]] = ()) -> AIMessage:  # type: ignore[assignment]
    return AIMessage(content=text, tool_calls=[
        {"name": n, "args": a, "id": i, "type": "tool_call"} for n, a, i in calls
    ])


def ask(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def seed(path: str) -> dict[str, str]:
    store = aa.SQLiteStore(path)
    auditor = aa.Auditor(store, pricing=PRICING)
    ids: dict[str, str] = {}

    def last_root() -> str:
        return store.list_runs(aa.RunFilter(limit=1))[0].run_id

    for i in range(BATCH_RUNS):  # enough runs for more than one page of 25
        with auditor.run("batch-job", caller="cron", input=f"item {i}") as job:
            job.set_output(f"done {i}")

    weather = create_agent(LocalWeatherModel(), tools=[get_weather, celsius_to_fahrenheit],
                           name="weather-agent")
    demo = AuditCallbackHandler(auditor, caller="demo-user")
    weather.invoke(ask("What's the weather in Paris and Rome?"), config={"callbacks": [demo]})
    ids["demo"] = last_root()
    time.sleep(0.01)
    weather.invoke(ask("What's the weather in Paris and Oslo?"), config={"callbacks": [demo]})
    ids["demo2"] = last_root()

    failing = create_agent(LocalWeatherModel(), tools=[broken_weather, celsius_to_fahrenheit],
                           name="weather-agent")
    try:
        failing.invoke(ask("What's the weather in Lisbon?"),
                       config={"callbacks": [AuditCallbackHandler(auditor, caller="ops-bot")]})
    except ConnectionError:
        pass
    ids["failed"] = last_root()

    payer = create_agent(
        Scripted(turns=[turn("I will ask first.", [("needs_approval", {"amount": 5}, "pay_1")]),
                        turn("Paid.")]),
        tools=[needs_approval], checkpointer=InMemorySaver(), name="payer",
    )
    payer.invoke(ask("pay the bill"), config={
        "callbacks": [AuditCallbackHandler(auditor, caller="billing")],
        "configurable": {"thread_id": "pay-thread"},
    })
    ids["interrupted"] = last_root()

    with auditor.run("research-pipeline", caller="researcher", input="compare two papers") as parent:
        parent.on_step(1, aa.Response(text="Splitting the work between two helpers.", model="scripted-1",
                                      usage=aa.Usage(40, 10)))
        for name, city in (("fetch-sources", "Paris"), ("summarize", "Rome")):
            with auditor.run(name, caller="researcher", input=city) as child:
                child.on_step(1, aa.Response(text=f"Working on {city}.", model="scripted-1",
                                             usage=aa.Usage(20, 8)))
                call = aa.ToolCall("get_weather", {"city": city}, id=f"{name}-1")
                child.tool_started(call)
                time.sleep(0.02)
                child.tool_finished(call, f"{city}: fine")
                child.set_output(f"{name} done")
        parent.set_output("both helpers finished")
    ids["parent"] = parent.run_id
    ids["children"] = ",".join(r.run_id for r in store.children(ids["parent"]))

    hostile = create_agent(
        Scripted(turns=[turn(XSS_NARRATION, [("fetch_page", {"url": "javascript:alert('args')"}, "x1")]),
                        turn("Summary: " + XSS_LINK)]),
        tools=[fetch_page], name=XSS_NAME,
    )
    hostile.invoke(ask("<i>summarize</i> " + XSS_LINK),
                   config={"callbacks": [AuditCallbackHandler(auditor, caller="<b>mallory</b>")]})
    ids["xss"] = last_root()
    store.close()
    return ids


def live(path: str) -> None:
    """A run left running: each stdin line records something (``step``: a step and a
    tool call in it; ``spawn``: another, short run); ``close`` ends it."""
    store = aa.SQLiteStore(path)
    auditor = aa.Auditor(store, pricing=PRICING)
    writer = auditor.start_run("live-agent", caller="streamer", input="keep going")
    writer.on_step(1, aa.Response(text="First step, live.", model="scripted-1", usage=aa.Usage(10, 5)))
    store.flush()
    print(json.dumps({"live": writer.run_id}), flush=True)
    iteration = 1
    for line in sys.stdin:
        command = line.strip()
        if command == "step":
            iteration += 1
            writer.on_step(iteration, aa.Response(text=f"Step {iteration} landed while you watched.",
                                                  model="scripted-1", usage=aa.Usage(10, 5)))
            writer.on_tool(aa.ToolCall("lookup", {"n": iteration}, id=f"live-{iteration}"), f"result {iteration}")
        elif command == "spawn":  # another run starts after the page was shown
            with auditor.run("late-run", caller="streamer") as late:
                late.set_output("late")
        elif command == "close":
            writer.set_output("live run finished")
            writer.close(aa.RunStats(status="succeeded"))
        store.flush()
        print("ok", flush=True)
        if command == "close":
            break
    store.close()


if __name__ == "__main__":
    mode, db = sys.argv[1], sys.argv[2]
    if mode == "seed":
        print(json.dumps(seed(db)))
    elif mode == "live":
        live(db)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
