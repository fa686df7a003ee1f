"""A stand-in OpenTelemetry collector for `make bench`: accepts OTLP/HTTP trace exports and throws
them away, counting what arrived, so that the cost of tracing measured by the bench includes the
real export (serialising and POSTing every batch) without a collector to install.

    PORT=4318 python -m bench.otlp_sink

- `POST <prefix>/v1/traces`: the body (protobuf `ExportTraceServiceRequest`, gzip or not; JSON
  too) is read, its spans counted and dropped; the answer is an empty success. Each `<prefix>` is
  counted apart, so that one sink serves several traced servers (each with its own
  `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
- `GET /stats`: `{"<prefix>": {"exports": n, "bytes": n, "spans": n, "bad": n}, ...}` so far,
  the prefix without its slashes ("" for a plain `POST /v1/traces`); `bad`: bodies that did not
  parse (answered 400).

Listens on 127.0.0.1 only. Counting walks three levels of length-delimited protobuf fields
(resource spans, scope spans, spans) without decoding a span, so the sink costs little CPU beside
the servers it measures.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TRACES_PATH = "/v1/traces"


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes, wanted: int) -> list[bytes]:
    """The length-delimited values of field number `wanted` in one protobuf message; any other
    field is skipped by its wire type."""
    found: list[bytes] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            if number == wanted:
                found.append(data[pos:pos + length])
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != len(data):
        raise ValueError("truncated message")
    return found


def count_spans_protobuf(body: bytes) -> int:
    """Spans in an `ExportTraceServiceRequest`: resource_spans (1) > scope_spans (2) > spans (2)."""
    return sum(len(_fields(scope, 2))
               for resource in _fields(body, 1)
               for scope in _fields(resource, 2))


def count_spans_json(body: bytes) -> int:
    data = json.loads(body)
    return sum(len(scope.get("spans") or [])
               for resource in data.get("resourceSpans") or data.get("resource_spans") or []
               for scope in resource.get("scopeSpans") or resource.get("scope_spans") or [])


def decode_body(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_prefix: dict[str, dict[str, int]] = {}

    def add(self, prefix: str, size: int, spans: int, bad: bool) -> None:
        with self.lock:
            entry = self.by_prefix.setdefault(prefix,
                                              {"exports": 0, "bytes": 0, "spans": 0, "bad": 0})
            entry["exports"] += 1
            entry["bytes"] += size
            entry["spans"] += spans
            entry["bad"] += int(bad)

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {k: dict(v) for k, v in self.by_prefix.items()}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the OTLP exporter's session expects
    counters: Counters  # set on the class by serve()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, body: bytes = b"", content_type: str = "") -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self._read_body()
        path = self.path.split("?")[0]
        if not path.endswith(TRACES_PATH):
            self._answer(404)
            return
        prefix = path.removesuffix(TRACES_PATH).strip("/")
        content_type = self.headers.get("Content-Type", "")
        try:
            raw = decode_body(body, self.headers.get("Content-Encoding", ""))
            spans = (count_spans_json(raw) if "json" in content_type
                     else count_spans_protobuf(raw))
        except (ValueError, OSError, EOFError, zlib.error, AttributeError, TypeError):
            self.counters.add(prefix, len(body), 0, bad=True)
            self._answer(400)
            return
        self.counters.add(prefix, len(body), spans, bad=False)
        # An empty ExportTraceServiceResponse: zero bytes of protobuf, or {} in JSON.
        if "json" in content_type:
            self._answer(200, b"{}", "application/json")
        else:
            self._answer(200, b"", "application/x-protobuf")

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/stats":
            self._answer(404)
            return
        self._answer(200, json.dumps(self.counters.snapshot()).encode(), "application/json")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(port: int, host: str = "127.0.0.1") -> None:
    Handler.counters = Counters()
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    serve(int(os.environ.get("PORT", "4318")))
