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

``cause`` is the callee for a crossing into a thread (a middleware layer, the
view, an ORM method...) and None for one back to the loop, whose cause (the
sync middleware calling its async ``get_response``) is found on the export
thread from the middleware intervals around it (``cause_of``). Outside a
traced request each patched method costs one ``ContextVar.get()``.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
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

    _originals.update(s2a_init=SyncToAsync.__init__, s2a_call=SyncToAsync.__call__,
                      a2s_call=AsyncToSync.__call__, a2s_main=AsyncToSync.main_wrap)  # fmt: skip
    s2a_init, s2a_call = _originals["s2a_init"], _originals["s2a_call"]
    a2s_call, a2s_main = _originals["a2s_call"], _originals["a2s_main"]

    def init(self: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        s2a_init(self, func, *args, **kwargs)
        self.func = _callee_timed(self.func)

    async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        tl = current.get()
        if tl is None:
            return await s2a_call(self, *args, **kwargs)
        if not hasattr(self.func, "_flowtrace_callee"):  # made before install()
            self.func = _callee_timed(self.func)
        mark = [clock(), 0, 0]
        token = _crossing.set(mark)  # asgiref copies the context after this
        try:
            return await s2a_call(self, *args, **kwargs)
        finally:
            _record(tl, self.func, TO_THREAD, mark, token)

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
                        context: Any, awaitable: Any) -> Any:  # fmt: skip
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        mark = context[0].get(_crossing) if context else None
        if mark is not None and not mark[1]:
            mark[1] = clock()
            tl = context[0].get(current)
            if tl is not None and tl.loop is not None and asyncio.iscoroutine(awaitable):
                # back on the loop, in a task of its own: its steps are the request's too
                awaitable = Held(awaitable, tl.loop)
        try:
            return await a2s_main(self, call_result, exc_info, task_context, context, awaitable)
        finally:
            if mark is not None:
                mark[2] = clock()

    SyncToAsync.__init__ = init  # type: ignore[method-assign]
    SyncToAsync.__call__ = call  # type: ignore[method-assign]
    AsyncToSync.__call__ = call_back  # type: ignore[method-assign]
    AsyncToSync.main_wrap = main_wrap  # type: ignore[method-assign]


def uninstall() -> None:
    """Restore asgiref (tests)."""
    if not _originals:
        return
    from asgiref.sync import AsyncToSync, SyncToAsync

    SyncToAsync.__init__ = _originals.pop("s2a_init")  # type: ignore[method-assign]
    SyncToAsync.__call__ = _originals.pop("s2a_call")  # type: ignore[method-assign]
    AsyncToSync.__call__ = _originals.pop("a2s_call")  # type: ignore[method-assign]
    AsyncToSync.main_wrap = _originals.pop("a2s_main")  # type: ignore[method-assign]


def installed() -> bool:
    return bool(_originals)


def _callee_timed(func: Any) -> Any:
    """The function a ``sync_to_async`` runs in its thread, noting when it starts
    and ends for the crossing in progress."""

    def callee(*args: Any, **kwargs: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        mark = _crossing.get()
        if mark is None:
            return func(*args, **kwargs)
        mark[1] = clock()
        try:
            return func(*args, **kwargs)
        finally:
            mark[2] = clock()

    callee._flowtrace_callee = func  # type: ignore[attr-defined]
    return callee


def _record(tl: Any, cause: Any, direction: int, mark: list[int], token: Any) -> None:
    end = clock()
    try:
        _crossing.reset(token)
    except ValueError:  # another context (never on asgiref's own paths)
        _crossing.set(None)
    start, began, ended = mark
    if not began or not ended:  # the other side never ran (cancelled before it started)
        return
    crossings = tl.crossings
    if crossings is None:
        crossings = tl.crossings = []
    crossings.append((cause, direction, start, end, began - start, end - ended))


# --- on the export thread ------------------------------------------------------------


def cause_of(crossing: tuple[Any, ...], events: list[Any], layer_names: tuple[str, ...]) -> str:
    """A bounded name for what made a crossing: a middleware's dotted path,
    ``view``, ``orm``, ``template``, ``cache``, ``close`` or ``other``."""
    cause, direction, start = crossing[0], crossing[1], crossing[2]
    if direction == TO_LOOP:  # the sync layer that called its async get_response
        inner: tuple[int, int] | None = None
        name = "other"
        for kind, t0, t1, index in events:
            if kind == LAYER and t0 <= start <= t1 and (inner is None or t0 >= inner[0]):
                inner = (t0, t1)
                name = layer_names[index] if 0 < index < len(layer_names) else "other"
        return name
    target = getattr(cause, "_flowtrace_callee", cause)
    named = getattr(target, "_flowtrace_name", None)
    if isinstance(named, str):
        return named
    owner = getattr(target, "__self__", None)
    if owner is not None and layer_names:  # a middleware's own hook (process_view...)
        from flowtrace.capture.django.handler import dotted_name

        path = dotted_name(owner)
        if path in layer_names:
            return path
    module = str(getattr(target, "__module__", "") or "")
    qualname = str(getattr(target, "__qualname__", "") or "")
    if module.startswith("django.db"):
        return "orm"
    if module.startswith("django.core.cache"):
        return "cache"
    if module.startswith("django.template") or qualname.endswith(".render"):
        return "template"
    if qualname.endswith(".close") or module.startswith("django.dispatch"):
        return "close"
    return "other"
