"""Time Django's handler from the inside: middleware layers, URL resolution, view.

Everything here is installed once, when ``FlowTrace`` wraps a handler, and
records into the current request's Timeline with two ``perf_counter_ns()``
calls and one list append per call. Nothing resolves a URL a second time:
flowtrace times ``resolve_request`` where Django already calls it.

The middleware chain is rebuilt once with a timing layer around every
``convert_exception_to_response`` result (Django's own test client builds
handlers, and so instantiates middleware, many times per process, so doing
it once more is safe). Each layer records one interval; the exporter later
splits it into a request half and a response half.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from contextlib import suppress
from inspect import iscoroutinefunction
from types import FunctionType, MethodType
from typing import Any

from flowtrace.capture.timeline import HOOK, LAYER, RESOLVE, VIEW, clock, current

Handler = Any  # django.core.handlers.base.BaseHandler (imported lazily)

#: Name given to the innermost layer: Django's own ``_get_response``.
HANDLER_LAYER = "django.core.handlers.base.BaseHandler._get_response"


def is_django_handler(app: object) -> bool:
    """True for Django's WSGIHandler (or a subclass), without importing Django."""
    if "django.core.handlers.wsgi" not in sys.modules:
        return False
    from django.core.handlers.wsgi import WSGIHandler

    return isinstance(app, WSGIHandler)


def dotted_name(obj: object) -> str:
    """The settings.MIDDLEWARE-style path of a middleware instance or function.

    A function middleware is named after its factory (``pkg.mod.factory``),
    which is what settings.MIDDLEWARE lists.
    """
    target = obj if isinstance(obj, (FunctionType, MethodType)) else type(obj)
    qualname = target.__qualname__.split(".<locals>")[0]
    return f"{target.__module__}.{qualname}"


def _timed_layer(inner: Callable[[Any], Any], index: int) -> Callable[[Any], Any]:
    def layer(request: Any) -> Any:
        tl = current.get()
        if tl is None:
            return inner(request)
        t0 = clock()
        try:
            return inner(request)
        finally:
            tl.events.append((LAYER, t0, clock(), index))

    return layer


class _TimedHook:
    """A process_view / process_template_response / process_exception method.

    A class, not a closure, because Django reads ``method.__self__`` to name
    the middleware in its error messages.
    """

    __slots__ = ("_method", "__self__", "_payload")

    def __init__(self, method: Any, hook: str) -> None:
        self._method = method
        self.__self__ = getattr(method, "__self__", None)
        self._payload = (dotted_name(self.__self__ or method), hook)

    def __call__(self, *args: Any) -> Any:
        tl = current.get()
        if tl is None:
            return self._method(*args)
        t0 = clock()
        try:
            return self._method(*args)
        finally:
            tl.events.append((HOOK, t0, clock(), self._payload))


def _rebuild_middleware_chain(handler: Handler) -> tuple[str, ...]:
    """Reload the handler's middleware with a timing layer per middleware."""
    from django.core.handlers import base

    original = base.convert_exception_to_response
    names: list[str] = []

    def timed_convert(get_response: Any) -> Any:
        converted = original(get_response)
        if iscoroutinefunction(converted):  # async-only middleware: left as is
            return converted
        names.append(dotted_name(get_response))
        return _timed_layer(converted, len(names) - 1)

    base.convert_exception_to_response = timed_convert
    try:
        handler.load_middleware()
    finally:
        base.convert_exception_to_response = original
    if names:
        names[0] = HANDLER_LAYER
    for attr, hook in (
        ("_view_middleware", "process_view"),
        ("_template_response_middleware", "process_template_response"),
        ("_exception_middleware", "process_exception"),
    ):
        methods = getattr(handler, attr) or []
        setattr(handler, attr, [_TimedHook(m, hook) for m in methods])
    return tuple(names)


def _hook_resolution(handler: Handler) -> None:
    resolve_request = handler.resolve_request

    def timed_resolve_request(request: Any) -> Any:
        tl = current.get()
        if tl is None:
            return resolve_request(request)
        t0 = clock()
        route = None
        try:
            match = resolve_request(request)
            route = (match.route, getattr(match, "_func_path", None))
            return match
        finally:
            tl.events.append((RESOLVE, t0, clock(), route))

    handler.resolve_request = timed_resolve_request


def _hook_view(handler: Handler) -> None:
    make_view_atomic = handler.make_view_atomic
    # iscoroutinefunction() is several Python calls: remember it per view, for the
    # usual case where make_view_atomic returns the view itself (no ATOMIC_REQUESTS)
    is_async: dict[Any, bool] = {}

    def timed_make_view_atomic(view: Any) -> Any:
        wrapped = make_view_atomic(view)
        if wrapped is view:
            try:
                coroutine = is_async[view]
            except (KeyError, TypeError):
                coroutine = iscoroutinefunction(view)
                with suppress(TypeError):  # an unhashable callable: not remembered
                    if len(is_async) >= 1024:
                        is_async.clear()
                    is_async[view] = coroutine
        else:
            coroutine = iscoroutinefunction(wrapped)
        if coroutine:

            async def timed_async_view(request: Any, *args: Any, **kwargs: Any) -> Any:
                tl = current.get()
                t0 = clock()
                try:
                    return await wrapped(request, *args, **kwargs)
                finally:
                    if tl is not None:
                        tl.events.append((VIEW, t0, clock(), None))

            return timed_async_view

        def timed_view(request: Any, *args: Any, **kwargs: Any) -> Any:
            tl = current.get()
            if tl is None:
                return wrapped(request, *args, **kwargs)
            t0 = clock()
            try:
                return wrapped(request, *args, **kwargs)
            finally:
                tl.events.append((VIEW, t0, clock(), None))

        return timed_view

    handler.make_view_atomic = timed_make_view_atomic


def _record_exception(sender: Any, **kwargs: Any) -> None:
    """``got_request_exception`` receiver: Django turned an exception into a 500."""
    tl = current.get()
    if tl is None or tl.app_exc_info is not None:
        return
    exc = sys.exc_info()[1]
    if exc is None:
        return
    tl.app_exc_info = (
        type(exc).__qualname__,
        str(exc)[:1024],
        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[:8192],
    )


def instrument_handler(handler: Handler) -> tuple[str, ...]:
    """Install the per-handler hooks; returns the layer names, innermost first.

    Installing twice is a no-op: the second call returns the same names.
    """
    existing = getattr(handler, "_flowtrace_layers", None)
    if existing is not None:
        return tuple(existing)
    from django.core.signals import got_request_exception

    names = _rebuild_middleware_chain(handler)
    _hook_resolution(handler)
    _hook_view(handler)
    got_request_exception.connect(_record_exception, dispatch_uid="flowtrace.exc")
    handler._flowtrace_layers = names
    return names
