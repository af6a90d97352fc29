"""The public surface is pinned, documented, and costs no third-party import."""

import json
import re
import subprocess
import sys
from pathlib import Path

import agentaudit

ROOT = Path(__file__).resolve().parents[1]

PUBLIC = [
    "AgentAuditError",
    "Auditor",
    "CheckpointError",
    "CheckpointPolicy",
    "CommitTimeout",
    "Event",
    "Faults",
    "MemoryStore",
    "RedactionPolicy",
    "Response",
    "RetentionError",
    "Run",
    "RunContext",
    "RunFilter",
    "RunNotFoundError",
    "RunStats",
    "RunStatus",
    "SQLiteStore",
    "SpooledStore",
    "SchemaVersionError",
    "Store",
    "StoreError",
    "ToolCall",
    "Usage",
    "VerifyResult",
    "Writer",
    "audit_tool",
    "audited",
    "canonical_json",
    "configure",
    "current_run",
    "open_store",
    "record_step",
    "to_jsonable",
]


def test_all_is_pinned():
    assert sorted(agentaudit.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert hasattr(agentaudit, name), name


def test_every_public_name_is_documented():
    docs = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    missing = [n for n in agentaudit.__all__ if not re.search(rf"\bagentaudit\.{n}\b|\baa\.{n}\b", docs)]
    assert missing == [], f"public names with no documentation: {missing}"


def test_every_run_status_and_event_type_is_documented():
    concepts = (ROOT / "docs" / "concepts.md").read_text()
    for status in agentaudit.RunStatus:
        assert f"`{status.value}`" in concepts
    for event_type in ["step", "resolved_model", "tool_call", "tool_result", "error"]:
        assert f"| `{event_type}` |" in concepts


def test_import_loads_no_third_party_module():
    code = (
        "import sys, json; before = set(sys.modules); import agentaudit, agentaudit.testing; "
        "new = [m for m in set(sys.modules) - before if m.split('.')[0] not in sys.stdlib_module_names "
        "and not m.startswith('agentaudit')]; print(json.dumps(sorted(new)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_core_never_imports_an_integration_or_a_framework():
    forbidden = re.compile(r"^\s*(from|import)\s+(agentaudit_\w+|langchain\w*|llama_index\w*|openai|anthropic|click|rich)\b", re.M)
    offenders = []
    for path in (ROOT / "src" / "agentaudit").rglob("*.py"):
        if "cli" in path.relative_to(ROOT / "src" / "agentaudit").parts:
            continue  # the CLI is an extra; it is never imported by `import agentaudit`
        if forbidden.search(path.read_text()):
            offenders.append(str(path))
    assert offenders == []


def test_py_typed_is_shipped():
    assert (ROOT / "src" / "agentaudit" / "py.typed").exists()
