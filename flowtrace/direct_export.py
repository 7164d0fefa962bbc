"""Direct span export: node trees -> OTLP bytes -> collector, no SDK span objects.

Used by default when flowtrace configured the SDK itself (the one-line
``wsgi.py`` case) with the OTLP/HTTP exporter; an application that set up its
own tracer provider keeps the SDK path, so its processors see every span
(``span_export="sdk"`` forces that path, ``"direct"`` forces this one).
Sampling and ids still come from the tracer provider.
"""

from __future__ import annotations

from typing import Any

from flowtrace import semconv as sc
from flowtrace.otlp_encode import SpanEncoder
from flowtrace.otlp_http import OtlpHttpSender
from flowtrace.tree import Node

_BATCH_SPANS = 512


class DirectSpanSink:
    """Same interface as ``otel.SpanSink``: ``emit()`` a tree, ``send_pending()``."""

    enabled = True

    def __init__(self, provider: Any, sender: OtlpHttpSender | None = None) -> None:
        from flowtrace import __version__

        self.provider = provider
        tracer = provider.get_tracer(sc.TRACER_NAME, __version__)
        self.sampler = tracer.sampler
        self.id_generator = tracer.id_generator
        resource = tracer.resource
        self.encoder = SpanEncoder(dict(resource.attributes), sc.TRACER_NAME, __version__,
                                   resource.schema_url or "")  # fmt: skip
        self.sender = sender or OtlpHttpSender()
        self._pending: list[bytes] = []
        self._pending_requests = 0
        self.sent_spans = 0
        self.dropped_spans = 0
        self.dropped_requests = 0

    def emit(
        self, root: Node, root_name: str, root_attrs: dict[str, Any],
        ids: tuple[int, int, Any], wall_offset: int, status: tuple[int, str],
        exception: dict[str, str] | None,
    ) -> int:  # fmt: skip
        trace_id, root_span_id, parent = ids
        events: tuple[tuple[str, int, dict[str, str]], ...] = ()
        if exception is not None:
            events = (("exception", root.end + wall_offset, exception),)
        trace_state = parent.trace_state.to_header() if parent is not None else ""
        spans = self.encoder.tree(
            root, root_name, root_attrs, trace_id, root_span_id,
            parent.span_id if parent is not None else None,
            parent is not None and parent.is_remote, wall_offset,
            self.id_generator.generate_span_id, trace_state, status, events,
        )  # fmt: skip
        self._pending.extend(spans)
        self._pending_requests += 1
        if len(self._pending) >= _BATCH_SPANS:
            self.send_pending()
        return len(spans)

    def send_pending(self) -> None:
        """Send what is buffered (the pipeline calls this after each drain)."""
        if not self._pending:
            return
        spans, self._pending = self._pending, []
        requests, self._pending_requests = self._pending_requests, 0
        if self.sender.send(self.encoder.request(spans)):
            self.sent_spans += len(spans)
        else:
            self.dropped_spans += len(spans)
            self.dropped_requests += requests

    def prepare_exit(self, budget: float) -> None:
        self.sender.limit_timeout(budget)
