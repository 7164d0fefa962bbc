"""FlowTrace must not change what the app does: bytes, exceptions, close()."""

from __future__ import annotations

import io
import logging
from typing import Any
from wsgiref.util import FileWrapper
from wsgiref.validate import validator

import pytest
from django.core.handlers.wsgi import WSGIHandler
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from flowtrace import FlowTrace, safety
from tests.metrics import points
from tests.wsgi_client import Body, call, environ_for

ROUTES = ["/hello", "/db", "/stream", "/items/2/", "/deferred", "/cached", "/download",
          "/boom", "/missing", "/t/slow-close"]  # fmt: skip


def _comparable(result: Any) -> tuple[str, list[tuple[str, str]], bytes]:
    return result.status, sorted(result.headers), result.body


@pytest.mark.parametrize("path", ROUTES)
def test_responses_are_byte_identical(make_inprocess: Any, path: str) -> None:
    bare = WSGIHandler()
    traced = make_inprocess().app
    assert _comparable(call(traced, path)) == _comparable(call(bare, path))


def _generic(body: Body) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    return app


def _tracer() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_generic_app_gets_generic_stages_and_validates_on_both_sides() -> None:
    provider, exporter = _tracer()
    body = Body([b"a", b"bc"])
    traced = FlowTrace(validator(_generic(body)), tracer_provider=provider, metrics=False)
    result = call(validator(traced), "/anything")
    traced.flush()
    assert result.body == b"abc" and body.closed == 1
    stages = sorted(
        s.attributes.get("flowtrace.stage") or "" for s in exporter.get_finished_spans()
    )
    assert stages == ["", "close", "streaming", "view"]
    root = next(s for s in exporter.get_finished_spans() if s.parent is None or s.parent.is_remote)
    assert root.name == "GET" and "http.route" not in root.attributes


@pytest.mark.parametrize("iterate", [0, 1, 2])
def test_close_is_called_exactly_once(iterate: int) -> None:
    provider, exporter = _tracer()
    body = Body([b"a", b"b"])
    traced = FlowTrace(_generic(body), tracer_provider=provider, metrics=False)
    iterable = traced(environ_for("/"), lambda *a: None)
    it = iter(iterable)
    for _ in range(iterate):
        next(it)
    iterable.close()
    iterable.close()  # a second close from a confused server is ignored
    traced.flush()
    assert body.closed == 1
    streaming = next(s for s in exporter.get_finished_spans()
                     if s.attributes.get("flowtrace.stage") == "streaming")  # fmt: skip
    assert streaming.attributes["flowtrace.streaming.client_disconnected"] is (iterate < 3)


def _streaming_span(exporter: InMemorySpanExporter) -> Any:
    return next(s for s in exporter.get_finished_spans()
                if s.attributes.get("flowtrace.stage") == "streaming")  # fmt: skip


@pytest.mark.parametrize("taken", [0, 1, 2])
def test_a_ready_made_list_body_is_counted_by_what_the_server_took(taken: int) -> None:
    """A list body is handed to the server as a C iterator (no per-chunk Python);
    close() still tells how much of it the server took."""
    provider, exporter = _tracer()
    chunks = [b"ab", b"cde"]
    traced = FlowTrace(lambda env, start: (start("200 OK", []), chunks)[1],
                       tracer_provider=provider, metrics=False)  # fmt: skip
    iterable = traced(environ_for("/"), lambda *a: None)
    it = iter(iterable)
    assert [next(it) for _ in range(taken)] == chunks[:taken]
    iterable.close()
    traced.flush()
    attrs = _streaming_span(exporter).attributes
    assert attrs["flowtrace.streaming.chunks"] == taken
    assert attrs["flowtrace.streaming.bytes"] == [0, 2, 5][taken]
    assert attrs["flowtrace.streaming.client_disconnected"] is (taken < 2)


def test_a_server_calling_next_without_iter_counts_each_chunk_once() -> None:
    provider, exporter = _tracer()
    traced = FlowTrace(lambda env, start: (start("200 OK", []), [b"ab", b"cde"])[1],
                       tracer_provider=provider, metrics=False)  # fmt: skip
    iterable = traced(environ_for("/"), lambda *a: None)
    assert [next(iterable), next(iterable)] == [b"ab", b"cde"]
    with pytest.raises(StopIteration):
        next(iterable)
    iterable.close()
    traced.flush()
    attrs = _streaming_span(exporter).attributes
    assert (attrs["flowtrace.streaming.chunks"], attrs["flowtrace.streaming.bytes"]) == (2, 5)
    assert attrs["flowtrace.streaming.client_disconnected"] is False


