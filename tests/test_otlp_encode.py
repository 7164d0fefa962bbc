"""flowtrace's direct OTLP encoder produces what the stock encoder produces."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator

from flowtrace import FlowTrace
from flowtrace.export.direct import DirectSpanSink
from flowtrace.export.otlp_http import OtlpHttpSender
from flowtrace.export.recorder import Recorder
from tests.wsgi_client import call


class CountingIds(IdGenerator):
    def __init__(self) -> None:
        self.next = 1

    def generate_span_id(self) -> int:
        self.next += 1
        return self.next

    def generate_trace_id(self) -> int:
        self.next += 1
        return self.next << 64


class CapturingSender(OtlpHttpSender):
    """The network edge: keeps the bodies instead of posting them."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9/v1/traces")
        self.bodies: list[bytes] = []

    def send(self, body: bytes) -> bool:
        self.bodies.append(body)
        return True


PATHS = ["/hello", "/db", "/stream", "/items/2/", "/deferred", "/boom", "/missing", "/download"]


@pytest.mark.parametrize("mode", ["halves", "combined"])
def test_direct_encoding_equals_stock_encoding(mode: str) -> None:
    from django.core.handlers.wsgi import WSGIHandler

    ids = CountingIds()
    exporter = InMemorySpanExporter()
    resource = Resource.create({"service.name": "enc-test", "deployment.environment": "t"})
    provider = TracerProvider(resource=resource, id_generator=ids)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = FlowTrace(WSGIHandler(), tracer_provider=provider, metrics=False, middleware_spans=mode)
    timelines: list[Any] = []
    app._pipeline.submit = timelines.append  # type: ignore[union-attr,method-assign]
    for path in PATHS:
        call(
            app,
            path,
            headers={
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "tracestate": "k=v",
            },
        )
    call(app, "/hello")  # a local root too
    sdk_recorder = Recorder(app.config, app._spans, None)
    sender = CapturingSender()
    direct_recorder = Recorder(app.config, DirectSpanSink(provider, sender), None)
    for tl in timelines:
        start = ids.next
        sdk_recorder(tl)
        ids.next = start  # the same span ids for the same tree
        direct_recorder(tl)
    direct_recorder.spans.send_pending()
    stock = ExportTraceServiceRequest.FromString(
        encode_spans(exporter.get_finished_spans()).SerializeToString()
    )
    ours = ExportTraceServiceRequest.FromString(b"".join(sender.bodies))
    [stock_rs], [our_rs] = stock.resource_spans, ours.resource_spans
    assert our_rs.resource == stock_rs.resource
    [stock_ss], [our_ss] = stock_rs.scope_spans, our_rs.scope_spans
    assert our_ss.scope == stock_ss.scope
    by_id = {s.span_id: s for s in stock_ss.spans}
    assert len(our_ss.spans) == len(stock_ss.spans) > 9 * len(PATHS)
    for span in our_ss.spans:
        assert span == by_id[span.span_id], span.name


def test_batched_span_ids_are_distinct_nonzero_and_not_shared_with_a_fork() -> None:
    import subprocess
    import sys

    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    from flowtrace.export.direct import SpanIds

    ids = SpanIds(RandomIdGenerator())
    drawn = [ids() for _ in range(1000)]  # more than one draw of 64
    assert len(set(drawn)) == 1000
    assert all(len(i) == 8 and i != bytes(8) for i in drawn)
    counting = SpanIds(CountingIds())  # other generators: called once per id, in order
    assert [counting() for _ in range(3)] == [n.to_bytes(8, "big") for n in (2, 3, 4)]
    script = (
        "import os\n"
        "from opentelemetry.sdk.trace.id_generator import RandomIdGenerator\n"
        "from flowtrace.export.direct import SpanIds\n"
        "ids = SpanIds(RandomIdGenerator()); ids()\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.write(w, ids()); os._exit(0)\n"
        "os.waitpid(pid, 0); print(os.read(r, 8).hex(), ids().hex())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    child, parent = done.stdout.split()
    assert child != parent
