"""The ASGI front end in-process (asgiref's ApplicationCommunicator, the real SDK):
stages, the bridge and the loop, concurrency, pass-through, misbehaving apps (issue #16).
Real servers: tests/test_servers.py (stops) and tests/test_asgi_servers.py (load)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from flowtrace import FlowTrace, FlowTraceASGI
from flowtrace.capture import bridge
from flowtrace.capture.django import calls as django_calls
from tests.conftest import InProcess
from tests.metrics import points

STAGES = {"setup", "middleware", "url_resolution", "view", "db", "template", "cache",
          "streaming", "close"}  # fmt: skip


def scope_for(path: str, headers: list[tuple[bytes, bytes]] | None = None,
              method: str = "GET", kind: str = "http") -> dict[str, Any]:  # fmt: skip
    raw, _, query = path.partition("?")
    return {"type": kind, "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method,
            "scheme": "http", "path": raw, "raw_path": raw.encode(), "root_path": "",
            "query_string": query.encode(), "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "headers": [(b"host", b"testserver"), *(headers or [])]}  # fmt: skip


Messages = list[dict[str, Any]]


async def request(app: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None,
                  body: bytes = b"") -> tuple[dict[str, Any], bytes, Messages]:  # fmt: skip
    """One request through ``app``: (response start, body, every message sent)."""
    comm = ApplicationCommunicator(app, scope_for(path, headers))
    await comm.send_input({"type": "http.request", "body": body})
    messages = [await comm.receive_output(10)]
    data = b""
    while True:
        message = await comm.receive_output(10)
        messages.append(message)
        data += message.get("body", b"")
        if not message.get("more_body"):
            break
    await comm.wait(10)
    return messages[0], data, messages


class AsgiInProcess(InProcess):
    """FlowTrace around a fresh Django ASGIHandler, exporting to memory."""

    @staticmethod
    def make_handler() -> Any:
        from django.core.handlers.asgi import ASGIHandler

        return ASGIHandler()

    def roots(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.kind == trace.SpanKind.SERVER]


@pytest.fixture
def asgi() -> Iterator[Any]:
    made: list[AsgiInProcess] = []

    def make(**options: Any) -> AsgiInProcess:
        made.append(AsgiInProcess(**options))
        return made[-1]

    yield make
    for item in made:
        item.shutdown()
    django_calls.uninstall()
    bridge.uninstall()
    assert not bridge.installed()


def tree_of(spans: list[ReadableSpan], root: ReadableSpan) -> list[ReadableSpan]:
    trace_id = root.context.trace_id
    return [s for s in spans if s.context.trace_id == trace_id]


def exclusive_by_stage(spans: list[ReadableSpan]) -> dict[str, int]:
    children: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        if span.parent is not None:
            children.setdefault(span.parent.span_id, []).append(span)
    totals: dict[str, int] = {}
    for span in spans:
        own = (span.end_time - span.start_time) - sum(
            c.end_time - c.start_time for c in children.get(span.context.span_id, []))  # fmt: skip
        stage = str(span.attributes.get("flowtrace.stage", "(root)"))
        totals[stage] = totals.get(stage, 0) + own
    return totals


def test_flowtrace_returns_the_asgi_front_end_for_an_asgi_app(asgi: Any) -> None:
    traced = asgi()
    assert isinstance(traced.app, FlowTraceASGI)
    assert traced.app._layer_names[0].endswith("_get_response")


def test_stages_tile_the_root_with_the_wsgi_names(asgi: Any) -> None:
    traced = asgi()

    async def run() -> None:
        for path in ("/db", "/a/count", "/a/stream", "/deferred", "/cached", "/a/cached"):
            start, body, _ = await request(traced.app, path)
            assert start["status"] == 200 and body, path

    asyncio.run(run())
    spans = traced.spans()
    roots = {r.name: r for r in spans if r.kind == trace.SpanKind.SERVER}
    assert set(roots) == {"GET /db", "GET /a/count", "GET /a/stream", "GET /deferred",
                          "GET /cached", "GET /a/cached"}  # fmt: skip
    for name, root in roots.items():
        tree = tree_of(spans, root)
        totals = exclusive_by_stage(tree)
        assert totals.get("(root)", 0) == 0, (name, totals)  # the stages tile the root
        assert set(totals) - {"(root)"} <= STAGES, (name, totals)
        assert sum(totals.values()) == root.end_time - root.start_time
        assert root.attributes["http.response.status_code"] == 200
        assert {"setup", "middleware", "url_resolution", "view", "streaming",
                "close"} <= set(totals), (name, totals)  # fmt: skip
    db = exclusive_by_stage(tree_of(spans, roots["GET /db"]))
    assert db["db"] > 0 and db["template"] > 0
    assert roots["GET /db"].attributes["flowtrace.db.query_count"] == 2
    assert exclusive_by_stage(tree_of(spans, roots["GET /a/count"]))["db"] > 0  # async ORM
    stream = roots["GET /a/stream"]
    assert stream.attributes["flowtrace.streaming.ttfb"] > 0
    streaming = [s for s in tree_of(spans, stream)
                 if s.attributes.get("flowtrace.stage") == "streaming"]  # fmt: skip
    assert streaming[0].attributes["flowtrace.streaming.bytes"] == 10 * 1024
    assert streaming[0].attributes["flowtrace.streaming.chunks"] >= 10
    deferred = [s for s in tree_of(spans, roots["GET /deferred"])
                if s.attributes.get("flowtrace.template.deferred")]  # fmt: skip
    assert deferred, "TemplateResponse renders after the view: deferred"
    cached = exclusive_by_stage(tree_of(spans, roots["GET /cached"]))
    assert cached["cache"] > 0
    async_cache = [s for s in tree_of(spans, roots["GET /a/cached"])
                   if s.attributes.get("flowtrace.stage") == "cache"]  # fmt: skip
    assert len(async_cache) == 2  # aset and aget


def test_middleware_async_and_sync_are_timed_by_name(asgi: Any) -> None:
    traced = asgi()
    asyncio.run(request(traced.app, "/hello"))
    spans = traced.spans()
    names = {s.attributes.get("flowtrace.middleware") for s in spans}
    assert "tests.testproject.middleware.DelayMiddleware" in names  # sync-only, in a thread
    assert "django.contrib.sessions.middleware.SessionMiddleware" in names  # async-capable


def test_the_root_is_the_current_span_in_async_code_and_in_threads(asgi: Any) -> None:
    traced = asgi()
    seen: dict[str, int] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        from asgiref.sync import sync_to_async

        seen["loop"] = trace.get_current_span().get_span_context().trace_id
        seen["thread"] = await sync_to_async(
            lambda: trace.get_current_span().get_span_context().trace_id)()  # fmt: skip
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    generic = FlowTrace(app, tracer_provider=traced.tracer_provider, metrics=False)
    asyncio.run(request(generic, "/anything"))
    generic.flush()
    roots = [s for s in traced.exporter.get_finished_spans() if s.name == "GET"]
    assert len(roots) == 1 and seen["loop"] == seen["thread"] == roots[0].context.trace_id


def test_a_sync_middleware_crosses_the_bridge_twice_and_the_wait_is_attributed(asgi: Any) -> None:
    """The app's own measure (tests/testproject/middleware.py: HandoffOuter/Inner
    around the sync-only DelayMiddleware) against flowtrace's crossings."""
    from django.test import override_settings

    from tests.testproject import settings_bridge

    with override_settings(MIDDLEWARE=settings_bridge.MIDDLEWARE):
        traced = asgi()

        async def run() -> list[int]:
            handoffs = []
            for _ in range(5):
                start, _, _ = await request(traced.app, "/a/hello")
                handoffs.append(int(dict(start["headers"])[b"X-Handoff-Ns"]))
            return handoffs

        measured = asyncio.run(run())
    roots = sorted(traced.roots(), key=lambda s: s.start_time)
    assert len(roots) == 5
    points_ = points(traced.reader.get_metrics_data(), "flowtrace.bridge.crossings")
    delay = "tests.testproject.middleware.DelayMiddleware"
    per_cause = {dict(p.attributes)["flowtrace.bridge.cause"]: p for _, p in points_}
    assert per_cause[delay].count == 5 and per_cause[delay].sum == 10  # 2 per request
    waits = points(traced.reader.get_metrics_data(), "flowtrace.bridge.wait")
    delay_wait = next(p for _, p in waits if dict(p.attributes)["flowtrace.bridge.cause"] == delay)
    assert abs(delay_wait.sum - sum(measured) / 1e9) < 5 * 0.001  # ±1 ms per request
    for root in roots:
        assert root.attributes["flowtrace.bridge.crossings"] >= 2
        assert root.attributes["flowtrace.bridge.wait"] > 0


