"""The viewer in a real browser (Debian's Chromium through Playwright), over runs that
the real recorders wrote: the demo's LangChain agent, a failed run, an interrupted
one, a run with children, hostile text, and a run that stays running while a test
drives it. `agentaudit ui` runs as a user starts it, in its own process."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from harness import Viewer
from playwright.sync_api import expect

import agentaudit as aa
from agentaudit.ui import CSP


def rows(page: Any) -> Any:
    return page.locator("table#runs tbody tr[data-run]")


def shown_ids(page: Any) -> list[str]:
    return rows(page).evaluate_all("rs => rs.map(r => r.dataset.run)")


# -- the runs page ------------------------------------------------------------------------


def test_runs_page_lists_every_run_newest_first(page, ids):
    page.goto("/?limit=100")
    listed = shown_ids(page)
    for role in ("demo", "demo2", "failed", "interrupted", "parent", "xss", "live"):
        assert ids[role] in listed, role
    for child in ids["children"].split(","):
        assert child in listed
    times = rows(page).locator("[data-cell=started]").all_inner_texts()
    assert times == sorted(times, reverse=True)
    expect(page.locator("#total")).to_have_attribute("data-total", str(len(listed)))
    live_row = page.locator(f'tr[data-run="{ids["live"]}"]')
    expect(live_row.locator("[data-cell=status]")).to_have_text("running")


def test_status_caller_name_model_and_search_filters(page, ids):
    page.goto("/")
    page.check('input[name=status][value=failed]')
    page.click("button:text('Apply')")
    assert shown_ids(page) == [ids["failed"]]
    assert "status=failed" in page.url

    page.goto("/")
    page.fill("input[name=caller]", "billing")
    page.click("button:text('Apply')")
    assert shown_ids(page) == [ids["interrupted"]]

    page.goto("/")
    page.fill("input[name=model]", "local/weather-sim-1")
    page.click("button:text('Apply')")
    assert set(shown_ids(page)) == {ids["demo"], ids["demo2"], ids["failed"]}

    page.goto("/")
    page.fill("input[name=name]", "research-pipeline")
    page.click("button:text('Apply')")
    assert shown_ids(page) == [ids["parent"]]

    # Full-text search: "Oslo" is in one run's tool arguments, result and output only.
    page.goto("/")
    page.fill("input[name=q]", "Oslo")
    page.click("button:text('Apply')")
    assert shown_ids(page) == [ids["demo2"]]

    page.goto("/")
    page.select_option("select[name=has_error]", "yes")
    page.click("button:text('Apply')")
    assert ids["failed"] in shown_ids(page) and ids["demo"] not in shown_ids(page)


def test_time_range_and_parent_filters(page, ids):
    page.goto("/")
    page.fill("input[name=since]", "2999-01-01")
    page.click("button:text('Apply')")
    assert shown_ids(page) == []
    expect(page.locator("td.empty")).to_have_text("no runs match")

    page.goto("/")
    page.fill("input[name=until]", "2000-01-01")
    page.click("button:text('Apply')")
    assert shown_ids(page) == []

    page.goto("/")
    page.fill("input[name=since]", "1h")
    page.click("button:text('Apply')")
    assert ids["demo"] in shown_ids(page)

    page.goto("/?since=yesterday-ish")
    expect(page.locator(".error")).to_contain_text("since")

    # The parent filter, reached from the parent's page.
    page.goto(f"/run?id={ids['parent']}")
    page.click("text=child runs")
    assert set(shown_ids(page)) == set(ids["children"].split(","))


def test_sorting_by_tokens_from_the_column_header(page):
    page.goto("/")
    page.click("th a:text('tokens')")
    assert "sort=tokens" in page.url
    tokens = [int(t.replace(",", "")) for t in rows(page).locator("[data-cell=tokens]").all_inner_texts()]
    assert tokens == sorted(tokens, reverse=True) and tokens[0] > 0
    page.click("th a:text('tokens')")
    assert "dir=asc" in page.url
    tokens = [int(t.replace(",", "")) for t in rows(page).locator("[data-cell=tokens]").all_inner_texts()]
    assert tokens == sorted(tokens)


def test_pages_follow_on_without_gaps_or_repeats(page, ids):
    page.goto("/?limit=25")
    expect(page.locator("#total")).to_have_attribute("data-total", re.compile(r"^\d+$"))
    total = int(page.locator("#total").get_attribute("data-total"))
    assert total > 25
    seen = shown_ids(page)
    assert len(seen) == 25
    while page.locator("#next-page").count():
        page.click("#next-page")
        seen += shown_ids(page)
    assert len(seen) == len(set(seen)) == total


# -- one run --------------------------------------------------------------------------------


def test_the_demo_run_shows_its_header_and_waterfall(page, ids):
    page.goto("/")
    page.click(f'tr[data-run="{ids["demo"]}"] a.runid')
    assert page.url.endswith(f"/run?id={ids['demo']}")
    head = page.locator(".run-head")
    expect(head.locator(".badge").first).to_have_text("succeeded")
    expect(head).to_contain_text("demo-user")
    expect(head).to_contain_text("local/weather-sim-1")
    expect(head).to_contain_text("173 in / 71 out")
    expect(page.locator("#verify")).to_have_text("chain intact")
    assert page.locator(".wf-row.k-step").count() == 3
    tools = page.locator(".wf-row.k-tool")
    assert tools.count() == 4
    # A tool's bar spans its duration: wider than an instant's minimum.
    width = float(tools.first.locator("rect").get_attribute("width"))
    assert width > 4
    # Expanding a tool shows its arguments and its result.
    first = tools.first
    expect(first.locator(".wf-detail")).to_be_hidden()
    first.locator(":scope > summary").click()
    expect(first.locator(".wf-detail")).to_contain_text('"city": "Paris"')
    expect(first.locator(".wf-detail")).to_contain_text("18°C, sunny")
    # And a step, its narration.
    step = page.locator(".wf-row.k-step").first
    step.locator(":scope > summary").click()
    expect(step.locator(".wf-detail")).to_contain_text("Let me look up the weather.")


def test_a_failed_run_marks_its_failed_tool_and_shows_the_error(page, ids):
    page.goto(f"/run?id={ids['failed']}")
    expect(page.locator(".run-head .badge").first).to_have_text("failed")
    expect(page.locator("details.io.err")).to_contain_text("ConnectionError: weather service unreachable")
    failed_tool = page.locator(".wf-row.k-tool.s-error")
    assert failed_tool.count() == 1
    expect(failed_tool.locator(".wf-label .state")).to_have_text("error")
    failed_tool.locator(":scope > summary").click()
    expect(failed_tool.locator("pre.err")).to_contain_text("weather service unreachable for Lisbon")


def test_an_interrupted_run_marks_the_interrupt(page, ids):
    page.goto(f"/run?id={ids['interrupted']}")
    expect(page.locator(".run-head .badge").first).to_have_text("interrupted")
    tool = page.locator(".wf-row.k-tool")
    expect(tool.locator(".wf-label .state")).to_have_text("interrupted")
    marker = page.locator(".wf-row.k-interrupt")
    assert marker.count() == 1
    marker.locator(":scope > summary").click()
    expect(marker.locator(".wf-detail")).to_contain_text("pay 5?")


def test_child_runs_are_nested_in_the_parents_waterfall(page, ids):
    page.goto(f"/run?id={ids['parent']}")
    children = page.locator(".wf-row.k-child")
    assert children.count() == 2
    expect(children.nth(0).locator(".what")).to_have_text("fetch-sources")
    # Each child's own steps and tools are drawn one level in.
    assert page.locator(".wf-row.d-1.k-tool").count() == 2
    children.nth(1).locator(":scope > summary").click()
    children.nth(1).locator("a.runid").click()
    expect(page.locator(".run-head .name")).to_have_text("summarize")
    expect(page.locator(".runid-full")).to_contain_text("child of")


# -- compare ------------------------------------------------------------------------------------


def test_compare_two_runs_side_by_side(page, ids):
    page.goto("/")
    page.check(f'tr[data-run="{ids["demo"]}"] input[name=run]')
    page.check(f'tr[data-run="{ids["demo2"]}"] input[name=run]')
    page.click("button:text('compare')")
    assert "/compare?" in page.url
    summary = page.locator("#compare-summary")
    expect(summary).to_contain_text("weather-agent")
    diff = page.locator("#output-diff")
    marked = diff.locator("mark").all_inner_texts()
    assert "Rome" in marked and "Oslo" in marked
    assert page.locator("#compare-steps tbody tr").count() == 3
    expect(page.locator("#compare-tools")).to_contain_text('{"city":"Oslo"}')


def test_compare_keeps_at_most_two_runs_ticked(page, ids):
    page.goto("/")
    for role in ("demo", "demo2", "failed"):
        page.check(f'tr[data-run="{ids[role]}"] input[name=run]')
    ticked = page.locator("input[name=run]:checked").evaluate_all("bs => bs.map(b => b.value)")
    assert ticked == [ids["demo2"], ids["failed"]] or set(ticked) == {ids["demo2"], ids["failed"]}


# -- overview ----------------------------------------------------------------------------------


def test_overview_charts_and_groups(page, ids):
    page.goto("/overview")
    assert page.locator("figure.chart").count() == 5
    expect(page.locator("#totals")).to_contain_text("runs")
    assert page.locator("figure.chart rect.bar").count() > 0
    expect(page.locator("#by-model")).to_contain_text("local/weather-sim-1")
    expect(page.locator("#by-caller")).to_contain_text("demo-user")
    page.click("text=7 days")
    assert "days=7" in page.url


# -- live -----------------------------------------------------------------------------------------


def test_a_running_run_streams_new_events_and_its_end(browser, viewer, live):
    context = browser.new_context(base_url=viewer.url)
    try:
        run_page = context.new_page()
        list_page = context.new_page()
        run_page.goto(f"/run?id={live.run_id}")
        list_page.goto("/")
        expect(run_page.locator(".live-dot")).to_be_visible()
        steps_before = run_page.locator(".wf-row.k-step").count()
        run_page.locator(".wf-row.k-step").first.locator(":scope > summary").click()  # stays open

        listed = list_page.locator(f'tr[data-run="{live.run_id}"]')
        # A running run's row counts what its events show so far (its totals are
        # written when it ends), and keeps counting.
        expect(listed.locator("[data-cell=steps]")).to_have_text(str(steps_before))
        expect(listed.locator("[data-cell=duration]")).to_contain_text("so far")

        live.send("step")
        expect(listed.locator("[data-cell=steps]")).to_have_text(str(steps_before + 1))
        expect(listed.locator("[data-cell=tools]")).to_have_text("1")
        expect(run_page.locator(".wf-row.k-step")).to_have_count(steps_before + 1)
        expect(run_page.locator(".wf-row.k-tool .what")).to_have_text("lookup")
        expect(run_page.locator(".wf-row.k-step").first).to_have_attribute("open", "")

        # The first page of the list says when newer runs have started.
        expect(list_page.locator("#newer")).to_be_hidden()
        live.send("spawn")
        expect(list_page.locator("#newer")).to_have_text("1 new run: show")
        list_page.click("#newer a")
        expect(list_page.locator("tr[data-run] td.name").first).to_have_text("late-run")

        live.send("close")
        expect(run_page.locator(".run-head .badge").first).to_have_text("succeeded")
        expect(run_page.locator(".live-dot")).to_have_count(0)
        row = list_page.locator(f'tr[data-run="{live.run_id}"]')
        expect(row.locator("[data-cell=status]")).to_have_text("succeeded")
        assert row.locator("[data-cell=duration]").inner_text() != "—"
    finally:
        context.close()


# -- recorded text is text ---------------------------------------------------------------------


XSS_PAGES = ["/", "/?q=summarize", "/overview"]


def _no_markup_ran(page: Any) -> None:
    assert page.evaluate("typeof window.__xss") == "undefined"
    # The only script is the viewer's own; no element carries an event handler or a
    # javascript: link, and every link goes to one of the viewer's own routes.
    assert page.locator("script").evaluate_all("ss => ss.map(s => s.getAttribute('src'))") == [
        "/static/viewer.js"
    ]
    handlers = page.evaluate(
        "() => [...document.querySelectorAll('*')].flatMap(e => [...e.attributes]"
        ".filter(a => a.name.startsWith('on')).map(a => e.tagName + ' ' + a.name))"
    )
    assert handlers == []
    hrefs = page.locator("a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
    assert hrefs and all(h.startswith("/") and not h.startswith("//") for h in hrefs), hrefs
    assert page.locator("img, svg[onload], iframe, object, embed").count() == 0


def test_hostile_recorded_text_renders_as_text_and_never_runs(watched, ids):
    page = watched.page
    page.goto(f"/run?id={ids['xss']}")
    for details in page.locator("details").all():
        details.evaluate("d => d.open = true")
    text = page.locator("main").inner_text()
    assert "<script>window.__xss = 1; alert('narration')</script>" in text
    assert "<img src=x onerror=\"window.__xss = 2; alert('result')\"> <b>bold?</b>" in text
    assert "<a href=\"javascript:alert('link')\">click me</a>" in text
    assert '<svg onload="alert(\'name\')">' in text
    assert "<b>mallory</b>" in text
    assert "javascript:alert('args')" in text
    assert page.locator("main b, main i").count() == 0
    _no_markup_ran(page)
    for path in [*XSS_PAGES, f"/compare?run={ids['xss']}&run={ids['demo']}"]:
        page.goto(path)
        _no_markup_ran(page)
    page.goto("/")
    expect(page.locator(f'tr[data-run="{ids["xss"]}"] td.name')).to_contain_text('<svg onload="alert(\'name\')">')
    # watched: no dialog opened, no error was logged (checked when the test ends)


def test_security_headers_on_every_response(page, ids):
    for path in ("/", f"/run?id={ids['demo']}", "/overview", "/compare", "/static/viewer.js",
                 "/api/runs/live?id=x", "/nothing-here"):
        response = page.request.get(path)
        headers = response.headers
        assert headers["content-security-policy"] == CSP, path
        assert "script-src 'self'" in CSP and "'unsafe-inline'" not in CSP
        assert "frame-ancestors 'none'" in CSP
        assert headers["x-content-type-options"] == "nosniff"
    # The viewer is read-only: no other method is answered.
    assert page.request.post("/").status == 405
    assert page.request.delete(f"/run?id={ids['demo']}").status == 405


def test_a_page_naming_another_host_is_refused(page, viewer):
    # DNS rebinding: a site whose name resolves to 127.0.0.1 sends its own Host.
    response = page.request.get("/", headers={"Host": "attacker.example"})
    assert response.status == 421
    assert page.request.get("/", headers={"Host": "localhost"}).status == 200


def test_run_ids_that_match_nothing_say_so(page):
    page.goto("/run?id=no-such-run")
    expect(page.locator(".error")).to_contain_text("no run 'no-such-run'")


def test_a_unique_run_id_prefix_opens_the_run_under_its_whole_id(page, ids):
    page.goto(f"/run?id={ids['demo'][:-6]}")
    assert re.search(r"/run\?id=" + re.escape(ids["demo"]) + "$", page.url)


def test_the_verify_badge_says_broken_at_which_sequence_and_erased(browser, pristine, ids):
    store = aa.SQLiteStore(pristine)
    store.erase(ids["demo2"])  # a privacy request: content gone, the chain still proves the rest
    store.close()
    with sqlite3.connect(pristine) as conn:  # an edit behind the recorder's back
        conn.execute(
            "UPDATE events SET payload = replace(payload, 'Lisbon', 'Berlin') WHERE run_id = ? AND sequence = 3",
            (ids["failed"],),
        )
    server = Viewer(pristine)
    try:
        context = browser.new_context(base_url=server.url)
        page = context.new_page()
        page.goto(f"/run?id={ids['failed']}")
        expect(page.locator("#verify")).to_have_text("chain broken at sequence 3")
        expect(page.locator("#verify")).to_have_class(re.compile(r"\bv-broken\b"))
        page.goto(f"/run?id={ids['demo2']}")
        expect(page.locator("#verify")).to_have_text("chain erased")
        expect(page.locator(".run-head")).to_contain_text("[erased]")
        page.goto(f"/run?id={ids['demo']}")
        expect(page.locator("#verify")).to_have_text("chain intact")
        context.close()
    finally:
        server.stop()
