"""The documentation site as a newcomer reads it: built with `mkdocs build --strict`, its
API reference shows the store methods and the value types' fields, renders no Sphinx
role literally and leaks no private parameter; the sitemap lists the pages; the pages a
newcomer looks for are in the navigation; the quickstart runs as written."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {k: v for k, v in os.environ.items() if k != "AGENTAUDIT_DOCS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def page_text(path: Path) -> str:
    """A rendered page's article as text (the theme's scripts and navigation left out,
    tags dropped, entities decoded)."""
    raw = path.read_text(encoding="utf-8")
    [article] = re.findall(r"<article\b.*?</article>", raw, flags=re.S)
    article = re.sub(r"<script\b.*?</script>", "", article, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", article))


def test_the_reference_shows_store_methods_and_value_fields(site: Path) -> None:
    raw = (site / "reference" / "index.html").read_text(encoding="utf-8")
    anchors = set(re.findall(r'id="(agentaudit\.[^"]+)"', raw))
    methods = ["get_run", "get_logs", "list_runs", "count_runs", "iter_runs", "children",
               "purge", "delete_run", "verify", "flush", "close"]
    for store in ("Store", "SQLiteStore", "MemoryStore"):
        missing = [m for m in methods if f"agentaudit.{store}.{m}" not in anchors]
        assert not missing, (store, missing)
    fields = {
        "Run": ["run_id", "name", "caller", "status", "started_at", "finished_at", "steps",
                "tool_calls", "input_tokens", "cost_usd", "parent_run_id"],
        "Event": ["run_id", "sequence", "event_type", "payload", "created_at", "prev_hash", "hash"],
        "Response": ["text", "model", "finish_reason", "usage", "tool_calls"],
        "Usage": ["input_tokens", "output_tokens", "reasoning_tokens", "cache_read_tokens"],
        "RunFilter": ["caller", "name", "status", "since", "until", "limit", "offset"],
        "VerifyResult": ["run_id", "ok", "events", "broken_sequence", "reason"],
    }
    for owner, names in fields.items():
        missing = [n for n in names if f"agentaudit.{owner}.{n}" not in anchors]
        assert not missing, (owner, missing)


def test_the_reference_renders_no_sphinx_roles_and_no_private_parameters(site: Path) -> None:
    text = page_text(site / "reference" / "index.html")
    roles = re.findall(r":(?:class|meth|func|attr|mod|exc|obj|data):`?\w*", text)
    assert not roles, roles
    leaked = re.findall(r"\b_UNSET\b|\b_depth\b|\b_path\b|[(,]\s*_\w+\s*[:=]", text)
    assert not leaked, leaked
    # Public signatures keep what a caller passes, typed.
    assert "to_jsonable(obj: Any) -> Any" in text
    assert "parent_run_id: str | None = ..." in text
    assert "arguments: str | Mapping[str, Any] | None" in text


def test_no_sphinx_roles_in_docstrings_anywhere() -> None:
    # The reference renders docstrings of every package it documents.
    sources = [*ROOT.glob("src/**/*.py"), *ROOT.glob("integrations/*/src/**/*.py")]
    found = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in sources
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r":(?:class|meth|func|attr|mod|exc|obj|data):`", line)
    ]
    assert not found, found


def test_the_sitemap_lists_every_page(site: Path) -> None:
    sitemap = (site / "sitemap.xml").read_text(encoding="utf-8")
    locs = re.findall(r"<loc>([^<]+)</loc>", sitemap)
    assert "http://127.0.0.1:8000/quickstart/" in locs
    assert len(locs) >= len(list(DOCS.glob("*.md")))
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "example.invalid" not in config and "site_url:" in config


def test_every_page_is_in_the_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    in_nav = set(re.findall(r"^\s*- [^:]+: (\S+\.md)\s*$", config, flags=re.M))
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages <= in_nav, pages - in_nav
    for newcomer in ("quickstart.md", "faq.md", "changelog.md", "comparison.md"):
        assert newcomer in in_nav


def test_sqlite_urls_in_the_docs_follow_their_own_slash_rule() -> None:
    # sqlite:///PATH is relative; an absolute path needs a fourth slash.
    texts = [*DOCS.glob("*.md"), ROOT / "README.md", *ROOT.glob("integrations/*/README.md")]
    wrong = [
        (p.name, m.group())
        for p in texts
        for m in re.finditer(
            r"sqlite:///(?:var|tmp|home|srv|opt|etc|data|mnt|usr)/\S*", p.read_text(encoding="utf-8")
        )
    ]
    assert not wrong, wrong


def test_the_performance_page_states_results_not_a_budget() -> None:
    for page in (DOCS / "performance.md", DOCS / "storage.md"):
        text = page.read_text(encoding="utf-8").lower()
        assert "budget" not in text and "not met" not in text and "| target |" not in text, page
    report = (ROOT / "bench" / "report.py").read_text(encoding="utf-8").lower()
    assert "budget" not in report  # the page it writes next time says the same


def test_the_comparison_covers_the_four_tools_beyond_speed() -> None:
    text = (DOCS / "comparison.md").read_text(encoding="utf-8")
    for tool in ("Langfuse", "LangSmith", "Phoenix", "MLflow"):
        assert text.count(tool) >= 3, tool
    for topic in ("Tamper evidence", "Server to operate", "Licence", "does not do"):
        assert topic in text, topic


def test_the_quickstart_runs_as_written(tmp_path: Path) -> None:
    text = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    record, read_back = re.findall(r"```python\n(.*?)```", text, flags=re.S)[:2]
    assert "<!-- quickstart-example" in text.split(record)[0][-200:]
    script = tmp_path / "quickstart.py"
    script.write_text(record + "\n" + read_back, encoding="utf-8")
    ran = subprocess.run(
        [sys.executable, script.name], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == "succeeded 2 1 200"
    assert [line.split()[1] for line in lines[1:-1]] == [
        "step", "resolved_model", "tool_call", "tool_result", "step",
    ]
    assert lines[-1] == "True"

    # Every `agentaudit ...` command the page shows, run on the file the example wrote.
    commands = [
        line.split("#")[0].split()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
        for line in block.splitlines()
        if line.startswith("agentaudit ")
    ]
    assert len(commands) >= 4
    wide = {**os.environ, "COLUMNS": "200"}  # every column shown, names untruncated
    for command in commands:
        result = subprocess.run(
            [sys.executable, "-m", "agentaudit", *command[1:]],
            cwd=tmp_path,
            env=wide,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        assert "weather-agent" in result.stdout or "1 intact" in result.stdout, command


def test_the_reference_has_every_public_name() -> None:
    import agentaudit

    reference = (DOCS / "reference.md").read_text(encoding="utf-8")
    missing = [n for n in agentaudit.__all__ if f"::: agentaudit.{n}\n" not in reference]
    assert not missing, missing
