"""The LangChain configurations under test. Each gives the callbacks for one
invocation, does its untimed work between blocks (flush, instrument/uninstrument),
and at the end says whether it recorded every run it saw; a configuration that did
not is reported without figures."""

from __future__ import annotations

import os
import tempfile
import uuid
from typing import Any

from dummy_client import DummyServer
from floor_handler import FloorHandler
from otel_spans import InMemorySpans, OpenInferenceBlocks

import agentaudit as aa
from agentaudit_langchain import AuditCallbackHandler


class Config:
    """No callbacks at all: the baseline every other configuration is compared with."""

    name = "none"
    label = "no callbacks"

    def __init__(self) -> None:
        # Every invocation's root run id and its number of model steps.
        self.run_ids: list[tuple[uuid.UUID, int]] = []

    def callbacks(self) -> list[Any]:
        return []

    def begin_block(self) -> None:
        """Untimed, before a block of runs (e.g. switch an instrumentor on)."""

    def end_block(self) -> None:
        """Untimed, after a block: flush what is buffered, switch instrumentors off."""

    def missing(self) -> str | None:
        """None when every run in ``run_ids`` was recorded, else why not."""
        return None

    def close(self) -> None:
        pass


class Null(Config):
    """A handler that does nothing: what LangChain itself spends calling any handler."""

    name = "null"
    label = "do-nothing handler"

    def __init__(self) -> None:
        super().__init__()
        from langchain_core.callbacks import BaseCallbackHandler

        self.handler = BaseCallbackHandler()

    def callbacks(self) -> list[Any]:
        return [self.handler]


class AgentAudit(Config):
    def __init__(self, name: str, label: str, store: aa.Store) -> None:
        super().__init__()
        self.name, self.label, self.store = name, label, store
        self.auditor = aa.Auditor(store)
        self.handler = AuditCallbackHandler(self.auditor)

    def callbacks(self) -> list[Any]:
        return [self.handler]

    def end_block(self) -> None:
        self.store.flush(timeout=30)

    def missing(self) -> str | None:
        self.store.flush(timeout=30)
        total = self.store.count_runs(aa.RunFilter())
        ok = self.store.count_runs(aa.RunFilter(status="succeeded"))
        if total != len(self.run_ids) or ok != total:
            return f"{total} runs stored ({ok} succeeded) for {len(self.run_ids)} invocations"
        events = sum(len(self.store.get_logs(r.run_id)) for r in self.store.iter_runs(aa.RunFilter()))
        expected = sum(events_per_run(n) for _, n in self.run_ids)
        if events != expected:
            return f"{events} events stored for {expected} expected"
        if self.auditor.faults.total:
            return f"faults: {self.auditor.faults.counts()}"
        return None

    def close(self) -> None:
        self.store.close()


class Floor(Config):
    name = "floor"
    label = "floor: hand-written sqlite3 handler"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.handler = FloorHandler(path)

    def callbacks(self) -> list[Any]:
        return [self.handler]

    def missing(self) -> str | None:
        rows = self.handler.count_rows()
        expected = sum(floor_rows_per_run(n) for _, n in self.run_ids)
        return None if rows == expected else f"{rows} rows for {expected} expected"

    def close(self) -> None:
        self.handler.close()


class Langfuse(Config):
    """Langfuse's LangChain CallbackHandler with the client's default settings, exporting
    OTLP to the dummy server in the background (its BatchSpanProcessor)."""

    name = "langfuse"
    label = "Langfuse CallbackHandler"

    def __init__(self, server: DummyServer) -> None:
        super().__init__()
        from langfuse import Langfuse as Client
        from langfuse.langchain import CallbackHandler

        self.server = server
        self.client = Client(public_key="pk-lf-bench", secret_key="sk-lf-bench",
                             base_url=server.url)
        self.handler = CallbackHandler(public_key="pk-lf-bench")

    def callbacks(self) -> list[Any]:
        return [self.handler]

    def end_block(self) -> None:
        self.client.flush()

    def missing(self) -> str | None:
        self.client.flush()
        roots = self.server.counts()["otel"]["root_spans"]
        return None if roots == len(self.run_ids) else (
            f"server received {roots} root spans for {len(self.run_ids)} runs")

    def close(self) -> None:
        self.client.shutdown()


class LangSmith(Config):
    """LangSmith's LangChainTracer with a default Client (background batch sender)
    pointed at the dummy server."""

    name = "langsmith"
    label = "LangSmith LangChainTracer"

    def __init__(self, server: DummyServer) -> None:
        super().__init__()
        from langchain_core.tracers.langchain import LangChainTracer
        from langsmith import Client

        self.server = server
        self.client = Client(api_url=server.url, api_key="lsv2-bench")
        self.tracer = LangChainTracer(client=self.client, project_name="bench")

    def callbacks(self) -> list[Any]:
        return [self.tracer]

    def end_block(self) -> None:
        self.tracer.wait_for_futures()
        self.client.flush()

    def missing(self) -> str | None:
        self.end_block()
        seen = set(self.server.counts()["langsmith_run_ids"])
        lost = [r for r, _ in self.run_ids if str(r) not in seen]
        return None if not lost else f"server never received {len(lost)} of {len(self.run_ids)} runs"


class OpenInference(OpenInferenceBlocks, Config):
    """OpenInference's LangChainInstrumentor with an OpenTelemetry TracerProvider and the
    processor a deployment uses, BatchSpanProcessor, exporting to memory. Instrumented
    only during its own blocks: it patches every LangChain callback manager."""

    def __init__(self) -> None:
        super().__init__()
        from openinference.instrumentation.langchain import LangChainInstrumentor

        self.spans = InMemorySpans(LangChainInstrumentor())


def events_per_run(n_steps: int) -> int:
    """agentaudit's events for an n-step run: a step each, resolved_model once, and a
    tool_call + tool_result per tool call (one per step but the last)."""
    return n_steps + 1 + 2 * (n_steps - 1)


def floor_rows_per_run(n_steps: int) -> int:
    return n_steps + 2 * (n_steps - 1)


def tmp_db(directory: str, name: str) -> str:
    return os.path.join(directory, f"{name}.db")


def make_configs(names: list[str], server: DummyServer | None, workdir: str) -> list[Config]:
    """The configurations named, in that order."""
    made: list[Config] = []
    for name in names:
        if name == "none":
            made.append(Config())
        elif name == "null":
            made.append(Null())
        elif name == "agentaudit-sqlite":
            made.append(AgentAudit(name, "agentaudit + SQLiteStore", aa.SQLiteStore(
                tmp_db(workdir, name))))
        elif name == "agentaudit-sqlite-sync":
            made.append(AgentAudit(name, "agentaudit + SQLiteStore(durability=\"sync\")",
                                   aa.SQLiteStore(tmp_db(workdir, name), durability="sync")))
        elif name == "agentaudit-memory":
            made.append(AgentAudit(name, "agentaudit + MemoryStore", aa.MemoryStore()))
        elif name == "floor":
            made.append(Floor(tmp_db(workdir, name)))
        elif name == "langfuse":
            assert server is not None
            made.append(Langfuse(server))
        elif name == "langsmith":
            assert server is not None
            made.append(LangSmith(server))
        elif name == "openinference":
            made.append(OpenInference())
        else:
            raise ValueError(f"unknown configuration {name!r}")
    return made


def workdir() -> str:
    return tempfile.mkdtemp(prefix="agentaudit-bench-")