def test_blocking_the_loop_shows_on_its_route_only(asgi: Any) -> None:
    traced = asgi()

    async def run() -> list[int]:
        blocked = []
        for _ in range(5):
            start, _, _ = await request(traced.app, "/a/blocking?ms=20")
            blocked.append(int(dict(start["headers"])[b"X-Blocked-Ns"]))
            await request(traced.app, "/a/hello")
        return blocked

    measured = asyncio.run(run())
    roots = traced.roots()
    blocking = sorted((r for r in roots if r.name == "GET /a/blocking"), key=lambda r: r.start_time)
    trivial = [r for r in roots if r.name == "GET /a/hello"]
    excess = []
    for root, app_ns in zip(blocking, measured, strict=True):
        longest = root.attributes["flowtrace.asyncio.longest_hold"]
        assert longest >= app_ns / 1e9 and app_ns >= 20_000_000  # the step holds the sleep
        excess.append(longest - app_ns / 1e9)
    # close to what the view measured around its sleep; a busy machine can only add (the
    # step also holds the middleware and view code around it, and the process may be
    # descheduled: on a loaded 2-core CI machine the excess reached 1.7 ms)
    assert min(excess) <= 0.005, excess
    # a trivial route's longest step is Django's own code (URL resolution, async middleware):
    # ~0.3 ms on Python 3.11 here, 1.02 ms once on 3.10 on a busy machine
    assert min(r.attributes["flowtrace.asyncio.longest_hold"] for r in trivial[1:]) < 0.003
    held = {
        dict(p.attributes)["http.route"]: p
        for _, p in points(traced.reader.get_metrics_data(), "flowtrace.asyncio.loop_held")
    }
    assert held["/a/blocking"].sum >= 0.050 and held["/a/hello"].count == 5


