"""How long a request's own code holds the event loop, and how late the loop runs.

Under ASGI, code that runs on the event loop without yielding (a ``time.sleep``
or a blocking client in an async view, heavy work in async middleware) delays
every other request of the worker. Two measures, neither of which traces the
loop's other tasks:

* **held**: Django's middleware chain (and so the view) is awaited through
  ``Held``, which times each step of the coroutine: one ``send()`` or
  ``throw()``, from the loop resuming it to its next suspension. The sum is
  the time the request's own code held the loop, the longest step is its worst
  single block. Work the request hands to a thread (``sync_to_async``) is not
  held time: the coroutine is suspended meanwhile. Tasks the view creates
  itself are not followed. Cost: two clock reads per step (a request makes a
  handful of steps).
* **lag**: one timer per event loop, every ``LAG_INTERVAL`` seconds, notes how
  late it fires; the samples become the ``flowtrace.asyncio.loop_lag``
  histogram. That is the delay every task of the worker saw, whoever caused it.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import CoroutineType
from typing import Any

from flowtrace.capture.timeline import clock, current

LAG_INTERVAL = 0.1  # seconds
_MAX_SAMPLES = 4096  # at 10 per second: minutes of samples if nobody reads them


class Held:
    """Awaits ``coro`` step by step, adding each step's time to ``acc``:
    [total ns, longest step ns, steps]."""

    __slots__ = ("_coro", "_acc")

    def __init__(self, coro: Coroutine[Any, Any, Any], acc: list[int]) -> None:
        self._coro = coro
        self._acc = acc

    def __await__(self) -> Generator[Any, Any, Any]:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        coro, acc = self._coro, self._acc
        value: Any = None
        error: BaseException | None = None
        while True:
            t0 = clock()
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                _add(acc, clock() - t0)
                return stop.value
            except BaseException:
                _add(acc, clock() - t0)
                raise
            _add(acc, clock() - t0)
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation, thrown in by the task
                value, error = None, exc


def _add(acc: list[int], ns: int) -> None:
    acc[0] += ns
    acc[2] += 1
    if ns > acc[1]:
        acc[1] = ns


def held_chain(chain: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    """Django's async middleware chain, its steps on the loop timed per request."""

    async def timed_chain(request: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        tl = current.get()
        coro = chain(request)
        if tl is None or not isinstance(coro, CoroutineType):
            return await coro
        # [held ns, longest step ns, steps, the loop's thread]: crossings back to the
        # loop are held time only on this thread (flowtrace.capture.bridge)
        acc = tl.loop = [0, 0, 0, threading.get_ident()]
        return await Held(coro, acc)

    return timed_chain


class LagProbe:
    """One timer per running event loop, measuring how late it fires."""

    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=_MAX_SAMPLES)  # seconds late
        self._loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start probing ``loop`` (once per loop; cheap to call per request)."""
        if loop in self._loops:
            return
        self._loops.add(loop)
        loop.call_later(LAG_INTERVAL, self._tick, loop, loop.time() + LAG_INTERVAL)

    def _tick(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        now = loop.time()
        self.samples.append(max(now - due, 0.0))
        if not loop.is_closed():
            loop.call_later(LAG_INTERVAL, self._tick, loop, now + LAG_INTERVAL)

    def drain(self) -> list[float]:
        samples = self.samples
        out = []
        while samples:
            out.append(samples.popleft())
        return out


LAG = LagProbe()
