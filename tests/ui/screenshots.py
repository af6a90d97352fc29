"""Take the viewer screenshots in docs/img/viewer-*.png, with the browser the tests use.

    .venv/bin/python tests/ui/screenshots.py

The runs come from seed_store.py (the demo's LangChain agent and the other recorded
runs the browser tests read, one of them kept running); the overview is shot over a
synthetic file of 20,000 runs spread over 90 days (bench/bench_ui.py's loader), so
that its charts have a history to show.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from harness import LiveRun, Viewer, launch, seed

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "img"
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    from bench_ui import load
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "audit.db"
        ids = seed(db)
        history = Path(tmp) / "history.db"
        load(history, 20_000, 100)
        live = LiveRun(db)
        live.send("step")
        viewer = Viewer(db)
        overview = Viewer(history)
        try:
            with sync_playwright() as playwright:
                browser = launch(playwright)
                page = browser.new_page(viewport={"width": 1360, "height": 860}, base_url=viewer.url)

                page.goto("/?limit=25")
                page.wait_for_selector("#total[data-total]")
                page.screenshot(path=OUT / "viewer-runs.png")

                page.goto(f"/run?id={ids['demo']}")
                tools = page.locator(".wf-row.k-tool")
                tools.nth(1).locator(":scope > summary").click()
                page.screenshot(path=OUT / "viewer-run.png", full_page=True)

                page.goto(f"/run?id={ids['parent']}")
                page.screenshot(path=OUT / "viewer-run-children.png", full_page=True)

                page.goto(f"/run?id={ids['failed']}")
                page.locator(".wf-row.s-error").first.locator(":scope > summary").click()
                page.screenshot(path=OUT / "viewer-run-failed.png", full_page=True)

                page.goto(f"/run?id={ids['xss']}")
                page.locator(".wf-row.k-tool").first.locator(":scope > summary").click()
                page.screenshot(path=OUT / "viewer-untrusted-text.png", full_page=True)

                page.goto(f"/compare?run={ids['demo']}&run={ids['demo2']}")
                page.screenshot(path=OUT / "viewer-compare.png", full_page=True)

                page.goto(f"{overview.url}/overview?days=90")
                page.screenshot(path=OUT / "viewer-overview.png", full_page=True)
                browser.close()
        finally:
            viewer.stop()
            overview.stop()
            live.send("close")
            live.stop()
    for png in sorted(OUT.glob("viewer-*.png")):
        print(png.relative_to(ROOT))


if __name__ == "__main__":
    main()
