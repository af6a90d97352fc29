"""The floor: the least a hand-written audit callback can do. It collects one row per
model step (text, model, tokens) and two per tool execution (call with arguments,
result) in a list, and when the root chain ends writes them with one
``executemany`` + ``commit`` into sqlite3, on the agent's thread. No hash chain, no
redaction, no caps, no fault isolation, no run row, one invocation at a time."""

from __future__ import annotations

import json
import sqlite3
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_rows (
    run_id TEXT, seq INTEGER, kind TEXT, name TEXT, text TEXT, model TEXT,
    in_tokens INTEGER, out_tokens INTEGER, call_id TEXT, payload TEXT
)
"""


class FloorHandler(BaseCallbackHandler):
    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(SCHEMA)
        self.rows: list[tuple[Any, ...]] = []

    def _add(self, root: UUID | None, kind: str, **cols: Any) -> None:
        self.rows.append((
            str(root), len(self.rows) + 1, kind, cols.get("name"), cols.get("text"),
            cols.get("model"), cols.get("in_tokens"), cols.get("out_tokens"),
            cols.get("call_id"), cols.get("payload"),
        ))

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None,
                   **kwargs: Any) -> None:
        message = response.generations[0][0].message  # type: ignore[attr-defined]
        usage = message.usage_metadata or {}
        self._add(None, "step", text=message.text,
                  model=message.response_metadata.get("model_name"),
                  in_tokens=usage.get("input_tokens"), out_tokens=usage.get("output_tokens"))

    def on_tool_start(self, serialized: dict[str, Any], input_str: str, *, run_id: UUID,
                      inputs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._add(None, "tool_call", name=serialized.get("name"), call_id=kwargs.get("tool_call_id"),
                  payload=json.dumps(inputs) if inputs is not None else input_str)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        content = getattr(output, "content", output)
        self._add(None, "tool_result", name=kwargs.get("name"),
                  call_id=getattr(output, "tool_call_id", None), payload=str(content))

    def on_chain_end(self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                     **kwargs: Any) -> None:
        if parent_run_id is None:
            rows = [(str(run_id), *row[1:]) for row in self.rows]
            self.rows = []
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT INTO audit_rows VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            self.conn.execute("COMMIT")

    def count_rows(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM audit_rows").fetchone()[0]

    def close(self) -> None:
        self.conn.close()
