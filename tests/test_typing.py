"""Types a strict user relies on: the docs' examples and typed uses of the decorators
pass `mypy --strict` as a user's own script would (arguments as a mapping, tool calls
as a list, a status tuple, a store from a URL, decorators with and without
arguments), and the package itself passes mypy with the config in pyproject.toml."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "tests" / "typing_examples"


def mypy(args: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def docs_writer_example() -> str:
    """The Writer example of docs/index.md and the read-back block after it."""
    text = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    section = text.split("## Quick start: the Writer, by hand", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)[:2]
    assert len(blocks) == 2 and "auditor.run(" in blocks[0] and "list_runs" in blocks[1]
    return "\n".join(blocks)


def test_the_docs_writer_example_passes_mypy_strict(tmp_path: Path) -> None:
    script = tmp_path / "docs_writer_example.py"
    script.write_text(docs_writer_example(), encoding="utf-8")
    # The user's own directory: no project config, only the installed package.
    result = mypy(["--strict", script.name], tmp_path, tmp_path / "cache")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("example", ["writer_example.py", "decorator_example.py"])
def test_typed_examples_pass_mypy_strict_and_run(example: str, tmp_path: Path) -> None:
    script = tmp_path / example
    script.write_text((EXAMPLES / example).read_text(encoding="utf-8"), encoding="utf-8")
    result = mypy(["--strict", script.name], tmp_path, tmp_path / "cache")
    assert result.returncode == 0, result.stdout + result.stderr
    # And they do what they say at run time, too.
    ran = subprocess.run(
        [sys.executable, script.name], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    if example == "writer_example.py":
        first = ran.stdout.splitlines()[0].split()
        assert first[1:] == ["succeeded", "1", "100"]
    else:
        assert ran.stdout.strip() == "sunny in Paris, 3 42 HI"


def test_the_package_passes_mypy(tmp_path: Path) -> None:
    # `mypy` with no arguments at the root: [tool.mypy] in pyproject.toml (strict, the
    # whole package, as Python 3.10).
    result = mypy([], ROOT, tmp_path / "cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_constructors_accept_what_their_types_say_and_refuse_the_rest_cleanly() -> None:
    import agentaudit as aa

    # What the typed constructor signatures promise, stored in one form.
    assert aa.ToolCall("t", {"b": 1, "a": 2}).arguments == '{"a":2,"b":1}'
    assert aa.ToolCall("t", None, None).arguments == "{}"
    assert aa.ToolCall("t", None, None).id == ""
    response = aa.Response(None, None, None, None, [aa.ToolCall("t")])
    assert response.tool_calls == (aa.ToolCall("t"),) and response.usage == aa.Usage()
    assert aa.RunFilter(status=["failed", aa.RunStatus.TIMEOUT]).statuses == (
        aa.RunStatus.FAILED,
        aa.RunStatus.TIMEOUT,
    )
    # Valid JSON that Python refuses to read (an int past its digit limit) is a
    # ValueError naming the field, not an AttributeError from inside the check.
    with pytest.raises(ValueError, match=r"ToolCall\.arguments"):
        aa.ToolCall("t", '{"n": ' + "1" * 5000 + "}")
