"""agentaudit: a flight recorder for LLM agents.

Every run's steps, tool calls, tokens, errors and outcome, in a queryable,
tamper-evident audit log. The core uses the standard library only.
"""

from __future__ import annotations

from ._auditor import Auditor, RunContext
from ._checkpoints import CheckpointPolicy
from ._context import current_run
from ._decorators import audit_tool, audited, configure, record_step
from ._errors import (
    AgentAuditError,
    CheckpointError,
    CommitTimeout,
    RetentionError,
    RunNotFoundError,
    SchemaVersionError,
    StoreError,
)
from ._faults import Faults
from ._model import (
    Event,
    Response,
    Run,
    RunFilter,
    RunStats,
    RunStatus,
    ToolCall,
    Usage,
    VerifyResult,
)
from ._redaction import RedactionPolicy
from ._serialize import canonical_json, to_jsonable
from ._writer import Writer
from .stores import MemoryStore, Store, open_store
from .stores.spool import SpooledStore
from .stores.sqlite import SQLiteStore

__version__ = "0.1.0"

__all__ = [
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
    "SchemaVersionError",
    "SpooledStore",
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
