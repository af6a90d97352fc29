"""`agentaudit ui` as a user runs it: where it listens, what it refuses, and that
browsing changes nothing in the database."""

from __future__ import annotations

import hashlib
import http.client
import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from harness import AGENTAUDIT, Viewer

TOKEN = "0123456789abcdef0123"


def ui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENTAUDIT, "ui", "--port", "0", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_a_non_loopback_address_without_a_token_is_refused(pristine, host):
    done = ui("--db", str(pristine), "--host", host)
    assert done.returncode == 2
    assert "refusing to serve on" in done.stderr and "--token" in done.stderr
    assert done.stdout == ""


def test_a_short_token_is_refused(pristine):
    done = ui("--db", str(pristine), "--host", "0.0.0.0", "--token", "short")
    assert done.returncode == 2
    assert "--token must be" in done.stderr


def test_a_missing_database_is_an_error_not_a_new_file(tmp_path):
    missing = tmp_path / "nothing.db"
    done = ui("--db", str(missing))
    assert done.returncode == 2
    assert "no agentaudit database" in done.stderr
    assert not missing.exists()


def get(url: str, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_with_a_token_every_request_must_carry_it(pristine):
    server = Viewer(pristine, "--host", "0.0.0.0", "--token", TOKEN)
    try:
        assert server.url.startswith("http://0.0.0.0:")
        assert get(server.url, "/").status == 401
        assert get(server.url, "/static/viewer.js").status == 401
        assert get(server.url, "/", {"Authorization": "Bearer wrong-token-wrong-token"}).status == 401
        assert get(server.url, "/", {"Authorization": f"Bearer {TOKEN}"}).status == 200
        # Once in the URL: a cookie, and a redirect that takes the token out of it.
        first = get(server.url, f"/overview?days=7&token={TOKEN}")
        assert first.status == 303
        assert first.getheader("location") == "/overview?days=7"
        cookie = first.getheader("set-cookie")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert get(server.url, "/overview", {"Cookie": cookie.split(";")[0]}).status == 200
        assert get(server.url, "/overview", {"Cookie": "agentaudit_ui_token=nope"}).status == 401
        # The redirect stays on the viewer, whatever path it was asked for.
        assert get(server.url, f"//attacker.example/x?token={TOKEN}").getheader("location") == "/attacker.example/x"
    finally:
        server.stop()


def _state(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns


def test_browsing_every_page_leaves_the_database_as_it_was(pristine, browser, ids):
    before = _state(pristine)
    server = Viewer(pristine)
    try:
        context = browser.new_context(base_url=server.url)
        page = context.new_page()
        visited = 0
        for path in ["/", "/?status=failed", "/?q=weather", "/?sort=cost", "/overview", "/overview?days=90",
                     f"/compare?run={ids['demo']}&run={ids['demo2']}"]:
            assert page.goto(path).status == 200
            visited += 1
        for run_id in page.goto("/?limit=100") and page.locator("tr[data-run]").evaluate_all(
            "rs => rs.map(r => r.dataset.run)"
        ):
            assert page.goto(f"/run?id={run_id}").status == 200
            for details in page.locator("details").all():
                details.evaluate("d => d.open = true")
            visited += 1
        assert visited > 30
        assert page.request.post("/").status == 405
        context.close()
    finally:
        server.stop()
    assert _state(pristine) == before
    wal = Path(f"{pristine}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
