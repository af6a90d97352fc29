"""``python -m agentaudit.cli``: the same as the ``agentaudit`` command."""

from ._app import main

main()
