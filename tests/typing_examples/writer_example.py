"""The docs' Writer example (docs/index.md, "the Writer, by hand"), as a user with
`mypy --strict` writes it: a list of tool calls, arguments as a mapping, a status
tuple in a filter, a store from a URL."""

from __future__ import annotations

from typing import TYPE_CHECKING

import agentaudit as aa

auditor = aa.Auditor(aa.SQLiteStore("agentaudit.db"))
with auditor.run("research-agent", caller="user:42", input="question") as w:
    w.on_step(1, aa.Response(text="Let me search.", model="openai/gpt-4o-mini",
                             finish_reason="tool_calls", usage=aa.Usage(100, 20),
                             tool_calls=[aa.ToolCall("search", {"q": "x"}, "call_1")]))
    w.on_tool(aa.ToolCall("search", {"q": "x"}, "call_1"), "result text", duration_ms=12.5)
    w.set_output("answer")

store = aa.open_store("sqlite:///agentaudit.db")
finished = aa.RunFilter(caller="user:42", status=("succeeded", aa.RunStatus.FAILED), limit=10)
for run in store.list_runs(finished):
    print(run.run_id, run.status, run.tool_calls, run.input_tokens)
    events: list[aa.Event] = store.get_logs(run.run_id)
    arguments: str = aa.ToolCall("search", {"q": "x"}).arguments  # stored as JSON text
    print(len(events), arguments)
store.close()

if TYPE_CHECKING:
    from typing_extensions import assert_type

    assert_type(aa.open_store("memory://"), aa.Store)
    assert_type(aa.Response(tool_calls=[]).tool_calls, tuple[aa.ToolCall, ...])
