"""Helpers to send a request with a known trace id and fetch its span tree."""

from __future__ import annotations

import secrets
from typing import Any

from tests.otlp_receiver import Receiver, Span


def traceparent() -> tuple[str, str]:
    """(header value, trace id hex) for a sampled remote parent."""
    trace_id = secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01", trace_id


def fetch(server: Any, receiver: Receiver, path: str, headers: dict[str, str] | None = None,
          method: str = "GET", body: bytes | None = None) -> tuple[int, bytes, Span]:  # fmt: skip
    """Send one request over the socket; wait for its complete trace."""
    header, trace_id = traceparent()
    status, _, data = server.request(path, {"traceparent": header, **(headers or {})}, method, body)

    def complete() -> Span | None:
        spans = [s for s in receiver.spans if s.trace_id == trace_id]
        roots = [s for s in spans if s.kind == 2]  # SPAN_KIND_SERVER
        if len(roots) == 1 and len(spans) == roots[0].attributes.get("flowtrace.span_count"):
            from tests.otlp_receiver import link

            return link(spans, roots[0])
        return None

    return status, data, receiver.wait_for(complete)


def stage_totals(root: Span) -> dict[str, int]:
    """Exclusive ns per stage, computed from the exported spans alone."""
    totals: dict[str, int] = {}
    for span in root.walk():
        exclusive = span.duration - sum(c.duration for c in span.children)
        key = span.stage or "(root)"
        totals[key] = totals.get(key, 0) + exclusive
    return totals
