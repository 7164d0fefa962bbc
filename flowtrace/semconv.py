"""Every span name, metric name, unit and attribute key flowtrace emits.

The Grafana dashboard, the regression tooling and users' own queries depend
on these strings, so they live in one module and ``tests/test_semconv.py``
pins them: renaming one is a breaking change.
"""

from __future__ import annotations

from typing import Final

# --- stage values (attribute ``flowtrace.stage``) -------------------------
QUEUE: Final = "queue"
SETUP: Final = "setup"
MIDDLEWARE: Final = "middleware"
URL_RESOLUTION: Final = "url_resolution"
VIEW: Final = "view"
DB: Final = "db"
TEMPLATE: Final = "template"
CACHE: Final = "cache"
STREAMING: Final = "streaming"
CLOSE: Final = "close"

STAGES: Final = (
    QUEUE,
    SETUP,
    MIDDLEWARE,
    URL_RESOLUTION,
    VIEW,
    DB,
    TEMPLATE,
    CACHE,
    STREAMING,
    CLOSE,
)

#: A stable colour per stage, shared by the Grafana dashboard and ``flowtrace
#: report`` (Okabe-Ito based, colour-blind safe).
STAGE_COLOURS: Final = {
    QUEUE: "#999999",
    SETUP: "#E69F00",
    MIDDLEWARE: "#56B4E9",
    URL_RESOLUTION: "#009E73",
    VIEW: "#0072B2",
    DB: "#D55E00",
    TEMPLATE: "#CC79A7",
    CACHE: "#F0E442",
    STREAMING: "#000000",
    CLOSE: "#8C564B",
}

# --- flowtrace attribute keys ---------------------------------------------
ATTR_STAGE: Final = "flowtrace.stage"
ATTR_MIDDLEWARE: Final = "flowtrace.middleware"
ATTR_MIDDLEWARE_HALF: Final = "flowtrace.middleware.half"  # "request" | "response"
ATTR_MIDDLEWARE_HOOK: Final = "flowtrace.middleware.hook"  # process_view, ...
ATTR_MIDDLEWARE_NAMES: Final = "flowtrace.middleware.names"
ATTR_MIDDLEWARE_DURATIONS: Final = "flowtrace.middleware.durations"
ATTR_SHORT_CIRCUIT: Final = "flowtrace.middleware.short_circuit"
ATTR_VIEW: Final = "flowtrace.view"
ATTR_TEMPLATE: Final = "flowtrace.template.name"
ATTR_TEMPLATE_DEFERRED: Final = "flowtrace.template.deferred"
ATTR_CACHE_OPERATION: Final = "flowtrace.cache.operation"
ATTR_CACHE_BACKEND: Final = "flowtrace.cache.backend"
ATTR_CACHE_HIT: Final = "flowtrace.cache.hit"
ATTR_CACHE_HITS: Final = "flowtrace.cache.hits"
ATTR_CACHE_MISSES: Final = "flowtrace.cache.misses"
ATTR_DB_PARAMETERS: Final = "flowtrace.db.parameters"
ATTR_DB_ALIAS: Final = "flowtrace.db.alias"  # Django's connection alias, when not "default"
ATTR_TTFB: Final = "flowtrace.streaming.ttfb"  # seconds from request start
ATTR_BYTES: Final = "flowtrace.streaming.bytes"
ATTR_CHUNKS: Final = "flowtrace.streaming.chunks"
ATTR_CLIENT_GONE: Final = "flowtrace.streaming.client_disconnected"
ATTR_FILE_WRAPPER: Final = "flowtrace.streaming.file_wrapper"
ATTR_QUEUE_HEADER: Final = "flowtrace.queue.header"
ATTR_DB_QUERY_COUNT: Final = "flowtrace.db.query_count"
ATTR_KEPT: Final = "flowtrace.sampling.kept"  # "head" | "slow" | "error"
ATTR_SPAN_COUNT: Final = "flowtrace.span_count"  # spans in this trace from flowtrace
ATTR_SPANS_MERGED: Final = "flowtrace.spans.merged"  # calls folded into coalesced spans
ATTR_SPANS_DROPPED: Final = "flowtrace.spans.dropped"  # spans left out past span_budget
ATTR_COALESCED_COUNT: Final = "flowtrace.coalesced.count"  # calls this span stands for
ATTR_COALESCED_MIN: Final = "flowtrace.coalesced.min"  # seconds, the shortest of them
ATTR_COALESCED_MAX: Final = "flowtrace.coalesced.max"  # seconds, the longest
ATTR_DUPLICATES: Final = "flowtrace.db.duplicates"  # repeated executions (N+1), per request
ATTR_DUPLICATE_STATEMENT: Final = "flowtrace.db.duplicate.statement"
ATTR_DUPLICATE_COUNT: Final = "flowtrace.db.duplicate.count"
ATTR_DUPLICATE_DURATION: Final = "flowtrace.db.duplicate.duration"  # seconds, all executions
ATTR_COLD_START: Final = "flowtrace.cold_start"  # one of a process's first requests
ATTR_EXPORT_COST: Final = "flowtrace.export.cpu_per_request"  # µs, this process's mean so far
# ASGI: the sync<->async bridge and the event loop (flowtrace.capture.bridge, .loop)
ATTR_BRIDGE_CROSSINGS: Final = "flowtrace.bridge.crossings"  # per request
ATTR_BRIDGE_WAIT: Final = "flowtrace.bridge.wait"  # s: waiting to start + to resume
ATTR_BRIDGE_WAIT_START: Final = "flowtrace.bridge.wait_start"  # s: callee waiting to start
ATTR_BRIDGE_WAIT_RESUME: Final = "flowtrace.bridge.wait_resume"  # s: caller waiting to resume
ATTR_BRIDGE_CAUSE: Final = "flowtrace.bridge.cause"  # middleware path, view, orm, ...
ATTR_BRIDGE_WORST: Final = "flowtrace.bridge.worst_cause"  # the cause that waited longest
ATTR_BRIDGE_WORST_WAIT: Final = "flowtrace.bridge.worst_cause.wait"  # s
ATTR_LOOP_HELD: Final = "flowtrace.asyncio.loop_held"  # s the request's code held the loop
ATTR_LOOP_LONGEST: Final = "flowtrace.asyncio.longest_hold"  # s, its longest single step

