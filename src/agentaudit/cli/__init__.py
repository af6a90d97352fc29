"""The ``agentaudit`` command (``pip install 'agentaudit[cli]'``).

Kept out of the core's import path: ``import agentaudit`` never imports this package,
which needs click and rich. `agentaudit.cli.render.render_run` prints a run
exactly as ``agentaudit show`` does, for programs that want the same view.
"""

from __future__ import annotations

from ._app import cli, main

__all__ = ["cli", "main"]
