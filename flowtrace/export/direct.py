"""Direct span export: node trees -> OTLP bytes -> collector, no SDK span objects.

Used by default when flowtrace configured the SDK itself (the one-line
``wsgi.py`` case) with the OTLP/HTTP exporter; an application that set up its
own tracer provider keeps the SDK path, so its processors see every span
(``span_export="sdk"`` forces that path, ``"direct"`` forces this one).
Sampling and ids still come from the tracer provider.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

from flowtrace import semconv as sc
from flowtrace.build.tree import Node
from flowtrace.capture.timeline import Timeline
from flowtrace.export.layout import Layout, Layouts, random_ids, swap_bytes
from flowtrace.export.otlp_encode import SpanEncoder
from flowtrace.export.otlp_http import OtlpHttpSender
from flowtrace.export.sampling import root_decider, sdk_random_ids

_BATCH_SPANS = 512
_IDS_PER_DRAW = 64


class SpanIds:
    """Span ids as 8-byte strings, for the encoder.

    With the SDK's ``RandomIdGenerator`` (the default) ids are drawn 64 at a
    time (``layout.random_ids``, from the same ``random.getrandbits``): one
    call instead of one per span (a request has ~20). Any other generator is
    called once per id, in tree order. A forked child never reuses ids its
    parent had drawn.
    """

    def __init__(self, generator: IdGenerator) -> None:
        self._generator = generator
        self._batched = type(generator) is RandomIdGenerator
        self._drawn: list[int] = []
        ref = weakref.ref(self)

        def after_fork() -> None:
            ids = ref()
            if ids is not None:
                ids.after_fork()

        os.register_at_fork(after_in_child=after_fork)

    def after_fork(self) -> None:
        """A forked child never reuses ids its parent had drawn."""
        self._drawn = []

    def block(self, count: int) -> list[int]:
        """``count`` ids as ints whose little-endian bytes are the span ids (for
        ``flowtrace.export.layout``), drawn in the same order as ``count`` calls."""
        if self._batched:
            return random_ids(count)
        return [swap_bytes(self._generator.generate_span_id()) for _ in range(count)]

    def __call__(self) -> bytes:
        if not self._batched:
            return self._generator.generate_span_id().to_bytes(8, "big")
        if not self._drawn:
            self._drawn = random_ids(_IDS_PER_DRAW)
        return self._drawn.pop().to_bytes(8, "little")


class DirectSpanSink:
    """Same interface as ``otel.SpanSink``: ``emit()`` a tree, ``send_pending()``."""

    enabled = True

    def __init__(self, provider: Any, sender: OtlpHttpSender | None = None) -> None:
        from flowtrace import __version__

        self.provider = provider
        tracer = provider.get_tracer(sc.TRACER_NAME, __version__)
        self.sampler = tracer.sampler
        self.id_generator = tracer.id_generator
        self.root_sampled = root_decider(tracer.sampler)
        self.random_ids = sdk_random_ids(tracer.id_generator)
        self._span_ids = SpanIds(tracer.id_generator)
        resource = tracer.resource
        self.encoder = SpanEncoder(dict(resource.attributes), sc.TRACER_NAME, __version__,
                                   resource.schema_url or "")  # fmt: skip
        self.layouts = Layouts(self.encoder, self._span_ids.block)
        self.sender = sender or OtlpHttpSender()
        self._pending: list[bytes] = []
        self._pending_spans = 0
        self._pending_requests = 0
        self.sent_spans = 0
        self.dropped_spans = 0
        self.dropped_requests = 0

    def emit(
        self, root: Node, root_name: str, root_attrs: dict[str, Any],
        ids: tuple[int, int, Any, Any], wall_offset: int, status: tuple[int, str],
        exception: dict[str, str] | None,
    ) -> int:  # fmt: skip
        trace_id, root_span_id, parent, state = ids
        events: tuple[tuple[str, int, dict[str, str]], ...] = ()
        if exception is not None:
            events = (("exception", root.end + wall_offset, exception),)
        trace_state = state.to_header() if state else ""
        spans = self.encoder.tree(
            root, root_name, root_attrs, trace_id, root_span_id,
            parent.span_id if parent is not None else None,
            parent is not None and parent.is_remote, wall_offset,
            self._span_ids, trace_state, status, events,
        )  # fmt: skip
        self._add(spans, len(spans))
        return len(spans)

    def emit_layout(
        self, layout: Layout, slots: list[int], tl: Timeline, bounds: tuple[int, int],
        root_name: str, root_attrs: dict[str, Any], status: tuple[int, str],
        exception: dict[str, str] | None,
    ) -> int:  # fmt: skip
        """Like ``emit``, for a request whose shape has a learned layout;
        ``bounds`` are the root's start and end (perf counter)."""
        parent = tl.parent
        offset = tl.wall_offset
        start, end = bounds
        events: tuple[tuple[str, int, dict[str, str]], ...] = ()
        if exception is not None:
            events = (("exception", end + offset, exception),)
        root = self.encoder.root_span(
            tl.trace_id, tl.span_id, parent.span_id if parent is not None else None,
            parent is not None and parent.is_remote, root_name, start + offset, end + offset,
            root_attrs, "", status, events,
        )  # fmt: skip
        self._add([root, *self.layouts.encode(layout, tl, slots)], 1 + layout.spans)
        return 1 + layout.spans

    def _add(self, encoded: list[bytes], spans: int) -> None:
        self._pending.extend(encoded)
        self._pending_spans += spans
        self._pending_requests += 1
        if self._pending_spans >= _BATCH_SPANS:
            self.send_pending()

    def send_pending(self) -> None:
        """Send what is buffered (the pipeline calls this after each drain)."""
        if not self._pending:
            return
        encoded, self._pending = self._pending, []
        spans, self._pending_spans = self._pending_spans, 0
        requests, self._pending_requests = self._pending_requests, 0
        if self.sender.send(self.encoder.request(encoded)):
            self.sent_spans += spans
        else:
            self.dropped_spans += spans
            self.dropped_requests += requests

    def set_resource(self, resource: Any) -> None:
        """A forked worker's own resource (its ``service.instance.id``)."""
        self.encoder.set_resource(dict(resource.attributes), resource.schema_url or "")

    def prepare_exit(self, budget: float) -> None:
        self.sender.limit_timeout(budget)

    def after_fork(self, python_hooks_ran: bool) -> None:
        """In a forked child: the parent's buffered spans are the parent's to send,
        and its connection is the parent's socket."""
        self._pending = []
        self._pending_spans = self._pending_requests = 0
        self.sender.after_fork()
        self._span_ids.after_fork()
