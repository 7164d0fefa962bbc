"""Hostile input (property-based) and misbehaving applications: flowtrace behaves
exactly like the bare app, raises nothing of its own, and keeps attributes bounded."""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flowtrace import FlowTrace
from tests.reliability import FIGURES
from tests.wsgi_client import Body, call, environ_for

LIMIT = 256
EXAMPLES = 150

latin1 = st.binary(max_size=400).map(lambda b: b.decode("latin-1"))  # WSGI's native strings
numbers = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True)).map(str)
queue_header = st.one_of(latin1, numbers, numbers.map("t={}".format),
                         st.text(max_size=50).map("t={}".format))  # fmt: skip
hex_id = st.text(alphabet="0123456789abcdefABCDEF-xz", min_size=0, max_size=40)
traceparent = st.one_of(
    latin1,
    st.tuples(hex_id, hex_id, hex_id, hex_id).map("-".join),
    st.text(max_size=10).map(lambda s: "00-" + "a" * 32 + "-" + "b" * 16 + "-" + s),
    st.integers(0, 20_000).map(lambda n: "00-" + "f" * n),
)
header_name = st.text(alphabet=string.ascii_uppercase + "_", min_size=1, max_size=30)
known_methods = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"]
methods = st.one_of(
    st.sampled_from([*known_methods, "get", "BREW", "M-SEARCH"]),
    st.text(alphabet=string.ascii_letters + "-_", min_size=1, max_size=60),
)
paths = st.one_of(
    latin1.map(lambda p: "/" + p),
    st.sampled_from(["/hello", "/db", "/items/3/", "/stream", "/boom", "/t/marker/x"]),
    st.integers(0, 60_000).map(lambda n: "/" + "a" * n),
)


def _bounded(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= LIMIT
    if isinstance(value, (tuple, list)):
        return len(value) <= 64 and all(_bounded(v) for v in value)
    return True


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples in every run: no flaky CI
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(method=methods, path=paths, queue=queue_header, other_queue=queue_header,
       parent=traceparent, state=latin1, baggage=latin1,
       extra=st.dictionaries(header_name, latin1, max_size=50))  # fmt: skip
def test_hostile_requests_behave_like_the_bare_app(
    make_inprocess: Any, method: str, path: str, queue: str, other_queue: str, parent: str,
    state: str, baggage: str, extra: dict[str, str],
) -> None:  # fmt: skip
    inproc = _shared(make_inprocess)
    headers = {f"X-{k}": v for k, v in extra.items()}
    headers.update({"X-Request-Start": queue, "X-Queue-Start": other_queue,
                    "traceparent": parent, "tracestate": state, "baggage": baggage})  # fmt: skip
    traced = _outcome(lambda: call(inproc.app, path, method=method, headers=headers))
    bare = _outcome(lambda: call(inproc.handler, path, method=method, headers=headers))
    # Export now, on this thread: span ids come from `random`, and hypothesis rejects
    # a test whose global random state moves (here: the export thread) while it draws.
    inproc.app.flush()
    assert traced == bare
    _count("hostile requests (method, path, queue headers, trace context, headers)")


def _count(name: str) -> None:
    FIGURES.hostile[name] = FIGURES.hostile.get(name, 0) + 1


_SHARED: dict[str, Any] = {}


def _shared(make_inprocess: Any) -> Any:
    """One traced app for all examples of a test (hypothesis calls the body many times)."""
    key = str(id(make_inprocess))
    if key not in _SHARED:
        _SHARED.clear()
        _SHARED[key] = make_inprocess(max_attribute_length=LIMIT)
    return _SHARED[key]


def _outcome(run: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        result = run()
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    return (result.status, result.body)


def test_hostile_requests_leave_bounded_attributes(make_inprocess: Any) -> None:
    """Run after the property test: every exported attribute is within the limit."""
    inproc = make_inprocess(max_attribute_length=LIMIT)
    call(inproc.app, "/" + "\xff" * 5000, method="X" * 500,
         headers={"traceparent": "00-" + "f" * 9000, "baggage": "k=" + "v" * 9000,
                  "X-Request-Start": "t=" + "9" * 4000})  # fmt: skip
    spans = inproc.spans()
    assert spans
    for span in spans:
        assert len(span.name) <= LIMIT + 16
        assert all(_bounded(v) for v in span.attributes.values()), span.attributes


# --- misbehaving applications: flowtrace must behave exactly like the bare app ----------


def _app(kind: str) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if kind == "start_response twice":
            start_response("200 OK", [("Content-Type", "text/plain")])
            try:
                raise ValueError("late failure")
            except ValueError:
                import sys

                start_response("500 Internal Server Error", [], sys.exc_info())
            return [b"error page"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        if kind == "non-bytes chunks":
            return ["text", 42, None]
        if kind == "no close()":
            return (chunk for chunk in [b"a", b"b"])
        if kind == "close() raises":
            return Body([b"a"], close_error=OSError("close failed"))
        if kind == "raises mid-stream":
            return Body([b"a", b"b"], fail_at=1)
        if kind == "client vanished":
            return Body([b"a", b"b", b"c"])
        raise AssertionError(kind)

    return app


def _drive(app: Any, stop_after: int | None = None) -> tuple[Any, ...]:
    """As a server would: iterate (maybe not to the end), then close once."""
    seen: list[Any] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        seen.append((status, exc_info[0] if exc_info else None))
        return lambda data: None

    chunks: list[Any] = []
    error = close_error = None
    iterable = app(environ_for("/x"), start_response)
    try:
        for chunk in iterable:
            chunks.append(chunk)
            if stop_after is not None and len(chunks) >= stop_after:
                break  # the client went away
    except Exception as exc:
        error = (type(exc), str(exc))
    try:
        if hasattr(iterable, "close"):
            iterable.close()
    except Exception as exc:
        close_error = (type(exc), str(exc))
    return tuple(seen), tuple(chunks), error, close_error


MISBEHAVIOURS = ["non-bytes chunks", "no close()", "close() raises", "raises mid-stream",
                 "start_response twice", "client vanished"]  # fmt: skip


@pytest.mark.parametrize("kind", MISBEHAVIOURS)
def test_misbehaving_apps_behave_the_same_traced(kind: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traced = FlowTrace(_app(kind), tracer_provider=provider, metrics=False)
    stop = 1 if kind == "client vanished" else None
    assert _drive(traced, stop) == _drive(_app(kind), stop)
    traced.flush()
    roots = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    assert len(roots) == 1 and roots[0].end_time  # the trace ended all the same
    FIGURES.hostile["misbehaving applications"] = (
        FIGURES.hostile.get("misbehaving applications", 0) + 1
    )
