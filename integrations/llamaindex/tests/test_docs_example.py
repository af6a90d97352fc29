"""The runnable example of docs/llamaindex.md runs and prints what the page says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "llamaindex.md"


def runnable_example() -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- runnable-example -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, "docs/llamaindex.md lost its runnable example"
    return match.group(1)


def test_the_docs_example_runs_as_documented() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(runnable_example(), str(DOC), "exec"), {"__name__": "__docs__"})
    lines = out.getvalue().splitlines()
    assert lines[0] == "It is sunny in Paris."
    assert lines[1] == "forecaster succeeded 2 1"
    assert [line.split()[1] for line in lines[2:]] == [
        "step", "resolved_model", "tool_call", "tool_result", "step",
    ]