def test_200_concurrent_requests_on_one_loop_keep_their_own_timelines(asgi: Any) -> None:
    traced = asgi()
    markers = [f"m{i:03d}" for i in range(200)]

    async def run() -> list[bytes]:
        paths = [f"/a/marker/{m}" if i % 2 else f"/t/marker/{m}" for i, m in enumerate(markers)]
        results = await asyncio.gather(*(request(traced.app, p) for p in paths))
        return [body for _, body, _ in results]

    bodies = asyncio.run(run())
    assert [b.decode() for b in bodies] == markers
    spans = traced.spans()
    roots = [s for s in spans if s.kind == trace.SpanKind.SERVER]
    assert len(roots) == 200
    for root in roots:
        marker = str(root.attributes["url.path"]).rsplit("/", 1)[1]
        queries = [s for s in tree_of(spans, root) if s.attributes.get("flowtrace.stage") == "db"]
        texts = [str(q.attributes.get("db.query.text")) for q in queries]
        assert len(texts) == 1 and f"'{marker}'" in texts[0], (marker, texts)


def test_lifespan_and_websocket_scopes_pass_through_untouched(asgi: Any) -> None:
    traced = asgi()
    seen: list[str] = []

    class Router:  # as Channels' ProtocolTypeRouter: http to Django, the rest elsewhere
        def __init__(self) -> None:
            self.application_mapping = {"http": traced.handler}

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                return await traced.handler(scope, receive, send)
            seen.append(scope["type"])
            message = await receive()
            await send({"type": message["type"] + ".complete"})

    routed = FlowTrace(Router(), tracer_provider=traced.tracer_provider,
                       meter_provider=traced.meter_provider)  # fmt: skip
    assert isinstance(routed, FlowTraceASGI) and routed._layer_names  # Django found inside

    async def run() -> list[Any]:
        out = []
        for kind, first in (("lifespan", "lifespan.startup"), ("websocket", "websocket.connect")):
            comm = ApplicationCommunicator(routed, {"type": kind})
            await comm.send_input({"type": first})
            out.append(await comm.receive_output(5))
            await comm.wait(5)
        start, body, _ = await request(routed, "/hello")
        out.append((start["status"], body))
        return out

    results = asyncio.run(run())
    assert results[:2] == [{"type": "lifespan.startup.complete"},
                           {"type": "websocket.connect.complete"}]  # fmt: skip
    assert seen == ["lifespan", "websocket"] and results[2][0] == 200
    routed.flush()
    assert [s.name for s in traced.exporter.get_finished_spans()
            if s.kind == trace.SpanKind.SERVER] == ["GET /hello"]  # fmt: skip


