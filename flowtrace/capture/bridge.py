"""The sync<->async bridge under ASGI: every crossing, and what it waited for.

Django under ASGI runs sync middleware, sync views, the ORM (and every async
ORM method) in a worker thread through asgiref's ``sync_to_async``, and sync
code calls back into the loop through ``async_to_sync``. Each crossing is a
hand-off: the callee waits to start on the other side (a thread to pick the
work up, or the loop to run the coroutine), then the caller waits to resume.
Under load both wait for the GIL and for the loop.

Installed once (when a FlowTrace wraps an ASGI application), four asgiref
methods record, per crossing of a traced request, in ``Timeline.crossings``:

    (cause, direction, t_start, t_end, waited to start ns, waited to resume ns)

``cause`` names the callee of a crossing into a thread (a middleware layer,
the view, an ORM method...: a string, or its owner class, module and qualname,
never the callee itself, which may hold a response alive) and is None for one
back to the loop, whose cause (the sync middleware calling its async
``get_response``) is found on the export thread from the middleware intervals
around it (``cause_of``). The callee's start and end are noted by a one-off
wrapper around the call asgiref makes in the thread (``thread_handler``); the
user's function and its ``SyncToAsync`` are never changed. Outside a traced
request a crossing costs one ``ContextVar.get()`` on each side and that
wrapper's call.
"""

from __future__ import annotations

import inspect
import threading
from contextvars import ContextVar
from types import CoroutineType
from typing import Any

from flowtrace.capture.loop import Held
from flowtrace.capture.timeline import LAYER, clock, current

TO_THREAD, TO_LOOP = 0, 1

# The crossing in progress, seen by its other side through the context asgiref
# copies across: [t_start, callee started, callee ended].
_crossing: ContextVar[list[int] | None] = ContextVar("flowtrace.crossing", default=None)
_originals: dict[str, Any] = {}


