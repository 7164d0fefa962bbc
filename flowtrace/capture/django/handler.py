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

Every wrapper presents as what it wraps, because Django's DEBUG error page
prints frames and their local variables: wrapper frames carry
``__traceback_hide__`` (Django skips those frames), wrapper functions carry
the wrapped function's name, and a wrapped middleware hook's ``repr`` is the
bound method's own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import suppress
from functools import WRAPPER_ASSIGNMENTS, update_wrapper
from types import FunctionType, MethodType
from typing import Any

# Django's own test for async views and middleware on every Python version: before
# 3.12 only asgiref's version sees the marker that View.as_view() sets.
from asgiref.sync import iscoroutinefunction

from flowtrace import safety
from flowtrace.capture.timeline import HOOK, LAYER, RESOLVE, VIEW, VIEW_RAISED, clock, current

Handler = Any  # django.core.handlers.base.BaseHandler (imported lazily)

#: Name given to the innermost layer: Django's own ``_get_response``.
HANDLER_LAYER = "django.core.handlers.base.BaseHandler._get_response"
_MAX_VIEWS = 1024


def is_django_handler(app: object) -> bool:
    """True for Django's WSGIHandler or ASGIHandler (or a subclass), without
    importing Django."""
    if "django.core.handlers.wsgi" in sys.modules:
        from django.core.handlers.wsgi import WSGIHandler

        if isinstance(app, WSGIHandler):
            return True
    return is_django_asgi_handler(app)


def django_handler_in(app: object) -> Any:
    """The Django handler to instrument: ``app`` itself, or the HTTP application of a
    protocol router (Channels' ``ProtocolTypeRouter``); None if there is none."""
    if is_django_handler(app):
        return app
    mapping = getattr(app, "application_mapping", None)
    if isinstance(mapping, dict) and is_django_asgi_handler(mapping.get("http")):
        return mapping["http"]
    return None


def is_django_asgi_handler(app: object) -> bool:
    if "django.core.handlers.asgi" not in sys.modules:
        return False
    from django.core.handlers.asgi import ASGIHandler

    return isinstance(app, ASGIHandler)


def dotted_name(obj: object) -> str:
    """The settings.MIDDLEWARE-style path of a middleware instance or function.

    A function middleware is named after its factory (``pkg.mod.factory``),
    which is what settings.MIDDLEWARE lists.
    """
    target = obj if isinstance(obj, (FunctionType, MethodType)) else type(obj)
    qualname = target.__qualname__.split(".<locals>")[0]
    return f"{target.__module__}.{qualname}"


def _present_as(wrapper: Any, wrapped: Any) -> Any:
    """Give ``wrapper`` the wrapped callable's name, docstring and attributes."""
    with suppress(AttributeError, TypeError):  # an odd callable: keep our own name
        update_wrapper(wrapper, wrapped, assigned=WRAPPER_ASSIGNMENTS)
    return wrapper


