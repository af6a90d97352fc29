"""The `agentaudit` command's entry point, and `python -m agentaudit`.

The command's libraries (click, rich) come with the `cli` extra, not with the core:
`pip install agentaudit` alone installs the script too (a distribution cannot install
a script only with an extra), so without them the script says in one line what to
install and exits with status 1, instead of a traceback.
"""

from __future__ import annotations

import sys

CLI_LIBRARIES = frozenset({"click", "rich"})
INSTALL_HINT = 'agentaudit: the command needs the cli extra: pip install "agentaudit[cli]"'


def main(argv: list[str] | None = None) -> None:
    """Run the `agentaudit` command, or say what to install when it cannot run."""
    try:
        from agentaudit.cli import main as cli_main
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in CLI_LIBRARIES:
            raise  # a broken install of something else: show it as it is
        print(INSTALL_HINT, file=sys.stderr)
        raise SystemExit(1) from None
    cli_main(argv)


if __name__ == "__main__":
    main()
