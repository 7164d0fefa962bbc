"""The SERVER span of a request: its name, attributes, status and exception event.

Most attributes repeat across the requests of a route (method, path, host,
route, status, counts...), so they are kept in a bounded cache of
``StaticAttrs`` that the direct encoder encodes once; only the time to first
byte changes with every request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowtrace import semconv as sc
from flowtrace.build.asyncio import AsyncFacts
from flowtrace.build.outcome import error_of, root_outcome
from flowtrace.build.tree import PrefixedAttrs, StaticAttrs
from flowtrace.capture.request_info import _HEADERS, QUERY, REQUEST_START, root_attributes
from flowtrace.capture.timeline import Timeline
from flowtrace.config import Config

_CACHE_LIMIT = 1024


@dataclass(slots=True)
class Facts:
    """What the recorder worked out about one request."""

    method: str
    status_code: int
    error_type: str | None
    duration: int  # ns, queue included
    ttfb: int | None  # ns from the root's start
    queue: int  # ns (0: no trusted queue header)
    keep: str | None  # why its spans are exported (None: they are not)
    cold: bool  # one of the process's first requests
    route: str = sc.UNMATCHED_ROUTE
    queries: int = 0
    duplicates: tuple[int, str, int, int] | None = None  # extra, statement, count, total ns
    asyncio: AsyncFacts | None = None  # ASGI: bridge crossings and loop figures


class RootSpans:
    """Builds the SERVER span's parts for the recorder."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._cache: dict[Any, StaticAttrs] = {}
        self._query_captured = cfg.capture_query != "off"

    def parts(self, tl: Timeline, facts: Facts, spans: int, merged: int = 0, dropped: int = 0,
              ) -> tuple[str, dict[str, Any], tuple[int, str], dict[str, str] | None]:  # fmt: skip
        """Name, attributes, status and ``exception`` event of the SERVER span;
        ``spans`` are the exported spans below it."""
        outcome = (facts.route, facts.status_code, facts.error_type, facts.queries, facts.keep,
                   1 + spans, merged, dropped, facts.cold)  # fmt: skip
        attrs = PrefixedAttrs(self._constants(tl, outcome))
        if facts.ttfb is not None:  # the one attribute that changes with every request
            attrs[sc.ATTR_TTFB] = facts.ttfb / 1e9
        if facts.duplicates is not None:
            extra, statement, count, total = facts.duplicates
            attrs[sc.ATTR_DUPLICATES] = extra
            attrs[sc.ATTR_DUPLICATE_STATEMENT] = statement[: self.cfg.max_attribute_length]
            attrs[sc.ATTR_DUPLICATE_COUNT] = count
            attrs[sc.ATTR_DUPLICATE_DURATION] = total / 1e9
        if facts.asyncio is not None:
            for name, value in facts.asyncio.attributes().items():
                attrs[name] = value
        method = facts.method
        verb = method if method != sc.OTHER_METHOD else "HTTP"
        # nothing matched: no http.route and the span is named by the method alone (semconv)
        name = verb if facts.route == sc.UNMATCHED_ROUTE else f"{verb} {facts.route}"
        error = error_of(tl, self.cfg.record_exception_messages)
        status, exception = root_outcome(error, facts.status_code)
        return name, attrs, status, exception

    def _constants(self, tl: Timeline, outcome: tuple[Any, ...]) -> StaticAttrs:
        """The attributes but the time to first byte and the duplicate queries, shared
        with the earlier requests that said and got the same."""
        request = tl.request
        # the query string matters only when captured; queue headers and the peer never do
        key = (request[:REQUEST_START], self._query_captured and request[QUERY],
               request[_HEADERS:], outcome)  # fmt: skip
        attrs = self._cache.get(key)
        if attrs is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            items = root_attributes(request, self.cfg, tl.match)
            route, status_code, error_type, queries, keep, spans, merged, dropped, cold = outcome
            if route != sc.UNMATCHED_ROUTE:
                items[sc.HTTP_ROUTE] = route
            if status_code:
                items[sc.HTTP_STATUS] = status_code
            if error_type:
                items[sc.ERROR_TYPE] = error_type
            items[sc.ATTR_DB_QUERY_COUNT] = queries
            items[sc.ATTR_KEPT] = keep
            items[sc.ATTR_SPAN_COUNT] = spans
            if merged:
                items[sc.ATTR_SPANS_MERGED] = merged
            if dropped:
                items[sc.ATTR_SPANS_DROPPED] = dropped
            if cold:
                items[sc.ATTR_COLD_START] = True
            attrs = self._cache[key] = StaticAttrs(items)
        return attrs