def test_off_is_a_pass_through_and_leaves_asgiref_alone(monkeypatch: Any) -> None:
    from django.core.handlers.asgi import ASGIHandler

    monkeypatch.setenv("FLOWTRACE_ENABLED", "0")
    handler = ASGIHandler()
    app = FlowTrace(handler)
    assert isinstance(app, FlowTraceASGI) and not app._active
    assert not bridge.installed()
    start, body, _ = asyncio.run(request(app, "/hello"))
    assert start["status"] == 200 and body


def _messages_of(app: Any, path: str) -> list[dict[str, Any]]:
    return asyncio.run(request(app, path))[2]


def test_messages_are_passed_on_unchanged(asgi: Any) -> None:
    from django.core.handlers.asgi import ASGIHandler

    traced = asgi()
    plain = ASGIHandler()
    for path in ("/hello", "/db", "/a/stream", "/no/such/page", "/boom"):
        ours, theirs = _messages_of(traced.app, path), _messages_of(plain, path)
        strip = [{k: v for k, v in m.items() if k != "headers"} for m in ours]
        assert strip == [{k: v for k, v in m.items() if k != "headers"} for m in theirs], path
        drop = {b"Date", b"X-Handoff-Ns"}
        assert [h for h in ours[0]["headers"] if h[0] not in drop] == \
            [h for h in theirs[0]["headers"] if h[0] not in drop], path  # fmt: skip


