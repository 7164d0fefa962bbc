"""``FlowTraceASGI``: the ASGI front end. Scope in, messages out.

``application = FlowTrace(get_asgi_application())`` in ``asgi.py`` returns one
(``FlowTrace`` sees an ASGI application); it shares the WSGI front end's
``Engine``, capture hooks, builders and exporters. What is ASGI's own:

* the request is read from the scope (``flowtrace.capture.asgi_scope``);
* the stage boundaries come from the messages: ``http.response.start`` ends the
  application stages (Django has run the whole middleware chain by then),
  ``streaming`` runs to the last ``http.response.body`` sent, ``close`` to the
  application's return (Django's ``response.close()`` and ``request_finished``);
  an ``http.disconnect`` received before the body was sent flags the client gone;
* sync<->async crossings (``flowtrace.capture.bridge``) and the time the
  request's own code held the event loop (``flowtrace.capture.loop``).

Messages are passed on unchanged (the opt-in ``Server-Timing`` header aside);
``lifespan`` and ``websocket`` scopes are passed through untouched.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from os import getpid
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context

from flowtrace import safety
from flowtrace.build.totals import server_timing
from flowtrace.capture import bridge
from flowtrace.capture.asgi_scope import environ_of
from flowtrace.capture.loop import LAG
from flowtrace.capture.request_info import snapshot
from flowtrace.capture.timeline import Timeline, clock, current
from flowtrace.config import Config, load_config
from flowtrace.engine import Engine, FrontEnd
from flowtrace.export.pipeline import Pipeline

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class FlowTraceASGI(FrontEnd):
    """Wrap an ASGI application (Django's ``ASGIHandler``, or any) and trace every
    HTTP request. Same options as ``FlowTrace``."""

    def __init__(
        self,
        application: ASGIApp,
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
        installed = bridge.installed()
        bridge.install()  # before Django's handler builds its middleware adapters
        try:
            engine = Engine(self.config, self.application, tracer_provider, meter_provider,
                            lambda: self.dropped)  # fmt: skip
        except BaseException:
            if not installed:
                bridge.uninstall()  # a failed setup leaves asgiref as it found it
            raise
        self._engine = engine
        if not engine.active:
            if not installed:
                bridge.uninstall()  # a pass-through leaves asgiref as it found it
            return
        self._layer_names = engine.layer_names
        self._header_keys = engine.header_keys
        self._keep_sql_params = engine.keep_sql_params
        self._excluded = engine.excluded is not None
        self._server_timing = self.config.server_timing
        self._lag = engine.metrics is not None  # the loop-lag probe feeds a metric only
        assert engine.pipeline is not None
        self._pipe: Pipeline = engine.pipeline
        # The export thread shares the GIL with the event loop: a loop that gives the
        # GIL up (at every select) waits up to the switch interval (5 ms) for a busy
        # export thread to hand it back. Pausing briefly after every half millisecond
        # of export work lets it in (benchmarks/loop_lag.py: p99 lag ~41 -> ~28 ms).
        self._pipe.yield_every_ns, self._pipe.pause = 500_000, 0.0001
        self._in_flight = 0
        self._stopping = False
        self._signals_watched = False
        self._active = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._active or scope.get("type") != "http":
            return await self.application(scope, receive, send)
        started = self._start(scope)
        if started is None:
            return await self.application(scope, receive, send)
        tl, environ = started
        engine = self._engine
        assert engine is not None
        otel_token = engine.start_trace(tl, environ)
        token = current.set(tl)
        self._in_flight += 1
        in_flight = self._pipe.in_flight
        in_flight.add(tl)
        try:
            await self.application(scope, self._receive(tl, receive), self._send(tl, send))
        except BaseException as exc:
            tl.exc = exc
            raise
        finally:
            end = clock()
            self._in_flight -= 1
            current.reset(token)
            if otel_token is not None:
                otel_context.detach(otel_token)
            tl.t_close_end = end
            tl.t_return = tl.t_return or end  # no response started
            tl.t_close_start = tl.t_close_start or end  # the body never finished
            self._finish(tl)  # out of in_flight too
            if self._stopping and not self._in_flight:
                engine.flush_before_stop()

    def _start(self, scope: Scope) -> tuple[Timeline, dict[str, Any]] | None:
        """The request's Timeline and environ, or None when it is not traced
        (excluded, or a scope flowtrace cannot read: then it is served as if
        flowtrace were off)."""
        pipeline = self._pipe
        if pipeline.pid != getpid():  # a fork Python's hooks missed: ~0.1 µs
            pipeline.forked()
        try:
            environ = environ_of(scope)
        except Exception as exc:
            safety.report("asgi_scope", exc)
            return None
        engine = self._engine
        assert engine is not None
        if self._excluded and engine.is_excluded(environ):
            return None
        t_call = clock()
        tl = Timeline(snapshot(environ, self._header_keys), time_ns(), t_call)
        tl.layer_names = self._layer_names
        tl.keep_sql_params = self._keep_sql_params
        tl.crossings = []  # appended to from the loop and from threads: made here, once
        if self._lag:
            with safety.guard("loop_lag"):
                LAG.watch(asyncio.get_running_loop())
        if not self._signals_watched:
            self._signals_watched = True
            with safety.guard("stop_signals"):
                self._watch_stop_signals()
        return tl, environ

    def _watch_stop_signals(self) -> None:
        """Learn when the server is told to stop. Some servers end their worker
        processes in ways no exit handler sees: uvicorn's workers (``--workers``)
        restore the default SIGTERM disposition after their graceful shutdown and
        raise the signal again, and multiprocessing ends a child with
        ``os._exit()``. So the server's own SIGTERM and SIGINT handlers (Python
        ones, installed by the time the first request arrives) are wrapped: the
        server's handler runs first, unchanged; then, once no request is in
        flight, flowtrace exports everything (``Engine.flush_before_stop``)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(signum)
            if callable(handler) and not getattr(handler, "_flowtrace", False):
                signal.signal(signum, self._stop_handler(handler))

    def _stop_handler(self, server_handler: Callable[..., Any]) -> Callable[..., Any]:
        def on_stop(signum: int, frame: Any) -> Any:
            try:
                return server_handler(signum, frame)
            finally:
                self._stopping = True
                if not self._in_flight and self._engine is not None:
                    self._engine.flush_before_stop()

        on_stop._flowtrace = True  # type: ignore[attr-defined]
        return on_stop

    @staticmethod
    def _receive(tl: Timeline, receive: Receive) -> Receive:
        async def traced_receive() -> Message:
            message = await receive()
            if not tl.t_close_start and message.get("type") == "http.disconnect":
                tl.client_gone = True  # gone before the response was sent
            return message

        return traced_receive

    def _send(self, tl: Timeline, send: Send) -> Send:
        server_timing_on = self._server_timing

        async def traced_send(message: Message) -> None:
            kind = message.get("type")
            if kind == "http.response.body":
                body = message.get("body", b"")
                if body:
                    if not tl.chunks:
                        tl.t_first_chunk = clock()
                    tl.chunks += 1
                    try:  # noqa: SIM105 - cheaper than contextlib.suppress per message
                        tl.bytes_sent += len(body)
                    except TypeError:  # not bytes: the server will say so, not us
                        pass
                try:
                    await send(message)
                except OSError:
                    tl.client_gone = True
                    raise
                if not message.get("more_body", False) and not tl.t_close_start:
                    tl.t_last_chunk = tl.t_close_start = clock()
                return
            if kind == "http.response.start" and not tl.t_return:
                tl.t_return = clock()
                tl.status = str(message.get("status", ""))
                if server_timing_on:
                    message = _with_server_timing(tl, message)
            elif kind in ("http.response.pathsend", "http.response.zerocopysend"):
                tl.file_wrapper = True  # the server sends the file itself
                tl.t_first_chunk = tl.t_first_chunk or clock()
                await send(message)
                tl.t_last_chunk = tl.t_close_start = clock()
                return
            await send(message)

        return traced_send


def _with_server_timing(tl: Timeline, message: Message) -> Message:
    with safety.guard("server_timing"):
        value = server_timing(tl, clock()).encode("latin-1")
        headers = [*message.get("headers", ()), (b"server-timing", value)]
        return {**message, "headers": headers}
    return message


def is_asgi_application(app: object) -> bool:
    """Django's ASGIHandler, or any coroutine function or object whose ``__call__``
    is one (the ASGI 3 single-callable form)."""
    try:  # asgiref's also sees markcoroutinefunction(); it comes with Django
        from asgiref.sync import iscoroutinefunction
    except ImportError:  # pragma: no cover - a WSGI app without Django
        from inspect import iscoroutinefunction

    from flowtrace.capture.django.handler import is_django_asgi_handler

    if is_django_asgi_handler(app):
        return True
    if iscoroutinefunction(app):
        return True
    call = getattr(type(app), "__call__", None)  # noqa: B004 - the method, not callable()
    return call is not None and not isinstance(app, type) and iscoroutinefunction(call)
