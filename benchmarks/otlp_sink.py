"""An OTLP/HTTP sink for the benchmark: counts spans and metric points per service.

Runs as its own process (so its CPU is not the benchmarked process's),
listens on 127.0.0.1, prints its port, serves ``GET /stats`` as JSON.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

spans: Counter[str] = Counter()
points: Counter[str] = Counter()
lock = threading.Lock()


def _service(resource: Any) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name":
            return str(kv.value.string_value)
    return "?"


def _count_points(metric: Any) -> int:
    kind = metric.WhichOneof("data")
    return len(getattr(metric, kind).data_points) if kind else 0


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, as the OpenTelemetry Collector does: HTTP/1.0 would make every
    # exporter reconnect per request and bill the benchmarked process for it.
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.endswith("/v1/traces"):
            request = ExportTraceServiceRequest.FromString(body)
            with lock:
                for rs in request.resource_spans:
                    spans[_service(rs.resource)] += sum(len(ss.spans) for ss in rs.scope_spans)
        elif self.path.endswith("/v1/metrics"):
            request = ExportMetricsServiceRequest.FromString(body)
            with lock:
                for rm in request.resource_metrics:
                    points[_service(rm.resource)] += sum(
                        _count_points(m) for sm in rm.scope_metrics for m in sm.metrics
                    )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        with lock:
            data = json.dumps({"spans": spans, "points": points}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)
