"""docs/cli.md documents every command and every option of the `agentaudit` command,
derived from the click command tree: adding an option without documenting it fails."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from agentaudit.cli._app import iter_commands

CLI_PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def sections() -> dict[str, str]:
    """The page split at its `## ` headings, keyed by the command a heading names
    (`## \\`agentaudit runs\\``); the text before the first command is the group's."""
    text = CLI_PAGE.read_text(encoding="utf-8")
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    found = {"agentaudit": parts[0]}
    for part in parts[1:]:
        heading, _, body = part.partition("\n")
        match = re.fullmatch(r"`(agentaudit [a-z-]+)`", heading.strip())
        if match:
            found[match.group(1)] = body
        else:
            found["agentaudit"] += part  # "Common options" and the like belong to the group
    return found


def documented_options(command: click.Command) -> list[str]:
    names = []
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            names.extend(param.opts + param.secondary_opts)
    return names


COMMANDS = list(iter_commands())


def test_the_tree_is_what_the_issue_asks_for() -> None:
    names = {name for name, _command in COMMANDS}
    for wanted in ("runs", "show", "tail", "export", "purge", "verify", "stats"):
        assert f"agentaudit {wanted}" in names


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _c in COMMANDS])
def test_every_command_and_option_is_documented(name: str, command: click.Command) -> None:
    page = sections()
    assert name in page, f"docs/cli.md has no section `## \\`{name}\\``"
    body = page[name]
    missing = [opt for opt in documented_options(command) if not re.search(rf"`{re.escape(opt)}\b", body)]
    assert not missing, f"docs/cli.md, section {name}: options not documented: {missing}"
    for param in command.params:
        if isinstance(param, click.Argument):
            assert f"`{param.name.upper()}`" in body or f"{param.name.upper()}" in body