# --- OpenTelemetry semantic-convention keys ----------------------------------
HTTP_METHOD: Final = "http.request.method"
HTTP_METHOD_ORIGINAL: Final = "http.request.method_original"
HTTP_ROUTE: Final = "http.route"
HTTP_STATUS: Final = "http.response.status_code"
URL_PATH: Final = "url.path"
URL_SCHEME: Final = "url.scheme"
URL_QUERY: Final = "url.query"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
PROTOCOL_VERSION: Final = "network.protocol.version"
USER_AGENT: Final = "user_agent.original"
ERROR_TYPE: Final = "error.type"
DB_SYSTEM: Final = "db.system"
DB_SYSTEM_NAME: Final = "db.system.name"
DB_OPERATION: Final = "db.operation.name"
DB_NAMESPACE: Final = "db.namespace"
DB_QUERY_TEXT: Final = "db.query.text"
DB_BATCH_SIZE: Final = "db.operation.batch.size"
REQUEST_HEADER_PREFIX: Final = "http.request.header."

# --- span status codes (OpenTelemetry StatusCode values = OTLP Status.code) ---
STATUS_UNSET: Final = 0
STATUS_OK: Final = 1
STATUS_ERROR: Final = 2

# --- low-cardinality fallbacks --------------------------------------------
UNMATCHED_ROUTE: Final = "(unmatched)"  # flowtrace's metrics only: Django 404 / non-Django app
OVERFLOW_ROUTE: Final = "(other)"  # a new route past max_routes
OTHER_METHOD: Final = "_OTHER"
KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
)

# --- metrics --------------------------------------------------------------
METER_NAME: Final = "flowtrace"
TRACER_NAME: Final = "flowtrace"
STAGE_DURATION: Final = "flowtrace.stage.duration"
REQUEST_DURATION: Final = "flowtrace.request.duration"
DB_QUERIES: Final = "flowtrace.db.queries"
TTFB: Final = "flowtrace.request.ttfb"  # server receipt to first body byte
HTTP_SERVER_DURATION: Final = "http.server.request.duration"
DROPPED: Final = "flowtrace.telemetry.dropped"
ROUTES_OVERFLOW: Final = "flowtrace.routes.overflow"
DB_DUPLICATES: Final = "flowtrace.db.duplicates"  # histogram: repeated executions per request
EXPORT_CPU: Final = "flowtrace.export.cpu_time"  # counter, s: the export thread's own CPU
EXPORT_REQUESTS: Final = "flowtrace.export.requests"  # counter: requests it processed
EXPORT_EVENTS: Final = "flowtrace.export.events"  # counter: events (calls) it processed
BRIDGE_WAIT: Final = "flowtrace.bridge.wait"  # histogram, s, per request and cause
BRIDGE_CROSSINGS: Final = "flowtrace.bridge.crossings"  # histogram, per request and cause
LOOP_HELD: Final = "flowtrace.asyncio.loop_held"  # histogram, s, per request
LOOP_LAG: Final = "flowtrace.asyncio.loop_lag"  # histogram, s, per probe of the loop
UNIT_CROSSINGS: Final = "{crossing}"
UNIT_EVENTS: Final = "{event}"
UNIT_SECONDS: Final = "s"
UNIT_QUERIES: Final = "{query}"
UNIT_REQUESTS: Final = "{request}"

# Fine enough for tens-of-microseconds stages (URL resolution), wide enough
# for slow requests: a 1-2.5-5 ladder from 10 us to 60 s.
DURATION_BUCKETS: Final = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# The stable HTTP semconv's advisory buckets, so stock HTTP dashboards work.
HTTP_SERVER_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
QUERY_COUNT_BUCKETS: Final = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233)
