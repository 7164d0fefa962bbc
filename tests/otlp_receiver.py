"""A real OTLP/HTTP receiver for tests: decodes the protobuf, keeps the spans.

Listens on 127.0.0.1 (port 0), accepts ``/v1/traces`` and ``/v1/metrics``
(plain, gzip or deflate; over TLS with a client certificate if asked), and
lets tests wait for a condition with a bounded timeout
instead of sleeping.
"""

from __future__ import annotations

import gzip
import ssl
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

T = TypeVar("T")


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(any_value(v) for v in value.array_value.values)
    return getattr(value, kind) if kind else None


@dataclass
class Span:
    """A decoded span, with attributes as a plain dict."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start: int
    end: int
    attributes: dict[str, Any]
    status_code: int
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]
    scope: str
    trace_state: str = ""
    children: list[Span] = field(default_factory=list)

    @property
    def duration(self) -> int:
        return self.end - self.start

    @property
    def stage(self) -> str | None:
        return self.attributes.get("flowtrace.stage")

    def walk(self) -> Iterator[Span]:
        yield self
        for child in self.children:
            yield from child.walk()


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


class Receiver:
    """Collects decoded spans and raw bodies; ``wait_for`` instead of sleeps."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.metric_requests: list[ExportMetricsServiceRequest] = []
        self.raw: list[bytes] = []
        self.headers: list[dict[str, str]] = []  # of every request, lower-case names
        self.status = 200  # tests may make the receiver fail
        self.delay = 0.0  # seconds before answering (a slow collector)
        self.blackhole = False  # read the request, never answer (until shutdown)
        self.released = threading.Event()
        self.requests = 0
        self.count_only = False  # load tests: count spans, keep nothing
        self.span_count = 0
        self.root_count = 0
        self._cond = threading.Condition()
        self.endpoint = ""

    def _add_traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        if self.count_only:
            with self._cond:
                for rs in request.resource_spans:
                    for ss in rs.scope_spans:
                        self.span_count += len(ss.spans)
                        self.root_count += sum(s.kind == PbSpan.SPAN_KIND_SERVER for s in ss.spans)
                self._cond.notify_all()
            return
        spans = []
        for rs in request.resource_spans:
            resource = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(self._span(s, resource, ss.scope.name))
        with self._cond:
            self.spans.extend(spans)
            self._cond.notify_all()

    @staticmethod
    def _span(s: PbSpan, resource: dict[str, Any], scope: str) -> Span:
        return Span(
            trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
            parent_id=s.parent_span_id.hex(), name=s.name, kind=s.kind,
            start=s.start_time_unix_nano, end=s.end_time_unix_nano,
            attributes=_attrs(s.attributes), status_code=s.status.code,
            events=[(e.name, _attrs(e.attributes)) for e in s.events],
            resource=resource, scope=scope, trace_state=s.trace_state,
        )  # fmt: skip

    def _add_metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest.FromString(body)
        with self._cond:
            self.metric_requests.append(request)
            self._cond.notify_all()

    def wait_for(self, check: Callable[[], T | None], timeout: float = 15.0) -> T:
        """Wait until ``check()`` returns something truthy (bounded)."""
        with self._cond:
            result = self._cond.wait_for(check, timeout)
        if not result:
            raise AssertionError(f"receiver: condition not met within {timeout}s")
        return result

    def trace(self, trace_id: str, min_spans: int = 2, timeout: float = 15.0) -> Span:
        """The root span of a trace, children linked, once it has arrived."""

        def complete() -> Span | None:
            spans = [s for s in self.spans if s.trace_id == trace_id]
            roots = [s for s in spans if s.kind == PbSpan.SPAN_KIND_SERVER]
            if len(spans) < min_spans or len(roots) != 1:
                return None
            return link(spans, roots[0])

        return self.wait_for(complete, timeout)


def link(spans: list[Span], root: Span) -> Span:
    by_id = {s.span_id: s for s in spans}
    for s in spans:
        s.children = []
    for s in spans:
        if s is not root and s.parent_id in by_id:
            by_id[s.parent_id].children.append(s)
    for s in spans:
        s.children.sort(key=lambda c: (c.start, -c.end))
    return root


def render_tree(root: Span, with_times: bool = False) -> str:
    """An indented text tree of span names (and stages), for assertions."""
    lines: list[str] = []

    def visit(span: Span, depth: int) -> None:
        label = f"{span.name} [{span.stage}]" if span.stage else span.name
        if with_times:
            label += f" {span.duration / 1e6:.2f}ms"
        lines.append("  " * depth + label)
        for child in span.children:
            visit(child, depth + 1)

    visit(root, 0)
    return "\n".join(lines)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            encoding = self.headers.get("Content-Encoding")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if not receiver.count_only:
                receiver.raw.append(body)
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
            receiver.requests += 1
            if receiver.blackhole:
                receiver.released.wait(60)
                return
            if receiver.delay:
                receiver.released.wait(receiver.delay)
            if receiver.status != 200:
                self.send_response(receiver.status)
                self.end_headers()
                return
            if self.path.endswith("/v1/traces"):
                receiver._add_traces(body)
                reply = ExportTraceServiceResponse().SerializeToString()
            elif self.path.endswith("/v1/metrics"):
                receiver._add_metrics(body)
                reply = b""
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running_receiver(
    port: int = 0, receiver: Receiver | None = None, tls: ssl.SSLContext | None = None
) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 (``port`` to restart one where it was); HTTPS
    with ``tls`` (a server-side context, e.g. requiring a client certificate)."""
    receiver = receiver or Receiver()
    receiver.released.clear()
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(receiver))
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    receiver.endpoint = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.released.set()  # let black-holed requests end
        server.shutdown()
        server.server_close()
        thread.join(5)