def _timed_layer(inner: Callable[[Any], Any], index: int, name: str) -> Callable[[Any], Any]:
    def layer(request: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        tl = current.get()
        if tl is None:
            return inner(request)
        t0 = clock()
        try:
            return inner(request)
        finally:
            tl.events.append((LAYER, t0, clock(), index))

    _present_as(layer, inner)
    layer._flowtrace_name = name  # type: ignore[attr-defined]  # a bridge crossing's cause
    return layer


def _timed_async_layer(inner: Callable[[Any], Any], index: int, name: str) -> Any:
    """An async middleware (under ASGI): the same interval, awaited."""

    async def layer(request: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        tl = current.get()
        if tl is None:
            return await inner(request)
        t0 = clock()
        try:
            return await inner(request)
        finally:
            tl.events.append((LAYER, t0, clock(), index))

    _present_as(layer, inner)
    layer._flowtrace_name = name  # type: ignore[attr-defined]
    return layer


class _TimedHook:
    """A process_view / process_template_response / process_exception method.

    A class, not a closure, because Django reads ``method.__self__`` to name
    the middleware in its error messages; its ``repr`` is the method's. Under
    ASGI a hook may be a coroutine function: ``_TimedAsyncHook`` awaits it.
    """

    __slots__ = ("_method", "__self__", "_payload")

    def __init__(self, method: Any, hook: str) -> None:
        self._method = method
        self.__self__ = getattr(method, "__self__", None)
        self._payload = (dotted_name(self.__self__ or method), hook)

    def __call__(self, *args: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        tl = current.get()
        if tl is None:
            return self._method(*args)
        t0 = clock()
        try:
            return self._method(*args)
        finally:
            tl.events.append((HOOK, t0, clock(), self._payload))

    def __repr__(self) -> str:
        return repr(self._method)

    def __getattr__(self, name: str) -> Any:  # __name__, __qualname__, __module__...
        if name == "_method":  # not set yet (copy, pickle)
            raise AttributeError(name)
        return getattr(self._method, name)


class _TimedAsyncHook(_TimedHook):
    __slots__ = ()

    async def __call__(self, *args: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        tl = current.get()
        if tl is None:
            return await self._method(*args)
        t0 = clock()
        try:
            return await self._method(*args)
        finally:
            tl.events.append((HOOK, t0, clock(), self._payload))


def _timed_hook(method: Any, hook: str) -> _TimedHook:
    if iscoroutinefunction(method):
        return _TimedAsyncHook(method, hook)
    return _TimedHook(method, hook)


def _rebuild_middleware_chain(handler: Handler) -> tuple[str, ...]:
    """Reload the handler's middleware with a timing layer per middleware."""
    from django.core.handlers import base

    original = base.convert_exception_to_response
    names: list[str] = []

    def timed_convert(get_response: Any) -> Any:
        converted = original(get_response)
        name = HANDLER_LAYER if not names else dotted_name(get_response)
        names.append(name)
        if iscoroutinefunction(converted):  # an async middleware (ASGI): awaited
            return _timed_async_layer(converted, len(names) - 1, name)
        return _timed_layer(converted, len(names) - 1, name)

    base.convert_exception_to_response = timed_convert
    try:
        handler.load_middleware(is_async=is_django_asgi_handler(handler))
    finally:
        base.convert_exception_to_response = original
    for attr, hook in (
        ("_view_middleware", "process_view"),
        ("_template_response_middleware", "process_template_response"),
        ("_exception_middleware", "process_exception"),
    ):
        methods = getattr(handler, attr) or []
        setattr(handler, attr, [_timed_hook(m, hook) for m in methods])
    return tuple(names)


def _hook_resolution(handler: Handler) -> None:
    resolve_request = handler.resolve_request

    def timed_resolve_request(request: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        tl = current.get()
        if tl is None:
            return resolve_request(request)
        t0 = clock()
        route = None
        try:
            match = resolve_request(request)
            # stable per URL pattern (a shape key); the match itself, for path
            # redaction, stays outside the event
            route = (match.route, match.func)
            tl.match = match
            return match
        finally:
            tl.events.append((RESOLVE, t0, clock(), route))

    handler.resolve_request = _present_as(timed_resolve_request, resolve_request)


def _timed(view: Any) -> Any:
    """The view, timed; a coroutine function stays one (Django checks)."""
    if iscoroutinefunction(view):

        async def timed_async_view(request: Any, *args: Any, **kwargs: Any) -> Any:
            __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
            tl = current.get()
            t0 = clock()
            raised = True
            try:
                response = await view(request, *args, **kwargs)
                raised = False
                return response
            finally:
                if tl is not None:
                    tl.events.append((VIEW, t0, clock(), VIEW_RAISED if raised else None))

        return _present_as(timed_async_view, view)

    def timed_view(request: Any, *args: Any, **kwargs: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        tl = current.get()
        if tl is None:
            return view(request, *args, **kwargs)
        t0 = clock()
        raised = True
        try:
            response = view(request, *args, **kwargs)
            raised = False
            return response
        finally:
            tl.events.append((VIEW, t0, clock(), VIEW_RAISED if raised else None))

    _present_as(timed_view, view)
    timed_view._flowtrace_name = "view"  # type: ignore[attr-defined]  # a crossing's cause
    return timed_view


def _hook_view(handler: Handler) -> None:
    make_view_atomic = handler.make_view_atomic
    # One timed wrapper per view, made once (the usual case: make_view_atomic returns
    # the view itself, without ATOMIC_REQUESTS); bounded, for views built per request.
    timed: dict[Any, Any] = {}

    def timed_make_view_atomic(view: Any) -> Any:
        wrapped = make_view_atomic(view)
        if wrapped is not view:  # ATOMIC_REQUESTS: a new wrapper every request
            return _timed(wrapped)
        try:
            return timed[view]
        except KeyError:
            pass
        except TypeError:  # an unhashable callable
            return _timed(view)
        if len(timed) >= _MAX_VIEWS:
            timed.clear()
        result = timed[view] = _timed(view)
        return result

    handler.make_view_atomic = _present_as(timed_make_view_atomic, make_view_atomic)


def _record_exception(sender: Any, **kwargs: Any) -> None:
    """``got_request_exception`` receiver: Django turned an exception into a 500.

    Django sends this signal with ``send``, not ``send_robust``: anything raised
    here would break Django's own 500 handling. So this only keeps the exception
    object; it is formatted on the exporter thread, and only if it is exported.
    """
    try:
        tl = current.get()
        if tl is not None and tl.app_exc is None:
            tl.app_exc = sys.exc_info()[1]
    except Exception as exc:  # never raise into Django's handler
        safety.report("got_request_exception", exc, reraise=False)


def instrument_handler(handler: Handler) -> tuple[str, ...]:
    """Install the per-handler hooks; returns the layer names, innermost first.

    Installing twice is a no-op: the second call returns the same names.
    """
    existing = getattr(handler, "_flowtrace_layers", None)
    if existing is not None:
        return tuple(existing)
    from django.core.signals import got_request_exception

    names = _rebuild_middleware_chain(handler)
    if is_django_asgi_handler(handler):
        from flowtrace.capture.loop import held_chain

        handler._middleware_chain = held_chain(handler._middleware_chain)
    _hook_resolution(handler)
    _hook_view(handler)
    got_request_exception.connect(_record_exception, dispatch_uid="flowtrace.exc")
    handler._flowtrace_layers = names
    return names
