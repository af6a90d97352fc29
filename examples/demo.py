"""agentaudit in one callback: a LangChain agent with two tools, audited into
./agentaudit.db, then the recorded run printed as `agentaudit show` prints it.

Runs offline: the model is a local, deterministic stand-in (local_model.py).
"""

import uuid

from langchain.agents import create_agent
from langchain_core.tools import tool
from local_model import LocalWeatherModel

import agentaudit as aa
from agentaudit.cli.render import render_run
from agentaudit_langchain import AuditCallbackHandler


@tool
def get_weather(city: str) -> str:
    """Current weather for a city, in Celsius."""
    return {"Paris": "18°C, sunny", "Rome": "24°C, clear"}.get(city, "15°C, cloudy")


@tool
def celsius_to_fahrenheit(celsius: float) -> float:
    """Convert a temperature from Celsius to Fahrenheit."""
    return round(celsius * 9 / 5 + 32, 1)


agent = create_agent(LocalWeatherModel(), tools=[get_weather, celsius_to_fahrenheit],
                     name="weather-agent")

store = aa.SQLiteStore("agentaudit.db")
audit = AuditCallbackHandler(aa.Auditor(store), caller="demo-user")

run_id = uuid.uuid4()  # optional: the audit run takes the invocation's run id
result = agent.invoke(
    {"messages": [{"role": "user", "content": "What's the weather in Paris and Rome?"}]},
    config={"callbacks": [audit], "run_id": run_id},
)
print(result["messages"][-1].text, end="\n\n")

render_run(store, str(run_id))
store.close()
