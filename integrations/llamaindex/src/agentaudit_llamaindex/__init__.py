"""agentaudit for LlamaIndex: record every workflow agent run.

>>> import agentaudit as aa
>>> from agentaudit_llamaindex import instrument
>>> handle = instrument(aa.Auditor(aa.MemoryStore()))   # doctest: +SKIP
"""

from __future__ import annotations

from ._instrument import Instrumentation, instrument

__all__ = ["Instrumentation", "instrument"]
__version__ = "0.1.0"
