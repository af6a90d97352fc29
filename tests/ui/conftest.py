from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import CHROMIUM, LiveRun, Viewer, launch, seed


def _need_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing: `apt-get install -y chromium` (make test does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A database with the finished test runs, and a pristine copy of it."""
    folder = tmp_path_factory.mktemp("viewer")
    db = folder / "audit.db"
    ids = seed(db)
    # Copied before any other process opens it: every writer has closed it, so the
    # file holds everything (no -wal beside it).
    shutil.copyfile(db, folder / "pristine.db")
    return db, ids


@pytest.fixture(scope="session")
def live(seeded: tuple[Path, dict[str, str]]) -> Iterator[LiveRun]:
    run = LiveRun(seeded[0])
    yield run
    run.stop()


@pytest.fixture(scope="session")
def ids(seeded: tuple[Path, dict[str, str]], live: LiveRun) -> dict[str, str]:
    return {**seeded[1], "live": live.run_id}


@pytest.fixture(scope="session")
def viewer(seeded: tuple[Path, dict[str, str]], live: LiveRun) -> Iterator[Viewer]:
    server = Viewer(seeded[0])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


class Watched:
    """A page whose dialogs, page errors and console errors are kept: recorded
    markup that ran would show up in one of them."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        # A page answered 4xx on purpose (an unknown run) logs its status; anything
        # else logged as an error (a CSP violation, a script error) is kept.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)


@pytest.fixture
def watched(browser: Any, viewer: Viewer) -> Iterator[Watched]:
    context = browser.new_context(base_url=viewer.url, viewport={"width": 1300, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    watch = Watched(page)
    yield watch
    context.close()
    assert watch.dialogs == [], f"a dialog opened: {watch.dialogs}"
    assert watch.errors == [], f"errors in the page: {watch.errors}"


@pytest.fixture
def page(watched: Watched) -> Any:
    return watched.page


@pytest.fixture
def pristine(tmp_path: Path, seeded: tuple[Path, dict[str, str]]) -> Path:
    """A copy of the seeded file that no writer has ever had open since."""
    copy = tmp_path / "pristine.db"
    shutil.copyfile(seeded[0].with_name("pristine.db"), copy)
    return copy
