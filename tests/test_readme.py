"""The README cannot drift from what it describes: its two commands are Makefile
targets, and the demo code it shows is the demo that `make demo` runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_the_first_screen_gives_exactly_the_two_commands() -> None:
    first = blocks("bash")[0]
    commands = [line.split("#")[0].strip() for line in first.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
    assert README.index("make test") < 1200  # on the first screen


def test_the_demo_code_shown_is_the_demo_that_runs() -> None:
    demo = (ROOT / "examples" / "demo.py").read_text(encoding="utf-8")
    shown = blocks("python")[0]
    missing = [line for line in shown.splitlines() if line.strip() and line not in demo]
    assert not missing, f"README lines not in examples/demo.py: {missing}"


def test_the_cli_commands_shown_exist() -> None:
    # Asked of the real command: commands live in several modules (cli/_app.py,
    # cli/_integrity.py, ...), registered on one group.
    shown = {
        line.split()[1]
        for block in blocks("bash")[1:]
        for line in block.splitlines()
        if line.startswith("agentaudit ")
    }
    assert shown
    for command in sorted(shown):
        result = subprocess.run(
            [sys.executable, "-m", "agentaudit", command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (command, result.stderr)