def test_app_exception_passes_through_unchanged() -> None:
    provider, exporter = _tracer()
    error = KeyError("original")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise error

    traced = FlowTrace(app, tracer_provider=provider, metrics=False)
    with pytest.raises(KeyError) as caught:
        traced(environ_for("/"), lambda *a: None)
    assert caught.value is error
    assert caught.value.__traceback__ is not None
    assert caught.traceback[-1].name == "app"  # raised where the app raised it
    traced.flush()
    [root] = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    assert root.status.status_code.name == "ERROR"
    assert root.attributes["error.type"] == "KeyError"
    assert root.events[0].name == "exception"


def test_mid_stream_exception_passes_through_and_close_still_runs() -> None:
    provider, _ = _tracer()
    body = Body([b"a", b"b"], fail_at=1)
    traced = FlowTrace(_generic(body), tracer_provider=provider, metrics=False)
    iterable = traced(environ_for("/"), lambda *a: None)
    with pytest.raises(ValueError, match="mid-stream"):
        list(iterable)
    iterable.close()
    assert body.closed == 1
    traced.flush()


def test_start_response_exc_info_is_passed_through() -> None:
    provider, _ = _tracer()
    seen: list[tuple[Any, ...]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        try:
            raise RuntimeError("x")
        except RuntimeError:
            import sys

            start_response("500 Internal Server Error", [], sys.exc_info())
        return [b"err"]

    traced = FlowTrace(app, tracer_provider=provider, metrics=False)
    result = traced(environ_for("/"), lambda *args: seen.append(args))
    assert len(seen[0]) == 3 and seen[0][2][0] is RuntimeError
    assert len(result) == 1  # the body's len() is kept for servers that use it
    result.close()
    traced.flush()


def test_file_wrapper_response_is_returned_as_is(make_inprocess: Any) -> None:
    from gunicorn.http.wsgi import FileWrapper as GunicornFileWrapper

    inproc = make_inprocess()
    for wrapper in (FileWrapper, GunicornFileWrapper):
        env = environ_for("/download", **{"wsgi.file_wrapper": wrapper})
        result = inproc.app(env, lambda *a: None)
        assert type(result) is wrapper  # gunicorn's sendfile needs its own class
        assert len(b"".join(result)) == 64 * 1024
        result.close()
    spans = inproc.spans()
    streaming = [s for s in spans if s.attributes.get("flowtrace.stage") == "streaming"]
    assert len(streaming) == 2
    assert all(s.attributes["flowtrace.streaming.file_wrapper"] for s in streaming)
    # time to first byte: the moment the file was handed to the server, on span and metric
    for span in streaming:
        root = next(s for s in spans if s.context.span_id == span.parent.span_id)
        ttfb = root.attributes["flowtrace.streaming.ttfb"]
        assert abs(ttfb - (span.start_time - root.start_time) / 1e9) < 1e-6
    (point,) = [p for _, p in points(inproc.reader.get_metrics_data(), "flowtrace.request.ttfb")]
    assert point.count == 2


def test_file_wrapper_close_reaches_the_file_once() -> None:
    provider, _ = _tracer()
    closed: list[int] = []

    class Tracked(io.BytesIO):
        def close(self) -> None:
            closed.append(1)
            super().close()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](Tracked(b"data"))

    traced = FlowTrace(app, tracer_provider=provider, metrics=False)
    result = traced(environ_for("/", **{"wsgi.file_wrapper": FileWrapper}), lambda *a: None)
    assert isinstance(result, FileWrapper)
    result.close()
    result.close()
    assert closed == [1]
    traced.flush()


class _BrokenSampler(Sampler):
    def should_sample(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("sampler bug")

    def get_description(self) -> str:
        return "broken"


def test_internal_error_is_logged_once_and_requests_go_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(safety, "STRICT", False)
    provider = TracerProvider(sampler=_BrokenSampler())
    body = Body([b"ok"])
    traced = FlowTrace(_generic(body), tracer_provider=provider, metrics=False)
    with caplog.at_level(logging.WARNING, logger="flowtrace"):
        results = [call(traced, "/") for _ in range(3)]
    traced.flush()
    assert [r.body for r in results] == [b"ok", b"ok", b"ok"]
    assert safety.error_count == 3
    assert len([r for r in caplog.records if "internal error" in r.getMessage()]) == 1
    safety.reset()


def test_kill_switch_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowtrace.capture.django import calls as django_calls

    monkeypatch.setenv("FLOWTRACE_ENABLED", "0")
    handler = WSGIHandler()
    chain = handler._middleware_chain
    traced = FlowTrace(handler)
    assert handler._middleware_chain is chain
    assert not django_calls.installed()
    assert call(traced, "/hello").body == b"Hello, world!\n"
