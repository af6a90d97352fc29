"""A stand-in for the Langfuse and LangSmith servers on 127.0.0.1, run as its own
process so that its work never counts as the benchmark process's CPU.

It answers every request with 200 and keeps the bodies; ``GET /_bench/counts`` parses
them (outside any timed section) and reports what arrived: OTLP spans (Langfuse
exports OpenTelemetry protobuf) and LangSmith run ids (multipart ``post.<id>`` /
``patch.<id>`` parts, or JSON batches). ``POST /_bench/reset`` forgets everything.

Run: python bench/dummy_server.py  (prints the port on its first line)
"""

from __future__ import annotations

import gzip
import json
import re
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_UUID = rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_PART_ID = re.compile(rb'name="(?:post|patch)\.(' + _UUID + rb')"')
_JSON_ID = re.compile(rb'"(?:id|trace_id)"\s*:\s*"(' + _UUID + rb')"')

# What LangSmith's server advertises: the client then sends zstd-compressed multipart,
# its default against the hosted service.
LANGSMITH_INFO = {"version": "0.10.0", "instance_flags": {"zstd_compression_enabled": True}}

_lock = threading.Lock()
_bodies: list[tuple[str, bytes]] = []
_requests: dict[str, int] = {}


def _decode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "zstd":
        import zstandard  # only when a client compresses with zstd

        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    return body


def _otel_counts(bodies: list[bytes]) -> dict[str, Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans = roots = 0
    traces: set[bytes] = set()
    for body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans += 1
                    traces.add(span.trace_id)
                    if not span.parent_span_id:
                        roots += 1
    return {"spans": spans, "root_spans": roots, "traces": len(traces)}


def counts() -> dict[str, Any]:
    with _lock:
        bodies = list(_bodies)
        requests = dict(_requests)
    otel = [b for path, b in bodies if "otel" in path]
    run_ids: set[str] = set()
    for path, body in bodies:
        if "runs" in path:
            found = _PART_ID.findall(body) or _JSON_ID.findall(body)
            run_ids.update(i.decode() for i in found)
    return {"requests": requests, "otel": _otel_counts(otel), "langsmith_run_ids": sorted(run_ids)}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        if self.path.startswith("/_bench/counts"):
            self._reply(json.dumps(counts()).encode())
        elif self.path.split("?")[0].rstrip("/").endswith("/info"):
            self._reply(json.dumps(LANGSMITH_INFO).encode())
        else:
            self._reply(b"{}")

    def do_POST(self) -> None:
        raw = self._read_body()
        if self.path.startswith("/_bench/reset"):
            with _lock:
                _bodies.clear()
                _requests.clear()
            self._reply(b"{}")
            return
        body = _decode(raw, self.headers.get("Content-Encoding", "").lower())
        route = self.path.split("?")[0]
        with _lock:
            _bodies.append((route, body))
            _requests[route] = _requests.get(route, 0) + 1
        if "otel" in route:
            self._reply(b"", "application/x-protobuf")
        else:
            self._reply(b"{}")

    do_PATCH = do_POST
    do_PUT = do_POST


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    # Exit when the parent closes our stdin.
    threading.Thread(target=lambda: (sys.stdin.read(), server.shutdown()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