class _Misbehaving:
    """ASGI apps that break the protocol, each in its own way."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if self.mode == "raises before start":
            raise RuntimeError("before start")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if self.mode == "two starts":
            await send({"type": "http.response.start", "status": 500, "headers": []})
        if self.mode == "no body":
            return
        if self.mode == "raises mid-stream":
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            raise ValueError("mid-stream")
        if self.mode == "ignores disconnect":
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b"b"})
            return
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("mode", ["raises before start", "two starts", "no body",
                                  "raises mid-stream", "ignores disconnect"])  # fmt: skip
def test_misbehaving_apps_get_the_same_outcome_and_are_still_traced(asgi: Any, mode: str) -> None:
    traced = asgi()
    plain = _Misbehaving(mode)
    wrapped = FlowTrace(plain, tracer_provider=traced.tracer_provider, metrics=False)

    async def outcome(app: Any) -> tuple[list[Any], str | None]:
        comm = ApplicationCommunicator(app, scope_for("/x"))
        await comm.send_input({"type": "http.request", "body": b""})
        if mode == "ignores disconnect":
            await comm.send_input({"type": "http.disconnect"})
        sent: list[Any] = []
        error = None
        try:
            await comm.wait(5)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        while not comm.output_queue.empty():
            sent.append(comm.output_queue.get_nowait())
        return sent, error

    assert asyncio.run(outcome(wrapped)) == asyncio.run(outcome(plain))
    wrapped.flush()
    (root,) = [s for s in traced.exporter.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    if mode.startswith("raises"):
        assert root.status.status_code == trace.StatusCode.ERROR
        assert root.attributes["error.type"] in ("RuntimeError", "ValueError")


def test_a_client_gone_before_the_response_is_flagged(asgi: Any) -> None:
    traced = asgi()

    async def run() -> None:
        comm = ApplicationCommunicator(traced.app, scope_for("/t/slow-view?ms=50"))
        await comm.send_input({"type": "http.request", "body": b""})
        await comm.send_input({"type": "http.disconnect"})
        await comm.wait(5)

    asyncio.run(run())
    (root,) = traced.roots()
    streaming = [s for s in traced.spans() if s.attributes.get("flowtrace.stage") == "streaming"]
    assert streaming and streaming[0].attributes["flowtrace.streaming.client_disconnected"]
    assert root.name.startswith("GET")


def test_server_timing_under_asgi(asgi: Any) -> None:
    traced = asgi(server_timing=True)
    start, _, _ = asyncio.run(request(traced.app, "/db"))
    value = dict(start["headers"])[b"server-timing"].decode()
    names = [part.split(";")[0] for part in value.split(", ")]
    assert {"middleware", "view", "db", "app"} <= set(names) and 'desc="2 queries"' in value


def test_loop_lag_is_sampled_per_worker(asgi: Any) -> None:
    traced = asgi()

    async def run() -> None:
        await request(traced.app, "/a/hello")
        await asyncio.sleep(0.35)  # three ticks of the 100 ms probe
        await request(traced.app, "/a/hello")

    asyncio.run(run())
    traced.spans()
    lag = points(traced.reader.get_metrics_data(), "flowtrace.asyncio.loop_lag")
    assert lag and lag[0][1].count >= 2


@pytest.mark.skipif(os.environ.get("FLOWTRACE_ASGI_SKIP_WSGI_COMPARE") == "1", reason="opt-out")
def test_the_same_request_has_the_same_attributes_under_wsgi_and_asgi(
    asgi: Any, make_inprocess: Any
) -> None:
    from tests.wsgi_client import call

    traced = asgi()
    asyncio.run(request(traced.app, "/items/3/?q=1", [(b"user-agent", b"test-agent")]))
    (asgi_root,) = traced.roots()
    wsgi = make_inprocess()
    call(wsgi.app, "/items/3/", QUERY_STRING="q=1", HTTP_USER_AGENT="test-agent",
         SERVER_NAME="testserver", HTTP_HOST="testserver")  # fmt: skip
    (wsgi_root,) = [s for s in wsgi.spans() if s.kind == trace.SpanKind.SERVER]
    keys = (
        "http.request.method",
        "url.path",
        "http.route",
        "http.response.status_code",
        "user_agent.original",
        "server.address",
        "url.scheme",
        "flowtrace.db.query_count",
    )
    assert {k: asgi_root.attributes.get(k) for k in keys} == \
        {k: wsgi_root.attributes.get(k) for k in keys}  # fmt: skip
    assert asgi_root.name == wsgi_root.name == "GET /items/<int:pk>/"


# --- hostile input, as tests/test_hostile.py does for WSGI, in ASGI scopes ---------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_header_names = st.one_of(st.sampled_from([b"x-request-start", b"x-queue-start", b"traceparent",
                                           b"tracestate", b"baggage", b"user-agent", b"host"]),
                          st.binary(min_size=1, max_size=30))  # fmt: skip
_SHARED_ASGI: dict[str, Any] = {}


_SLOW_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=_SLOW_OK)
@given(method=st.one_of(st.sampled_from(["GET", "POST", "HEAD", "BREW", "get"]),
                        st.text(max_size=20)),
       path=st.one_of(st.sampled_from(["/hello", "/a/hello", "/db", "/boom", "/a/stream"]),
                      st.text(max_size=200).map(lambda p: "/" + p)),
       query=st.binary(max_size=200),
       headers=st.lists(st.tuples(_header_names, st.binary(max_size=300)),
                        max_size=20))  # fmt: skip
def test_hostile_scopes_behave_like_the_bare_handler(
    asgi: Any, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    if "app" not in _SHARED_ASGI or _SHARED_ASGI.get("fixture") is not asgi:
        _SHARED_ASGI.update(app=asgi(max_attribute_length=256), fixture=asgi)
    traced = _SHARED_ASGI["app"]

    async def outcome(app: Any) -> tuple[Any, ...]:
        scope = scope_for("/")
        scope.update(method=method, path=path, raw_path=path.encode("utf-8", "replace"),
                     query_string=query, headers=[(b"host", b"testserver"), *headers])  # fmt: skip
        comm = ApplicationCommunicator(app, scope)
        await comm.send_input({"type": "http.request", "body": b""})
        try:
            await comm.wait(10)
        except Exception as exc:
            return ("raised", type(exc).__name__)
        sent = []
        while not comm.output_queue.empty():
            sent.append(comm.output_queue.get_nowait())
        return ("ok", sent)

    ours = asyncio.run(outcome(traced.app))
    theirs = asyncio.run(outcome(traced.handler))
    traced.app.flush()  # on this thread: hypothesis watches the global random state
    assert ours == theirs


# --- the bridge leaves asgiref's behaviour and the user's functions alone -----------------
# (regression tests from an independent review against asgiref 3.8-3.13 and Django's source)

_OLDEST_ASGIREF_SCRIPT = r"""
import asyncio, sys
sys.path.insert(0, sys.argv[1])
import asgiref, django
django.setup()
from asgiref.sync import async_to_sync
from django.core.handlers.asgi import ASGIHandler
from flowtrace import FlowTrace
from tests.test_asgi import request

