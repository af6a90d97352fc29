"""OpenInference's set-up for both scenarios: an OpenTelemetry TracerProvider with the
processor a deployment uses (BatchSpanProcessor), exporting to memory, and a count of
root spans to check that every run was recorded."""

from __future__ import annotations

from typing import Any


class InMemorySpans:
    """Instruments with ``instrumentor`` only between `begin` and `end`: it patches the
    framework process-wide."""

    def __init__(self, instrumentor: Any) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter))
        self.instrumentor = instrumentor
        self.roots = 0

    def begin(self) -> None:
        self.instrumentor.instrument(tracer_provider=self.provider)

    def end(self) -> None:
        self.instrumentor.uninstrument()
        self.provider.force_flush()
        self.roots += sum(1 for s in self.exporter.get_finished_spans() if s.parent is None)
        self.exporter.clear()

    def missing(self, runs: int) -> str | None:
        return None if self.roots == runs else f"{self.roots} root spans exported for {runs} runs"

    def close(self) -> None:
        self.provider.shutdown()


class OpenInferenceBlocks:
    """What an OpenInference configuration does around its blocks, in either scenario:
    mixed in ahead of the scenario's own configuration class, which sets ``run_ids``."""

    name = "openinference"
    label = "OpenInference (OTel, batch processor)"
    spans: InMemorySpans
    run_ids: list[Any]

    def begin_block(self) -> None:
        self.spans.begin()

    def end_block(self) -> None:
        self.spans.end()

    def missing(self) -> str | None:
        return self.spans.missing(len(self.run_ids))

    def close(self) -> None:
        self.spans.close()
