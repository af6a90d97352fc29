"""The viewer's pages over a real SQLite file, through the ASGI app (no browser): paging
that neither repeats nor skips runs that started at the same instant, the output diff,
the waterfall's layout, and the errors a bad parameter gets."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import agentaudit as aa
from agentaudit.ui import create_app
from agentaudit.ui._views import RunsQuery, output_diff, waterfall

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


def write_runs(path: Path, starts: list[datetime]) -> list[str]:
    """Runs with the given start times, written as the store writes any run."""
    store = aa.SQLiteStore(path)
    ids = []
    for i, started in enumerate(starts):
        run = aa.Run(run_id=f"run-{i:03d}", name="job", caller="c", started_at=started)
        store.start_run(run)
        store.finish_run(run.run_id, aa.RunStats(status="succeeded"), started + timedelta(seconds=1))
        ids.append(run.run_id)
    store.close()
    return ids


def client(path: Path) -> tuple[TestClient, Any]:
    store = aa.open_store(str(path), read_only=True)
    return TestClient(create_app(store), base_url="http://127.0.0.1"), store


def ids_on(html: str) -> list[str]:
    import re

    return re.findall(r'<tr data-run="([^"]+)"', html)


def next_link(html: str) -> str | None:
    import html as htmllib
    import re

    match = re.search(r'<a href="([^"]+)" rel="next"', html)
    return htmllib.unescape(match.group(1)) if match else None


@pytest.mark.parametrize("ascending", [False, True])
def test_keyset_pages_keep_runs_that_started_at_the_same_instant(tmp_path, ascending):
    # 60 runs, in groups of 7 that share a start time to the microsecond: page
    # boundaries fall inside groups.
    starts = [T0 + timedelta(seconds=i // 7) for i in range(60)]
    written = write_runs(tmp_path / "a.db", starts)
    http, store = client(tmp_path / "a.db")
    url = "/?limit=25" + ("&dir=asc" if ascending else "")
    seen: list[str] = []
    pages = 0
    while url:
        response = http.get(url)
        assert response.status_code == 200
        seen += ids_on(response.text)
        url = next_link(response.text)
        pages += 1
    store.close()
    assert pages == 3
    assert sorted(seen) == sorted(written) and len(seen) == len(set(seen))
    times = [starts[written.index(i)] for i in seen]
    assert times == sorted(times, reverse=not ascending)


def test_a_page_past_the_first_says_so_and_links_back(tmp_path):
    write_runs(tmp_path / "a.db", [T0 + timedelta(seconds=i) for i in range(30)])
    http, store = client(tmp_path / "a.db")
    first = http.get("/?limit=25").text
    second = http.get(next_link(first)).text
    store.close()
    assert "back to the first page" in second and "back to the first page" not in first
    assert len(ids_on(second)) == 5


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=someday", "since"),
        ("status=exploded", "unknown status"),
        ("sort=vibes", "sort must be one of"),
        ("min_cost=-1", "min_cost"),
        ("limit=7", "limit must be one of"),
        ("offset=x", "offset must be a whole number"),
    ],
)
def test_a_bad_parameter_is_a_400_that_says_which(tmp_path, query, message):
    write_runs(tmp_path / "a.db", [T0])
    http, store = client(tmp_path / "a.db")
    response = http.get(f"/?{query}")
    store.close()
    assert response.status_code == 400
    assert message in response.text


def test_runs_query_round_trips_its_parameters():
    from starlette.datastructures import QueryParams

    params = QueryParams("q=a+b&status=failed&status=timeout&caller=x&sort=cost&dir=asc&limit=100&has_error=yes")
    query = RunsQuery.from_params(params)
    assert RunsQuery.from_params(QueryParams(query.params())) == query
    flt = query.run_filter()
    assert (flt.text, flt.order_by, flt.ascending, flt.has_error, flt.limit) == ("a b", "cost", True, True, 101)
    assert [s.value for s in flt.statuses] == ["failed", "timeout"]


def test_output_diff_pairs_lines_and_marks_changed_words():
    rows = output_diff("same line\nParis is sunny\nonly in a", "same line\nParis is cloudy")
    kinds = [row.kind for row in rows]
    assert kinds == ["equal", "replace", "delete"]
    left, right = rows[1].left, rows[1].right
    assert ("sunny", True) in left and ("cloudy", True) in right
    assert left[0] == ("Paris is ", False)
    assert rows[2].right is None


def test_waterfall_spans_tools_from_call_to_result_and_marks_open_ones(tmp_path):
    store = aa.SQLiteStore(tmp_path / "w.db")
    writer = aa.Auditor(store).start_run("w")
    writer.on_step(1, aa.Response(text="go", model="m", usage=aa.Usage(1, 1)))
    done = aa.ToolCall("fast", {}, id="1")
    writer.tool_started(done)
    writer.tool_finished(done, "ok")
    writer.tool_started(aa.ToolCall("slow", {}, id="2"))  # still running
    writer.log_error("boom")
    store.flush()
    run = store.get_run(writer.run_id)
    wf = waterfall(run, store.get_logs(run.run_id), children=store.children, logs=store.get_logs,
                   now=datetime.now(timezone.utc) + timedelta(seconds=10))
    kinds = [(row.kind, row.label, row.state) for row in wf.rows]
    assert kinds == [("step", "step 1", "ok"), ("tool", "fast", "ok"), ("tool", "slow", "open"),
                     ("error", "error", "error")]
    slow = wf.rows[2]
    # An open tool runs to "now", the end of the axis.
    assert slow.x + slow.width == pytest.approx(1000.0, abs=0.5)
    assert all(0 <= row.x <= 1000 and row.width >= 4 for row in wf.rows)
    writer.close(aa.RunStats(status="failed", error="boom"))
    store.close()