async def none(): return "none"
async def two(a, b): return a + b
async def named(*, x): return x

def calls():
    return [async_to_sync(none)(), async_to_sync(two)(1, 2), async_to_sync(named)(x=3)]

before = calls()
app = FlowTrace(ASGIHandler())
start, body, _ = asyncio.run(request(app, "/a/signal"))
print(asgiref.__version__, before == calls(), start["status"], body.decode())
"""


def _oldest_asgiref() -> str:
    """The oldest asgiref the installed Django accepts (5.2: 3.8.1, 6.x: 3.9.1)."""
    from importlib.metadata import requires

    for requirement in requires("django") or ():
        if requirement.startswith("asgiref"):
            return requirement.split(">=", 1)[1].split(",")[0].strip()
    raise AssertionError("Django declares no asgiref requirement")


def test_the_oldest_asgiref_django_allows_keeps_working(tmp_path: Any) -> None:
    """asgiref 3.8 calls main_wrap with the function and its arguments (3.9+: one
    coroutine); patched for 3.9 only, every async_to_sync with arguments raised
    TypeError, and a sync view sending a signal with an async receiver was a 500."""
    import subprocess
    import sys

    version = _oldest_asgiref()
    target = Path.home() / ".cache" / "flowtrace-tests" / f"asgiref-{version}"
    if not (target / "asgiref").is_dir():
        got = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                              "--target", str(target), f"asgiref=={version}"],
                             capture_output=True, text=True)  # fmt: skip
        if got.returncode != 0:
            if os.environ.get("CI") == "true":
                pytest.fail(f"pip could not install asgiref {version}: {got.stderr[-500:]}")
            pytest.skip(f"pip could not install asgiref {version} (offline?)")
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OTEL_TRACES_EXPORTER": "none",
           "OTEL_METRICS_EXPORTER": "none"}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", _OLDEST_ASGIREF_SCRIPT, str(target)],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().split(None, 3) == [version, "True", "200", "['async receiver']"]


def test_the_users_sync_to_async_functions_are_left_as_they_are(asgi: Any) -> None:
    """The callee was once replaced by a timing wrapper: ``__name__``, ``__doc__`` and
    the signature of every ``@sync_to_async`` function made afterwards were flowtrace's,
    and the wrapper outlived uninstall()."""
    import inspect

    from asgiref.sync import sync_to_async

    def lookup(user_id: int, *, active: bool = True) -> str:
        """Fetch a user."""
        return f"user {user_id}"

    made_before = sync_to_async(lookup)
    traced = asgi()
    made_after = sync_to_async(lookup)

    async def run() -> list[str]:
        from flowtrace.capture.timeline import Timeline, current

        token = current.set(Timeline({}, 0, 0))  # inside a traced request
        try:
            return [await made_before(1), await made_after(2)]
        finally:
            current.reset(token)

    assert asyncio.run(run()) == ["user 1", "user 2"]
    for wrapped in (made_before, made_after):
        assert wrapped.func is lookup
        assert (wrapped.__name__, wrapped.__doc__) == ("lookup", "Fetch a user.")  # type: ignore[attr-defined]
        assert inspect.signature(wrapped) == inspect.signature(lookup)
    traced.shutdown()


def test_a_finished_response_is_not_kept_alive_for_the_export_thread(asgi: Any) -> None:
    """A crossing kept its callee until export: ``sync_to_async(response.close)`` held
    the whole response (here 10 MB) for up to 2048 pending requests."""
    import gc

    from tests.testproject import asyncviews

    traced = asgi(export_interval=60)
    asyncviews.RESPONSES.clear()
    asyncio.run(request(traced.app, "/a/big"))
    gc.collect()
    assert asyncviews.RESPONSES and asyncviews.RESPONSES[0]() is None
    (root,) = traced.roots()
    assert root.attributes["flowtrace.bridge.crossings"] >= 1


def test_a_private_loop_in_another_thread_is_not_the_request_holding_the_loop(
    asgi: Any,
) -> None:
    """async_to_sync from a worker thread runs on a loop of its own: its 200 ms block
    was counted as the request holding the server's loop."""
    traced = asgi()
    asyncio.run(request(traced.app, "/a/private-loop"))
    (root,) = traced.roots()
    # counted, it would be >= 200 ms; not counted, it is the request's own steps (28 ms
    # once on a loaded CI machine)
    assert root.attributes["flowtrace.asyncio.longest_hold"] < 0.1


