"""The `agentaudit` command on a server URL (``--db postgresql://…``, ``AGENTAUDIT_DB``),
run as a user runs it: a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import agentaudit as aa

from .conftest import admin_sql


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("agentaudit", path=os.path.dirname(sys.executable))
    command = [exe] if exe else [sys.executable, "-m", "agentaudit.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})},
    )


def _record(url: str) -> tuple[str, str]:
    store = aa.open_store(url)
    try:
        auditor = aa.Auditor(store, strict=True)
        with auditor.run("triage", caller="user:ann", input="find the flaky test") as first:
            first.on_step(1, aa.Response(text="looking", model="openai/gpt-4o-mini",
                                         usage=aa.Usage(input_tokens=12, output_tokens=3)))
            first.on_tool(aa.ToolCall("grep", {"pattern": "flaky"}), "tests/test_x.py:3", duration_ms=2.0)
        second = auditor.start_run("deploy", caller="user:bob")
        second.close(aa.RunStats(status="failed", error="permission denied"))
        return first.run_id, second.run_id
    finally:
        store.close()


def test_runs_show_stats_verify_on_a_server(server_url: str) -> None:
    first, second = _record(server_url)
    listed = _cli("--db", server_url, "runs", "--json")
    assert listed.returncode == 0, listed.stderr
    rows: Any = json.loads(listed.stdout)
    assert {row["run_id"] for row in rows} == {first, second}
    by_caller = _cli("--db", server_url, "runs", "--caller", "user:bob", "--json")
    assert [row["run_id"] for row in json.loads(by_caller.stdout)] == [second]
    failed = _cli("runs", "--status", "failed", env={"AGENTAUDIT_DB": server_url})
    assert failed.returncode == 0, failed.stderr
    assert "deploy" in failed.stdout and "triage" not in failed.stdout
    shown = _cli("--db", server_url, "show", first[:12])
    assert shown.returncode == 0, shown.stderr
    assert "grep" in shown.stdout and "find the flaky test" in shown.stdout
    stats = _cli("--db", server_url, "stats", "--by", "caller", "--json")
    assert stats.returncode == 0, stats.stderr
    groups = {row["caller"]: row for row in json.loads(stats.stdout)}
    assert groups["user:bob"]["failed"] == 1 and groups["user:ann"]["input_tokens"] == 12
    verified = _cli("--db", server_url, "verify", "--all")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # an edit on the server: verify says so and exits 1
    admin_sql(server_url, "UPDATE events SET payload = replace(payload, 'flaky', 'fixed') WHERE run_id = %s",
              (first,))
    broken = _cli("--db", server_url, "verify", first)
    assert broken.returncode == 1 and "BROKEN" in broken.stdout, broken.stdout + broken.stderr


def test_read_commands_leave_the_server_unchanged(server_url: str) -> None:
    """A read command opens read-only: an empty database stays empty (no tables)."""
    result = _cli("--db", server_url, "runs")
    assert result.returncode != 0
    assert "no agentaudit database" in result.stderr + result.stdout
    if server_url.startswith("postgresql"):
        assert admin_sql(server_url, "SELECT to_regclass('runs')")[0][0] is None
    else:
        assert admin_sql(server_url, "SHOW TABLES") == []
