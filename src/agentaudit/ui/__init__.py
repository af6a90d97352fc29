"""``agentaudit ui``: a local, read-only web viewer of an audit database.

Starlette serves server-rendered Jinja2 pages (autoescaped: every recorded text is
untrusted) with one small script and one stylesheet shipped in this package, so the
viewer needs no build step and no network. See ``docs/viewer.md``.
"""

from __future__ import annotations

from ._app import create_app
from ._security import CSP, check_bind, is_loopback

__all__ = ["CSP", "check_bind", "create_app", "is_loopback"]