def test_signal_receivers_are_their_own_cause(asgi: Any) -> None:
    """``Signal.asend`` runs sync receivers through sync_to_async: request_started
    (during setup) was labelled ``close``."""
    traced = asgi()
    asyncio.run(request(traced.app, "/a/hello"))
    traced.spans()
    held = {
        dict(p.attributes)["flowtrace.bridge.cause"]: p
        for _, p in points(traced.reader.get_metrics_data(), "flowtrace.bridge.crossings")
    }
    assert "signals" in held and "close" in held  # request_started/finished; response.close()


def test_headers_given_as_a_one_shot_iterator_reach_the_application(asgi: Any) -> None:
    """Any iterable is valid ASGI: a header iterator read by flowtrace was empty for
    Django."""
    traced = asgi()

    async def run() -> bytes:
        scope = scope_for("/a/header")
        scope["headers"] = iter([(b"host", b"testserver"), (b"x-tenant", b"acme")])
        comm = ApplicationCommunicator(traced.app, scope)
        await comm.send_input({"type": "http.request", "body": b""})
        await comm.receive_output(10)
        body = (await comm.receive_output(10))["body"]
        await comm.wait(10)
        return bytes(body)

    assert asyncio.run(run()) == b"acme"


def test_a_crossing_with_its_own_context_does_not_rewrite_another(asgi: Any) -> None:
    """asgiref >= 3.11's ``context=``: the thread sees that context's crossing mark,
    not the caller's; a context captured during an earlier crossing had that crossing's
    timing rewritten."""
    import contextvars
    import inspect
    import time

    from asgiref.sync import sync_to_async

    if "context" not in inspect.signature(sync_to_async).parameters:
        pytest.skip("sync_to_async(context=...) arrived in asgiref 3.11")
    from flowtrace.capture.timeline import Timeline, current

    asgi()
    captured: list[contextvars.Context] = []

    async def run() -> Any:
        tl = Timeline({}, 0, 0)
        tl.crossings = []
        current.set(tl)
        await sync_to_async(lambda: captured.append(contextvars.copy_context()))()
        first = tl.crossings[0]
        mark = list(captured[0].get(bridge._crossing) or ())
        await sync_to_async(lambda: time.sleep(0.01), context=captured[0])()  # type: ignore[call-overload]
        return tl, first, mark

    tl, first, mark = asyncio.run(run())
    assert tl.crossings == [first]  # not measured
    assert list(captured[0].get(bridge._crossing) or ()) == mark  # not rewritten


def test_a_failed_setup_leaves_asgiref_as_it_found_it(monkeypatch: Any) -> None:
    from django.core.handlers.asgi import ASGIHandler

    from flowtrace import asgi as asgi_front
    from flowtrace import safety

    class Broken:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("a bad exporter setting")

    monkeypatch.setattr(asgi_front, "Engine", Broken)
    app = FlowTrace(ASGIHandler())
    assert not bridge.installed() and not app._active  # type: ignore[union-attr]
    assert [type(error) for error in safety.errors] == [RuntimeError]
    safety.reset()
