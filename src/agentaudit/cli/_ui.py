"""``agentaudit ui``: serve the read-only run viewer (`agentaudit.ui`) on this machine.

The web stack (Starlette, Jinja2, uvicorn) is the ``ui`` extra: it is imported only
when the command runs, so the rest of the command works without it. The address is
checked before the database is opened: a non-loopback one needs ``--token``.
"""

from __future__ import annotations

import sys
import threading
import webbrowser
from typing import Any

import click

from ._params import DEFAULT_DB, CliError

__all__ = ["ui"]

DEFAULT_PORT = 8765


@click.command()
@click.option("--db", "db", default=None, metavar="URL",
              help="The store to read: a SQLite path or a store URL (default: the group's --db).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--open", "open_browser", is_flag=True, help="Open the viewer in a web browser.")
@click.option("--token", envvar="AGENTAUDIT_UI_TOKEN", default=None, metavar="TOKEN",
              help="Require this token on every request (also $AGENTAUDIT_UI_TOKEN).")
@click.pass_context
def ui(ctx: click.Context, db: str | None, host: str, port: int, open_browser: bool, token: str | None) -> None:
    """Serve a read-only web viewer of the runs (needs the ui extra)."""
    try:
        import uvicorn

        from ..ui import check_bind, create_app, is_loopback
    except ImportError as exc:
        raise CliError(f"agentaudit ui needs the ui extra (pip install 'agentaudit[ui]'): {exc}") from None
    try:
        check_bind(host, token)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    from ..stores import open_store

    url = db or (ctx.obj or {}).get("db") or DEFAULT_DB
    store = open_store(url, read_only=True)
    ctx.call_on_close(store.close)
    app = create_app(store, token=token, loopback=is_loopback(host), source=url)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            lifespan="off")

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.should_exit:  # it could not listen: uvicorn said why
                return
            bound = self.servers[0].sockets[0].getsockname()[1]  # the port --port 0 got
            address = f"http://{f'[{host}]' if ':' in host else host}:{bound}/"
            click.echo(f"agentaudit ui: {url} (read-only) at {address}")
            if token:
                click.echo(f"open {address}?token=<your token> once; the browser then keeps it as a cookie")
            sys.stdout.flush()
            if open_browser:
                # With a token, the first address carries it; the viewer turns it into a
                # cookie and takes it out of the address bar.
                first = f"{address}?token={token}" if token else address
                threading.Thread(target=webbrowser.open, args=(first,), daemon=True).start()

    server = Server(config)
    server.run()
    if server.should_exit and not server.started:
        raise CliError(f"cannot listen on {host}:{port}")
