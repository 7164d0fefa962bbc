"""``FlowTrace``: the WSGI front end. Environ in, iterable out.

The request path does only cheap things: two clock reads, a Timeline, a
sampling decision, one context attach, and the body wrapper. Everything
else (span trees, metrics, export) happens on the exporter thread; what is
shared with the ASGI front end lives in ``flowtrace.engine``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from os import getpid
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context

from flowtrace import safety
from flowtrace.build.totals import server_timing
from flowtrace.capture.body import wrap_body
from flowtrace.capture.request_info import snapshot
from flowtrace.capture.timeline import Timeline, clock, current
from flowtrace.config import Config, load_config
from flowtrace.engine import Engine, FrontEnd
from flowtrace.export.pipeline import Pipeline

# responses handed to the server and not closed, remembered for the exit flush; a server
# that drops iterables without close() (against PEP 3333) stops being tracked past this
_MAX_HANDED = 1024

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class FlowTrace(FrontEnd):
    """Wrap a WSGI application (Django's, or any) and trace every request.

    ``application = FlowTrace(get_wsgi_application())`` is the whole setup;
    options are keyword-only, see ``flowtrace.config.Config``.
    """

    #: Record Timelines even when nothing is exported (``flowtrace bench``'s
    #: subclass keeps them itself, through ``_finish``).
    _capture_only = False

    def __new__(cls, application: Any, *args: Any, **kwargs: Any) -> Any:
        """``FlowTrace(get_asgi_application())`` is a ``FlowTraceASGI``: one name
        for both files, ``wsgi.py`` and ``asgi.py``."""
        if cls is FlowTrace:
            from flowtrace.asgi import FlowTraceASGI, is_asgi_application

            if is_asgi_application(application):
                return FlowTraceASGI(application, *args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        application: WSGIApp,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        **options: Any,
    ) -> None:
        self.application = application
        self.config: Config = load_config(options)
        self._active = False
        self._engine: Engine | None = None
        if self.config.enabled:
            with safety.guard("setup"):
                self._setup(tracer_provider, meter_provider)

    def _setup(self, tracer_provider: Any, meter_provider: Any) -> None:
        engine = Engine(self.config, self.application, tracer_provider, meter_provider,
                        lambda: self.dropped, self._capture_only)  # fmt: skip
        self._engine = engine
        if not engine.active:
            return
        self._layer_names = engine.layer_names
        self._header_keys = engine.header_keys
        self._route_resolver = engine.route_resolver
        self._keep_sql_params = engine.keep_sql_params
        self._excluded = engine.excluded is not None
        self._server_timing = self.config.server_timing
        assert engine.pipeline is not None
        self._pipe: Pipeline = engine.pipeline
        self._active = True

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Any:
        if not self._active:
            return self.application(environ, start_response)
        engine = self._engine
        assert engine is not None
        pipeline = self._pipe
        if pipeline.pid != getpid():  # a fork Python's hooks missed (uWSGI): ~0.1 µs
            pipeline.forked()
        if self._excluded and engine.is_excluded(environ):
            return self.application(environ, start_response)
        t_call = clock()
        tl = Timeline(snapshot(environ, self._header_keys), time_ns(), t_call)
        tl.layer_names = self._layer_names
        tl.keep_sql_params = self._keep_sql_params
        otel_token = engine.start_trace(tl, environ)

        def traced_start_response(status: str, headers: Any, *exc_info: Any) -> Any:
            tl.status = status
            return start_response(status, headers, *exc_info)

        if self._server_timing:
            traced_start_response = self._with_server_timing(tl, start_response)

        token = current.set(tl)
        try:
            result = self.application(environ, traced_start_response)
        except BaseException as exc:
            tl.t_return = clock()
            tl.exc = exc
            self._finish(tl)
            raise
        finally:
            current.reset(token)
            if otel_token is not None:
                otel_context.detach(otel_token)
        tl.t_return = clock()
        if self._route_resolver is not None:
            with safety.guard("route_resolver"):
                tl.route = self._route_resolver(environ)
        handed = pipeline.handed  # until its close(): see Pipeline.shutdown
        if len(handed) < _MAX_HANDED:  # a server that never closes cannot grow it
            handed.add(tl)
        try:
            return wrap_body(result, environ, tl, self._finish)
        except Exception as exc:  # never lose the app's response
            safety.report("wrap_body", exc)
            return result

    @staticmethod
    def _with_server_timing(tl: Timeline, start_response: StartResponse) -> StartResponse:
        """start_response adding a ``Server-Timing`` header (opt-in: ``server_timing``)."""

        def timed_start_response(status: str, headers: Any, *exc_info: Any) -> Any:
            tl.status = status
            with safety.guard("server_timing"):
                headers = [*headers, ("Server-Timing", server_timing(tl, clock()))]
            return start_response(status, headers, *exc_info)

        return timed_start_response
