"""The machine and package versions a result was measured with."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

DISTRIBUTIONS = (
    "agentaudit", "agentaudit-langchain", "agentaudit-llamaindex", "langchain", "langchain-core",
    "langgraph", "langfuse", "langsmith", "openinference-instrumentation-langchain",
    "llama-index-core", "openinference-instrumentation-llama-index", "opentelemetry-sdk",
)


def versions() -> dict[str, str]:
    out = {}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def machine() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "machine": platform.machine()}