def install() -> None:
    """Patch asgiref (idempotent)."""
    if _originals:
        return
    from asgiref.sync import AsyncToSync, SyncToAsync

    _originals.update(s2a_call=SyncToAsync.__call__, s2a_thread=SyncToAsync.thread_handler,
                      a2s_call=AsyncToSync.__call__, a2s_main=AsyncToSync.main_wrap)  # fmt: skip
    s2a_call, s2a_thread = _originals["s2a_call"], _originals["s2a_thread"]
    a2s_call, a2s_main = _originals["a2s_call"], _originals["a2s_main"]
    # asgiref >= 3.9 hands main_wrap the coroutine itself (its steps can be timed);
    # 3.8 hands it the function and its arguments
    takes_awaitable = "awaitable" in inspect.signature(a2s_main).parameters

    async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        tl = current.get()
        # a crossing given its own context (asgiref >= 3.11's context=) cannot see
        # this one's mark: not measured
        if tl is None or getattr(self, "context", None) is not None:
            return await s2a_call(self, *args, **kwargs)
        mark = [clock(), 0, 0]
        token = _crossing.set(mark)  # asgiref copies the context after this
        try:
            return await s2a_call(self, *args, **kwargs)
        finally:
            _record(tl, self.func, TO_THREAD, mark, token)

    def thread_handler(self: Any, loop: Any, exc_info: Any, task_context: Any, func: Any,
                       *args: Any, **kwargs: Any) -> Any:  # fmt: skip
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        if len(args) == 1 and not kwargs:  # func(child): child runs in the copied context
            args = (_timed_child(args[0]),)
        return s2a_thread(self, loop, exc_info, task_context, func, *args, **kwargs)

    def call_back(self: Any, *args: Any, **kwargs: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        tl = current.get()
        if tl is None:
            return a2s_call(self, *args, **kwargs)
        mark = [clock(), 0, 0]
        token = _crossing.set(mark)
        try:
            return a2s_call(self, *args, **kwargs)
        finally:
            _record(tl, None, TO_LOOP, mark, token)

    async def main_wrap(self: Any, call_result: Any, exc_info: Any, task_context: Any,
                        context: Any, *args: Any, **kwargs: Any) -> Any:  # fmt: skip
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        mark = context[0].get(_crossing) if context else None
        if mark is not None and not mark[1]:
            mark[1] = clock()
            tl = context[0].get(current)
            held = tl.loop if tl is not None else None
            if (held is not None and takes_awaitable and len(args) == 1 and not kwargs
                    and isinstance(args[0], CoroutineType)
                    and threading.get_ident() == held[3]):  # fmt: skip
                # back on the request's own loop, in a task of its own: its steps are
                # the request's too (not on a private loop async_to_sync made elsewhere)
                args = (Held(args[0], held),)
        try:
            return await a2s_main(self, call_result, exc_info, task_context, context,
                                  *args, **kwargs)  # fmt: skip
        finally:
            if mark is not None:
                mark[2] = clock()

    SyncToAsync.__call__ = call  # type: ignore[method-assign]
    SyncToAsync.thread_handler = thread_handler  # type: ignore[method-assign]
    AsyncToSync.__call__ = call_back  # type: ignore[method-assign]
    AsyncToSync.main_wrap = main_wrap  # type: ignore[method-assign]


def uninstall() -> None:
    """Restore asgiref."""
    if not _originals:
        return
    from asgiref.sync import AsyncToSync, SyncToAsync

    SyncToAsync.__call__ = _originals.pop("s2a_call")  # type: ignore[method-assign]
    SyncToAsync.thread_handler = _originals.pop("s2a_thread")  # type: ignore[method-assign]
    AsyncToSync.__call__ = _originals.pop("a2s_call")  # type: ignore[method-assign]
    AsyncToSync.main_wrap = _originals.pop("a2s_main")  # type: ignore[method-assign]


def installed() -> bool:
    return bool(_originals)


def _timed_child(child: Any) -> Any:
    """The call a ``sync_to_async`` makes in its thread, noting when it starts and
    ends for the crossing in progress (a one-off wrapper: the user's function and
    its ``SyncToAsync`` are left as they are)."""

    def timed() -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        mark = _crossing.get()
        if mark is None or mark[1]:  # untraced, or a mark this call does not own
            return child()
        mark[1] = clock()
        try:
            return child()
        finally:
            mark[2] = clock()

    return timed


def _cause_key(func: Any) -> Any:
    """What names a crossing's cause, without keeping the callee (often a bound
    method of the response or a queryset) alive until the export thread runs:
    a layer's name, or (owner class, module, qualname)."""
    named = getattr(func, "_flowtrace_name", None)
    if isinstance(named, str):
        return named
    owner = getattr(func, "__self__", None)
    return (type(owner) if owner is not None else None,
            getattr(func, "__module__", None), getattr(func, "__qualname__", None))  # fmt: skip


def _record(tl: Any, func: Any, direction: int, mark: list[int], token: Any) -> None:
    end = clock()
    try:
        _crossing.reset(token)
    except ValueError:  # another context (never on asgiref's own paths)
        _crossing.set(None)
    start, began, ended = mark
    if not began:  # the other side never ran (cancelled before it started)
        return
    if not ended:  # the callee's end not noted yet (a result delivered before main_wrap
        ended = end  # got back, or the caller cancelled mid-call): no resume wait counted
    crossings = tl.crossings
    if crossings is None:  # a WSGI request calling async_to_sync (ASGI ones have a list)
        crossings = tl.crossings = []
    cause = _cause_key(func) if func is not None else None
    crossings.append((cause, direction, start, end, began - start, end - ended))


# --- on the export thread ------------------------------------------------------------


def cause_of(crossing: tuple[Any, ...], events: list[Any], layer_names: tuple[str, ...]) -> str:
    """A bounded name for what made a crossing: a middleware's dotted path,
    ``view``, ``orm``, ``template``, ``cache``, ``signals`` (receivers run by
    ``Signal.asend``: ``request_started``, ``request_finished``, the app's own),
    ``close`` (``response.close()``) or ``other``."""
    cause, direction, start = crossing[0], crossing[1], crossing[2]
    if direction == TO_LOOP:  # the sync layer that called its async get_response
        inner: tuple[int, int] | None = None
        name = "other"
        for kind, t0, t1, index in events:
            if kind == LAYER and t0 <= start <= t1 and (inner is None or t0 >= inner[0]):
                inner = (t0, t1)
                name = layer_names[index] if 0 < index < len(layer_names) else "other"
        return name
    if isinstance(cause, str):  # a timed layer or the view
        return cause
    owner, module, qualname = cause if isinstance(cause, tuple) else (None, None, None)
    module, qualname = str(module or ""), str(qualname or "")
    if owner is not None and layer_names:  # a middleware's own hook (process_view...)
        path = f"{owner.__module__}.{owner.__qualname__.split('.<locals>')[0]}"
        if path in layer_names:
            return path
    if module.startswith("django.db"):
        return "orm"
    if module.startswith("django.core.cache"):
        return "cache"
    if module.startswith("django.template") or qualname.endswith(".render"):
        return "template"
    if module.startswith("django.dispatch"):  # Signal.asend running sync receivers
        return "signals"
    if qualname.endswith(".close"):
        return "close"
    return "other"
